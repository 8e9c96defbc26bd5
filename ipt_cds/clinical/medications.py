"""Which drug a MedicationRequest or MedicationStatement is, and whether it counts as an
antidepressant here (the clinical spec section 1, ``on_antidepressant``).

A product counts by its clinical-drug or ingredient code, or by an ingredient's name in its text.
Some products of antidepressant ingredients are not used as antidepressants and do not count:
hypnotic-strength doxepin, amitriptyline or trazodone at a low daily dose (only when the dose is
known: an unknown dose counts), and bupropion for smoking cessation. ``cards/facts.yaml``
declares those exclusions (``not_when``); this module applies them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ipt_cds.clinical.reader import as_list, number, referenced_id, status, string, texts
from ipt_cds.clinical.record import PatientRecord
from ipt_cds.clinical.terminology import NameMatcher, Terminology
from ipt_cds.protocol.models import Resource

# MedicationRequest and MedicationStatement statuses that make a drug current.
CURRENT_STATUSES = {
    "MedicationRequest": {"active", "on-hold"},
    "MedicationStatement": {"active", "intended", "on-hold"},
}
# Days in one unit of a FHIR Timing's periodUnit.
_UNIT_DAYS = {"s": 1 / 86400, "min": 1 / 1440, "h": 1 / 24, "d": 1, "wk": 7, "mo": 30, "a": 365}
_MG = {"mg", "milligram", "milligrams"}


class Exclusion(BaseModel):
    """Products of ``valueset`` that are not antidepressants: all of them; or only at a known
    daily dose at most the parameter ``daily_mg_at_most``; or only when the reason for the
    order is in ``reason`` (a value set) or its text says one of ``text_includes``."""

    model_config = ConfigDict(extra="forbid")
    valueset: str
    daily_mg_at_most: str | None = None
    reason: str | None = None
    text_includes: list[str] = Field(default_factory=list)


@dataclass(frozen=True)
class Drug:
    code: str | None
    display: str | None
    # The ingredient's name, lower case: a draft of the same ingredient as a current product is
    # a renewal, not a new start.
    ingredient: str | None


def medication_concepts(m: Resource, record: PatientRecord) -> list[Any]:
    """The drug of a MedicationRequest or MedicationStatement: its CodeableConcept, or the
    Medication it references (contained, or included in the record), with its ingredients."""
    concepts: list[Any] = []
    if m.get("medicationCodeableConcept") is not None:
        concepts.append(m["medicationCodeableConcept"])
    ref = m.get("medicationReference")
    if isinstance(ref, dict):
        if isinstance(ref.get("display"), str):
            concepts.append({"text": ref["display"]})
        target = string(ref.get("reference")) or ""
        med = None
        if target.startswith("#"):
            med = next(
                (
                    c
                    for c in as_list(m.get("contained"))
                    if isinstance(c, dict) and c.get("id") == target[1:]
                ),
                None,
            )
        elif target:
            rid = referenced_id(target)
            med = next((x for x in record.of_type("Medication") if x.get("id") == rid), None)
        if med is not None:
            concepts.append(med.get("code"))
            for ing in as_list(med.get("ingredient")):
                if isinstance(ing, dict):
                    concepts.append(ing.get("itemCodeableConcept"))
    return concepts


def unidentified(record: PatientRecord) -> int:
    """Current orders and statements whose drug cannot be known: no code of their own, and a
    Medication reference that neither the resource nor the record resolves (a server that
    left it out and refused to read it). Each may be an antidepressant: unknown, not absent."""
    known = {x.get("id") for x in record.of_type("Medication")}
    count = 0
    for kind, current in CURRENT_STATUSES.items():
        for m in record.of_type(kind):
            if status(m) not in current or m.get("medicationCodeableConcept"):
                continue
            ref = m.get("medicationReference")
            target = string(ref.get("reference")) if isinstance(ref, dict) else None
            if not target or target.startswith("#"):
                continue
            if referenced_id(target) not in known:
                count += 1
    return count


def daily_mg(m: Resource) -> float | None:
    """The first dosage's dose in mg times its doses a day (once a day without a timing);
    None when the dose is not given in mg or the timing cannot be read."""
    dosages = as_list(m.get("dosageInstruction", m.get("dosage")))
    first = dosages[0] if dosages else None
    if not isinstance(first, dict):
        return None
    rate = as_list(first.get("doseAndRate"))
    quantity = rate[0].get("doseQuantity") if rate and isinstance(rate[0], dict) else None
    quantity = quantity if quantity is not None else first.get("doseQuantity")  # STU3 shape
    if not isinstance(quantity, dict):
        return None
    unit = string(quantity.get("code")) or string(quantity.get("unit")) or ""
    dose = number(quantity.get("value"))
    if dose is None or unit.strip().lower() not in _MG:
        return None
    per_day = _doses_a_day(first.get("timing"))
    return None if per_day is None else dose * per_day


def _doses_a_day(timing: Any) -> float | None:
    if timing is None:
        return 1.0
    repeat = timing.get("repeat") if isinstance(timing, dict) else None
    if not isinstance(repeat, dict):
        return None
    frequency = number(repeat.get("frequency", 1))
    period = number(repeat.get("period", 1))
    unit = _UNIT_DAYS.get(string(repeat.get("periodUnit")) or "d")
    if not frequency or not period or unit is None:
        return None
    return frequency / (period * unit)


class DrugMatcher:
    """Recognises the products of a drug class and its ingredients, minus the exclusions."""

    def __init__(
        self,
        terms: Terminology,
        valueset: str,
        ingredients: str,
        exclusions: list[Exclusion],
        params: dict[str, Any],
    ) -> None:
        self.terms, self.valueset, self.ingredients = terms, valueset, ingredients
        self.names = NameMatcher(terms.displays(ingredients))
        self.exclusions = [
            (
                x,
                NameMatcher(terms.displays(x.valueset)),
                float(params[x.daily_mg_at_most]) if x.daily_mg_at_most else None,
                [t.lower() for t in x.text_includes],
            )
            for x in exclusions
        ]

    def match(self, m: Resource, record: PatientRecord) -> Drug | None:
        concepts = medication_concepts(m, record)
        drug = self._drug(concepts)
        if drug is None or self._excluded(m, concepts, record):
            return None
        return drug

    def _drug(self, concepts: list[Any]) -> Drug | None:
        for concept in concepts:
            for url in (self.valueset, self.ingredients):
                found = self.terms.match(url, concept)
                if found:
                    return Drug(found.code, found.display, self._ingredient(concepts))
        for concept in concepts:
            name = self.names.find(concept)
            if name:
                return Drug(None, name, name.lower())
        return None

    def _ingredient(self, concepts: list[Any]) -> str | None:
        for concept in concepts:
            found = self.terms.match(self.ingredients, concept)
            if found and found.display:
                return found.display.lower()
        for concept in concepts:
            # A clinical drug's own name ("sertraline 50 MG Oral Tablet") names its ingredient.
            found = self.terms.match(self.valueset, concept)
            name = self.names.find({"text": found.display} if found and found.display else concept)
            if name:
                return name.lower()
        return None

    def _excluded(self, m: Resource, concepts: list[Any], record: PatientRecord) -> bool:
        for x, names, max_mg, words in self.exclusions:
            if not any(
                self.terms.match(x.valueset, c) or names.find(c) for c in concepts if c is not None
            ):
                continue
            if max_mg is not None:
                dose = daily_mg(m)
                if dose is not None and dose <= max_mg:
                    return True
                continue
            if x.reason is None and not words:
                return True
            if x.reason is not None and self._reason_in(m, x.reason, record):
                return True
            if words and any(w in text for text in _texts_of(m, concepts) for w in words):
                return True
        return False

    def _reason_in(self, m: Resource, valueset: str, record: PatientRecord) -> bool:
        if any(self.terms.match(valueset, c) for c in as_list(m.get("reasonCode"))):
            return True
        targets = {
            referenced_id(r.get("reference"))
            for r in as_list(m.get("reasonReference"))
            if isinstance(r, dict)
        } - {None}
        return any(
            c.get("id") in targets and self.terms.match(valueset, c.get("code"))
            for c in record.of_type("Condition")
        )


def _texts_of(m: Resource, concepts: list[Any]) -> list[str]:
    """Lower-case texts of the product, the reasons, the dosage and the notes."""
    found = [t for c in concepts for t in texts(c)]
    found += [t for c in as_list(m.get("reasonCode")) for t in texts(c)]
    for holder in as_list(m.get("dosageInstruction", m.get("dosage"))) + as_list(m.get("note")):
        if isinstance(holder, dict) and isinstance(holder.get("text"), str):
            found.append(holder["text"])
    return [t.lower() for t in found]
