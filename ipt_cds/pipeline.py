"""One hook call without HTTP: request -> prefetch -> record -> facts -> rules -> cards.

``Pipeline.run`` takes a parsed request body and the CDS Service it was sent to, and answers the
cards; the HTTP route adds authentication, body limits, recording and the log line around it,
and a card preview or a population replay can call it as it is.

The engine stamps every card with a uuid that carries its service and rule (``protocol.card_ids``:
feedback stays attributable even when the "card shown" row was lost) and orders the cards
critical, warning, info, keeping the rules' order within each.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import chain
from typing import Any, Protocol

from pydantic import ValidationError

from ipt_cds.clinical.fact_model import Facts
from ipt_cds.clinical.facts import FactBook
from ipt_cds.clinical.record import PatientRecord
from ipt_cds.clinical.worsening import RecordState, State, Worsening, worse
from ipt_cds.fhir import prefetch
from ipt_cds.fhir.client import FhirClient
from ipt_cds.knowledge.base import Knowledge
from ipt_cds.knowledge.rules import Outcome, RuleBook, guarded
from ipt_cds.protocol import card_ids
from ipt_cds.protocol.errors import BadRequest, from_validation_error, json_kind
from ipt_cds.protocol.models import REQUEST_MODELS, Card, HookRequest, Service
from ipt_cds.protocol.vocabulary import INDICATOR_RANK


class Hold(Protocol):
    """A remembered card that would be held back now (ipt_cds/storage/memory.py): ``why`` is
    "repeat" (shown this visit), "snooze" (overridden) or "assessed" (overridden with a
    documented risk assessment, by this call's clinician if ``mine``); ``marks`` the record
    then (None: not kept); ``at`` when it was shown or overridden."""

    @property
    def rule_id(self) -> str: ...

    @property
    def why(self) -> str: ...

    @property
    def marks(self) -> State | None: ...

    @property
    def at(self) -> datetime: ...

    @property
    def mine(self) -> bool: ...


class Recalled(Protocol):
    """What the patient already saw (ipt_cds/storage/memory.py)."""

    def holds(self, draft_refs: tuple[str, ...]) -> Iterable[Hold]: ...

    @property
    def keyed(self) -> Callable[[Iterable[str]], frozenset[str]]:
        """Keys the references of a suicidal-ideation basis as the memory keeps them."""
        ...


# Of held cards, the order in which a reason wins: only an assessment holds a critical card.
_HOLD_RANK = {"repeat": 0, "snooze": 1, "assessed": 2}


@dataclass(frozen=True)
class Recollection:
    """What the memory does to this call's cards: rule id -> why it is held back; rule id ->
    a line the card shows at the top of its detail."""

    held: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    # Rule id -> when the card that holds it back was shown, overridden or assessed.
    since: dict[str, datetime] = field(default_factory=dict)


# What another clinician's assessment says on a card whose rule no longer declares its own
# line (a row kept from an earlier knowledge base).
ASSESSED_ELSEWHERE = "Assessed at {at} by another clinician."


def recollect(
    holds: Iterable[Hold],
    now: RecordState,
    worsening: Worsening,
    others_read: Mapping[str, str] | None = None,
) -> Recollection:
    """A remembered card holds its rule back unless the record is worse now than then
    (the clinical spec 7.1); a row without a record holds as before. Another clinician's
    assessment holds nothing: the card says when it was made, in its rule's words
    (``others_read``, by rule id)."""
    held: dict[str, str] = {}
    since: dict[str, datetime] = {}
    assessed: dict[str, datetime] = {}
    for hold in holds:
        if hold.marks is not None and worse(hold.marks, now, worsening):
            continue
        if hold.why == "assessed" and not hold.mine:
            assessed[hold.rule_id] = max(hold.at, assessed.get(hold.rule_id, hold.at))
        elif _HOLD_RANK.get(hold.why, 0) >= _HOLD_RANK.get(held.get(hold.rule_id, ""), -1):
            if held.get(hold.rule_id) != hold.why or hold.at > since[hold.rule_id]:
                since[hold.rule_id] = hold.at  # the latest of the winning reason
            held[hold.rule_id] = hold.why
    said = others_read or {}
    notes = {
        rule: said.get(rule, ASSESSED_ELSEWHERE).replace(
            "{at}", f"{at.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
        )
        for rule, at in assessed.items()
        # A snooze never holds a critical card: only this clinician's own assessment does.
        if held.get(rule) != "assessed"
    }
    return Recollection(held, notes, since)


# Asked as soon as the request is valid, awaited once the facts are known: a lookup that is a
# round trip to the database runs while the record is read.
Recaller = Callable[[HookRequest], Awaitable[Recalled]]


@dataclass(frozen=True)
class HookCall:
    service_id: str
    hook: str
    hook_instance: str
    record: PatientRecord
    now: datetime


class Rule(Protocol):
    """A rule written in Python, for embedding applications and tests; ours are data."""

    @property
    def id(self) -> str: ...

    @property
    def hooks(self) -> frozenset[str]: ...

    def evaluate(self, call: HookCall, facts: Facts) -> Card | None: ...


class Engine:
    def __init__(self, factbook: FactBook, rulebook: RuleBook, extra: Sequence[Rule] = ()) -> None:
        ids = [r.id for r in rulebook.rules] + [r.id for r in extra]
        if len(ids) != len(set(ids)):
            raise ValueError("duplicate rule id")
        self.rule_ids = tuple(ids)
        self.factbook, self.rulebook, self.extra = factbook, rulebook, tuple(extra)

    def facts(self, call: HookCall) -> Facts:
        return self.factbook.evaluate(call.record, call.hook, call.now)

    def run(
        self,
        call: HookCall,
        facts: Facts | None = None,
        recalled: Mapping[str, str] | None = None,
        notes: Mapping[str, str] | None = None,
    ) -> Outcome:
        """The cards returned, each with the id of the rule that made it, most urgent first;
        and the cards a site made silent or the patient's memory held back. ``notes``: a line
        the memory adds to a rule's card (ipt_cds/pipeline.py ``recollect``)."""
        facts = facts or self.facts(call)
        outcome = self.rulebook.outcome(facts, recalled, notes)
        for rule in self.extra:
            if call.hook in rule.hooks:
                card = guarded(rule.id, rule.evaluate, call, facts)
                if card is not None:
                    outcome.shown.append((rule.id, card))
        held = [
            (
                rule_id,
                card.model_copy(update={"uuid": card_ids.mint(call.service_id, rule_id)}),
                why,
            )
            for rule_id, card, why in outcome.held
        ]
        return Outcome(_stamped(call, outcome.shown), _stamped(call, outcome.silent), held)


def draft_keys(same_draft: Iterable[str], facts: Facts) -> tuple[str, ...]:
    """What "the same draft order" means for once per visit: the references the facts named in
    ``same_draft`` keep (cards/facts.yaml); the chart ("") for a call about no draft."""
    refs = {ref for name in same_draft for ref in facts.refs.get(name, [])}
    return tuple(sorted(refs)) or ("",)


def _minted(call: HookCall, rule_id: str, card: Card) -> Card:
    return card.model_copy(update={"uuid": card_ids.mint(call.service_id, rule_id)})


def _stamped(call: HookCall, cards: list[tuple[str, Card]]) -> list[tuple[str, Card]]:
    stamped = [(rule_id, _minted(call, rule_id, c)) for rule_id, c in cards]
    stamped.sort(key=lambda pair: INDICATOR_RANK[pair[1].indicator])
    return stamped


@dataclass(frozen=True)
class HookResult:
    """What one call produced: the cards, and what the log line and the recorder need."""

    request: HookRequest
    record: PatientRecord
    # Each card with its rule: a Python rule's card need not name the rule in source.topic.
    fired: list[tuple[str, Card]]
    now: datetime
    # Cards a site made silent: recorded as "would have shown", never returned.
    silent: list[tuple[str, Card]] = field(default_factory=list)
    # Cards held back as seen this visit ("repeat") or overridden ("snooze").
    held: list[tuple[str, Card, str]] = field(default_factory=list)
    # The draft orders the call is about, as once per visit keys them.
    draft_keys: tuple[str, ...] = ("",)
    # Of the service's prefetch keys: how many the client sent with data, how many were fetched
    # from the FHIR server, and how many it sent as null (no data, per CDS Hooks).
    prefetch: PrefetchCounts = field(default_factory=lambda: PrefetchCounts(0, 0, 0))
    # The suitability verdict of the facts (the clinical spec section 2), for a population replay.
    verdict: str | None = None
    # The record as the card memory keeps it with each card shown (None: nothing recalled).
    state: RecordState | None = None
    # Of each rule held back: when the card that holds it was shown, overridden or assessed.
    held_since: dict[str, datetime] = field(default_factory=dict)

    @property
    def cards(self) -> list[Card]:
        return [card for _, card in self.fired]


@dataclass(frozen=True)
class PrefetchCounts:
    given: int
    fetched: int
    missing: int
    # Resources per prefetch key, given or fetched (a server that finds nothing shows here).
    reads: dict[str, int] = field(default_factory=dict)
    # Prefetch keys not read, and why in a few words (``403/forbidden``, ``client``).
    unreadable: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(
        cls, service: Service, request: HookRequest, data: prefetch.Prefetched | None = None
    ) -> PrefetchCounts:
        sent = request.prefetch or {}
        keys = list(service.prefetch or {})
        return cls(
            given=sum(1 for k in keys if sent.get(k) is not None),
            fetched=sum(1 for k in keys if k not in sent),
            missing=sum(1 for k in keys if k in sent and sent[k] is None),
            reads={k: len(data.resources[k]) for k in keys if k in data.resources}
            if data is not None
            else {},
            unreadable=dict(data.reasons) if data is not None else {},
        )


def _received(body: dict[str, Any]) -> str:
    """What was posted instead, without quoting its values (they may be patient data)."""
    kind = body.get("resourceType")
    if isinstance(kind, str) and kind.isalnum() and len(kind) <= 64:
        return f"it is a FHIR {kind} (resourceType {kind})"
    if "hook" in body:
        return f'its "hook" is {json_kind(body["hook"])}, not a hook\'s name'
    keys = sorted(k[:40] for k in body)[:6]
    listed = f"; its keys: {', '.join(keys)}" if keys else " (an empty object)"
    return f'it has no "hook"{listed}'


class Pipeline:
    """The knowledge base and the engine, ready to answer hook calls."""

    def __init__(self, knowledge: Knowledge, extra: Sequence[Rule] = ()) -> None:
        self.knowledge = knowledge
        self.engine = Engine(knowledge.factbook, knowledge.rulebook, extra)
        # Reads a card uuid back to its service and rule (retired rules included); refuses ids
        # whose codes collide.
        self.card_ids = card_ids.CardIds(
            knowledge.services, self.engine.rule_ids, knowledge.rulebook.retired
        )
        # What a card assessed by another clinician says first, by rule id (its holding reason's).
        self.others_read = {
            rule_id: reason.others_read
            for rule_id, reason in knowledge.rulebook.holding.items()
            if reason.others_read is not None
        }

    def validate(self, service: Service, body: dict[str, Any]) -> HookRequest:
        """The body as the hook's request model; a 400 naming the field when it is not one."""
        hook = body.get("hook")
        if not isinstance(hook, str):
            raise BadRequest(
                f"The body is not a CDS Hooks request: {_received(body)}. A hook request names "
                f'its "hook" ({service.hook} here), "hookInstance" and "context"; FHIR resources '
                'go in "context" and "prefetch".',
                field="hook",
                code="not_a_hook_request",
            )
        if hook != service.hook:
            raise BadRequest(
                f"Service {service.id} answers the {service.hook} hook, not {hook!r}.",
                field="hook",
                code="hook_mismatch",
            )
        try:
            request: HookRequest = REQUEST_MODELS[service.hook].model_validate(body)
        except ValidationError as exc:
            raise from_validation_error(exc) from None
        return request

    async def run(
        self,
        service: Service,
        body: dict[str, Any],
        *,
        fhir: FhirClient | None,
        fhir_allowed: Callable[[str], bool],
        now: datetime,
        recall: Recaller | None = None,
    ) -> HookResult:
        """``recall``: what the patient already saw, for once per visit and snooze (None:
        nothing recalled)."""
        request = self.validate(service, body)
        # A call that fails from here on leaves the lookup to finish on its own: it never
        # raises, and cancelling it would cost the memory its database connection.
        pending = recall(request) if recall is not None else None
        data = await prefetch.gather(service, request, fhir, fhir_allowed)
        resources = chain.from_iterable(data.resources.values())
        record = PatientRecord.build(
            resources, request, frozenset(data.unreadable), frozenset(data.not_offered)
        )
        call = HookCall(service.id, service.hook, request.hookInstance, record, now)
        facts = self.engine.facts(call)
        keys = draft_keys(self.knowledge.same_draft, facts)
        recalled = await pending if pending is not None else None
        worsening = self.knowledge.worsening
        state = RecordState.of(facts, recalled.keyed, worsening) if recalled is not None else None
        memo = (
            recollect(recalled.holds(keys), state, worsening, self.others_read)
            if recalled is not None and state is not None
            else Recollection()
        )
        outcome = self.engine.run(call, facts, memo.held, memo.notes)
        return HookResult(
            request,
            record,
            outcome.shown,
            now,
            outcome.silent,
            outcome.held,
            keys,
            PrefetchCounts.of(service, request, data),
            facts.values.get("verdict"),
            state,
            memo.since,
        )
