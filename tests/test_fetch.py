"""Missing prefetch keys are fetched from fhirServer; failures answer 412."""

from __future__ import annotations

import logging

import httpx
import pytest

from .conftest import (
    FHIR_BASE,
    TOKEN,
    AppFactory,
    FakeFhir,
    Json,
    full_prefetch,
    hook_request,
    hypertension,
    patient,
)
from .rules import CountingRule

RULES = (CountingRule("counts-conditions", "Condition"),)


def _conditions(n: int) -> list[Json]:
    return [hypertension(f"c{i}") for i in range(n)]


def _summary(client_response: httpx.Response) -> str:
    cards = client_response.json()["cards"]
    assert len(cards) == 1, client_response.text
    summary: str = cards[0]["summary"]
    return summary


def test_missing_keys_are_fetched_concurrently_with_the_bearer_token(
    make_client: AppFactory,
) -> None:
    fhir = FakeFhir(resources=[patient(), *_conditions(3)])
    client = make_client(fhir, rules=RULES)
    response = client.post("/cds-services/ipt-patient-view", json=hook_request("patient-view"))
    assert response.status_code == 200, response.text
    assert _summary(response) == "3 Condition, 0 selected drafts"
    assert sorted(fhir.paths()) == sorted(
        ["Patient", "Condition", "Observation", "MedicationRequest", "ServiceRequest", "Procedure"]
    )
    for request in fhir.requests:
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        assert str(request.url).startswith(FHIR_BASE + "/")
    observation = next(r for r in fhir.requests if r.url.path.endswith("/Observation"))
    assert observation.url.params["patient"] == "pat-1"
    assert "http://loinc.org|44261-6" in observation.url.params["code"]


def test_only_missing_keys_are_fetched(make_client: AppFactory) -> None:
    fhir = FakeFhir(resources=[*_conditions(5)])
    client = make_client(fhir, rules=RULES)
    prefetch = full_prefetch(hypertension("given"))
    del prefetch["procedures"], prefetch["observations"]
    body = hook_request("patient-view", prefetch)
    response = client.post("/cds-services/ipt-patient-view", json=body)
    assert sorted(fhir.paths()) == ["Observation", "Procedure"]
    assert _summary(response) == "1 Condition, 0 selected drafts"


def test_search_pages_are_followed_to_the_end(make_client: AppFactory) -> None:
    fhir = FakeFhir(resources=_conditions(47), page_size=10)
    client = make_client(fhir, rules=RULES)
    response = client.post("/cds-services/ipt-patient-view", json=hook_request("patient-view"))
    assert _summary(response) == "47 Condition, 0 selected drafts"
    assert fhir.paths().count("Condition") == 5


def test_paging_stops_at_the_configured_bound(
    make_client: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    fhir = FakeFhir(resources=_conditions(50), page_size=10)
    client = make_client(fhir, rules=RULES, fhir_max_pages=2)
    with caplog.at_level(logging.WARNING, logger="ipt_cds"):
        response = client.post("/cds-services/ipt-patient-view", json=hook_request("patient-view"))
    assert _summary(response) == "20 Condition, 0 selected drafts"
    assert "stopped after 2 pages" in caplog.text


def test_next_link_to_another_origin_is_not_followed(make_client: AppFactory) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        page: Json = {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [{"resource": hypertension(f"c{len(requests)}")}],
        }
        if request.url.path.endswith("/Condition"):
            page["link"] = [{"relation": "next", "url": "https://evil.example.com/steal"}]
        return httpx.Response(200, json=page)

    requests: list[httpx.Request] = []
    fhir = FakeFhir()
    fhir.handle = handler  # type: ignore[method-assign]
    client = make_client(fhir, rules=RULES)
    prefetch = full_prefetch()
    del prefetch["conditions"]
    client.post("/cds-services/ipt-patient-view", json=hook_request("patient-view", prefetch))
    assert [r.url.host for r in requests] == ["ehr.example.org"]


def test_operation_outcome_entries_are_skipped_with_a_warning(
    make_client: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "warning"}]}
    fhir = FakeFhir(resources=_conditions(2), outcomes={"Condition": outcome})
    client = make_client(fhir, rules=RULES)
    with caplog.at_level(logging.WARNING, logger="ipt_cds"):
        response = client.post("/cds-services/ipt-patient-view", json=hook_request("patient-view"))
    assert _summary(response) == "2 Condition, 0 selected drafts"
    assert "1 OperationOutcome entries skipped" in caplog.text


