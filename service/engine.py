"""From a patient record to cards: facts once, then every rule of the knowledge base.

The engine stamps every card with a uuid (so feedback can be joined to the rule and the call)
and orders the cards critical, warning, info, keeping the rules' order within each.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from .facts import FactBook, Facts
from .models import Card
from .record import PatientRecord
from .rules import RuleBook, guarded

INDICATOR_ORDER = {"critical": 0, "warning": 1, "info": 2}


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
        self.factbook, self.rulebook, self.extra = factbook, rulebook, tuple(extra)

    def facts(self, call: HookCall) -> Facts:
        return self.factbook.evaluate(call.record, call.hook, call.now)

    def run(self, call: HookCall) -> list[Card]:
        facts = self.facts(call)
        cards = [card for _, card in self.rulebook.cards(facts)]
        for rule in self.extra:
            if call.hook in rule.hooks:
                card = guarded(rule.id, rule.evaluate, call, facts)
                if card is not None:
                    cards.append(card)
        stamped = [c.model_copy(update={"uuid": str(uuid.uuid4())}) for c in cards]
        stamped.sort(key=lambda c: INDICATOR_ORDER[c.indicator])
        return stamped
