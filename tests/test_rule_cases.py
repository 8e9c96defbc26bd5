"""Every case of fhir_fixtures/cases/ through the service: the cards must be exactly the expected
rules with the expected indicators, with full prefetch, with the prefetch a FHIR server answers
to the discovery templates (their code and status filters applied), and through the FHIR fetch
path alike."""

from __future__ import annotations

from collections import defaultdict

import pytest
from fastapi.testclient import TestClient

from ipt_cds.devtools.fixtures import COULD_NOT_READ, Case, load_cases
from ipt_cds.knowledge.base import Knowledge
from ipt_cds.replay.search import compile_searches

from .conftest import FHIR_BASE, NOW, SERVICE_OF_HOOK, AppFactory, FakeFhir

CASES = load_cases()


def _cards(client: TestClient, case: Case, prefetch: bool) -> dict[str, str]:
    body = case.request(NOW, FHIR_BASE, prefetch=prefetch)
    response = client.post(f"/cds-services/{SERVICE_OF_HOOK[case.hook]}", json=body)
    assert response.status_code == 200, response.text
    cards = response.json()["cards"]
    found = {c["source"]["topic"]["code"]: c["indicator"] for c in cards}
    assert len(found) == len(cards), "one card per rule"
    return found


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.rule}/{c.name}")
def test_case_with_full_prefetch(case: Case, make_client: AppFactory) -> None:
    fhir = FakeFhir()
    assert _cards(make_client(fhir), case, prefetch=True) == case.expect, case.describe
    assert fhir.requests == []


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.rule}/{c.name}")
def test_case_with_prefetch_as_a_server_answers_the_templates(
    case: Case, make_client: AppFactory, knowledge: Knowledge
) -> None:
    """The full prefetch holds every resource; an EHR answers the templates with only what their
    filters select (e.g. no stopped order, no Observation of another code): no card may depend
    on what the templates do not ask for."""
    service = knowledge.services[SERVICE_OF_HOOK[case.hook]]
    own: dict[str, list[dict[str, object]]] = defaultdict(list)
    for resource in case.resources(NOW):
        own[str(resource["resourceType"])].append(resource)
    body = case.request(NOW, FHIR_BASE, prefetch=False)
    drugs = {f"Medication/{r['id']}": r for r in own.get("Medication", [])}
    body["prefetch"] = {
        search.key: search.answer(case.patient_id, own, drugs.get)
        if search.key not in case.unreadable
        else COULD_NOT_READ
        for search in compile_searches(service)
    }
    fhir = FakeFhir()
    client = make_client(fhir)
    response = client.post(f"/cds-services/{service.id}", json=body)
    assert response.status_code == 200, response.text
    found = {c["source"]["topic"]["code"]: c["indicator"] for c in response.json()["cards"]}
    assert found == case.expect, case.describe
    assert fhir.requests == []


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.rule}/{c.name}")
def test_case_through_the_fetch_path(case: Case, make_client: AppFactory) -> None:
    """A server that refuses what the case cannot read (403, as for a scope not granted)."""
    fhir = FakeFhir(resources=case.resources(NOW), fail=dict.fromkeys(case.refused_types, 403))
    assert _cards(make_client(fhir), case, prefetch=False) == case.expect, case.describe
    assert "Patient" in fhir.paths()


def test_every_rule_has_cases_inside_and_just_outside(knowledge: Knowledge) -> None:
    by_rule: dict[str, list[Case]] = defaultdict(list)
    for case in CASES:
        by_rule[case.rule].append(case)
    for rule in knowledge.rulebook.rules:
        cases = by_rule.get(rule.id, [])
        inside = [c for c in cases if c.name.startswith("in-") and rule.id in c.expect]
        outside = [c for c in cases if c.name.startswith("out-") and rule.id not in c.expect]
        assert inside, f"{rule.id}: no in- case fires it"
        assert outside, f"{rule.id}: no out- case stays just outside it"
    names = [c.name for c in CASES]
    assert len(names) == len(set(names)), "case names are patient ids: they must be unique"
