"""Prometheus metrics, scraped at ``/metrics``.

Per process: with several uvicorn workers in one container, each scrape sees the worker that
answered it; run one worker per container (the Kubernetes example does) or aggregate by pod.
"""

from __future__ import annotations

import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Histogram(
            "ipt_cds_request_seconds",
            "Hook, feedback and discovery calls by service and status",
            ["endpoint", "service", "status"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.cards = Counter(
            "ipt_cds_cards_total", "Cards returned", ["rule", "indicator"], registry=self.registry
        )
        self.cards_unrecorded = Counter(
            "ipt_cds_cards_unrecorded_total",
            "Cards shown but dropped from the statistics because the store fell behind",
            registry=self.registry,
        )
        self.fhir = Histogram(
            "ipt_cds_fhir_fetch_seconds",
            "Fetching missing prefetch from the FHIR server, by prefetch key",
            ["key"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.fhir_errors = Counter(
            "ipt_cds_fhir_errors_total",
            "FHIR fetches that failed",
            ["code"],
            registry=self.registry,
        )
        self.feedback = Counter(
            "ipt_cds_feedback_total",
            "Feedback items received",
            ["service", "outcome"],
            registry=self.registry,
        )

    def endpoint(self, _: Request) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


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
