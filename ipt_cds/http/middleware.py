"""The ASGI middlewares every request passes: a request id on it and its log lines, and its
timing in the metrics. Pure ASGI, so that they cost next to nothing and see every response.
Also CORS (only with IPT_CDS_CORS_ORIGINS), answering its preflights in JSON like the rest."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ipt_cds.ops.inflight import BytesInFlight
from ipt_cds.ops.logs import (
    REQUEST_ID,
    SANE_REQUEST_ID,
    CallLog,
    note_refusal,
    start_request_log,
)
from ipt_cds.ops.memory import HeapTrimmer
from ipt_cds.ops.metrics import Metrics
from ipt_cds.protocol.errors import Busy

log = logging.getLogger("ipt_cds")


# Probes a platform sends every few seconds: their access lines at DEBUG, not INFO.
_PROBES = frozenset({"/health", "/ready", "/metrics"})


class RequestIdMiddleware:
    """A request id on every request, and the access log: one line per request with the path
    only, never the query string (a token sent there, refused, must not reach the log), left out
    when the handler logged the call itself. Uvicorn's own access log is off (ipt_cds/cli.py)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), "")
        request_id = given if SANE_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        token = REQUEST_ID.set(request_id)
        logged = start_request_log()
        started, status = time.perf_counter(), 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if not logged.logged:
                _access(scope, status, started, logged)
            REQUEST_ID.reset(token)


def _access(scope: Scope, status: int, started: float, call: CallLog) -> None:
    path, method = scope["path"], scope["method"]
    ms = round((time.perf_counter() - started) * 1000, 1)
    extra: dict[str, object] = {
        "event": "access",
        "method": method,
        "path": path,
        "status": status,
        "ms": ms,
    }
    why = ""
    if call.code is not None and status >= 400:
        extra["code"] = call.code
        why = f" code={call.code}"
        if call.field:
            extra["field"] = call.field
            why += f" field={call.field}"
    log.log(
        logging.DEBUG if path in _PROBES and status < 400 else logging.INFO,
        "%s %s %d ms=%.1f%s",
        method,
        path,
        status,
        ms,
        why,
        extra=extra,
    )


class MetricsMiddleware:
    """Times every call; labels stay few: the endpoint kind and a known service id."""

    def __init__(self, app: ASGIApp, metrics: Metrics, services: frozenset[str]) -> None:
        self.app, self.metrics, self.services = app, metrics, services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint, service = self._labels(scope["path"])
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.requests.labels(endpoint, service, str(status)).observe(
                time.perf_counter() - started
            )

    def _labels(self, path: str) -> tuple[str | None, str]:
        parts = path.strip("/").split("/")
        if parts[0] != "cds-services":
            return None, "-"
        if len(parts) == 1:
            return "discovery", "-"
        service = parts[1] if parts[1] in self.services else "unknown"
        return ("feedback" if len(parts) == 3 else "hook"), service


# Bodies from this size on count towards the next heap trim (ipt_cds/ops/memory.py).
LARGE_BODY_BYTES = 1024 * 1024


class InFlightMiddleware:
    """Every request body counts against the process's bytes in flight from its first byte to
    the end of its answer (ipt_cds/ops/inflight.py): a body that does not fit is refused, as it
    arrives, with 503 ``busy`` (the exception raised where the route reads it). A large body
    is handed to the heap trimmer when its request ends: a flood of them leaves their freed
    pieces in the heap otherwise (ordinary bodies, tens of kB, are reused as they are)."""

    def __init__(
        self, app: ASGIApp, pool: BytesInFlight, heap: HeapTrimmer, metrics: Metrics
    ) -> None:
        self.app, self.pool, self.heap, self.metrics = app, pool, heap, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held = 0

        async def counted() -> Message:
            nonlocal held
            message = await receive()
            size = len(message.get("body", b"")) if message["type"] == "http.request" else 0
            if size:
                if not self.pool.take(size):
                    self.metrics.busy.inc()
                    raise Busy("this request's body")
                held += size
            return message

        try:
            await self.app(scope, counted, send)
        finally:
            self.pool.give(held)
            if held >= LARGE_BODY_BYTES:
                self.heap.released(held)


SANDBOX_ORIGIN = "https://sandbox.cds-hooks.org"
# A page served from this machine, any port: a local copy of the sandbox, a test harness.
LOOPBACK_ORIGINS = r"https?://(localhost|127\.0\.0\.1|\[::1\])(:[0-9]{1,5})?"
# Refusals are logged once per origin: a page retrying must not flood the log.
_MAX_ORIGINS_LOGGED = 100


class JsonCORSMiddleware(CORSMiddleware):
    """Starlette's CORS, whose preflight answers (``OK``, ``Disallowed CORS origin``) are plain
    text: the same status and headers, in JSON; a refusal logged with the origin and the
    setting that would allow it.

    Chrome asks ``Access-Control-Request-Private-Network: true`` (Private Network Access) when
    a public page, the hosted CDS Hooks sandbox, calls a service on this machine or network,
    and blocks the call unless the answer allows it: Starlette's ``allow_private_network``,
    which the app sets with the sandbox setting. Refused, the sandbox shows no cards."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._logged: set[str] = set()

    def preflight_response(self, request_headers: Headers) -> Response:
        plain = super().preflight_response(request_headers)
        headers = {
            k: v for k, v in plain.headers.items() if k not in ("content-length", "content-type")
        }
        if plain.status_code == 200:
            return JSONResponse({"status": "ok"}, headers=headers)
        message = bytes(plain.body).decode()  # "Disallowed CORS origin, method"
        self._log_refusal(request_headers.get("origin", "")[:200], message)
        note_refusal("cors_refused")
        return JSONResponse(
            {"code": "cors_refused", "message": message}, plain.status_code, headers=headers
        )

    def _log_refusal(self, origin: str, message: str) -> None:
        if origin in self._logged or len(self._logged) >= _MAX_ORIGINS_LOGGED:
            return
        self._logged.add(origin)
        log.warning(
            "CORS preflight refused for origin %s (%s): allow it with IPT_CDS_CORS_ORIGINS, or "
            "IPT_CDS_SANDBOX=true (ipt-cds serve --sandbox) for the CDS Hooks sandbox and "
            "pages on this machine, private-network preflights included (docs/integration.md)",
            origin,
            message.removeprefix("Disallowed CORS "),
            extra={"event": "cors-refused"},
        )
