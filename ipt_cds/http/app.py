"""Build the ASGI app: ``create_app(...)`` (tests pass test doubles), or ``served_app()``, the
factory ``ipt-cds serve`` hands to uvicorn. Importing this module builds nothing."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import httpx
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from ipt_cds import __version__
from ipt_cds.clinical.record import PatientRecord
from ipt_cds.fhir.client import FHIR_ERROR_CODES, FhirClient
from ipt_cds.http.auth import Authenticator, DatabaseReplayCache, KeyCache, MemoryReplayCache
from ipt_cds.http.errors import ErrorBoundary, install_handlers
from ipt_cds.http.evidence import router as evidence_router
from ipt_cds.http.evidence import site_of
from ipt_cds.http.home import render_home
from ipt_cds.http.home import router as home_router
from ipt_cds.http.middleware import (
    LOOPBACK_ORIGINS,
    SANDBOX_ORIGIN,
    InFlightMiddleware,
    JsonCORSMiddleware,
    MetricsMiddleware,
    RequestIdMiddleware,
)
from ipt_cds.http.openapi import schema
from ipt_cds.http.operator import OperatorAccess
from ipt_cds.http.preview import router as preview_router
from ipt_cds.http.routes import AppState, discovery_document, operations, router
from ipt_cds.http.statistics import router as statistics_router
from ipt_cds.http.stats_page import router as stats_router
from ipt_cds.http.trust import Trust, global_allowlist
from ipt_cds.knowledge.base import Knowledge
from ipt_cds.knowledge.ehr_profile import EPIC_PREFERENCE_LIST
from ipt_cds.knowledge.errors import KnowledgeError
from ipt_cds.knowledge.site_summary import log_site
from ipt_cds.ops import logs
from ipt_cds.ops.config import Settings
from ipt_cds.ops.inflight import BytesInFlight
from ipt_cds.ops.metrics import Metrics
from ipt_cds.pipeline import Pipeline, Rule
from ipt_cds.storage.drain import Drainer
from ipt_cds.storage.memory import CardMemory
from ipt_cds.storage.recorder import CardRecorder
from ipt_cds.storage.spool import Spool
from ipt_cds.storage.store import Store, database_url

log = logging.getLogger("ipt_cds")

# At shutdown, how long the spool's drain may go on writing to the database; what it has not
# written by then is taken up by the next start.
SHUTDOWN_DRAIN_SECONDS = 5.0


def _utc_now() -> datetime:
    return datetime.now(UTC)


def create_app(
    settings: Settings | None = None,
    *,
    fhir_transport: httpx.AsyncBaseTransport | None = None,
    clock: Callable[[], datetime] = _utc_now,
    rules: Sequence[Rule] = (),
    knowledge: Knowledge | None = None,
    tune_process: bool = False,
) -> FastAPI:
    """``tune_process`` lets start-up freeze what it loaded out of the garbage collector's sight
    and make collections rarer: right for a server process, wrong for a test suite that builds
    hundreds of apps in one process."""
    settings = settings or Settings()
    logs.configure(settings.log_level, settings.log_format)
    knowledge = knowledge or Knowledge.load(settings.knowledge_dir, settings.site_file)
    log_site(knowledge.site, settings.site_file)
    for order in knowledge.site.unplaceable_orders(knowledge.rulebook.suggested_orders()):
        log.warning(
            "site profile (ehr: epic): orderables.%s has no Epic order preference list item "
            "(system %s); Epic cannot place the suggested %s order (docs/site-profile.md)",
            order,
            EPIC_PREFERENCE_LIST,
            order,
        )
    trust = _trust(settings)
    operator = OperatorAccess.load(settings.operator_token_file)
    state = AppState(
        settings=settings,
        knowledge=knowledge,
        pipeline=Pipeline(knowledge, rules),
        clock=clock,
        discovery=discovery_document(knowledge),
        allowlist=global_allowlist(settings.fhir_allowlist),
        in_flight=BytesInFlight(settings.max_bytes_in_flight),
        operator=operator,
    )
    metrics = state.metrics
    metrics.watch(metrics.bytes_in_flight, lambda: state.in_flight.held)
    metrics.prime(
        [("discovery", "-")]
        + [(endpoint, s) for s in knowledge.services for endpoint in ("hook", "feedback")],
        [(rule.id, ind) for rule in knowledge.rulebook.rules for ind, _ in rule.indicator],
        FHIR_ERROR_CODES,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # What this run opens it closes, even where a test runs the lifespan twice at once.
        store = state._store = await run_in_threadpool(Store, settings.database_url)
        window = timedelta(hours=knowledge.site.repeat_window_hours)
        memory = state._memory = await run_in_threadpool(CardMemory, store, window)
        # The drain begins with what a previous run left in the spool (kill -9 included).
        spool = await run_in_threadpool(
            Spool.open,
            settings.spool_folder,
            database_url(settings.database_url),
            settings.spool_max_bytes,
        )
        metrics.watch(metrics.spooled_bytes, lambda: spool.size)
        drainer = state._drainer = Drainer(
            spool, store, memory.snooze, rejected=state.metrics.spool_rejected.inc
        )
        drainer.start()
        recorder = state._recorder = CardRecorder(
            drainer,
            max_pending=settings.max_pending_card_rows,
            dropped=state.metrics.cards_unrecorded.inc,
        )
        recorder.start()
        async with FhirClient.make_http(settings, fhir_transport) as http:
            state._fhir = FhirClient(
                http, settings, state.metrics, heap=state.heap, in_flight=state.in_flight
            )
            if trust is not None:

                def seconds() -> float:
                    return clock().timestamp()

                replay = (
                    DatabaseReplayCache(state.store, seconds)
                    if settings.jti_store == "database"
                    else MemoryReplayCache(seconds)
                )
                state.authenticator = Authenticator(
                    trust, KeyCache(http, seconds), replay, seconds, settings.jwt_leeway_seconds
                )
            _warm_up(state)
            if tune_process:
                _tune_garbage_collector()
            refreshing = asyncio.create_task(_refresh(metrics)) if metrics.shared else None
            yield
        if refreshing is not None:
            refreshing.cancel()
        metrics.worker_stopped()
        try:
            await recorder.close()
        except Exception as exc:  # its text may quote the rows; the store must still close
            log.error("recording cards at shutdown failed: %s", type(exc).__name__)
        finally:
            try:
                await drainer.close(SHUTDOWN_DRAIN_SECONDS)
            finally:
                spool.close()
                await memory.close()
                store.close()

    app = FastAPI(
        title="IPT CDS Hooks service",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        # A near miss (`/cds-services/`) is a JSON 404, never a redirect: a 307 has no body, and
        # an EHR would resend its request, patient data and all, to another URL.
        redirect_slashes=False,
    )
    app.state.ipt = state
    # Rendered once: the knowledge does not change while the app runs.
    app.state.evidence = site_of(knowledge, tuple((r.id, tuple(r.hooks)) for r in rules))
    app.state.home = render_home(
        knowledge.services.values(), settings.auth_mode == "required", settings.preview_served
    )
    # Always on: a preflight from an origin not allowed (CORS unset included) is refused in
    # JSON and logged, where otherwise a browser client would show "no cards" and nothing says
    # why.
    app.add_middleware(
        JsonCORSMiddleware,
        allow_origins=[
            *settings.cors_origins,
            *(_sandbox_origins(settings) if settings.sandbox else []),
        ],
        allow_origin_regex=LOOPBACK_ORIGINS if settings.sandbox else None,
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type"],
        allow_private_network=settings.sandbox,  # Chrome: a public page calling this machine
    )
    app.include_router(router)
    app.include_router(statistics_router)
    app.include_router(operations)
    app.include_router(evidence_router)
    app.include_router(home_router)
    app.include_router(preview_router)
    app.include_router(stats_router)
    # Innermost first: errors become answers, then are counted, then carry the request id.
    app.add_middleware(ErrorBoundary)
    app.add_middleware(
        InFlightMiddleware, pool=state.in_flight, heap=state.heap, metrics=state.metrics
    )
    app.add_middleware(
        MetricsMiddleware, metrics=state.metrics, services=frozenset(knowledge.services)
    )
    app.add_middleware(RequestIdMiddleware)
    install_handlers(app)
    app.openapi = lambda: schema(app, knowledge.services)  # type: ignore[method-assign]
    return app


def _warm_up(state: AppState) -> None:
    """Run the engine once, so that the first call costs what the others do."""
    record = PatientRecord("warm-up", None, {}, [], [])
    for hook in sorted({s.hook for s in state.knowledge.services.values()}):
        facts = state.knowledge.factbook.evaluate(record, hook, state.clock())
        state.knowledge.rulebook.cards(facts)


# A parsed body is thousands of containers: collecting the youngest generation every 10,000
# allocations rather than 700 saves ~5% of a 200-resource call (and lowers p99).
_YOUNG_GENERATION_THRESHOLD = 10_000
# The older generations keep CPython's default thresholds (collected every 10 collections of
# the generation below).
_OLDER_GENERATION_THRESHOLDS = (10, 10)


# How often a worker sharing its metrics with others writes its gauges' values.
METRICS_REFRESH_SECONDS = 5.0


async def _refresh(metrics: Metrics) -> None:
    while True:
        await asyncio.sleep(METRICS_REFRESH_SECONDS)
        metrics.refresh()


def _tune_garbage_collector() -> None:
    """Move everything loaded so far out of the collector's sight: collections then scan only
    what a request allocates (full collections made the latency tail)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(_YOUNG_GENERATION_THRESHOLD, *_OLDER_GENERATION_THRESHOLDS)


def _trust(settings: Settings) -> Trust | None:
    if settings.auth_mode == "off":
        log.warning(
            "CLIENT AUTHENTICATION IS OFF (IPT_CDS_AUTH_MODE=off): any caller can use this "
            "service. Use it only on a trusted network; see docs/security.md."
        )
        return None
    if settings.trust_file is None:
        raise KnowledgeError("IPT_CDS_TRUST_FILE is required when IPT_CDS_AUTH_MODE=required")
    return Trust.load(settings.trust_file)


def served_app() -> FastAPI:
    """The factory uvicorn calls in each worker process (``--factory``)."""
    return create_app(tune_process=True)


def _sandbox_origins(settings: Settings) -> list[str]:
    """The public sandbox's origin, and that of the copy IPT_CDS_SANDBOX_URL names."""
    parts = urlsplit(settings.sandbox_url)
    return list(dict.fromkeys([SANDBOX_ORIGIN, f"{parts.scheme}://{parts.netloc}"]))
