"""Errors with stable codes, and how each becomes an HTTP answer.

    ServiceError            status + stable code + message (+ the offending field)
    ├── BadRequest          400: malformed JSON, a CDS Hooks spec violation
    ├── NotFound            404: unknown service
    └── PrefetchUnavailable 412: data is missing and cannot be fetched

    KnowledgeError          a file in cards/ is wrong: raised at start-up, never per request

Clients may branch on ``code``; messages are for people and may change. Anything else that
escapes a handler is caught by ``ErrorBoundary``: a JSON 500, and one log line without the
exception's text (which may quote patient data) and without a traceback on stderr.
"""

from __future__ import annotations

import logging
import traceback

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("ipt_cds")


class ServiceError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        if code is not None:
            self.code = code

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


class KnowledgeError(Exception):
    """A knowledge file is missing or wrong: the service must not start. Names the file first."""


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
    for err in errors[:10]:
        where = location(tuple(err["loc"]))
        where = f"{prefix}.{where}" if prefix and where else (prefix or where)
        message = err["msg"].removeprefix("Value error, ")
        problems.append(f"{where or 'body'}: {message}")
    first = location(tuple(errors[0]["loc"])) if errors else ""
    first = f"{prefix}.{first}" if prefix and first else (prefix or first)
    more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
    return BadRequest("; ".join(problems) + more, field=first or None)


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def request_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{location(tuple(e['loc']))}: {e['msg']}" for e in exc.errors()[:10]]
        return JSONResponse(
            {"code": "invalid_request", "message": "; ".join(problems)}, status_code=400
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        # Keep the exception's headers: a 405 must say which methods are Allowed.
        body = {"code": code, "message": str(exc.detail)}
        return JSONResponse(body, exc.status_code, headers=exc.headers)

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, _: ClientDisconnect) -> Response:
        # Nobody is left to answer; 499 (as nginx counts it) keeps the metrics honest.
        log.info("client disconnected before %s %s was read", request.method, request.url.path)
        return Response(status_code=499)


_INTERNAL_ERROR = orjson.dumps(
    {"code": "internal_error", "message": "The service failed; the error was logged."}
)


class ErrorBoundary:
    """The last handler: Starlette's own re-raises to the server, which prints the exception's
    text and traceback to stderr. Here the log line names the exception's type and where it
    was raised, which is enough to find the bug and cannot carry patient data."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if scope["type"] != "http":
                raise
            log.error(
                "unhandled %s at %s on %s %s",
                type(exc).__name__,
                _raised_at(exc),
                scope["method"],
                scope["path"],
            )
            if started:
                return  # the status line is gone; the server closes the connection
            await send(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": _INTERNAL_ERROR})


def _raised_at(exc: BaseException) -> str:
    """``file:line in function`` of the innermost frame; walk_tb, unlike extract_tb, reads no
    source files."""
    frames = list(traceback.walk_tb(exc.__traceback__))
    if not frames:
        return "an unknown place"
    frame, line = frames[-1]
    return f"{frame.f_code.co_filename.rsplit('/', 1)[-1]}:{line} in {frame.f_code.co_name}"
