"""The fact model is honest: every fact a call computes has the type and the values the model
declares, and every declared value is seen on some record."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ipt_cds.clinical.fact_model import Facts
from ipt_cds.clinical.record import PatientRecord
from ipt_cds.devtools.fixtures import Case, load_cases
from ipt_cds.knowledge.base import Knowledge
from ipt_cds.protocol.models import REQUEST_MODELS

from .conftest import (
    DATA,
    FHIR_BASE,
    NOW,
    condition,
    hook_request,
    ipt_order,
    load_json,
)
from .test_facts import LOINC, SERTRALINE_SCD, dishonest, facts_of, med, observation

# The rule checker trusts the model (knowledge.facts: each fact's type as its Python or its
# declaration gives it, and its values): a value the model does not declare would be a value no
# rule can be checked against.

CASES = load_cases()


def _case_facts(knowledge: Knowledge, case: Case) -> Facts:
    request = REQUEST_MODELS[case.hook].model_validate(case.request(NOW, FHIR_BASE, prefetch=False))
    record = PatientRecord.build(case.resources(NOW), request)
    return knowledge.factbook.evaluate(record, case.hook, NOW)


def _without_patient(knowledge: Knowledge) -> Facts:
    request = REQUEST_MODELS["patient-view"].model_validate(
        hook_request("patient-view", {"patient": None})
    )
    return knowledge.factbook.evaluate(PatientRecord.build([], request), "patient-view", NOW)


def _synthea(file: str) -> Callable[[Knowledge], Facts]:
    def facts(knowledge: Knowledge) -> Facts:
        bundle = load_json(DATA / "synthea" / file)
        return facts_of(knowledge, *[e["resource"] for e in bundle["entry"]], drafts=[ipt_order()])

    return facts


def _panel(knowledge: Knowledge) -> Facts:
    total = observation("total", "44261-6", valueQuantity={"value": 4.5})
    panel = observation("panel", "44249-1")
    panel["component"] = [
        {
            "code": {"coding": [{"system": LOINC, "code": "44260-8"}]},
            "valueCodeableConcept": {"coding": [{"system": LOINC, "code": "LA6569-3"}]},
        },
        {"code": {"coding": [{"system": LOINC, "code": "44259-0"}]}, "valueInteger": 3},
        {"code": {"coding": [{"system": LOINC, "code": "44254-1"}]}, "valueInteger": 2},
    ]
    return facts_of(knowledge, condition("c1", "F32.1"), total, panel)


def _unselected_drafts(knowledge: Knowledge) -> Facts:
    ad = med("ad", status="draft", medicationCodeableConcept=SERTRALINE_SCD)
    return facts_of(
        knowledge,
        condition("c1"),
        drafts=[ipt_order("i"), ad],
        hook="order-select",
        selections=["MedicationRequest/ad"],
    )


SYNTHEA = {f"synthea-{p.stem.split('_')[0]}": p.name for p in (DATA / "synthea").glob("*.json")}

# Records the fixture cases do not make: no patient at all, decimal and coded PHQ answers in a
# panel, every neurovegetative domain, interpersonal deficits alone, and the Synthea patients.
AWKWARD: dict[str, Callable[[Knowledge], Facts]] = {
    "no-patient": _without_patient,
    "phq-panel-decimal-total-coded-item9": _panel,
    "every-neurovegetative-domain": lambda k: facts_of(
        k,
        condition("c1", "F33.40"),
        condition("i", "F51.01"),
        condition("f", "R53.83"),
        condition("a", "R63.0"),
        condition("l", "F52.0"),
    ),
    "interpersonal-deficits-and-traits": lambda k: facts_of(
        k, condition("i", "Z60.2"), condition("p", "F60.5"), condition("c", "F34.1")
    ),
    "unselected-drafts": _unselected_drafts,
    **{name: _synthea(file) for name, file in SYNTHEA.items()},
}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_the_facts_of_every_fixture_case_honour_the_model(knowledge: Knowledge, case: Case) -> None:
    assert dishonest(_case_facts(knowledge, case), knowledge.facts) == []


@pytest.mark.parametrize("name", sorted(AWKWARD))
def test_the_facts_of_awkward_records_honour_the_model(knowledge: Knowledge, name: str) -> None:
    assert dishonest(AWKWARD[name](knowledge), knowledge.facts) == []


def test_no_fact_or_value_of_the_model_is_never_computed(knowledge: Knowledge) -> None:
    """The model is no wider than the code: over the cases and the awkward records every fact
    is computed, each word of a closed set turns up, an optional fact is both None and not,
    and each fact said to keep its evidence does so at least once."""
    everything = [_case_facts(knowledge, c) for c in CASES]
    everything += [facts(knowledge) for facts in AWKWARD.values()]
    unseen: list[str] = []
    for name, spec in knowledge.facts.items():
        values = [f.values[name] for f in everything]
        words = {w for v in values for w in (v if isinstance(v, list) else [v])}
        unseen += [f"{name} = {w!r}" for w in spec.values or () if w not in words]
        if spec.optional and None not in values:
            unseen.append(f"{name} = None")
        if all(v is None for v in values):
            unseen.append(f"{name} other than None")
        if spec.explained and not any(name in f.why for f in everything):
            unseen.append(f"why.{name}")
    assert unseen == []
