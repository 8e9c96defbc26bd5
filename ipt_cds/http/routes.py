"""The HTTP endpoints: discovery, hook calls, feedback and card statistics.

Request bodies are read once as bytes and parsed with orjson, so that malformed JSON, a wrong
hook and every CDS Hooks violation answer a 400 naming the field, in the same shape as our other
errors, before any work is done.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import orjson
from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import PlainTextResponse, Response

from ipt_cds.fhir.client import FhirClient
from ipt_cds.http.auth import Authenticator, Client, Unauthorized
from ipt_cds.http.jsonio import JsonResponse, check_depth, check_entries, parse_object, read_body
from ipt_cds.http.operator import OperatorAccess
from ipt_cds.http.trust import allowed_base
from ipt_cds.knowledge.base import Knowledge
from ipt_cds.knowledge.evidence import linked
from ipt_cds.ops.config import DEFAULT_IN_FLIGHT, Settings
from ipt_cds.ops.inflight import BytesInFlight
from ipt_cds.ops.logs import mark_call_logged
from ipt_cds.ops.memory import HeapTrimmer
from ipt_cds.ops.metrics import Metrics
from ipt_cds.pipeline import Pipeline
from ipt_cds.protocol.errors import NotFound, from_validation_error
from ipt_cds.protocol.models import (
    Card,
    CdsResponse,
    DiscoveryResponse,
    ErrorBody,
    FeedbackAck,
    FeedbackItem,
    FeedbackRequest,
    Health,
    HookRequest,
    Service,
)
from ipt_cds.protocol.vocabulary import HELD_BACK_HEADER, OVERRIDE_SYSTEM
from ipt_cds.storage.drain import Drainer
from ipt_cds.storage.entries import SpooledFeedback
from ipt_cds.storage.feedback_rows import feedback_rows
from ipt_cds.storage.memory import CardMemory, Marks, Overridden, Recall
from ipt_cds.storage.recorder import CardRecorder
from ipt_cds.storage.spool import SpoolUnavailable
from ipt_cds.storage.store import IssuedCard, Store

log = logging.getLogger("ipt_cds")

# How long a feedback post, once spooled, waits for the database to say how many of its items
# were new; past it (the database is slow or away) they are answered as pending.
FEEDBACK_WAIT_SECONDS = 2.0
# How long /ready waits for the database to answer.
READY_PING_SECONDS = 2.0
# /ready says the spool is backing up once it holds this share of its bound.
SPOOL_BACKING_UP = 0.5


@dataclass
class AppState:
    settings: Settings
    knowledge: Knowledge
    pipeline: Pipeline
    clock: Callable[[], datetime]
    discovery: bytes
    # FHIR servers allowed when authentication is off (with it on, the issuer's list).
    allowlist: frozenset[str] = frozenset()
    # Opened by the app's lifespan, closed with it.
    _store: Store | None = None
    _fhir: FhirClient | None = None
    _recorder: CardRecorder | None = None
    _drainer: Drainer | None = None
    _memory: CardMemory | None = None
    metrics: Metrics = field(default_factory=Metrics)
    authenticator: Authenticator | None = None
    operator: OperatorAccess = field(default_factory=lambda: OperatorAccess(None))
    # Shared by request bodies and FHIR answers (ipt_cds/ops/inflight.py, memory.py).
    in_flight: BytesInFlight = field(default_factory=lambda: BytesInFlight(DEFAULT_IN_FLIGHT))
    heap: HeapTrimmer = field(default_factory=HeapTrimmer.for_this_process)

    @property
    def recorder(self) -> CardRecorder:
        if self._recorder is None:
            raise RuntimeError("the card recorder is started when the app starts")
        return self._recorder

    @property
    def drainer(self) -> Drainer:
        if self._drainer is None:
            raise RuntimeError("the spool's drain is started when the app starts")
        return self._drainer

    @property
    def memory(self) -> CardMemory:
        if self._memory is None:
            raise RuntimeError("the card memory is opened when the app starts")
        return self._memory

    @property
    def store(self) -> Store:
        if self._store is None:
            raise RuntimeError("the store is opened when the app starts")
        return self._store

    @property
    def fhir(self) -> FhirClient:
        if self._fhir is None:
            raise RuntimeError("the FHIR client is opened when the app starts")
        return self._fhir

    def fhir_allowed(self, client: Client | None) -> Callable[[str], bool]:
        if client is not None:
            return client.issuer.allows_fhir_server
        return lambda url: allowed_base(url, self.allowlist)

    def service(self, service_id: str) -> Service:
        try:
            return self.knowledge.services[service_id]
        except KeyError:
            known = ", ".join(sorted(self.knowledge.services))
            raise NotFound(
                f"No CDS Service {service_id[:100]!r}; the services are {known} "
                "(GET /cds-services lists them).",
                code="unknown_service",
            ) from None


# The handlers call _state and _authenticate themselves rather than declare them as FastAPI
# dependencies: solving the dependencies took ~0.3 ms of every hook call, an eighth of it.
def state_of(request: Request) -> AppState:
    """The app's state (ipt_cds/http/app.py sets it), for every route module."""
    state: AppState = request.app.state.ipt
    return state


