"""One logger, JSON lines, a request id on every line.

The id comes from the caller's ``X-Request-ID`` (when it is a sane token) or is made here, is
echoed in the response, and is attached to every log record of the request. Log lines hold ids,
counts and durations only: never patient data, never a token.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


@dataclass
class CallLog:
    """What the request's access line needs from its handler: whether the handler wrote its own
    INFO line (a hook call, a feedback; the access line is then left out, so that a call logs
    one INFO line), and the stable code and field of a refusal (an operator reads why a client
    was refused from the log: some clients, the CDS Hooks sandbox among them, show no error
    body). A holder, set per request, so that the handler's marks reach the middleware whatever
    context it ran in."""

    logged: bool = False
    code: str | None = None
    field: str | None = None


_CALL_LOG: contextvars.ContextVar[CallLog] = contextvars.ContextVar("call_log")


def start_request_log() -> CallLog:
    holder = CallLog()
    _CALL_LOG.set(holder)
    return holder


def mark_call_logged() -> None:
    holder = _CALL_LOG.get(None)
    if holder is not None:
        holder.logged = True


# A field as the service names one (``context.draftOrders``, ``prefetch.observations.entry[3]``).
# A path can carry a client's own key (a prefetch key), so anything else is logged as "-": a
# newline would forge a log line, a long one fill the log.
_FIELD = re.compile(r"[A-Za-z0-9_.\[\]-]{1,100}")


def note_refusal(code: str, field: str | None = None) -> None:
    """The stable code (and the field, a path: never a value) the request is answered with."""
    holder = _CALL_LOG.get(None)
    if holder is not None:
        holder.code = code
        holder.field = field if field is None or _FIELD.fullmatch(field) else "-"


SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
# Fields our log calls pass through ``extra=`` and that the JSON line carries.
FIELDS = (
    "event",
    "service",
    "hookInstance",
    "rules",
    "status",
    "ms",
    "resources",
    "drafts",
    "prefetchGiven",
    "prefetchFetched",
    "prefetchMissing",
    "reads",
    "unreadable",
    "held",
    "pending",
    "silent",
    "items",
    "stored",
    "reason",
    "path",
    "method",
    "code",
    "field",
)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "requestId": getattr(record, "requestId", REQUEST_ID.get()),
            "message": record.getMessage(),
        }
        for name in FIELDS:
            if hasattr(record, name):
                line[name] = getattr(record, name)
        return json.dumps(line, separators=(",", ":"))


class _RequestIdFilter(logging.Filter):
    """Stamps the request id on the record when it is made, inside the request's context."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.requestId = REQUEST_ID.get()
        return True


def configure(level: str, fmt: str) -> None:
    logger = logging.getLogger("ipt_cds")
    logger.setLevel(level.upper())
    if not any(isinstance(f, _RequestIdFilter) for f in logger.filters):
        logger.addFilter(_RequestIdFilter())
    # Under uvicorn nobody configures the root logger; under pytest or an embedding
    # application somebody does, and their handlers get our records.
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(
            JsonFormatter() if fmt == "json" else logging.Formatter("%(levelname)s %(message)s")
        )
        logger.addHandler(handler)


def uvicorn_log_config(level: str, fmt: str) -> dict[str, Any]:
    """uvicorn's own loggers (start-up, shutdown, worker processes, errors) written as ours
    are: one JSON object per line with ``json``. Its access log stays off: the service writes
    its own (ipt_cds/http/middleware.py)."""
    formatter = (
        {"()": f"{__name__}.JsonFormatter"}
        if fmt == "json"
        else {"format": "%(levelname)s %(message)s"}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"service": formatter},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "service",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
            "uvicorn.error": {"level": level.upper()},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }
