"""Read what the prefetch lacked from the EHR's FHIR server: concurrently, bounded, never leaking.

One ``httpx.AsyncClient`` serves the whole process (a new one per call costs ~18 ms). Every
failure a FHIR server, or the request's fhirServer and token, can cause becomes a 412 with a
stable code, because CDS Hooks asks a service that cannot get its data to say so rather than
to guess:

    fhir_server_not_allowed  fhirServer is not an http(s) URL at all
    fhir_unauthorized        401/403 from the FHIR server, or a token no HTTP header can carry
    fhir_unavailable         connection failure or 5xx, after bounded retries
    fhir_timeout             a request, or the whole fetch, ran out of time
    fhir_answer_too_large    a query's answers, decompressed, passed IPT_CDS_FHIR_MAX_ANSWER_BYTES
    fhir_wrong_data          FHIR, but not what was asked: another resource, type or patient
    fhir_error               any other answer that is not FHIR JSON we can use

What a FHIR server sends is never trusted with memory or time: each answer is streamed and
decompressed here, a step of at most 64 KiB at a time, and dropped as soon as it passes the
cap; a single gzip or deflate encoding is accepted, nothing else. The whole fetch (waiting for
a connection, connecting, sending, reading, decompressing, parsing) runs under one deadline.
Every response is read inside ``async with``, so its connection goes back to the pool (or is
closed) on every path, cancellation included.

The bearer token goes only into the Authorization header of requests to the request's own
fhirServer (``next`` links elsewhere are not followed) and never into a log line.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import anyio
import httpx
import orjson

from service.ops.config import Settings
from service.ops.metrics import Metrics
from service.protocol.errors import PrefetchUnavailable
from service.protocol.models import Resource

log = logging.getLogger("ipt_cds")

# Gateway answers: a proxy or load balancer before the FHIR server, or the server itself, is
# briefly unable to serve, and the same request may well succeed at once. Other answers would
# be the same again; a timeout has already spent the time a retry would need.
_RETRY_STATUS = {502, 503, 504}

# The encodings we decompress ourselves (br and zstd would need libraries the service does not
# ship, and brotli's decompressor cannot bound its output on the versions in use).
_ENCODINGS = {"gzip": "gzip", "x-gzip": "gzip", "deflate": "deflate"}
ACCEPT_ENCODING = "gzip, deflate"
# The most a single decompression step may produce: the largest piece held besides the answer.
_STEP = 64 * 1024
# Parsing 8 MiB of small resources takes 0.2-0.4 s; beyond this size it runs in a worker
# thread, so that the event loop keeps serving other calls and the deadline fires on time.
_PARSE_IN_THREAD = 1024 * 1024
# Connections beyond fhir_max_connections for the other users of the same client (the JWKS
# fetches of service/http/auth.py, one at a time), so that FHIR requests never queue in the pool.
_SPARE_CONNECTIONS = 2

# What an RFC 6750 bearer token may contain, give or take: printable ASCII without spaces. A
# token outside it cannot be put in a header (httpx would raise) and is refused unsent.
_TOKEN = re.compile(r"[\x21-\x7e]+")
_TYPE = re.compile(r"[A-Z][A-Za-z]{1,63}")
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


class FhirClient:
    def __init__(
        self, http: httpx.AsyncClient, settings: Settings, metrics: Metrics | None = None
    ) -> None:
        self._http = http
        self._settings = settings
        self._metrics = metrics
        # httpcore 1.0 leaks a pool slot for good when a request waiting in its queue is
        # cancelled just as a new connection is made for it (encode/httpcore#1093): a few
        # failed fetches, whose sibling queries the task group cancels, and every later fetch
        # times out. Requests therefore wait here, never in the pool's queue (whose limit is
        # this one plus _SPARE_CONNECTIONS).
        self._slots = asyncio.Semaphore(settings.fhir_max_connections)

    @staticmethod
    def make_http(
        settings: Settings, transport: httpx.AsyncBaseTransport | None = None
    ) -> httpx.AsyncClient:
        size = settings.fhir_max_connections + _SPARE_CONNECTIONS
        limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
        return httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(settings.fhir_timeout_seconds),
            limits=limits,
            follow_redirects=False,
            headers={"Accept": "application/fhir+json", "Accept-Encoding": ACCEPT_ENCODING},
        )

    async def fetch_all(
        self, base: str, queries: dict[str, str], token: str | None
    ) -> dict[str, list[Resource]]:
        """Run every query at once; the answer holds, per key, the pages (or the resource) read."""
        try:
            return await self._fetch_all(base, queries, token)
        except PrefetchUnavailable as failure:
            self._count_error(failure.code)
            raise

    async def _fetch_all(
        self, base: str, queries: dict[str, str], token: str | None
    ) -> dict[str, list[Resource]]:
        headers = _authorization(token)
        base = _checked_base(base)
        parsed = {key: _Query.parse(key, query) for key, query in queries.items()}
        total = self._settings.fhir_total_timeout_seconds
        fetched: dict[str, list[Resource]] = {}

        async def read(key: str, query: _Query) -> None:
            fetched[key] = await self._read(base, query, headers)

        failure: PrefetchUnavailable | None = None
        try:
            # anyio, not asyncio.TaskGroup and asyncio.timeout: its cancellation respects the
            # shielded scopes in which httpcore puts a connection back or closes it. A native
            # task.cancel() goes through them, and a sibling's failure or the deadline landing
            # while a connection is being closed leaves it "active" in the pool for good.
            with anyio.fail_after(total):
                async with anyio.create_task_group() as group:
                    for key, query in parsed.items():
                        group.start_soon(read, key, query)
        except ExceptionGroup as failures:  # what the tasks raised, the first one first
            failure = _fresh(_first_meaningful(failures))
        except TimeoutError:
            log.warning("fhir fetch exceeded its %.1fs budget", total)
            failure = PrefetchUnavailable(
                "The FHIR server did not answer in time.", code="fhir_timeout"
            )
        except BaseException:
            fetched.clear()  # see _forget
            raise
        if failure is not None:
            fetched.clear()  # this frame lives as long as the failure's traceback
            raise failure  # out of the except blocks: no __context__, see _fresh
        return {key: fetched[key] for key in parsed}

    async def _read(self, base: str, query: _Query, headers: dict[str, str]) -> list[Resource]:
        """A read answers one resource; a search is followed through its ``next`` links."""
        try:
            return await self._pages(base, query, headers)
        except PrefetchUnavailable as exc:
            failure = _fresh(exc)
        except Exception as exc:
            # Nothing a server sends may end as a 500; the type says enough, the text could
            # quote the answer.
            log.error("fhir %s: unexpected %s", query.key, type(exc).__name__)
            failure = PrefetchUnavailable(
                f"The FHIR server's answer to the {query.key} query could not be used.",
                code="fhir_error",
            )
        raise failure  # out of the except blocks: no __context__, see _fresh

    async def _pages(self, base: str, query: _Query, headers: dict[str, str]) -> list[Resource]:
        started = time.perf_counter()
        budget = _Budget(self._settings.fhir_max_answer_bytes)
        pages: list[Resource] = []
        url: str | None = f"{base}/{query.text.lstrip('/')}"
        try:
            while url is not None:
                page = await self._get(query, url, headers, budget)
                if page is None:
                    break
                pages.append(page)
                url = _next_link(page, base)
                if url is not None and len(pages) >= self._settings.fhir_max_pages:
                    log.warning("fhir %s: stopped after %d pages", query.key, len(pages))
                    break
        except BaseException:
            pages.clear()  # see _forget
            raise
        if self._metrics is not None:
            self._metrics.fhir.labels(query.key).observe(time.perf_counter() - started)
        return pages

    def _count_error(self, code: str) -> None:
        if self._metrics is not None:
            self._metrics.fhir_errors.labels(code).inc()

    async def _get(
        self, query: _Query, url: str, headers: dict[str, str], budget: _Budget
    ) -> Resource | None:
        key = query.key
        attempts = self._settings.fhir_retries + 1
        for attempt in range(1, attempts + 1):
            try:
                async with self._slots, self._http.stream("GET", url, headers=headers) as response:
                    status = response.status_code
                    if status in _RETRY_STATUS and attempt < attempts:
                        log.warning("fhir %s: HTTP %d (attempt %d)", key, status, attempt)
                        continue
                    if not _usable_status(query, response):
                        return None
                    body = await _read_body(response, budget)
            except httpx.TimeoutException:
                log.warning("fhir %s: timed out", key)
                raise PrefetchUnavailable(
                    f"The FHIR server did not answer the {key} query in time.", code="fhir_timeout"
                ) from None
            except (httpx.LocalProtocolError, httpx.UnsupportedProtocol) as exc:
                # Our side could not even form the request: trying again would do the same.
                log.warning("fhir %s: %s", key, type(exc).__name__)
                raise PrefetchUnavailable(
                    f"The {key} query could not be sent to the FHIR server.", code="fhir_error"
                ) from None
            except httpx.TransportError as exc:
                log.warning("fhir %s: %s (attempt %d)", key, type(exc).__name__, attempt)
                if attempt < attempts:
                    continue
                raise PrefetchUnavailable(
                    f"The FHIR server could not be reached for the {key} query.",
                    code="fhir_unavailable",
                ) from None
            except _Refused as refused:
                log.warning("fhir %s: answer %s", key, refused.reason)
                raise PrefetchUnavailable(
                    f"The FHIR server's answer to the {key} query {refused.reason}.",
                    code=refused.code,
                ) from None
            parsing = _resource(query, body)
            del body  # see _forget: _resource lets go of it once parsed
            return await parsing
        raise AssertionError("unreachable")  # pragma: no cover


# --- the status, the body ------------------------------------------------------------------


class _Refused(Exception):
    """An answer that is dropped: the 412's code and what was wrong (no data from the answer)."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class _Overflow(Exception):
    """The decoder passed its limit."""


