"""Prometheus metrics, scraped at ``/metrics``.

With several uvicorn workers (``ipt-cds serve --workers N``), the command line gives them one
folder in ``PROMETHEUS_MULTIPROC_DIR`` before they start: each worker's values go to files
there (prometheus_client's multiprocess mode) and a scrape, whichever worker answers it, reads
them all. Counters and histograms add up over the workers, those of stopped workers included;
gauges add up over the live ones. One worker (the container's default, tests) keeps them in
memory.

Series whose labels are known at start-up (each service's calls, each rule's cards, feedback
outcomes) are there from the start, at zero: a dashboard or an alert need not wait for the
first card.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def shared_folder() -> str | None:
    """The multiprocess folder, when this process's metrics go there."""
    return os.environ.get(MULTIPROCESS_ENV) or None


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.shared = shared_folder() is not None
        # Gauges read from a function: in memory, at each scrape; shared, written by refresh().
        self._watched: list[tuple[Gauge, Callable[[], float]]] = []
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
            "Bytes of cards shown and feedback in the workers' spools, not yet in the database",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.bytes_in_flight = Gauge(
            "ipt_cds_bytes_in_flight",
            "Bytes of request bodies and FHIR answers held for the calls being answered",
            registry=self.registry,
            multiprocess_mode="livesum",
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

    def watch(self, gauge: Gauge, read: Callable[[], float]) -> None:
        """``gauge`` reports ``read()``."""
        if self.shared:
            self._watched.append((gauge, read))
            gauge.set(read())
        else:
            gauge.set_function(read)

    def refresh(self) -> None:
        """Shared: write the watched gauges' values where the other workers' scrapes see them
        (the app calls it every few seconds, and before its own scrapes)."""
        for gauge, read in self._watched:
            gauge.set(read())

    def prime(
        self,
        services: Iterable[tuple[str, str]],
        cards: Iterable[tuple[str, str]],
        fhir_errors: Iterable[str],
    ) -> None:
        """Series at zero for the labels known at start-up: (endpoint, service) answered 200,
        (rule, indicator) of the cards, each service's feedback outcomes, FHIR error codes."""
        for endpoint, service in services:
            self.requests.labels(endpoint, service, "200")
            if endpoint == "hook":
                for outcome in ("accepted", "overridden"):
                    self.feedback.labels(service, outcome)
        for rule, indicator in cards:
            self.cards.labels(rule, indicator)
        for code in fhir_errors:
            self.fhir_errors.labels(code)

    def exposition(self) -> tuple[bytes, str]:
        """The scrape's body and its content type: every worker's, when they share a folder."""
        if not self.shared:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        self.refresh()
        gathered = CollectorRegistry()
        multiprocess.MultiProcessCollector(gathered)  # type: ignore[no-untyped-call]
        return generate_latest(gathered), CONTENT_TYPE_LATEST

    def worker_stopped(self) -> None:
        """Shared: this worker's gauges no longer count (its counters still do)."""
        if self.shared:
            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
