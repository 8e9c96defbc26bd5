"""Prometheus metrics, scraped at ``/metrics``.

Per process: with several uvicorn workers in one container, each scrape sees the worker that
answered it; run one worker per container (the Kubernetes example does) or aggregate by pod.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

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
        self.spooled_bytes = Gauge(
            "ipt_cds_spool_bytes",
            "Bytes of cards shown and feedback in this worker's spool, not yet in the database",
            registry=self.registry,
        )
        self.bytes_in_flight = Gauge(
            "ipt_cds_bytes_in_flight",
            "Bytes of request bodies and FHIR answers this worker holds for the calls it answers",
            registry=self.registry,
        )
        self.busy = Counter(
            "ipt_cds_busy_total",
            "Request bodies and FHIR answers refused because the bytes in flight were spent",
            registry=self.registry,
        )
        self.spool_rejected = Counter(
            "ipt_cds_spool_rejected_total",
            "Spool entries the database refused, set aside in the spool file",
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
        self.fhir_unreadable = Counter(
            "ipt_cds_fhir_unreadable_total",
            "Optional FHIR reads the call went without (refused, failed, or a resource type the "
            "server does not offer), by server, prefetch key and reason",
            ["server", "key", "reason"],
            registry=self.registry,
        )
        self.feedback = Counter(
            "ipt_cds_feedback_total",
            "Feedback items received",
            ["service", "outcome"],
            registry=self.registry,
        )

    def exposition(self) -> tuple[bytes, str]:
        """The scrape's body and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