async def _authenticate(request: Request) -> Client | None:
    """The authenticated EHR, or None when authentication is off."""
    state = state_of(request)
    if state.authenticator is None:
        return None
    audience = _base_url(request) + request.url.path
    try:
        return await state.authenticator.verify(request.headers.get("authorization"), audience)
    except Unauthorized as exc:
        log.warning(
            "unauthorized %s %s: %s",
            request.method,
            request.url.path,
            exc.reason,
            extra={"event": "unauthorized", "path": request.url.path, "reason": exc.reason},
        )
        raise


async def authenticate_operator(request: Request) -> None:
    """The operator's token, or else what a hook call needs (a client JWT when required)."""
    if state_of(request).operator.allows(request.headers.get("authorization")):
        return
    await _authenticate(request)


def _base_url(request: Request) -> str:
    """The service's URL as EHRs reach it, without a trailing slash: IPT_CDS_PUBLIC_BASE_URL,
    else the request's own (with the root path)."""
    base = state_of(request).settings.public_base_url or str(request.base_url)
    return base.rstrip("/")


router = APIRouter()


def errors_of(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorBody} for status in statuses}


def _json_body(schema: str) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{schema}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


@router.get(
    "/cds-services",
    summary="Discovery: the CDS Services offered",
    responses={200: {"model": DiscoveryResponse}, **errors_of(401)},
)
async def discovery(request: Request) -> Response:
    state = state_of(request)
    await _authenticate(request)
    return Response(state.discovery, media_type="application/json")


@router.post(
    "/cds-services/{service_id}",
    summary="Call a CDS Service for a hook",
    responses={200: {"model": CdsResponse}, **errors_of(400, 401, 404, 412, 413, 503)},
    openapi_extra=_json_body("HookRequest"),
)
async def call_service(service_id: str, request: Request) -> Response:
    started = time.perf_counter()
    state = state_of(request)
    client = await _authenticate(request)
    service = state.service(service_id)
    body = await _read_json(request, state.settings)
    now = state.clock()
    memory, patient, call, user = state.memory, "", "", ""

    def recall(hook_request: HookRequest) -> asyncio.Future[Recall]:
        nonlocal patient, call, user
        patient = memory.pseudonym(hook_request.fhirServer or "", hook_request.context.patientId)
        call = memory.call_key(service.id, hook_request.hookInstance)
        user = memory.user_key(hook_request.context.userId)
        # order-select fired again: its cards stay on screen while the order is edited.
        editing = service.hook == "order-select"
        return memory.recall_soon(
            patient, now, call, service=service.id, user=user, editing=editing
        )

    result = await state.pipeline.run(
        service,
        body,
        fhir=state.fhir,
        fhir_allowed=state.fhir_allowed(client),
        now=now,
        recall=recall,
    )
    hook_request, record = result.request, result.record
    # Each card links to its rule's evidence page (ipt_cds/http/evidence.py).
    fired = linked(result.fired, _base_url(request))
    issued = [
        IssuedCard(
            card_uuid=card.uuid or "",
            service_id=service.id,
            hook_instance=hook_request.hookInstance,
            rule_id=rule_id,
            indicator=card.indicator,
            issued_at=now,
            disposition=disposition,
        )
        for disposition, cards in (
            ("shown", result.fired),
            ("silent", result.silent),
            *((why, [(rule_id, card)]) for rule_id, card, why in result.held),
        )
        for rule_id, card in cards
    ]
    draft_keys = memory.draft_keys(result.draft_keys)
    kept = result.state
    marks = Marks(kept.band, kept.ideation, kept.basis, kept.flags) if kept is not None else None
    remembered = [
        row
        for rule_id, card in result.fired
        for row in memory.shown(
            patient,
            rule_id,
            draft_keys,
            card.uuid or "",
            now,
            call,
            marks=marks,
            service=service.id,
            user=user,
        )
    ]
    state.recorder.add(issued, remembered)
    shown = [row for row in issued if row.disposition == "shown"]
    for row in shown:
        state.metrics.cards.labels(row.rule_id, row.indicator).inc()
    rules = [row.rule_id for row in shown]
    silent = [row.rule_id for row in issued if row.disposition == "silent"]
    ms = round((time.perf_counter() - started) * 1000, 1)
    mark_call_logged()
    counts = result.prefetch
    held = held_back(result.held, result.held_since, now)
    log.info(
        "hook service=%s hookInstance=%s resources=%d drafts=%d prefetch given=%d fetched=%d "
        "missing=%d reads=%s unreadable=%s rules=%s held=%s ms=%.1f",
        service.id,
        hook_request.hookInstance,
        record.size,
        len(record.drafts),
        counts.given,
        counts.fetched,
        counts.missing,
        ",".join(f"{k}:{n}" for k, n in counts.reads.items()) or "-",
        ",".join(f"{k}:{why}" for k, why in counts.unreadable.items()) or "-",
        ",".join(rules) or "-",
        ",".join(f"{h.rule}:{h.why}:{h.minutes}m" for h in held) or "-",
        ms,
        extra={
            "event": "hook",
            "service": service.id,
            "hookInstance": hook_request.hookInstance,
            "resources": record.size,
            "drafts": len(record.drafts),
            "prefetchGiven": counts.given,
            "prefetchFetched": counts.fetched,
            "prefetchMissing": counts.missing,
            "reads": counts.reads,
            **({"unreadable": counts.unreadable} if counts.unreadable else {}),
            "rules": rules,
            "ms": ms,
            **({"silent": silent} if silent else {}),
            **({"held": [h._asdict() for h in held]} if held else {}),
        },
    )
    cards = [card for _, card in fired]
    # Which cards the memory held back and since when, for an integrator's tools (`ipt-cds
    # invoke` prints it): rule ids and minutes, nothing of the patient.
    headers = {HELD_BACK_HEADER: ", ".join(h.header() for h in held)} if held else None
    return JsonResponse(CdsResponse(cards=cards).model_dump(mode="json"), headers=headers)


