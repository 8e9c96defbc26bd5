"""Missing prefetch keys are fetched from fhirServer; failures answer 412."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import httpx
import pytest

from .conftest import (
    FHIR_BASE,
    TOKEN,
    AppFactory,
    FakeFhir,
    Json,
    StreamedBody,
    full_prefetch,
    hook_request,
    hypertension,
    patient,
)
from .misbehaving_fhir import MIB, big_bundle, gzip_bomb, gzip_compress
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
        [
            "metadata",
            "Patient",
            "Condition",
            "Observation",
            "MedicationRequest",
            "MedicationStatement",
            "ServiceRequest",
            "Procedure",
        ]
    )
    for request in fhir.requests:
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        assert str(request.url).startswith(FHIR_BASE + "/")
    observation = next(r for r in fhir.requests if r.url.path.endswith("/Observation"))
    assert observation.url.params["patient"] == "Patient/pat-1"
    codes = observation.url.params["code"].split(",")
    assert "http://loinc.org|44261-6" in codes
    # The PHQ-9 panels too: a server's code search does not look inside their components.
    assert {"http://loinc.org|44249-1", "http://loinc.org|89206-7"} <= set(codes)


def test_only_missing_keys_are_fetched(make_client: AppFactory) -> None:
    fhir = FakeFhir(resources=[*_conditions(5)])
    client = make_client(fhir, rules=RULES)
    prefetch = full_prefetch(hypertension("given"))
    del prefetch["procedures"], prefetch["observations"]
    body = hook_request("patient-view", prefetch)
    response = client.post("/cds-services/ipt-patient-view", json=body)
    assert sorted(fhir.paths()) == ["Observation", "Procedure", "metadata"]
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
    assert [r.url.path for r in requests] == ["/fhir/metadata", "/fhir/Condition"]
    assert {r.url.host for r in requests} == {"ehr.example.org"}


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
    """The Conditions are essential: no failure to read them is taken as no condition."""
    fhir = FakeFhir(resources=_conditions(1), fail={"Condition": failure})
    client = make_client(fhir, rules=RULES)
    with caplog.at_level(logging.DEBUG):
        response = client.post("/cds-services/ipt-order-sign", json=hook_request("order-sign"))
    assert response.status_code == 412
    assert response.json()["code"] == code
    assert "conditions" in response.json()["message"]
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
    from ipt_cds.fhir.prefetch import render
    from ipt_cds.protocol.errors import PrefetchUnavailable
    from ipt_cds.protocol.models import PatientViewRequest

    request = PatientViewRequest.model_validate(hook_request("patient-view"))
    assert render("Patient/{{context.patientId}}", request) == "Patient/pat-1"
    assert render("Practitioner/{{userPractitionerId}}", request) == "Practitioner/example"
    with pytest.raises(PrefetchUnavailable, match=r"context\.encounterId"):
        render("Encounter/{{context.encounterId}}", request)
    with pytest.raises(PrefetchUnavailable, match="userPatientId"):
        render("Patient/{{userPatientId}}", request)


# --- what a FHIR server may not do to the service -------------------------------------------


@pytest.mark.parametrize(
    ("encoding", "body", "code"),
    [
        ("gzip", [b"this is not gzip"], "fhir_error"),
        ("gzip, gzip", [gzip_compress(gzip_compress(b'{"resourceType": "Bundle"}'))], "fhir_error"),
        ("br", [b"\x0b\x02\x80{}\x03"], "fhir_error"),
        (None, big_bundle(50 * MIB), "fhir_answer_too_large"),
        ("gzip", gzip_bomb(64 * MIB), "fhir_answer_too_large"),
    ],
    ids=["bad-gzip", "nested-gzip", "brotli", "50MB-bundle", "gzip-bomb"],
)
def test_an_answer_the_service_cannot_take_is_a_412_and_the_next_call_is_served(
    make_client: AppFactory, encoding: str | None, body: Iterable[bytes], code: str
) -> None:
    streamed = StreamedBody(body)
    headers = {"Content-Encoding": encoding} if encoding else {}
    fhir = FakeFhir(resources=[patient(), *_conditions(2)]).answering(
        "Condition", lambda: httpx.Response(200, headers=headers, stream=streamed)
    )
    client = make_client(fhir, rules=RULES, fhir_max_answer_bytes=256 * 1024)
    response = client.post("/cds-services/ipt-patient-view", json=hook_request("patient-view"))
    assert response.status_code == 412, response.text
    assert response.json()["code"] == code
    assert "conditions" in response.json()["message"]
    assert streamed.sent < 2 * MIB, "the answer was read on after the cap"
    again = client.post("/cds-services/ipt-patient-view", json=hook_request("patient-view"))
    assert _summary(again) == "2 Condition, 0 selected drafts"


def test_another_patients_condition_never_reaches_the_rules(
    make_client: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    theirs = {**hypertension("c2"), "subject": {"reference": "Patient/someone-else"}}
    fhir = FakeFhir(resources=[patient(), hypertension("c1"), theirs])
    client = make_client(fhir, rules=RULES)
    with caplog.at_level(logging.DEBUG):
        response = client.post("/cds-services/ipt-patient-view", json=hook_request("patient-view"))
    assert response.status_code == 412
    assert response.json()["code"] == "fhir_wrong_data"
    assert "someone-else" not in response.text + caplog.text


def test_a_read_answered_with_another_patient_is_a_412(make_client: AppFactory) -> None:
    fhir = FakeFhir(resources=[patient("pat-2")])
    serve = fhir.handle

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/Patient/pat-1"):
            return httpx.Response(200, json=patient("pat-2"))
        return serve(request)

    fhir.handle = handle  # type: ignore[method-assign]
    client = make_client(fhir, rules=RULES)
    response = client.post("/cds-services/ipt-patient-view", json=hook_request("patient-view"))
    assert response.status_code == 412
    assert response.json()["code"] == "fhir_wrong_data"


@pytest.mark.parametrize(
    "answer",
    [patient(), {"resourceType": "OperationOutcome", "issue": []}],
    ids=["patient", "operation-outcome"],
)
def test_a_search_answered_with_something_else_than_a_bundle_is_a_412(
    make_client: AppFactory, answer: Json
) -> None:
    """Before, a search answered with a Patient or an OperationOutcome was taken as no data:
    200 and no card, where the Conditions might have held a contraindication. A Patient is
    wrong data; an OperationOutcome is the server declining the (essential) search."""
    fhir = FakeFhir().answering("Condition", lambda: httpx.Response(200, json=answer))
    client = make_client(fhir, rules=RULES)
    response = client.post("/cds-services/ipt-patient-view", json=hook_request("patient-view"))
    assert response.status_code == 412
    wanted = "fhir_error" if answer["resourceType"] == "OperationOutcome" else "fhir_wrong_data"
    assert response.json()["code"] == wanted


def test_a_token_no_header_can_carry_is_a_412_and_never_sent(
    make_client: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    fhir = FakeFhir(resources=_conditions(1))
    client = make_client(fhir, rules=RULES)
    body = hook_request("patient-view")
    body["fhirAuthorization"]["access_token"] = "tokén"
    with caplog.at_level(logging.DEBUG):
        response = client.post("/cds-services/ipt-patient-view", json=body)
    assert response.status_code == 412
    assert response.json()["code"] == "fhir_unauthorized"
    assert not fhir.requests
    assert "tokén" not in caplog.text


def test_a_fhir_server_that_is_not_a_url_is_a_4xx(make_client: AppFactory) -> None:
    fhir = FakeFhir(resources=_conditions(1))
    client = make_client(fhir, rules=RULES)
    body = hook_request("patient-view")
    body["fhirServer"] = "http://["
    response = client.post("/cds-services/ipt-patient-view", json=body)
    assert response.status_code in (400, 412), response.text
    assert response.json()["code"] in ("invalid_request", "fhir_server_not_allowed")
    assert not fhir.requests
