"""From a patient record to cards: each rule that applies yields at most one card.

The engine knows rules only through the ``Rule`` protocol; the rules themselves come from the
knowledge base. It stamps every card with a uuid (so feedback can be joined to the rule and the
call) and orders the cards critical, warning, info.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from .models import Card
from .record import PatientRecord

INDICATOR_ORDER = {"critical": 0, "warning": 1, "info": 2}


@dataclass(frozen=True)
class HookCall:
    service_id: str
    hook: str
    hook_instance: str
    record: PatientRecord
    now: datetime


class Rule(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def hooks(self) -> frozenset[str]: ...

    def evaluate(self, call: HookCall) -> Card | None: ...


class Engine:
    def __init__(self, rules: Sequence[Rule]) -> None:
        ids = [r.id for r in rules]
        if len(ids) != len(set(ids)):
            raise ValueError("duplicate rule id")
        self._rules = tuple(rules)

    def run(self, call: HookCall) -> list[Card]:
        cards = []
        for rule in self._rules:
            if call.hook not in rule.hooks:
                continue
            card = rule.evaluate(call)
            if card is not None:
                cards.append(card.model_copy(update={"uuid": str(uuid.uuid4())}))
        cards.sort(key=lambda c: INDICATOR_ORDER[c.indicator])
        return cards
