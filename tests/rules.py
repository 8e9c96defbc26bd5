"""A rule written against the engine's ``Rule`` protocol, to exercise the pipeline end to end."""

from __future__ import annotations

from dataclasses import dataclass

from ipt_cds.clinical.fact_model import Facts
from ipt_cds.pipeline import HookCall
from ipt_cds.protocol.models import Card, Coding, Source
from ipt_cds.protocol.vocabulary import HOOKS


@dataclass(frozen=True)
class CountingRule:
    """Fires when the record holds a resource of ``kind``; says how many it saw."""

    id: str
    kind: str
    indicator: str = "info"
    hooks: frozenset[str] = frozenset(HOOKS)

    def evaluate(self, call: HookCall, facts: Facts) -> Card | None:
        found = call.record.of_type(self.kind)
        drafts = call.record.selected
        if not found and not drafts:
            return None
        return Card.model_validate(
            {
                "summary": f"{len(found)} {self.kind}, {len(drafts)} selected drafts",
                "indicator": self.indicator,
                "source": Source(
                    label="IPT CDS", topic=Coding(code=self.id, system="urn:test", display=self.id)
                ),
            }
        )
