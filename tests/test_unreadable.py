"""What the client could not prefetch is unknown, never absent (the spec version 3, s.7.1).

CDS Hooks: a client that could not prefetch a key says so with an OperationOutcome. For an
optional key the resource type its template reads is unreadable in the record, and the facts
that depend on it are unknown; the Patient and the Conditions are fetched instead, or the call
is a 412 naming them.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ipt_cds.clinical.fact_model import Facts
from ipt_cds.fhir.prefetch import Prefetched, could_not_prefetch, kind_of
from ipt_cds.knowledge.base import Knowledge
from ipt_cds.pipeline import HookResult, Pipeline

from .conftest import (
    NOW,
    AppFactory,
    FakeFhir,
    Json,
    bundle,
    condition,
    full_prefetch,
    hook_request,
    patient,
)
from .rules import CountingRule

RULES = (CountingRule("counts-conditions", "Condition", "info"),)
FAILED = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "exception"}]}
WARNED = {"resourceType": "OperationOutcome", "issue": [{"severity": "warning", "code": "info"}]}


def _run(knowledge: Knowledge, prefetch: dict[str, Any]) -> tuple[HookResult, Facts]:
    pipeline = Pipeline(knowledge)
    service = knowledge.services["ipt-patient-view"]
    body = hook_request("patient-view", prefetch)
    result = asyncio.run(
        pipeline.run(service, body, fhir=None, fhir_allowed=lambda url: False, now=NOW)
    )
    return result, knowledge.factbook.evaluate(result.record, "patient-view", NOW)


def _prefetch(**keys: Any) -> dict[str, Any]:
    prefetch: dict[str, Any] = full_prefetch(condition("c1", "F32.1"))
    prefetch.update(keys)
    return prefetch


def test_medications_as_an_operation_outcome_are_unknown(knowledge: Knowledge) -> None:
    result, f = _run(knowledge, _prefetch(medications=FAILED))
    assert result.record.unreadable == {"MedicationRequest"}
    assert f["unreadable"] == ["medication orders"]
    assert (f["medications_unknown"], f["therapy_unknown"], f["observations_unknown"]) == (
        True,
        False,
        False,
    )
    assert f["depression"], "the rest of the record is read"


def test_a_full_prefetch_leaves_nothing_unknown(knowledge: Knowledge) -> None:
    result, f = _run(knowledge, _prefetch())
    assert result.record.unreadable == frozenset()
    assert (f["unreadable"], f["medications_unknown"], f["therapy_unknown"]) == ([], False, False)


@pytest.mark.parametrize(
    ("key", "value", "kinds"),
    [
        ("serviceRequests", bundle(FAILED), {"ServiceRequest"}),
        ("procedures", bundle(FAILED, FAILED), {"Procedure"}),
        ("observations", bundle({**FAILED, "issue": [{"severity": "fatal"}]}), {"Observation"}),
        # A bare OperationOutcome says the key could not be prefetched, whatever its issues.
        ("medicationStatements", {"resourceType": "OperationOutcome"}, {"MedicationStatement"}),
        # Notes on an answer are not a failure: no data, known.
        ("serviceRequests", bundle(WARNED), set()),
        ("serviceRequests", None, set()),
    ],
)
def test_which_answers_mean_could_not_prefetch(
    knowledge: Knowledge, key: str, value: Json | None, kinds: set[str]
) -> None:
    result, f = _run(knowledge, _prefetch(**{key: value}))
    assert result.record.unreadable == kinds
    assert f["therapy_unknown"] == bool(kinds & {"ServiceRequest", "Procedure"})
    assert f["observations_unknown"] == ("Observation" in kinds)


def test_what_came_beside_an_error_is_still_read(knowledge: Knowledge) -> None:
    sertraline = {
        "resourceType": "MedicationRequest",
        "id": "m1",
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {
            "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "312941"}]
        },
    }
    _, f = _run(knowledge, _prefetch(medications=bundle(sertraline, FAILED)))
    assert (f["on_antidepressant"], f["medications_unknown"]) == (True, True)


def test_the_call_answers_200(make_client: AppFactory) -> None:
    fhir = FakeFhir()
    client = make_client(fhir, rules=RULES)
    body = hook_request("patient-view", _prefetch(medications=FAILED))
    response = client.post("/cds-services/ipt-patient-view", json=body)
    assert response.status_code == 200, response.text
    assert fhir.requests == [], "an optional key the client could not prefetch is not fetched"


@pytest.mark.parametrize(("key", "kind"), [("conditions", "Condition"), ("patient", "Patient")])
def test_an_essential_key_the_client_could_not_prefetch_is_fetched(
    make_client: AppFactory, key: str, kind: str
) -> None:
    fhir = FakeFhir(resources=[patient(), condition("fetched", "F32.1")])
    client = make_client(fhir, rules=RULES)
    prefetch = _prefetch(**{key: FAILED})
    response = client.post(
        "/cds-services/ipt-patient-view", json=hook_request("patient-view", prefetch)
    )
    assert response.status_code == 200, response.text
    assert fhir.paths() == ["metadata", kind]
    if key == "conditions":
        summaries = [c["summary"] for c in response.json()["cards"]]
        assert any(s.startswith("1 Condition") for s in summaries), summaries


@pytest.mark.parametrize("key", ["conditions", "patient"])
def test_an_essential_key_that_cannot_be_fetched_is_a_412_naming_it(
    make_client: AppFactory, key: str
) -> None:
    fhir = FakeFhir(resources=[patient(), condition("fetched", "F32.1")])
    client = make_client(fhir, rules=RULES)
    body = hook_request("patient-view", _prefetch(**{key: bundle(FAILED)}), with_auth=False)
    del body["fhirServer"]
    response = client.post("/cds-services/ipt-patient-view", json=body)
    assert response.status_code == 412
    assert response.json()["code"] == "prefetch_failed"
    assert key in response.json()["message"]
    assert fhir.requests == []


def test_the_fetch_path_sets_the_same_field_with_its_reason() -> None:
    data = Prefetched()
    data.could_not_read(
        "medications", "MedicationRequest?patient={{context.patientId}}&status=active", "client"
    )
    data.could_not_read("procedures", "/Procedure?patient=1", "403/forbidden")
    assert data.unreadable == {"MedicationRequest", "Procedure"}
    assert data.reasons == {"medications": "client", "procedures": "403/forbidden"}
    assert kind_of("Patient/{{context.patientId}}") == "Patient"


@pytest.mark.parametrize(
    ("value", "failed"),
    [
        (FAILED, True),
        (bundle(FAILED), True),
        (bundle(WARNED), False),
        (bundle(), False),
        (None, False),
        ({"resourceType": "Bundle", "entry": {"resource": FAILED}}, True),
        ({"resourceType": "Bundle", "entry": 5}, False),
        (bundle({"resourceType": "OperationOutcome", "issue": "error"}), False),
        (bundle({"resourceType": "OperationOutcome", "issue": {"severity": "fatal"}}), True),
        ([FAILED], False),
    ],
)
def test_could_not_prefetch_is_total_over_json(value: Any, failed: bool) -> None:
    assert could_not_prefetch(value) is failed


# --- one page of a search ---------------------------------------------------------------------

PHQ9_SEVERE = {
    "resourceType": "Observation",
    "id": "phq9-late",
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "44261-6"}]},
    "effectiveDateTime": "2026-11-20T09:00:00Z",
    "valueInteger": 22,
}


def _first_page(*resources: Json) -> Json:
    """A searchset that links to a next page, as the CDS Hooks sandbox prefetches (20 a key)."""
    first = bundle(*resources)
    first["link"] = [{"relation": "next", "url": "https://ehr.example.org/fhir/Observation?p=2"}]
    return first


def test_one_page_of_a_search_without_a_server_is_unknown_not_all(knowledge: Knowledge) -> None:
    result, f = _run(knowledge, _prefetch(observations=_first_page()))
    assert result.record.unreadable == {"Observation"}
    assert f["observations_unknown"] is True
    assert f["phq9"] is None
    # The same empty page, complete, is no data: known.
    result, f = _run(knowledge, _prefetch(observations=bundle()))
    assert (result.record.unreadable, f["observations_unknown"]) == (frozenset(), False)


def test_one_page_of_a_search_is_fetched_whole_from_the_server(make_client: AppFactory) -> None:
    fhir = FakeFhir(resources=[patient(), condition("c1", "F32.1"), PHQ9_SEVERE])
    client = make_client(fhir)
    body = hook_request("patient-view", _prefetch(observations=_first_page()))
    response = client.post("/cds-services/ipt-patient-view", json=body)
    assert response.status_code == 200, response.text
    assert fhir.paths() == ["metadata", "Observation"]
    summaries = " ".join(c["summary"] for c in response.json()["cards"])
    assert "PHQ-9 22" in summaries, "the score the first page did not hold is read"


def test_one_page_of_the_conditions_without_a_server_is_a_412(make_client: AppFactory) -> None:
    fhir = FakeFhir()
    client = make_client(fhir, rules=RULES)
    body = hook_request("patient-view", _prefetch(conditions=_first_page()), with_auth=False)
    del body["fhirServer"]
    response = client.post("/cds-services/ipt-patient-view", json=body)
    assert response.status_code == 412, response.text
    assert response.json()["code"] == "prefetch_failed"
    assert "conditions" in response.json()["message"]
    assert fhir.requests == []


def test_one_page_of_the_conditions_from_a_server_not_allowed_is_a_412_saying_so(
    make_client: AppFactory,
) -> None:
    fhir = FakeFhir()
    client = make_client(fhir, rules=RULES)
    body = hook_request("patient-view", _prefetch(conditions=_first_page()))
    body["fhirServer"] = "https://not-allowed.example.org/fhir"
    response = client.post("/cds-services/ipt-patient-view", json=body)
    assert response.status_code == 412, response.text
    assert response.json()["code"] == "fhir_server_not_allowed"
    message = response.json()["message"]
    assert "conditions came as one page of its search" in message
    assert "missing" not in message
    assert fhir.requests == []