def test_patient_not_found_on_read_is_no_data(make_client: AppFactory) -> None:
    fhir = FakeFhir(resources=_conditions(1))
    client = make_client(fhir, rules=RULES)
    response = client.post("/cds-services/ipt-patient-view", json=hook_request("patient-view"))
    assert response.status_code == 200
    assert _summary(response) == "1 Condition, 0 selected drafts"


@pytest.mark.parametrize(
    ("failure", "code"),
    [
        (401, "fhir_unauthorized"),
        (403, "fhir_unauthorized"),
        (500, "fhir_unavailable"),
        (503, "fhir_unavailable"),
        (400, "fhir_error"),
        (httpx.ReadTimeout, "fhir_timeout"),
        (httpx.ConnectTimeout, "fhir_timeout"),
        (httpx.ConnectError, "fhir_unavailable"),
    ],
)
def test_fhir_failures_answer_412_with_the_reason(
    make_client: AppFactory,
    caplog: pytest.LogCaptureFixture,
    failure: int | type[Exception],
    code: str,
) -> None:
    fhir = FakeFhir(resources=_conditions(1), fail={"Observation": failure})
    client = make_client(fhir, rules=RULES)
    with caplog.at_level(logging.DEBUG):
        response = client.post("/cds-services/ipt-order-sign", json=hook_request("order-sign"))
    assert response.status_code == 412
    assert response.json()["code"] == code
    assert "observations" in response.json()["message"]
    assert TOKEN not in caplog.text
    assert TOKEN not in response.text


def test_unreliable_server_is_retried_a_bounded_number_of_times(make_client: AppFactory) -> None:
    fhir = FakeFhir(resources=_conditions(1), fail={"Condition": 503})
    client = make_client(fhir, rules=RULES, fhir_retries=2)
    response = client.post("/cds-services/ipt-patient-view", json=hook_request("patient-view"))
    assert response.status_code == 412
    assert fhir.paths().count("Condition") == 3


def test_whole_fetch_has_a_deadline(make_client: AppFactory) -> None:
    import anyio

    async def slow(request: httpx.Request) -> httpx.Response:
        await anyio.sleep(5)
        return httpx.Response(200, json={"resourceType": "Bundle", "type": "searchset"})

    fhir = FakeFhir()
    fhir.transport = lambda: httpx.MockTransport(slow)  # type: ignore[method-assign]
    client = make_client(fhir, rules=RULES, fhir_total_timeout_seconds=0.2)
    response = client.post("/cds-services/ipt-patient-view", json=hook_request("patient-view"))
    assert response.status_code == 412
    assert response.json()["code"] == "fhir_timeout"


def test_missing_prefetch_without_fhir_server_answers_412(make_client: AppFactory) -> None:
    client = make_client(rules=RULES)
    body = hook_request("patient-view", with_auth=False)
    del body["fhirServer"]
    response = client.post("/cds-services/ipt-patient-view", json=body)
    assert response.status_code == 412
    assert response.json()["code"] == "no_fhir_server"


def test_open_fhir_server_is_read_without_a_token(make_client: AppFactory) -> None:
    fhir = FakeFhir(resources=_conditions(2))
    client = make_client(fhir, rules=RULES)
    response = client.post(
        "/cds-services/ipt-patient-view", json=hook_request("patient-view", with_auth=False)
    )
    assert _summary(response) == "2 Condition, 0 selected drafts"
    assert all("authorization" not in r.headers for r in fhir.requests)


def test_templates_fill_context_and_user_tokens() -> None:
    from service.fhir.prefetch import render
    from service.protocol.errors import PrefetchUnavailable
    from service.protocol.models import PatientViewRequest

    request = PatientViewRequest.model_validate(hook_request("patient-view"))
    assert render("Patient/{{context.patientId}}", request) == "Patient/pat-1"
    assert render("Practitioner/{{userPractitionerId}}", request) == "Practitioner/example"
    with pytest.raises(PrefetchUnavailable, match=r"context\.encounterId"):
        render("Encounter/{{context.encounterId}}", request)
    with pytest.raises(PrefetchUnavailable, match="userPatientId"):
        render("Patient/{{userPatientId}}", request)
