"""Errors with stable codes: what the service answers when a request cannot be served.

    ServiceError            status + stable code + message (+ the offending field)
    ├── BadRequest          400: malformed JSON, a CDS Hooks spec violation
    ├── NotFound            404: unknown service or rule (its evidence page)
    ├── PrefetchUnavailable 412: data is missing and cannot be fetched
    └── Unavailable         503: cannot be taken now, try again (``Retry-After``)

Clients may branch on ``code``; messages are for people and may change. ipt_cds/http/errors.py
turns them into HTTP answers; a file the service starts from being wrong is a
``KnowledgeError`` (ipt_cds/knowledge/errors.py), never an answer.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

# A huge body can break every field at once; the first few say enough and keep the answer small.
MAX_PROBLEMS_SHOWN = 10


class ServiceError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        if code is not None:
            self.code = code

    def headers(self) -> dict[str, str]:
        """Headers the answer carries besides its body (a 401's ``WWW-Authenticate``)."""
        return {}

    def body(self) -> dict[str, str]:
        body = {"code": self.code, "message": self.message}
        if self.field:
            body["field"] = self.field
        return body


class BadRequest(ServiceError):
    status = 400
    code = "invalid_request"


class NotFound(ServiceError):
    status = 404
    code = "not_found"


class PrefetchUnavailable(ServiceError):
    status = 412
    code = "prefetch_unavailable"


class Unavailable(ServiceError):
    """Nothing was kept: the client should send the same request again after
    ``retry_after`` seconds (a 503 is what retrying clients and proxies understand)."""

    status = 503
    code = "unavailable"
    retry_after = 5

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class Busy(Unavailable):
    """What the call would need to read does not fit in the process's budget of bytes in
    flight just now (ipt_cds/ops/inflight.py)."""

    code = "busy"
    retry_after = 1

    def __init__(self, what: str) -> None:
        super().__init__(
            f"The service is reading too much at once to take {what} now "
            "(IPT_CDS_MAX_BYTES_IN_FLIGHT). Send it again in a moment."
        )


def location(loc: tuple[int | str, ...]) -> str:
    """``("context", "selections", 0)`` -> ``context.selections[0]``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def from_validation_error(exc: ValidationError, prefix: str = "") -> BadRequest:
    """The first error names the field; the message lists them all (capped, for huge bodies)."""
    errors = exc.errors(include_input=False, include_url=False)
    problems = []
    for err in errors[:MAX_PROBLEMS_SHOWN]:
        where = location(tuple(err["loc"]))
        where = f"{prefix}.{where}" if prefix and where else (prefix or where)
        message = err["msg"].removeprefix("Value error, ")
        problems.append(f"{where or 'body'}: {message}")
    first = location(tuple(errors[0]["loc"])) if errors else ""
    first = f"{prefix}.{first}" if prefix and first else (prefix or first)
    extra = len(errors) - MAX_PROBLEMS_SHOWN
    more = f" (and {extra} more)" if extra > 0 else ""
    return BadRequest("; ".join(problems) + more, field=first or None)


def json_kind(value: Any) -> str:
    """What a JSON value is, in JSON's words (a message must not say Python's ``NoneType``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"
