"""The card statistics an operator reads: ``GET /stats/cards`` (JSON), the window both it and
the HTML page (ipt_cds/http/stats_page.py) take, and the reading itself, once this worker's
recorder and spool are written to the database."""

from __future__ import annotations

import logging
import re
from datetime import UTC, date, datetime

from fastapi import APIRouter, Request
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from ipt_cds.http.jsonio import JsonResponse
from ipt_cds.http.routes import AppState, authenticate_operator, errors_of, state_of
from ipt_cds.protocol.errors import BadRequest
from ipt_cds.protocol.models import CardStats
from ipt_cds.storage.spool import DatabaseUnavailable

log = logging.getLogger("ipt_cds")
router = APIRouter()

# The statistics' window bounds as the OpenAPI document describes them (a real date and since
# before until are checked on the request).
WINDOW_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?(Z|[+-][0-9]{2}:[0-9]{2})?)?$"
)


_WINDOW = re.compile(WINDOW_PATTERN)
# How long /stats/cards waits for the spool to drain before it reads the database.
STATS_DRAIN_SECONDS = 10.0


@router.get(
    "/stats/cards",
    summary="Cards shown, accepted and overridden, per service and rule",
    description="Cards issued from `since` (included) to `until` (excluded), and feedback "
    "whose outcome falls between them; each a date (UTC midnight) or a date and time. A call "
    "retried (same service and hookInstance) counts once.",
    responses={200: {"model": CardStats}, **errors_of(400, 401, 503)},
    openapi_extra={
        "parameters": [
            {
                "name": name,
                "in": "query",
                "required": False,
                "description": "A date, or a date and time (ISO 8601); since before until.",
                "schema": {"type": "string", "pattern": WINDOW_PATTERN},
            }
            for name in ("since", "until")
        ]
    },
)
async def card_stats(request: Request) -> Response:
    await authenticate_operator(request)
    since, until = stats_window(request)
    stats, _ = await read_statistics(state_of(request), since, until)
    return JsonResponse(stats.model_dump(mode="json"))


def stats_window(
    request: Request, blank_is_absent: bool = False
) -> tuple[datetime | None, datetime | None]:
    """``?since=`` (included) and ``?until=`` (excluded): a date (UTC midnight) or a date and
    time (without an offset, UTC). ``blank_is_absent``: an empty one (a form's date left empty)
    is no bound, not a 400."""
    since = _instant(request, "since", blank_is_absent)
    until = _instant(request, "until", blank_is_absent)
    if since is not None and until is not None and since >= until:
        raise BadRequest("since must be before until.", field="since")
    return since, until


def _instant(request: Request, name: str, blank_is_absent: bool) -> datetime | None:
    text = request.query_params.get(name)
    if text is None or (blank_is_absent and not text.strip()):
        return None
    try:
        if not _WINDOW.fullmatch(text):
            raise ValueError(text)
        if len(text) == len("2026-12-01"):
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        at = datetime.fromisoformat(text)
    except ValueError:
        raise BadRequest(
            f"{name} must be a date (2026-12-01) or a date and time "
            "(2026-12-01T08:00:00Z, 2026-12-01T09:00:00+01:00).",
            field=name,
        ) from None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


async def read_statistics(
    state: AppState, since: datetime | None, until: datetime | None, days: bool = False
) -> tuple[CardStats, list[tuple[str, str, int]]]:
    """What the database holds, once this worker's recorder and spool are written to it (as
    far as the database takes them within STATS_DRAIN_SECONDS); with ``days``, the counts
    per day too."""
    try:
        await state.recorder.flush()
    except Exception as exc:  # those rows are counted as unrecorded; the rest still counts
        log.warning("cards shown not spooled before statistics: %s", type(exc).__name__)
    await state.drainer.drain(STATS_DRAIN_SECONDS)
    store = state.store
    try:
        # Feedback on a card whose "shown" row a crash lost is attributed by its uuid.
        stats = await run_in_threadpool(
            store.card_stats, state.pipeline.card_ids.decode, since, until
        )
        by_day = await run_in_threadpool(store.card_days, since, until) if days else []
    except (SQLAlchemyError, OSError) as exc:
        log.warning("statistics unavailable: database %s", type(exc).__name__)
        raise DatabaseUnavailable(
            "The statistics are read from the database, which is unavailable; cards shown and "
            "feedback wait in the spool meanwhile. Try again later."
        ) from None
    return stats, by_day