class _Budget:
    """The bytes a query's answers may still take, once decompressed."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.left = cap

    def too_large(self) -> _Refused:
        return _Refused(
            "fhir_answer_too_large",
            f"is larger than {self.cap} bytes (IPT_CDS_FHIR_MAX_ANSWER_BYTES)",
        )


def _usable_status(query: _Query, response: httpx.Response) -> bool:
    """True for an answer to read; False for a read of a resource that does not exist."""
    key, status = query.key, response.status_code
    if status in (401, 403):
        log.warning("fhir %s: HTTP %d", key, status)
        raise PrefetchUnavailable(
            f"The FHIR server refused the {key} query (HTTP {status}): check fhirAuthorization.",
            code="fhir_unauthorized",
        )
    if status in (404, 410) and query.is_read:
        # A read of a resource that does not exist: no data, not a failure.
        log.warning("fhir %s: HTTP %d on read; treated as no data", key, status)
        return False
    if status >= 500:
        log.warning("fhir %s: HTTP %d", key, status)
        raise PrefetchUnavailable(
            f"The FHIR server failed on the {key} query (HTTP {status}).", code="fhir_unavailable"
        )
    if status != 200:
        log.warning("fhir %s: HTTP %d", key, status)
        raise PrefetchUnavailable(
            f"The FHIR server answered the {key} query with HTTP {status}.", code="fhir_error"
        )
    return True


async def _read_body(response: httpx.Response, budget: _Budget) -> bytes:
    """The body, decompressed, never more than the budget (plus one byte, to know)."""
    encoding = _encoding(response)
    try:
        # Only a test transport hands over a response it built whole, and httpx decoded it.
        whole: bytes | None = response.content
    except httpx.ResponseNotRead:
        whole = None
    decoder = _Decoder("identity" if whole is not None else encoding)
    length = response.headers.get("content-length", "")
    if decoder.encoding == "identity" and length.isdigit() and int(length) > budget.left:
        raise budget.too_large()
    # Pieces of at most 64 KiB, joined once at the end: a growing buffer would copy itself, and
    # an answer over the cap is never joined at all.
    out: list[bytes] = []
    try:
        if whole is not None:
            _take(decoder, whole, out, budget, len(whole))
        else:
            received = 0
            async for chunk in response.aiter_raw():
                received += len(chunk)
                _take(decoder, chunk, out, budget, received)
        decoder.finish()
    except BaseException:
        out.clear()  # see _forget
        raise
    budget.left -= decoder.produced
    return b"".join(out)


def _take(
    decoder: _Decoder, chunk: bytes, out: list[bytes], budget: _Budget, received: int
) -> None:
    # Compressed data is smaller than what it decompresses to: more than the budget of it is a
    # stream of empty gzip members or worse.
    if received > budget.left:
        raise budget.too_large()
    try:
        decoder.feed(chunk, out, budget.left)
    except _Overflow:
        raise budget.too_large() from None


def _encoding(response: httpx.Response) -> str:
    named = response.headers.get_list("content-encoding", split_commas=True)
    codings = [c.strip().lower() for c in named]
    codings = [c for c in codings if c not in ("", "identity")]
    if len(codings) > 1:
        raise _Refused("fhir_error", "is encoded several times over (Content-Encoding)")
    if not codings:
        return "identity"
    if codings[0] not in _ENCODINGS:
        raise _Refused("fhir_error", f"has a Content-Encoding other than {ACCEPT_ENCODING}")
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
                    raise _Refused("fhir_error", "has data after the end of its deflate stream")
                self._zlib = self._start(raw=False)  # gzip allows several members
            step = min(_STEP, limit - self.produced + 1)
            try:
                chunk = self._zlib.decompress(pending, step)
            except zlib.error:
                if not self._unsure:
                    raise _Refused("fhir_error", f"is not valid {self.encoding}") from None
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
                raise _Refused("fhir_error", f"is not valid {self.encoding}")  # no progress
            pending = rest

    def finish(self) -> None:
        if self._zlib is not None and not self._zlib.eof:
            raise _Refused("fhir_error", f"ends inside its {self.encoding} stream (truncated)")


async def _resource(query: _Query, body: bytes) -> Resource:
    """The answer as JSON, checked to be the FHIR resource the query asked for."""
    try:
        if len(body) > _PARSE_IN_THREAD:
            parsed: Any = await asyncio.to_thread(orjson.loads, body)
        else:
            parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    finally:
        del body  # see _forget
    if not isinstance(parsed, dict) or not isinstance(parsed.get("resourceType"), str):
        log.warning("fhir %s: answer is not a FHIR resource", query.key)
        raise PrefetchUnavailable(
            f"The FHIR server's answer to the {query.key} query is not FHIR JSON.",
            code="fhir_error",
        )
    wrong = query.wrong_data(parsed)
    if wrong is not None:
        del parsed  # see _forget
        # Types only: an id in the log or the message could name another patient.
        log.warning("fhir %s: wrong data: %s", query.key, wrong)
        raise PrefetchUnavailable(
            f"The FHIR server answered the {query.key} query with {wrong}; nothing of it is used.",
            code="fhir_wrong_data",
        )
    return parsed


# --- what was asked, and whether the answer is it -------------------------------------------


@dataclass(frozen=True)
class _Query:
    """A prefetch query as the checks need it: ``Patient/pat-1`` is a read of a Patient,
    ``Condition?patient=pat-1`` a search of Conditions about patient pat-1. Other shapes
    (operations, history) are only checked to be FHIR."""

    key: str
    text: str
    kind: str | None = None
    read_id: str | None = None
    # The patients a search is restricted to (``patient=``, ``subject=``); empty if not known.
    patients: frozenset[str] = frozenset()
    # _include/_revinclude: resources of other types come along, as search.mode "include".
    includes: bool = False

    @classmethod
    def parse(cls, key: str, text: str) -> _Query:
        path, _, params = text.strip().lstrip("/").partition("?")
        segments = [unquote(s) for s in path.strip("/").split("/")]
        kind = segments[0] if _TYPE.fullmatch(segments[0]) else None
        if kind is not None and len(segments) == 2 and _ID.fullmatch(segments[1]):
            return cls(key, text, kind, read_id=segments[1])
        if kind is None or len(segments) != 1:
            return cls(key, text)
        pairs = parse_qsl(params, keep_blank_values=True)
        names = {"patient", "patient:Patient", "subject", "subject:Patient"}
        if kind == "Patient":
            names.add("_id")
        values = [v for name, value in pairs if name in names for v in value.split(",")]
        patients = [_patient_id(v) for v in values]
        known = frozenset(p for p in patients if p is not None)
        return cls(
            key,
            text,
            kind,
            patients=known if known and None not in patients else frozenset(),
            includes=any(name.startswith(("_include", "_revinclude")) for name, _ in pairs),
        )

    @property
    def is_read(self) -> bool:
        return self.read_id is not None or (self.kind is None and "?" not in self.text)

    def wrong_data(self, answer: Resource) -> str | None:
        """Why the answer is not what was asked (types only, never ids), or None."""
        got = answer["resourceType"]
        if self.read_id is not None:
            if got != self.kind:
                return f"{_a(_safe(got))} instead of the {self.kind} read"
            if answer.get("id") != self.read_id:
                return f"another {self.kind} than the one read"
            return None
        if self.kind is None:
            return None
        if got != "Bundle":
            return f"{_a(_safe(got))} instead of a Bundle"
        entries = answer.get("entry")
        if entries is None:
            return None
        if not isinstance(entries, list):
            return "a Bundle whose entry is not a list"
        for entry in entries:
            wrong = self._wrong_entry(entry, self.kind)
            if wrong is not None:
                return wrong
        return None

    def _wrong_entry(self, entry: Any, searched: str) -> str | None:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            return "a Bundle entry that is not a resource"
        kind = resource["resourceType"]
        search = entry.get("search")
        mode = search.get("mode") if isinstance(search, dict) else None
        if kind == "OperationOutcome":  # the server's remarks, skipped by service/fhir/prefetch
            return None if mode in (None, "outcome") else "an OperationOutcome as a match"
        if kind != searched and not (self.includes and mode in (None, "include")):
            return f"{_a(_safe(kind))} entry in {_a(searched)} search"
        if self.patients and not self._about_the_patient(resource):
            return f"{_a(_safe(kind))} about another patient"
        return None

    def _about_the_patient(self, resource: Resource) -> bool:
        if resource["resourceType"] == "Patient":
            return resource.get("id") in self.patients
        for field in ("subject", "patient"):
            reference = resource.get(field)
            target = reference.get("reference") if isinstance(reference, dict) else None
            # A reference we cannot resolve (contained, urn:uuid, an identifier only) says
            # nothing either way; a resolvable one must be this patient.
            named = _reference(target) if isinstance(target, str) else None
            if named is not None and (named[0] != "Patient" or named[1] not in self.patients):
                return False
        return True


def _reference(text: str) -> tuple[str, str] | None:
    """``Patient/123``, ``https://server/fhir/Patient/123``, ``.../Patient/123/_history/2``
    -> ``("Patient", "123")``; anything else -> None."""
    parts = [p for p in text.split("#", 1)[0].split("?", 1)[0].split("/") if p]
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) < 2 or not _TYPE.fullmatch(parts[-2]) or not _ID.fullmatch(parts[-1]):
        return None
    return parts[-2], parts[-1]


def _patient_id(value: str) -> str | None:
    """The patient a search parameter names: ``123`` or ``Patient/123``; None for another type."""
    if _ID.fullmatch(value):
        return value
    named = _reference(value)
    return named[1] if named is not None and named[0] == "Patient" else None


def _safe(kind: str) -> str:
    """A resourceType as it may be logged: a server could put anything there."""
    return kind if _TYPE.fullmatch(kind) else "resource of an unknown type"


def _a(noun: str) -> str:
    return f"{'an' if noun[:1] in ('A', 'E', 'I', 'O', 'U') else 'a'} {noun}"


# --- the request's own inputs --------------------------------------------------------------


def _authorization(token: str | None) -> dict[str, str]:
    if not token:
        return {}
    if not _TOKEN.fullmatch(token):
        log.warning("fhir fetch: the access token is not printable ASCII; nothing sent")
        raise PrefetchUnavailable(
            "The fhirAuthorization access_token cannot be sent in an HTTP header: a bearer "
            "token is printable ASCII without spaces.",
            code="fhir_unauthorized",
        )
    return {"Authorization": f"Bearer {token}"}


def _checked_base(base: str) -> str:
    """fhirServer without its trailing slash, if it is an http(s) URL httpx can request."""
    try:
        parts = urlsplit(base)
        parts.port  # noqa: B018 - raises on a port that is not a number
        httpx.URL(base)
        usable = parts.scheme in ("http", "https") and bool(parts.hostname)
    except (ValueError, httpx.InvalidURL):
        usable = False
    if not usable:
        log.warning("fhir fetch: fhirServer is not a usable URL; nothing sent")
        raise PrefetchUnavailable(
            "The fhirServer is not an http(s) URL this service can contact.",
            code="fhir_server_not_allowed",
        )
    return base.rstrip("/")


def _fresh(failure: PrefetchUnavailable) -> PrefetchUnavailable:
    """The same 412 without the traceback and the context of the original (see _forget)."""
    return PrefetchUnavailable(failure.message, code=failure.code)


# _forget: a failure's traceback holds the frames that read the answer, and their locals: up to
# IPT_CDS_FHIR_MAX_ANSWER_BYTES of body, or the resources parsed from it. Tracebacks end up in
# reference cycles (the task group's failures: one failure in its group, the group its
# context; anyio's and asyncio's cancellation), which live until the garbage collector comes
# by, and the served process runs it rarely. So every frame lets go of the answer on its way
# out, and the 412 raised is a fresh one. Without this, 1,000 calls at once to a server
# sending 50 MB Bundles took a worker to 2.4 GB.


def _first_meaningful(group: BaseExceptionGroup[Any]) -> PrefetchUnavailable:
    """The first failure that says what went wrong: the tasks' own 412s first."""
    leaves = list(_leaves(group))
    for exc in leaves:
        if isinstance(exc, PrefetchUnavailable):
            return exc
    if any(isinstance(exc, TimeoutError | httpx.TimeoutException) for exc in leaves):
        return PrefetchUnavailable("The FHIR server did not answer in time.", code="fhir_timeout")
    log.error("fhir fetch failed: %s", ", ".join(type(exc).__name__ for exc in leaves))
    return PrefetchUnavailable("The FHIR server's answer could not be used.", code="fhir_error")


def _leaves(group: BaseExceptionGroup[Any]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


# --- paging --------------------------------------------------------------------------------


def _next_link(page: Resource, base: str) -> str | None:
    links = page.get("link") if page.get("resourceType") == "Bundle" else None
    if not isinstance(links, list):
        return None
    for link in links:
        if isinstance(link, dict) and link.get("relation") == "next":
            url = link.get("url")
            if isinstance(url, str) and _same_origin(url, base):
                return url
            log.warning("fhir next link to another origin not followed")
            return None
    return None


def _same_origin(url: str, base: str) -> bool:
    try:
        a, b = urlsplit(url), urlsplit(base)
    except ValueError:
        return False
    return (a.scheme, a.netloc) == (b.scheme, b.netloc)
