"""Read what the prefetch lacked from the EHR's FHIR server: concurrently, bounded, never leaking.

One ``httpx.AsyncClient`` serves the whole process (a new one per call costs ~18 ms). The
server's CapabilityStatement is read once in a while (ipt_cds/fhir/capabilities.py) and each
search shaped to it; a search it declines is asked once more, simpler (ipt_cds/fhir/searches.py).

A read is essential or optional. An optional read that still fails, whatever the reason, is
*not readable*: the call goes on without it, and the facts it feeds are unknown. An essential
read that fails, a server that cannot be reached, and an answer about another patient end the
fetch with a 412 and a stable code, because CDS Hooks asks a service that cannot get its data
to say so rather than to guess:

    fhir_server_not_allowed  fhirServer is not an http(s) URL at all
    fhir_unauthorized        401/403 from the FHIR server, or a token no HTTP header can carry
    fhir_unavailable         connection failure or 5xx, after bounded retries
    fhir_timeout             a request, or the whole fetch, ran out of time
    fhir_answer_too_large    a query's answers, decompressed, passed IPT_CDS_FHIR_MAX_ANSWER_BYTES
    (503 busy)               the process's bytes in flight (ipt_cds/ops/inflight.py) are spent
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
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
import httpx

from ipt_cds.fhir import inputs, refusals
from ipt_cds.fhir.answers import Query, parse_answer
from ipt_cds.fhir.capabilities import Capabilities, CapabilityCache
from ipt_cds.fhir.decoding import ACCEPT_ENCODING, Budget, Refused, read_body
from ipt_cds.fhir.searches import Plan
from ipt_cds.ops.config import Settings
from ipt_cds.ops.inflight import BytesInFlight
from ipt_cds.ops.memory import HeapTrimmer
from ipt_cds.ops.metrics import Metrics
from ipt_cds.protocol.errors import Busy, PrefetchUnavailable
from ipt_cds.protocol.models import Resource

log = logging.getLogger("ipt_cds")

# The codes above, for metrics present from the start (ipt_cds/ops/metrics.py ``prime``).
FHIR_ERROR_CODES = (
    "fhir_server_not_allowed",
    "fhir_unauthorized",
    "fhir_unavailable",
    "fhir_timeout",
    "fhir_answer_too_large",
    "fhir_wrong_data",
    "fhir_error",
)

# Gateway answers: a proxy or load balancer before the FHIR server, or the server itself, is
# briefly unable to serve, and the same request may well succeed at once. Other answers would
# be the same again; a timeout has already spent the time a retry would need.
_RETRY_STATUS = {502, 503, 504}

# Connections beyond fhir_max_connections for the other users of the same client (the JWKS
# fetches of ipt_cds/http/auth.py, one at a time), so that FHIR requests never queue in the pool.
_SPARE_CONNECTIONS = 2
# What a closed response's stream is replaced by (see FhirClient._stream).
_SPENT = httpx.ByteStream(b"")


# A server whose CapabilityStatement could not be read (timed out, unreachable) is asked again
# this soon, not after the whole lifetime: it may have been a passing fault.
_RETRY_CAPABILITIES_SECONDS = 60.0


@dataclass
class Fetched:
    """What the fetch read per key (the pages, or the resource), and what it went without."""

    resources: dict[str, list[Resource]] = field(default_factory=dict)
    # Optional keys not readable, and why in a few words (``403/forbidden``, ``timeout``).
    unreadable: dict[str, str] = field(default_factory=dict)
    # Keys whose resource type the server's CapabilityStatement does not list.
    not_offered: set[str] = field(default_factory=set)


class FhirClient:
    def __init__(
        self,
        http: httpx.AsyncClient,
        settings: Settings,
        metrics: Metrics | None = None,
        heap: HeapTrimmer | None = None,
        in_flight: BytesInFlight | None = None,
    ) -> None:
        self._http = http
        self._settings = settings
        self._metrics = metrics
        self._heap = heap or HeapTrimmer.for_this_process()
        self._in_flight = in_flight
        # httpcore 1.0 leaks a pool slot for good when a request waiting in its queue is
        # cancelled just as a new connection is made for it (encode/httpcore#1093): a few
        # failed fetches, whose sibling queries the task group cancels, and every later fetch
        # times out. Requests therefore wait here, never in the pool's queue (whose limit is
        # this one plus _SPARE_CONNECTIONS).
        self._slots = asyncio.Semaphore(settings.fhir_max_connections)
        self._capabilities = CapabilityCache(
            settings.fhir_capabilities_servers, settings.fhir_capabilities_seconds
        )

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

    def deadline(self) -> float:
        """When a fetch starting now must end, on anyio's clock."""
        return anyio.current_time() + self._settings.fhir_total_timeout_seconds

    async def fetch_all(
        self,
        base: str,
        queries: dict[str, str],
        token: str | None,
        optional: frozenset[str] = frozenset(),
        deadline: float | None = None,
    ) -> Fetched:
        """Run every query at once, by ``deadline`` (anyio's clock; by default the fetch's
        budget from now). The keys in ``optional`` may end not readable; any other failure is
        a 412."""
        try:
            fetched = await self._fetch_all(base, queries, token, optional, deadline)
        except PrefetchUnavailable as failure:
            self._count_error(failure.code)
            raise
        self._count_unreadable(base, fetched)
        return fetched

    async def _fetch_all(
        self,
        base: str,
        queries: dict[str, str],
        token: str | None,
        optional: frozenset[str],
        deadline: float | None,
    ) -> Fetched:
        headers = inputs.authorization(token)
        base = inputs.checked_base(base)
        if deadline is None:
            deadline = self.deadline()
        fetched = Fetched()
        cap = self._settings.fhir_max_answer_bytes
        budgets = {key: Budget(cap, self._in_flight) for key in queries}

        async def read(plan: Plan) -> None:
            try:
                pages = await self._read(base, plan, headers, budgets[plan.key])
            except PrefetchUnavailable as exc:
                if plan.key not in optional or exc.code == "fhir_wrong_data":
                    raise
                fetched.unreadable[plan.key] = why = refusals.why_of(exc)
                log.warning("fhir %s: not readable (%s); going on without it", plan.key, why)
                return
            fetched.resources[plan.key] = pages

        failure: PrefetchUnavailable | None = None
        # anyio, not asyncio.TaskGroup and asyncio.timeout: its cancellation respects the
        # shielded scopes in which httpcore puts a connection back or closes it. A native
        # task.cancel() goes through them, and a sibling's failure or the deadline landing
        # while a connection is being closed leaves it "active" in the pool for good.
        scope = anyio.CancelScope(deadline=deadline)
        try:
            with scope:
                capabilities = await self._capabilities_of(base, headers)
                plans = [Plan.make(key, text, capabilities) for key, text in queries.items()]
                async with anyio.create_task_group() as group:
                    for plan in plans:
                        if plan.offered:
                            group.start_soon(read, plan)
                        else:
                            fetched.not_offered.add(plan.key)
                            log.debug("fhir %s: %s not offered by the server", plan.key, plan.kind)
        except ExceptionGroup as failures:  # what the tasks raised, the first one first
            failure = refusals.fresh(refusals.first_meaningful(failures))
        except BaseException:
            fetched.resources.clear()  # see _forget
            raise
        finally:
            # Every task has ended: what they read is garbage now, or part of the answer.
            self._heap.released(sum(budget.spent for budget in budgets.values()))
            for budget in budgets.values():
                budget.release()
        if failure is None and scope.cancelled_caught:
            failure = self._late(queries, optional, fetched)
        if failure is not None:
            fetched.resources.clear()  # this frame lives as long as the failure's traceback
            if failure.code == "fhir_busy":  # nothing wrong with the server: ask again soon
                raise Busy("the FHIR server's answers")
            raise failure  # out of the except blocks: no __context__, see _forget
        return fetched

    def _late(
        self, queries: dict[str, str], optional: frozenset[str], fetched: Fetched
    ) -> PrefetchUnavailable | None:
        """At the deadline: a 412 if an essential read had not ended, else the optional reads
        that had not are not readable."""
        done = fetched.resources.keys() | fetched.unreadable.keys() | fetched.not_offered
        late = [key for key in queries if key not in done]
        total = self._settings.fhir_total_timeout_seconds
        if any(key not in optional for key in late):
            log.warning("fhir fetch exceeded its %.1fs budget", total)
            return PrefetchUnavailable(
                "The FHIR server did not answer in time.", code="fhir_timeout"
            )
        for key in late:
            log.warning("fhir %s: not readable (timeout); going on without it", key)
            fetched.unreadable[key] = "timeout"
        return None

    async def _capabilities_of(self, base: str, headers: dict[str, str]) -> Capabilities | None:
        """The server's CapabilityStatement, read at most once per lifetime; None when it has
        none (or it could not be read: then asked again a minute later)."""
        lifetime = self._settings.fhir_capabilities_seconds
        if lifetime == 0:
            return None
        known, capabilities = self._capabilities.get(base)
        if known:
            return capabilities
        query = Query.parse("capabilities", "metadata")
        keep = lifetime
        with anyio.move_on_after(self._settings.fhir_timeout_seconds) as scope:
            try:
                pages = await self._pages(
                    base, query, headers, Budget(self._settings.fhir_max_answer_bytes)
                )
                capabilities = Capabilities.parse(pages[0]) if pages else None
            except PrefetchUnavailable as exc:
                if exc.code in ("fhir_timeout", "fhir_unavailable", "fhir_unauthorized"):
                    keep = min(lifetime, _RETRY_CAPABILITIES_SECONDS)
                log.debug("fhir capabilities: %s", refusals.why_of(exc))
            except Exception as exc:  # a statement we cannot use is no statement
                keep = min(lifetime, _RETRY_CAPABILITIES_SECONDS)
                log.warning("fhir capabilities: unexpected %s", type(exc).__name__)
        if scope.cancelled_caught:
            keep = min(lifetime, _RETRY_CAPABILITIES_SECONDS)
        if capabilities is None:
            log.debug("fhir capabilities: none readable; searches sent as written")
        self._capabilities.put(base, capabilities, keep)
        return capabilities

    async def _read(
        self, base: str, plan: Plan, headers: dict[str, str], budget: Budget
    ) -> list[Resource]:
        """A read answers one resource; a search is followed through its ``next`` links, and
        asked once more, simpler, if the server declines it."""
        try:
            try:
                pages = await self._pages(base, plan.first, headers, budget)
            except refusals.Declined as declined:
                if plan.simpler is None or not declined.simpler_may_help:
                    raise
                log.warning("fhir %s: declined (%s); asking it simpler", plan.key, declined.why)
                pages = await self._pages(base, plan.simpler, headers, budget)
            if plan.filter and plan.kind is not None:
                pages = [plan.filter.apply(page, plan.kind) for page in pages]
            return pages
        except PrefetchUnavailable as exc:
            failure = refusals.fresh(exc)
        except Exception as exc:
            # Nothing a server sends may end as a 500; the type says enough, the text could
            # quote the answer.
            log.error("fhir %s: unexpected %s", plan.key, type(exc).__name__)
            failure = PrefetchUnavailable(
                f"The FHIR server's answer to the {plan.key} query could not be used.",
                code="fhir_error",
            )
        raise failure  # out of the except blocks: no __context__, see _forget

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
                url = inputs.next_link(page, base)
                if url is not None and len(pages) >= self._settings.fhir_max_pages:
                    log.warning("fhir %s: stopped after %d pages", query.key, len(pages))
                    break
        except BaseException:
            pages.clear()  # see _forget
            raise
        if self._metrics is not None:
            label = query.key.partition("#")[0]
            self._metrics.fhir.labels(label).observe(time.perf_counter() - started)
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

    def _count_unreadable(self, base: str, fetched: Fetched) -> None:
        if self._metrics is None:
            return
        server = inputs.origin(base)
        for key, why in fetched.unreadable.items():
            self._metrics.fhir_unreadable.labels(server, key.partition("#")[0], why).inc()
        for key in fetched.not_offered:
            self._metrics.fhir_unreadable.labels(server, key, "not-offered").inc()

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
                    if status in (404, 410) and query.is_read:
                        # A read of a resource that does not exist: no data, not a failure.
                        log.warning("fhir %s: HTTP %d on read; treated as no data", key, status)
                        return None
                    if status >= 500:
                        raise refusals.unavailable(key, status)
                    if status != 200:
                        raise refusals.declined(key, status, await _issue(response))
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


async def _issue(response: httpx.Response) -> str | None:
    """The OperationOutcome issue code of a small error answer, if it has one."""
    if not refusals.is_small_error(response):
        return None
    try:
        return refusals.issue_code(await read_body(response, Budget(64 * 1024)))
    except (Refused, httpx.HTTPError):
        return None


# _forget: a failure's traceback holds the frames that read the answer, and their locals: up to
# IPT_CDS_FHIR_MAX_ANSWER_BYTES of body, or the resources parsed from it. Tracebacks end up in
# reference cycles (the task group's failures: one failure in its group, the group its
# context; anyio's and asyncio's cancellation), which live until the garbage collector comes
# by, and the served process runs it rarely. So every frame lets go of the answer on its way
# out, and the 412 raised is a fresh one. Without this, 1,000 calls at once to a server
# sending 50 MB Bundles took a worker to 2.4 GB.