class HeldBack(NamedTuple):
    rule: str
    # "repeat" (shown within the repeat window), "snooze" (overridden), "assessed" (a risk
    # assessment documented by this clinician).
    why: str
    minutes: int

    def header(self) -> str:
        return f"{self.rule}; why={self.why}; minutes={self.minutes}"


def held_back(
    held: Sequence[tuple[str, Card, str]], since: Mapping[str, datetime], now: datetime
) -> list[HeldBack]:
    """The cards held back, with the minutes since the card that holds each."""
    return [
        HeldBack(rule, why, max(int((now - since[rule]).total_seconds() // 60), 0))
        for rule, _, why in held
        if rule in since
    ]


@router.post(
    "/cds-services/{service_id}/feedback",
    summary="Feedback on cards: accepted suggestions and overrides",
    responses={200: {"model": FeedbackAck}, **errors_of(400, 401, 404, 413, 503)},
    openapi_extra=_json_body("FeedbackRequest"),
)
async def post_feedback(service_id: str, request: Request) -> Response:
    state = state_of(request)
    await _authenticate(request)
    service = state.service(service_id)
    body = await _read_json(request, state.settings)
    try:
        items = FeedbackRequest.model_validate(body).feedback
    except ValidationError as exc:
        raise from_validation_error(exc) from None
    ack = await store_feedback(state, service, items)
    return JsonResponse(ack.model_dump(mode="json"))


async def store_feedback(
    state: AppState, service: Service, items: list[FeedbackItem]
) -> FeedbackAck:
    """Keep feedback items and the snoozes they ask for, count and log them. Returns only once
    they are in the spool, fsync'd: a 200 means they are durable, and the drain writes them to
    the database (ipt_cds/storage/drain.py), now or when it is back. ``SpoolUnavailable`` (a
    503 with Retry-After) when not even the spool can keep them."""
    now = state.clock()
    overridden = []
    for card, given in _overrides(items).items():
        owner = state.pipeline.card_ids.decode(card)
        if owner is not None:
            days = state.knowledge.site.snooze_days(owner[1])
            assessed, until = _assessed(state.knowledge, owner[1], given, now)
            if until is not None and until <= now:
                assessed = until = None
            overridden.append(Overridden(card, days, assessed, until))
    # The snoozes are written by the drain, right after the items: they need the card's
    # "shown" row, which the recorder may still hold. Its batch goes to the spool first, so
    # that the drain writes the rows of this worker's cards before their feedback.
    try:
        await state.recorder.flush()
    except Exception as exc:  # counted as unrecorded; the feedback must still be kept
        log.warning("cards shown not spooled before feedback: %s", type(exc).__name__)
    entry = SpooledFeedback(feedback_rows(service.id, items, datetime.now(UTC)), overridden, now)
    try:
        stored = await state.drainer.feedback(entry, FEEDBACK_WAIT_SECONDS)
    except SpoolUnavailable:
        log.warning(
            "feedback not kept: the spool is unavailable service=%s items=%d",
            service.id,
            len(items),
            extra={"event": "feedback-refused", "service": service.id, "items": len(items)},
        )
        raise
    for item in items:
        state.metrics.feedback.labels(service.id, item.outcome).inc()
    pending = len(items) if stored is None else 0
    mark_call_logged()
    log.info(
        "feedback service=%s items=%d stored=%d pending=%d",
        service.id,
        len(items),
        stored or 0,
        pending,
        extra={
            "event": "feedback",
            "service": service.id,
            "items": len(items),
            "stored": stored or 0,
            "pending": pending,
        },
    )
    return FeedbackAck(received=len(items), stored=stored or 0, pending=pending or None)


def _overrides(items: list[FeedbackItem]) -> dict[str, list[FeedbackItem]]:
    """The overridden cards, each with its feedback items."""
    out: dict[str, list[FeedbackItem]] = {}
    for item in items:
        if item.outcome == "overridden":
            out.setdefault(item.card, []).append(item)
    return out


def _assessed(
    knowledge: Knowledge, rule_id: str, items: list[FeedbackItem], now: datetime
) -> tuple[datetime | None, datetime | None]:
    """When an assessment was documented by overriding the card, and until when it holds the
    card back: only with the reason the card's rule declares as holding (``holds_hours``), and
    never from later than now (a client's clock ahead of ours must not lengthen the hold)."""
    holding = knowledge.rulebook.holding.get(rule_id)
    if holding is None or holding.holds_hours is None:
        return None, None
    times = [
        item.outcomeTimestamp
        for item in items
        if any(
            r.code == holding.code and r.system in (None, OVERRIDE_SYSTEM) for r in item.reasons()
        )
    ]
    if not times:
        return None, None
    at = max(t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC) for t in times)
    at = min(at, now)
    return at, at + timedelta(hours=knowledge.params[holding.holds_hours])


async def _read_json(request: Request, settings: Settings) -> dict[str, Any]:
    return checked_json(await read_body(request, settings.max_body_bytes), settings)


def checked_json(raw: bytes, settings: Settings, what: str = "request body") -> dict[str, Any]:
    """A body as a JSON object within the limits (depth, Bundle entries) a hook call has."""
    body = parse_object(raw, what)
    check_depth(raw, settings.max_json_depth)
    prefetch, context = body.get("prefetch"), body.get("context")
    bundles = list(prefetch.values()) if isinstance(prefetch, dict) else []
    if isinstance(context, dict):
        bundles.append(context.get("draftOrders"))
    check_entries(bundles, settings.max_bundle_entries)
    return body


# --- operations: not part of CDS Hooks, not behind client authentication -------------------

operations = APIRouter()


@operations.get("/health", summary="Alive", responses={200: {"model": Health}})
async def health() -> Response:
    return JsonResponse({"status": "ok"})


@operations.get(
    "/ready",
    summary="Ready: the knowledge base is loaded; degraded while the database is away",
    responses={200: {"model": Health}, 503: {"model": Health}},
)
async def ready(request: Request) -> Response:
    # 200 "ready"; 200 "degraded" while the database is away or the spool fills (hook calls are
    # answered, feedback is spooled: the instance should stay in the load balancer); 503 only
    # without a knowledge base.
    state = state_of(request)
    if not state.knowledge.rulebook.rules:
        return JsonResponse({"status": "unavailable", "reason": "knowledge"}, status_code=503)
    drainer, degraded, why = state.drainer, [], []
    try:
        await asyncio.wait_for(run_in_threadpool(state.store.ping), READY_PING_SECONDS)
        error = "" if drainer.database_ok else drainer.error
    except Exception as exc:  # any database failure is "degraded", never a 500
        error = type(exc).__name__
    if error:
        degraded.append("database")
        why.append(f"the database is unavailable ({error})")
    spool = drainer.spool
    if spool.size > spool.max_bytes * SPOOL_BACKING_UP:
        degraded.append("spool")
        why.append(f"the spool holds {spool.size} of its {spool.max_bytes} bytes")
    if not degraded:
        return JsonResponse({"status": "ready"})
    log.warning("degraded: %s", ", ".join(degraded), extra={"event": "degraded"})
    health = Health(
        status="degraded",
        reason="; ".join(why) + ": hook calls are answered, cards shown and feedback are "
        "spooled until the database takes them",
        degraded=degraded,
        spooled=spool.entries,
    )
    return JsonResponse(health.model_dump(mode="json"))


@operations.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=PlainTextResponse,
    responses=errors_of(401),
)
async def metrics(request: Request) -> Response:
    state = state_of(request)
    try:
        state.operator.require(request.headers.get("authorization"))
    except Unauthorized as exc:
        log.warning("unauthorized GET /metrics: %s", exc.reason)
        raise
    body, media_type = state.metrics.exposition()
    return Response(body, media_type=media_type)


def discovery_document(knowledge: Knowledge) -> bytes:
    """Rendered once: sorted, and byte-for-byte the same on every call."""
    doc = DiscoveryResponse(services=list(knowledge.services.values()))
    return orjson.dumps(doc.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
