"""A FHIR answer's body, read and decompressed under a byte budget that a server cannot break.

Each answer is streamed and decompressed here, a step of at most 64 KiB at a time, and dropped
as soon as it passes the cap (a gzip bomb never inflates); a single gzip or deflate encoding
is accepted, nothing else.
"""

from __future__ import annotations

import zlib

import httpx

from ipt_cds.ops.inflight import BytesInFlight

# The encodings we decompress ourselves (br and zstd would need libraries the service does not
# ship, and brotli's decompressor cannot bound its output on the versions in use).
_ENCODINGS = {"gzip": "gzip", "x-gzip": "gzip", "deflate": "deflate"}
ACCEPT_ENCODING = "gzip, deflate"
# The most a single decompression step may produce: the largest piece held besides the answer.
_STEP = 64 * 1024


class Refused(Exception):
    """An answer that is dropped: the 412's code and what was wrong (no data from the answer)."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class _Overflow(Exception):
    """The decoder passed its limit."""


class Budget:
    """The bytes a query's answers may still take, once decompressed; with ``pool``, also
    within the process's bytes in flight, which hold what is read until ``release``."""

    def __init__(self, cap: int, pool: BytesInFlight | None = None) -> None:
        self.cap = cap
        self.left = cap
        self.pool = pool
        # What ``pool`` holds for this query.
        self.held = 0

    @property
    def spent(self) -> int:
        """Bytes decompressed so far, including an answer dropped for passing the cap."""
        return self.cap - self.left

    def too_large(self) -> Refused:
        return Refused(
            "fhir_answer_too_large",
            f"is larger than {self.cap} bytes (IPT_CDS_FHIR_MAX_ANSWER_BYTES)",
        )

    def limit(self, produced: int) -> int:
        """The most this answer may decompress to, ``produced`` of it so far (and held)."""
        if self.pool is None:
            return self.left
        return min(self.left, produced + self.pool.room)

    def refusal(self, produced: int) -> Refused:
        """Why an answer passed ``limit``: its own cap, or the process's budget."""
        if self.pool is not None and produced + self.pool.room < self.left:
            return Refused("fhir_busy", "was dropped: the service is reading too much at once")
        return self.too_large()

    def hold(self, spent: int) -> None:
        """The process's budget holds ``spent`` bytes for this query (decompressed so far)."""
        if self.pool is not None and spent > self.held:
            self.pool.hold(spent - self.held)
            self.held = spent

    def release(self) -> None:
        """The query's answers are let go of: the process's budget takes them back."""
        if self.pool is not None:
            self.pool.give(self.held)
            self.held = 0


async def read_body(response: httpx.Response, budget: Budget) -> bytes:
    """The body, decompressed, never more than the budget (plus one byte, to know)."""
    encoding = _encoding(response)
    try:
        # Only a test transport hands over a response it built whole, and httpx decoded it.
        whole: bytes | None = response.content
    except httpx.ResponseNotRead:
        whole = None
    decoder = _Decoder("identity" if whole is not None else encoding)
    length = response.headers.get("content-length", "")
    if decoder.encoding == "identity" and length.isdigit() and int(length) > budget.limit(0):
        raise budget.refusal(0)
    # Pieces of at most 64 KiB, joined once at the end: a growing buffer would copy itself, and
    # an answer over the cap is never joined at all.
    out: list[bytes] = []
    before = budget.spent
    try:
        if whole is not None:
            _take(decoder, whole, out, budget, len(whole), before)
        else:
            received = 0
            async for chunk in response.aiter_raw():
                received += len(chunk)
                _take(decoder, chunk, out, budget, received, before)
        decoder.finish()
    except BaseException:
        out.clear()  # see _forget
        raise
    finally:
        # Also what an answer dropped over the cap took: the heap holds its freed pieces.
        budget.left -= decoder.produced
        budget.hold(before + decoder.produced)
    return b"".join(out)


def _take(
    decoder: _Decoder, chunk: bytes, out: list[bytes], budget: Budget, received: int, before: int
) -> None:
    # Compressed data is smaller than what it decompresses to: more than the budget of it is a
    # stream of empty gzip members or worse.
    if received > budget.left:
        raise budget.too_large()
    limit = budget.limit(decoder.produced)
    try:
        decoder.feed(chunk, out, limit)
    except _Overflow:
        raise budget.refusal(decoder.produced) from None
    finally:
        budget.hold(before + decoder.produced)


def _encoding(response: httpx.Response) -> str:
    named = response.headers.get_list("content-encoding", split_commas=True)
    codings = [c.strip().lower() for c in named]
    codings = [c for c in codings if c not in ("", "identity")]
    if len(codings) > 1:
        raise Refused("fhir_error", "is encoded several times over (Content-Encoding)")
    if not codings:
        return "identity"
    if codings[0] not in _ENCODINGS:
        raise Refused("fhir_error", f"has a Content-Encoding other than {ACCEPT_ENCODING}")
    return _ENCODINGS[codings[0]]


class _Decoder:
    """Decompresses one answer without ever producing more than ``limit`` + 1 bytes: each zlib
    step asks for at most 64 KiB, and the first byte past the limit stops it. ``produced``
    counts what came out (the tests check a bomb stops at the cap)."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self.produced = 0
        self._zlib = None if encoding == "identity" else self._start(raw=False)
        # Some servers send raw deflate, without the zlib wrapper HTTP asks for: until deflate
        # output comes, the input is kept to start again without the wrapper on an error.
        self._unsure = encoding == "deflate"
        self._seen = bytearray()

    def _start(self, *, raw: bool) -> zlib._Decompress:
        if raw:
            return zlib.decompressobj(-zlib.MAX_WBITS)
        return zlib.decompressobj(16 + zlib.MAX_WBITS if self.encoding == "gzip" else 15)

    def feed(self, data: bytes, out: list[bytes], limit: int) -> None:
        """Append what ``data`` decodes to to ``out``; _Overflow past ``limit`` in all."""
        if self._zlib is None:
            out.append(data)
            self.produced += len(data)
            if self.produced > limit:
                raise _Overflow
            return
        if self._unsure:
            self._seen += data
            if len(self._seen) > _STEP:  # long past any zlib header: no more doubt
                self._unsure, self._seen = False, bytearray()
        pending = data
        while True:
            if self._zlib.eof:
                if not pending:
                    return
                if self.encoding != "gzip":
                    raise Refused("fhir_error", "has data after the end of its deflate stream")
                self._zlib = self._start(raw=False)  # gzip allows several members
            step = min(_STEP, limit - self.produced + 1)
            try:
                chunk = self._zlib.decompress(pending, step)
            except zlib.error:
                if not self._unsure:
                    raise Refused("fhir_error", f"is not valid {self.encoding}") from None
                self._zlib, pending = self._start(raw=True), bytes(self._seen)
                self._unsure, self._seen = False, bytearray()
                continue
            if chunk and self._unsure:
                self._unsure, self._seen = False, bytearray()
            if chunk:
                out.append(chunk)
            self.produced += len(chunk)
            if self.produced > limit:
                raise _Overflow
            rest = self._zlib.unused_data if self._zlib.eof else self._zlib.unconsumed_tail
            if not rest and len(chunk) < step:
                return
            # A full step may have left output inside zlib: ask again until it comes short.
            if rest and not chunk and rest == pending:
                raise Refused("fhir_error", f"is not valid {self.encoding}")  # no progress
            pending = rest

    def finish(self) -> None:
        if self._zlib is not None and not self._zlib.eof:
            raise Refused("fhir_error", f"ends inside its {self.encoding} stream (truncated)")
