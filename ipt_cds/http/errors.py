"""How errors become HTTP answers: stable-code JSON for ours, FastAPI's and Starlette's, and a
last boundary for anything unexpected.

Anything that escapes a handler is caught by ``ErrorBoundary``: a JSON 500, and one log line
without the exception's text (which may quote patient data) and without a traceback on stderr.
"""

from __future__ import annotations

import logging
import traceback

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ipt_cds.ops.logs import mark_call_logged, note_refusal
from ipt_cds.protocol.errors import MAX_PROBLEMS_SHOWN, ServiceError, location

log = logging.getLogger("ipt_cds")


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(_: Request, exc: ServiceError) -> JSONResponse:
        note_refusal(exc.code, exc.field)
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers())

    @app.exception_handler(RequestValidationError)
    async def request_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()[:MAX_PROBLEMS_SHOWN]
        problems = [f"{location(tuple(e['loc']))}: {e['msg']}" for e in errors]
        note_refusal("invalid_request", location(tuple(errors[0]["loc"])) if errors else None)
        return JSONResponse(
            {"code": "invalid_request", "message": "; ".join(problems)}, status_code=400
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = str(exc.detail)
        path = request.url.path
        if exc.status_code == 404 and len(path) > 1 and path.endswith("/"):
            # Routes never redirect (redirect_slashes=False); say what the near miss was.
            message = f"Not Found: no path ends with '/' (did you mean {path.rstrip('/')}?)"
        note_refusal(code)
        # Keep the exception's headers: a 405 must say which methods are Allowed.
        body = {"code": code, "message": message}
        return JSONResponse(body, exc.status_code, headers=exc.headers)

    # Starlette's outermost layer answers what escapes every middleware (ErrorBoundary is the
    # innermost) with a plain-text 500; this makes that answer ours too. Starlette then
    # re-raises it to the server, which logs it.
    @app.exception_handler(Exception)
    async def escaped(_: Request, exc: Exception) -> Response:
        log.error(
            "unhandled %s at %s outside the error boundary", type(exc).__name__, _raised_at(exc)
        )
        return Response(_INTERNAL_ERROR, 500, media_type="application/json")

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, _: ClientDisconnect) -> Response:
        # Nobody is left to answer; 499 (as nginx counts it) keeps the metrics honest.
        mark_call_logged()  # this line says it all: no access line beside it
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
