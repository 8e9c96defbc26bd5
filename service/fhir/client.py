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
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx

from service.fhir.answers import Query, parse_answer
from service.fhir.decoding import ACCEPT_ENCODING, Budget, Refused, read_body
from service.ops.config import Settings
from service.ops.memory import HeapTrimmer
from service.ops.metrics import Metrics
from service.protocol.errors import PrefetchUnavailable
from service.protocol.models import Resource

log = logging.getLogger("ipt_cds")

# Gateway answers: a proxy or load balancer before the FHIR server, or the server itself, is
# briefly unable to serve, and the same request may well succeed at once. Other answers would
# be the same again; a timeout has already spent the time a retry would need.
_RETRY_STATUS = {502, 503, 504}

# Connections beyond fhir_max_connections for the other users of the same client (the JWKS
# fetches of service/http/auth.py, one at a time), so that FHIR requests never queue in the pool.
_SPARE_CONNECTIONS = 2
# What a closed response's stream is replaced by (see FhirClient._stream).
_SPENT = httpx.ByteStream(b"")

# What an RFC 6750 bearer token may contain, give or take: printable ASCII without spaces. A
# token outside it cannot be put in a header (httpx would raise) and is refused unsent.
_TOKEN = re.compile(r"[\x21-\x7e]+")


class FhirClient:
    def __init__(
        self,
        http: httpx.AsyncClient,
        settings: Settings,
        metrics: Metrics | None = None,
        heap: HeapTrimmer | None = None,
    ) -> None:
        self._http = http
        self._settings = settings
        self._metrics = metrics
        self._heap = heap or HeapTrimmer.for_this_process()
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
        parsed = {key: Query.parse(key, query) for key, query in queries.items()}
        total = self._settings.fhir_total_timeout_seconds
        fetched: dict[str, list[Resource]] = {}
        cap = self._settings.fhir_max_answer_bytes
        budgets = {key: Budget(cap) for key in parsed}

        async def read(key: str, query: Query) -> None:
            fetched[key] = await self._read(base, query, headers, budgets[key])

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
        finally:
            # Every task has ended: what they read is garbage now, or part of the answer.
            self._heap.released(sum(budget.spent for budget in budgets.values()))
        if failure is not None:
            fetched.clear()  # this frame lives as long as the failure's traceback
            raise failure  # out of the except blocks: no __context__, see _fresh
        return {key: fetched[key] for key in parsed}

    async def _read(
        self, base: str, query: Query, headers: dict[str, str], budget: Budget
    ) -> list[Resource]:
        """A read answers one resource; a search is followed through its ``next`` links."""
        try:
            return await self._pages(base, query, headers, budget)
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

    async def _pages(
        self, base: str, query: Query, headers: dict[str, str], budget: Budget
    ) -> list[Resource]:
        started = time.perf_counter()
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

    @asynccontextmanager
    async def _stream(self, url: str, headers: dict[str, str]) -> AsyncIterator[httpx.Response]:
        response: httpx.Response | None = None
        try:
            async with self._slots, self._http.stream("GET", url, headers=headers) as response:
                yield response
        finally:
            # An httpx response and its stream refer to each other, so only the cyclic garbage
            # collector frees them, and with them the connection and whatever its socket had
            # buffered (a dropped answer leaves ~2 MB there). Under a FHIR server sending
            # oversized answers that garbage reached 850 MB between two collections.
            if response is not None:
                response.stream = _SPENT

    def _count_error(self, code: str) -> None:
        if self._metrics is not None:
            self._metrics.fhir_errors.labels(code).inc()

    async def _get(
        self, query: Query, url: str, headers: dict[str, str], budget: Budget
    ) -> Resource | None:
        key = query.key
        attempts = self._settings.fhir_retries + 1
        for attempt in range(1, attempts + 1):
            try:
                async with self._stream(url, headers) as response:
                    status = response.status_code
                    if status in _RETRY_STATUS and attempt < attempts:
                        log.warning("fhir %s: HTTP %d (attempt %d)", key, status, attempt)
                        continue
                    if not _usable_status(query, response):
                        return None
                    body = await read_body(response, budget)
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
            except Refused as refused:
                log.warning("fhir %s: answer %s", key, refused.reason)
                raise PrefetchUnavailable(
                    f"The FHIR server's answer to the {key} query {refused.reason}.",
                    code=refused.code,
                ) from None
            parsing = parse_answer(query, body)
            del body  # see _forget: parse_answer lets go of it once parsed
            return await parsing
        raise AssertionError("unreachable")  # pragma: no cover


# --- the status, the body ------------------------------------------------------------------


def _usable_status(query: Query, response: httpx.Response) -> bool:
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
            f"The fhirServer {base[:200]!r} is not an http(s) URL this service can contact.",
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
