"""The facts of the clinical spec section 1, computed once per hook call.

Simple facts come from the generic extractors declared under ``facts:`` in ``cards/facts.yaml``;
those with real logic from the Python extractors of ``ipt_cds/clinical/computed/``, declared
under ``computed:`` and bound at start-up (ipt_cds/clinical/fact_library.py); then the facts
derived from them (``cards/derived.yaml``). Every fact keeps the FHIR references it came from
(``refs``) and a sentence a clinician can read (``why``), so a card can say why it fired.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from ipt_cds.clinical.declarations import Declaration
from ipt_cds.clinical.extractors import Extractor, Scope
from ipt_cds.clinical.fact_library import Call, Compute
from ipt_cds.clinical.fact_model import Facts
from ipt_cds.clinical.record import PatientRecord
from ipt_cds.clinical.terminology import Terminology

# A bound Python extractor, with the facts it registered (which it alone may set).
Step = tuple[Collection[str], Compute]


class FactBook:
    """The compiled fact definitions: the generic extractions, the bound Python extractors in
    the order cards/facts.yaml declares them, and the derived facts."""

    def __init__(
        self,
        extractors: dict[str, Extractor],
        terms: Terminology,
        params: dict[str, Any],
        declarations: Mapping[str, Declaration] | None = None,
        computed: Sequence[Step] = (),
        derive: Callable[[Facts], None] | None = None,
    ) -> None:
        self.extractors, self.terms, self.params = extractors, terms, params
        # As cards/facts.yaml declares them: for the glossary of docs/rules.md.
        self.declarations = dict(declarations or {})
        # The extractions that are facts themselves (a meaning in cards/facts.yaml).
        self.declared_facts = tuple(n for n, d in self.declarations.items() if d.meaning)
        self.computed = tuple(computed)
        # The facts of cards/derived.yaml, computed from these (ipt_cds/knowledge/derived.py).
        self.derive = derive

    def evaluate(self, record: PatientRecord, hook: str, now: datetime) -> Facts:
        scope = Scope(record, self.terms, now.date(), self.params)
        facts = self._evaluate(scope, hook)
        if scope.skipped:
            # A resource that could not be read was skipped where it failed, but other facts
            # may have read it before: compute them all again without it (once; the resources
            # that fail fail in the first pass, each loop going on past them).
            again = record.without(scope.skipped)
            retry = Scope(again, self.terms, scope.today, self.params)
            retry.skipped.update(scope.skipped)  # warned about once, not twice
            facts = self._evaluate(retry, hook)
        return facts

    def _evaluate(self, scope: Scope, hook: str) -> Facts:
        raw = {name: run(scope) for name, run in self.extractors.items()}
        f = Facts(params=self.params)
        for name in self.declared_facts:
            f.set(name, bool(raw[name]), raw[name])
        for sets, compute in self.computed:
            compute(Call(scope, raw, f, hook, sets))
        if self.derive is not None:
            self.derive(f)
        return f
