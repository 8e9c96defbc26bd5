"""The feedback table's rows of a feedback post: each item keyed by its meaning (so a post
sent again stores nothing new), without the free-text comments."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson

from ipt_cds.protocol.models import FeedbackItem


def feedback_rows(
    service_id: str, items: Iterable[FeedbackItem], received_at: datetime
) -> list[dict[str, Any]]:
    """The feedback table's rows of the items: keyed by their meaning, without the free-text
    comments."""
    return [_feedback_row(service_id, item, received_at) for item in items]


def _feedback_row(service_id: str, item: FeedbackItem, now: datetime) -> dict[str, Any]:
    at = item.outcomeTimestamp
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    suggestions = sorted(s.id for s in item.acceptedSuggestions or [])
    reasons = [r.model_dump(exclude_none=True) for r in item.reasons()]
    meaning = [service_id, item.card, item.outcome, at.isoformat(), suggestions, reasons]
    return {
        "dedupe_key": hashlib.sha256(
            orjson.dumps(meaning, option=orjson.OPT_SORT_KEYS)
        ).hexdigest(),
        "service_id": service_id,
        "card_uuid": item.card,
        "outcome": item.outcome,
        "outcome_at": at,
        "accepted_suggestions": orjson.dumps(suggestions).decode() if suggestions else None,
        "override_reasons": orjson.dumps(reasons).decode() if reasons else None,
        "received_at": now,
    }
