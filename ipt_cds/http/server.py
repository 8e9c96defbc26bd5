"""The HTTP server's own answers, in JSON like the app's.

uvicorn answers a request it cannot parse before the app sees it, as plain text (``400
Invalid HTTP request received.``). ``JsonHttpProtocol``, uvicorn's httptools protocol that
``ipt-cds serve`` passes as ``http=``, answers those in JSON with a stable code, and bounds
the request head, which uvicorn's httptools protocol does not (a megabyte-long header was
read whole):

    status  code                     when
    400     bad_http_request         not HTTP/1.x: a malformed request line, header or chunk,
                                     an invalid request target, conflicting Content-Length
    414     uri_too_long             a request target over MAX_TARGET_BYTES
    431     headers_too_large        a request head over MAX_HEAD_BYTES
    501     method_not_implemented   a method the parser does not know (``FOO /``); a method it
                                     knows that a path does not take is the app's 405

Each closes the connection (the parser cannot find the next request). The rest of uvicorn's
own answers never happen here: its plain-text 500 only when the app fails without answering
(Starlette's outermost layer answers first, with our JSON 500), its 503 only with
``limit_concurrency`` (not set), and ``ipt-cds serve`` runs without WebSockets (``ws="none"``)
so an ``Upgrade: websocket`` request is an ordinary request rather than a bare 403.

An offer to upgrade (``Connection: Upgrade``, ``Upgrade: h2c``, which Java's HTTP clients send
with every request) is declined by answering the request as HTTP/1.1, as RFC 9110 section 7.8
allows. httptools stops at the end of such a request's head, and uvicorn then hands the app an
empty body (uvicorn issue #2722): here the head is parsed again without the offer, by a fresh
parser, so that the body reaches the request already started, and the connection goes on.
"""

from __future__ import annotations

import logging
import re
import sys

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

log = logging.getLogger("ipt_cds")

# The longest request target taken: ours are under 100 bytes.
MAX_TARGET_BYTES = 8 * 1024
# The longest request line and headers taken, together: an EHR's JWT is a few kilobytes.
MAX_HEAD_BYTES = 64 * 1024
# RFC 9110 token characters: a method the parser does not know but that is a method.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+ ")


class _Refused(Exception):
    """Raised in a parser callback, after it set the answer: the parser stops, and uvicorn's
    handler of its error calls ``send_400_response``."""


class JsonHttpProtocol(HttpToolsProtocol):
    # Per connection: bytes received since the current request began, while its head is still
    # incomplete; the size of the head as parsed; the answer a callback chose.
    _received_in_head = 0
    _head_size = 0
    _in_head = True
    _request_start = b""
    _refusal: tuple[int, str, str] | None = None
    # The bytes being parsed, and whether the head being parsed is a declined upgrade's again.
    _data = b""
    _replaying = False
    _declining = False  # replaying now: an upgrade met then is not declined again

    def data_received(self, data: bytes) -> None:
        self._data = data
        if self._in_head:
            if not self._received_in_head:
                self._request_start = data[:32]
            self._received_in_head += len(data)
        super().data_received(data)
        # A head that never ends: httptools buffers a header until its end, so refuse it here
        # rather than wait for a callback that would come too late.
        if (
            self._in_head
            and self._received_in_head > MAX_HEAD_BYTES
            and not self.transport.is_closing()
        ):
            self._refusal = _too_large_head()
            self.send_400_response("")

    def on_message_begin(self) -> None:
        if self._replaying:
            return
        super().on_message_begin()
        self._in_head, self._head_size, self._refusal = True, 0, None

    def on_url(self, url: bytes) -> None:
        if self._replaying:
            return
        super().on_url(url)
        if len(self.url) > MAX_TARGET_BYTES:
            message = f"The request target is over {MAX_TARGET_BYTES} bytes."
            self._refusal = (414, "uri_too_long", message)
            raise _Refused

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._replaying:
            return
        self._head_size += len(name) + len(value) + 4  # ": " and CRLF
        if self._head_size + len(self.url) > MAX_HEAD_BYTES:
            self._refusal = _too_large_head()
            raise _Refused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head, self._received_in_head = False, 0
        if not self._replaying:
            super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head, self._received_in_head, self._replaying = True, 0, False

    def send_400_response(self, msg: str) -> None:
        """uvicorn calls this (from ``data_received``'s handler of the parser's error) with its
        plain-text message; the error being handled says which answer it is."""
        status, code, message = self._refusal or _answer(sys.exc_info()[1], self._request_start)
        body = orjson.dumps({"code": code, "message": message})
        content = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend(
            [
                b"content-type: application/json\r\n",
                b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                b"connection: close\r\n",
                b"\r\n",
                body,
            ]
        )
        self.transport.write(b"".join(content))
        self.transport.close()
        log.info("refused an HTTP request: %d %s", status, code, extra={"event": "refused"})

    def _unsupported_upgrade_warning(self) -> None:
        """Called by uvicorn where httptools stopped at the end of an upgrade offer's head (it
        took the offer as accepted and ended the request there, body unread)."""
        error = sys.exc_info()[1]
        offered = any(name == b"upgrade" for name, _ in self.headers or [])
        if (
            not isinstance(error, httptools.HttpParserUpgrade)
            or self.cycle is None
            or not offered
            or self._declining
        ):
            # CONNECT (the parser upgrades it, Upgrade header or not): the app answers its 405,
            # and what follows is not parsed, as uvicorn does.
            return
        rest = self._data[error.args[0] :]
        # The request started without its body: it has one to come, if its head says so.
        self.cycle.more_body = True
        self.cycle.message_event.clear()
        self.parser = httptools.HttpRequestParser(self)
        self.parser.set_dangerous_leniencies(lenient_data_after_close=True)
        self._replaying = self._declining = True
        log.debug("declined an upgrade offer", extra={"event": "upgrade-declined"})
        try:
            self.data_received(self._head_without_upgrade() + rest)
        finally:
            self._declining = False

    def _head_without_upgrade(self) -> bytes:
        version = self.scope.get("http_version", "1.1").encode("ascii")
        lines = [self.scope["method"].encode("ascii") + b" " + self.url + b" HTTP/" + version]
        for name, value in self.headers:
            if name == b"upgrade":
                continue
            if name == b"connection":
                tokens = [t.strip() for t in value.split(b",")]
                value = b", ".join(t for t in tokens if t.lower() != b"upgrade")
                if not value:
                    continue
            lines.append(name + b": " + value)
        return b"\r\n".join(lines) + b"\r\n\r\n"


def _too_large_head() -> tuple[int, str, str]:
    return (
        431,
        "headers_too_large",
        f"The request line and headers are over {MAX_HEAD_BYTES} bytes.",
    )


def _answer(error: BaseException | None, start: bytes) -> tuple[int, str, str]:
    if isinstance(error, httptools.HttpParserInvalidMethodError) and _TOKEN.match(start):
        return 501, "method_not_implemented", "The service answers GET, HEAD, OPTIONS and POST."
    if isinstance(error, httptools.HttpParserCallbackError):
        # uvicorn's own callbacks fail on a target it cannot parse or decode; their message
        # may quote it, so it is not repeated.
        reason = "invalid request target"
    else:
        # llhttp's reasons are fixed phrases ("Invalid header value char"): no request text.
        reason = str(error) if error is not None else "unreadable"
    return 400, "bad_http_request", f"The request is not valid HTTP/1.1: {reason}."
