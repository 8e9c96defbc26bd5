"""The HTTP server's own answers, with a real uvicorn as ``ipt-cds serve`` runs it: a request
the parser refuses is a JSON error with a stable code, the head is bounded, and an offer to
upgrade is declined without losing the request's body."""

from __future__ import annotations

import importlib
import json
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from ipt_cds import cli
from ipt_cds.http.app import create_app
from ipt_cds.http.server import MAX_HEAD_BYTES, MAX_TARGET_BYTES, JsonHttpProtocol
from ipt_cds.knowledge.base import Knowledge
from ipt_cds.ops.config import Settings

from .conftest import NOW
from .fhir_server import free_port
from .serving import serving

FEEDBACK = json.dumps(
    {
        "feedback": [
            {"card": "c-1", "outcome": "overridden", "outcomeTimestamp": "2026-11-25T12:00:00Z"}
        ]
    }
).encode()
UPGRADE = (
    b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n"
)


@pytest.fixture(scope="module")
def port(knowledge: Knowledge, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    db = tmp_path_factory.mktemp("server") / "store.sqlite3"
    app = create_app(
        Settings(database_url=f"sqlite:///{db}"), clock=lambda: NOW, knowledge=knowledge
    )
    port = free_port()
    with serving(app, port, http=JsonHttpProtocol, ws="none"):
        yield port


def exchange(
    port: int, *parts: bytes, expect: int = 1, pause: float = 0.05
) -> list[tuple[int, dict[str, str], Any]]:
    """Send ``parts`` (pausing between them), read until ``expect`` responses are whole or the
    server closes, and answer each: status, headers, JSON body (or the raw body if not JSON)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        for i, part in enumerate(parts):
            if i:
                time.sleep(pause)
            try:
                s.sendall(part)
            except OSError:  # the server refused and closed before we finished
                break
        data = b""
        try:
            while len(_responses(data)) < expect and (chunk := s.recv(65536)):
                data += chunk
        except ConnectionResetError:
            pass
    return _responses(data)


def _responses(data: bytes) -> list[tuple[int, dict[str, str], Any]]:
    """The whole responses in ``data``."""
    out = []
    while b"\r\n\r\n" in data:
        head, _, data = data.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        length = int(headers.get("content-length", "0"))
        if len(data) < length:
            break
        body, data = data[:length], data[length:]
        try:
            parsed: Any = json.loads(body)
        except ValueError:
            parsed = body
        out.append((int(status_line.split()[1]), headers, parsed))
    return out


def _get(target: bytes, *headers: bytes) -> bytes:
    return b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n" + b"".join(headers) + b"\r\n"


def _post_feedback(*headers: bytes, body: bytes = FEEDBACK) -> bytes:
    return (
        b"POST /cds-services/ipt-order-sign/feedback HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\n"
        + b"".join(headers)
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body
    )


@pytest.mark.parametrize(
    ("request_bytes", "status", "code"),
    [
        # not HTTP at all: a TLS ClientHello on the plain port
        (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", 400, "bad_http_request"),
        (b"GET\r\n\r\n", 400, "bad_http_request"),
        (b"GET /health HTTP/9.9\r\nHost: x\r\n\r\n", 400, "bad_http_request"),
        (b"GET /health HTTP/1.1\nHost: x\n\n", 400, "bad_http_request"),
        # request targets the parser or the server cannot take
        (b"GET /he alth HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad_http_request"),
        (b"GET health HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad_http_request"),
        (b"GET /\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad_http_request"),
        (b"CONNECT x:443 HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad_http_request"),
        (_get(b"/" + b"a" * (MAX_TARGET_BYTES + 1)), 414, "uri_too_long"),
        # headers
        (b"GET /health HTTP/1.1\r\nHo st: x\r\n\r\n", 400, "bad_http_request"),
        (b"GET /health HTTP/1.1\r\nHost : x\r\n\r\n", 400, "bad_http_request"),
        (_get(b"/health", b"X-A: a\x01b\r\n"), 400, "bad_http_request"),
        (_get(b"/health", b"X-A: a\r\n b\r\n"), 400, "bad_http_request"),
        (_get(b"/health", b"X-A: " + b"a" * MAX_HEAD_BYTES + b"\r\n"), 431, "headers_too_large"),
        (
            _get(b"/health", *(b"X-%d: %s\r\n" % (i, b"a" * 100) for i in range(1000))),
            431,
            "headers_too_large",
        ),
        # framing of the body
        (_post_feedback(b"Content-Length: 3\r\n"), 400, "bad_http_request"),
        (_post_feedback(b"Transfer-Encoding: chunked\r\n"), 400, "bad_http_request"),
        (_post_feedback(b"Transfer-Encoding: gzip\r\n"), 400, "bad_http_request"),
        # methods: one the parser does not know, and one it knows that no path takes
        (b"FOO /health HTTP/1.1\r\nHost: x\r\n\r\n", 501, "method_not_implemented"),
        (b"PROPFIND /health HTTP/1.1\r\nHost: x\r\n\r\n", 405, "method_not_allowed"),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400, "bad_http_request"),
        # CONNECT, which the parser takes as a switch of protocol, with or without an offer
        (b"CONNECT /health HTTP/1.1\r\nHost: x\r\n\r\n", 405, "method_not_allowed"),
        (_get(b"/health", UPGRADE).replace(b"GET", b"CONNECT", 1), 405, "method_not_allowed"),
        # a near miss reaches the app, which answers it
        (_get(b"/cds-services/"), 404, "not_found"),
        (b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", 404, "not_found"),
    ],
)
def test_every_refusal_is_json_with_a_stable_code(
    port: int, request_bytes: bytes, status: int, code: str
) -> None:
    ((got, headers, body),) = exchange(port, request_bytes)
    assert (got, headers["content-type"]) == (status, "application/json")
    assert body["code"] == code
    assert body["message"]
    if got in (400, 414, 431, 501) and code != "not_found":
        assert headers["connection"] == "close"


def test_a_head_that_never_ends_is_refused_before_it_is_read_whole(port: int) -> None:
    endless = [b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: "] + [b"a" * 8192] * 64
    ((status, _, body),) = exchange(port, *endless, pause=0.002)
    assert (status, body["code"]) == (431, "headers_too_large")


def test_a_head_within_the_limits_is_served(port: int) -> None:
    near = _get(b"/health", b"X-A: " + b"a" * (MAX_HEAD_BYTES - 200) + b"\r\n")
    # sent in pieces, after a first request on the same connection
    ((first, _, _), (second, _, body)) = exchange(
        port, _get(b"/health"), near[:30000], near[30000:], expect=2
    )
    assert (first, second, body) == (200, 200, {"status": "ok"})


def test_expect_100_continue_is_honoured_and_other_expectations_are_ignored(port: int) -> None:
    answers = exchange(port, _post_feedback(b"Expect: 100-continue\r\n"), expect=2)
    assert [status for status, _, _ in answers] == [100, 200]
    ((status, _, body),) = exchange(port, _post_feedback(b"Expect: something-else\r\n"))
    assert (status, body) == (200, {"received": 1, "stored": 0})


@pytest.mark.parametrize(
    "parts",
    [
        pytest.param([_post_feedback(UPGRADE)], id="content-length, one packet"),
        pytest.param(
            [_post_feedback(UPGRADE)[: -len(FEEDBACK)], FEEDBACK[:10], FEEDBACK[10:]],
            id="content-length, body in later packets",
        ),
        pytest.param(
            [
                b"POST /cds-services/ipt-order-sign/feedback HTTP/1.1\r\nHost: x\r\n"
                + UPGRADE
                + b"Transfer-Encoding: chunked\r\n\r\n",
                b"%x\r\n" % len(FEEDBACK) + FEEDBACK + b"\r\n",
                b"0\r\n\r\n",
            ],
            id="chunked",
        ),
    ],
)
def test_an_upgrade_offer_is_declined_and_the_body_still_read(
    port: int, parts: list[bytes]
) -> None:
    # Java's HTTP clients offer h2c with every request; uvicorn alone hands the app no body.
    ((status, _, body),) = exchange(port, *parts)
    assert status == 200
    assert body == {"received": 1, "stored": body["stored"]}


def test_after_a_declined_upgrade_the_connection_goes_on(port: int) -> None:
    answers = exchange(port, _post_feedback(UPGRADE) + _get(b"/ready"), _get(b"/health"), expect=3)
    assert [(status, body.get("status", "-")) for status, _, body in answers] == [
        (200, "-"),
        (200, "ready"),
        (200, "ok"),
    ]
    websocket = _get(
        b"/health",
        b"Connection: Upgrade\r\nUpgrade: websocket\r\n",
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
    )
    ((status, _, body),) = exchange(port, websocket)
    assert (status, body) == (200, {"status": "ok"}), "no WebSockets: an ordinary request"


def test_serve_runs_uvicorn_with_the_json_protocol_and_no_websockets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(kw))
    for key in [k for k in os.environ if k.startswith("IPT_CDS_")]:
        monkeypatch.delenv(key)
    assert cli.main(["serve", "--port", "8999"]) == 0
    (options,) = calls
    module, _, attribute = options["http"].partition(":")
    # An import string: each worker process imports it itself.
    assert getattr(importlib.import_module(module), attribute) is JsonHttpProtocol
    assert options["ws"] == "none"


def test_the_protocol_is_uvicorns_httptools_one() -> None:
    # The subclass leans on uvicorn's hooks (send_400_response, the parser callbacks): a
    # uvicorn that renames them must fail here, not in production.
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    for name in (
        "send_400_response",
        "_unsupported_upgrade_warning",
        "on_message_begin",
        "on_url",
        "on_header",
        "on_headers_complete",
        "on_message_complete",
        "data_received",
    ):
        assert name in vars(HttpToolsProtocol), name
    assert issubclass(JsonHttpProtocol, HttpToolsProtocol)
