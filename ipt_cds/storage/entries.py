"""What a spool entry holds, as bytes: a batch of cards shown with what the card memory keeps
of them, or one feedback post with the snoozes it asks for.

Rows are written field by field, by name (JSON): a spool left by one version is read by the
next even if it adds a field with a default. Feedback is spooled as the feedback table's rows,
keyed by their meaning and without the free-text comments (ipt_cds/storage/store.py), so the
spool holds no more than the database does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import orjson

from ipt_cds.storage.memory import Overridden
from ipt_cds.storage.store import IssuedCard, Remembered

CARDS = "cards"
FEEDBACK = "feedback"

# The feedback table's time columns (store.py _feedback_row).
_FEEDBACK_TIMES = ("outcome_at", "received_at")

T = TypeVar("T")


@dataclass(frozen=True)
class SpooledFeedback:
    """One feedback post: its rows, the overridden cards to snooze, and the time of the post."""

    rows: list[dict[str, Any]]
    overridden: list[Overridden]
    at: datetime


def encode_cards(rows: Sequence[IssuedCard], remembered: Sequence[Remembered]) -> bytes:
    return orjson.dumps(
        {"cards": [_fields(r) for r in rows], "remembered": [_fields(r) for r in remembered]}
    )


def decode_cards(payload: bytes) -> tuple[list[IssuedCard], list[Remembered]]:
    data = orjson.loads(payload)
    return (
        [_built(IssuedCard, r) for r in data["cards"]],
        [_built(Remembered, r) for r in data["remembered"]],
    )


def encode_feedback(entry: SpooledFeedback) -> bytes:
    return orjson.dumps(
        {
            "rows": entry.rows,
            "overridden": [_fields(o) for o in entry.overridden],
            "at": entry.at,
        }
    )


def decode_feedback(payload: bytes) -> SpooledFeedback:
    data = orjson.loads(payload)
    rows = [
        {k: datetime.fromisoformat(v) if k in _FEEDBACK_TIMES else v for k, v in row.items()}
        for row in data["rows"]
    ]
    overridden = [_built(Overridden, o) for o in data["overridden"]]
    return SpooledFeedback(rows, overridden, datetime.fromisoformat(data["at"]))


def _fields(row: Any) -> dict[str, Any]:
    return {f.name: getattr(row, f.name) for f in dataclasses.fields(row)}


def _built(cls: type[T], data: dict[str, Any]) -> T:
    """A dataclass from its fields by name; times come back from their ISO text. A field the
    class no longer has is left out; one it requires and the entry lacks raises TypeError."""
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in data:
            value = data[f.name]
            if isinstance(value, str) and "datetime" in str(f.type):
                value = datetime.fromisoformat(value)
            kwargs[f.name] = value
    return cls(**kwargs)
