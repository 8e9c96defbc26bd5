"""Read what the prefetch lacked from the EHR's FHIR server: concurrently, bounded, never leaking.

One ``httpx.AsyncClient`` serves the whole process (a new one per call costs ~18 ms). Every
failure becomes a 412 with a stable code, because CDS Hooks asks a service that cannot get its
data to say so rather than to guess:

    fhir_unauthorized  401/403 from the FHIR server
    fhir_unavailable   connection failure or 5xx, after bounded retries
    fhir_timeout       a request, or the whole fetch, ran out of time
    fhir_error         any other answer that is not FHIR JSON we can use

The bearer token goes only into the Authorization header of requests to the request's own
fhirServer (``next`` links elsewhere are not followed) and never into a log line.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any
from urllib.parse import urlsplit

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


class FhirClient:
    def __init__(
        self, http: httpx.AsyncClient, settings: Settings, metrics: Metrics | None = None
    ) -> None:
        self._http = http
        self._settings = settings
        self._metrics = metrics

    @staticmethod
    def make_http(
        settings: Settings, transport: httpx.AsyncBaseTransport | None = None
    ) -> httpx.AsyncClient:
        limits = httpx.Limits(
            max_connections=settings.fhir_max_connections,
            max_keepalive_connections=settings.fhir_max_connections,
        )
        return httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(settings.fhir_timeout_seconds),
            limits=limits,
            follow_redirects=False,
            headers={"Accept": "application/fhir+json"},
        )

    async def fetch_all(
        self, base: str, queries: dict[str, str], token: str | None
    ) -> dict[str, list[Resource]]:
        """Run every query at once; the answer holds, per key, the pages (or the resource) read."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        base = base.rstrip("/")
        try:
            async with asyncio.timeout(self._settings.fhir_total_timeout_seconds):
                async with asyncio.TaskGroup() as group:
                    tasks = {
                        key: group.create_task(self._read(base, key, query, headers))
                        for key, query in queries.items()
                    }
        except* PrefetchUnavailable as failures:
            failure = failures.exceptions[0]
            if isinstance(failure, PrefetchUnavailable):
                self._count_error(failure.code)
            raise failure from None
        except* TimeoutError:
            log.warning(
                "fhir fetch exceeded its %.1fs budget", self._settings.fhir_total_timeout_seconds
            )
            self._count_error("fhir_timeout")
            raise PrefetchUnavailable(
                "The FHIR server did not answer in time.", code="fhir_timeout"
            ) from None
        return {key: task.result() for key, task in tasks.items()}

    async def _read(
        self, base: str, key: str, query: str, headers: dict[str, str]
    ) -> list[Resource]:
        """A read answers one resource; a search is followed through its ``next`` links."""
        started = time.perf_counter()
        pages: list[Resource] = []
        url: str | None = f"{base}/{query.lstrip('/')}"
        while url is not None:
            page = await self._get(key, url, headers)
            if page is None:
                break
            pages.append(page)
            url = _next_link(page, base)
            if url is not None and len(pages) >= self._settings.fhir_max_pages:
                log.warning("fhir %s: stopped after %d pages", key, len(pages))
                break
        if self._metrics is not None:
            self._metrics.fhir.labels(key).observe(time.perf_counter() - started)
        return pages

    def _count_error(self, code: str) -> None:
        if self._metrics is not None:
            self._metrics.fhir_errors.labels(code).inc()

    async def _get(self, key: str, url: str, headers: dict[str, str]) -> Resource | None:
        attempts = self._settings.fhir_retries + 1
        for attempt in range(1, attempts + 1):
            try:
                response = await self._http.get(url, headers=headers)
            except httpx.TimeoutException:
                log.warning("fhir %s: timed out", key)
                raise PrefetchUnavailable(
                    f"The FHIR server did not answer the {key} query in time.", code="fhir_timeout"
                ) from None
            except httpx.TransportError as exc:
                log.warning("fhir %s: %s (attempt %d)", key, type(exc).__name__, attempt)
                if attempt < attempts:
                    continue
                raise PrefetchUnavailable(
                    f"The FHIR server could not be reached for the {key} query.",
                    code="fhir_unavailable",
                ) from None
            status = response.status_code
            if status in _RETRY_STATUS and attempt < attempts:
                log.warning("fhir %s: HTTP %d (attempt %d)", key, status, attempt)
                continue
            return _interpret(key, response)
        raise AssertionError("unreachable")  # pragma: no cover


def _interpret(key: str, response: httpx.Response) -> Resource | None:
    status = response.status_code
    if status in (401, 403):
        log.warning("fhir %s: HTTP %d", key, status)
        raise PrefetchUnavailable(
            f"The FHIR server refused the {key} query (HTTP {status}): check fhirAuthorization.",
            code="fhir_unauthorized",
        )
    if status in (404, 410) and not response.request.url.query:
        # A read of a resource that does not exist: no data, not a failure.
        log.warning("fhir %s: HTTP %d on read; treated as no data", key, status)
        return None
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
    try:
        body: Any = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("resourceType"), str):
        log.warning("fhir %s: answer is not a FHIR resource", key)
        raise PrefetchUnavailable(
            f"The FHIR server's answer to the {key} query is not FHIR JSON.", code="fhir_error"
        )
    return body


def _next_link(page: Resource, base: str) -> str | None:
    if page.get("resourceType") != "Bundle":
        return None
    for link in page.get("link") or []:
        if isinstance(link, dict) and link.get("relation") == "next":
            url = link.get("url")
            if isinstance(url, str) and _same_origin(url, base):
                return url
            log.warning("fhir next link to another origin not followed")
            return None
    return None


def _same_origin(url: str, base: str) -> bool:
    a, b = urlsplit(url), urlsplit(base)
    return (a.scheme, a.netloc) == (b.scheme, b.netloc)
