"""The FHIR servers health systems run, through the fetch path: one that answers every search, a
strict US Core one, one whose token's scopes leave types out, one that declines what it does
not know. The same patient must give the same safety cards on each, and no optional read the
server refuses may blank the answer (a 412) or be taken as "none on record".

The patient: moderate depression at 45, PHQ-9 18 today with item 9 "more than half the days",
on sertraline recorded through a Medication reference (fixture
``in-suicide-sertraline-by-reference``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import pytest

from ipt_cds.devtools.fixtures import Case, load_cases

from .conftest import FHIR_BASE, NOW, AppFactory, FakeFhir, Json
from .personality_fhir import outcome, us_core_statement

CASE = next(c for c in load_cases() if c.name == "in-suicide-sertraline-by-reference")
EXPECTED = {"ipt-suicide-risk": "critical", "ipt-patient-summary": "info"}


_outcome = outcome
# The statement of a strict US Core server (shared with the real-TCP proxy's personality).
capability_statement = us_core_statement


@dataclass
class Personality(FakeFhir):
    """FakeFhir (which answers every search, its filters ignored) with a server's habits."""

    statement: Json | None = None
    # Resource type -> the status and OperationOutcome code it answers every request with.
    refuse: dict[str, tuple[int, str]] = field(default_factory=dict)
    strict_us_core: bool = False
    slow: dict[str, float] = field(default_factory=dict)

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.strip("/").removeprefix("fhir/")
        kind = path.partition("/")[0]
        params = request.url.params
        if path == "metadata":
            self.requests.append(request)
            if self.statement is None:
                # Medplum's habit: an empty searchset where the statement should be.
                return httpx.Response(200, json={"resourceType": "Bundle", "type": "searchset"})
            return httpx.Response(200, json=self.statement)
        refusal = self.refuse.get(kind)
        if refusal is None and self.strict_us_core:
            if "_include" in params:
                refusal = (400, "not-supported")
            elif kind == "MedicationStatement":
                refusal = (404, "not-supported")
            elif kind == "MedicationRequest" and "intent" not in params:
                refusal = (400, "required")
        if refusal is not None:
            self.requests.append(request)
            return httpx.Response(refusal[0], json=_outcome(refusal[1]))
        return super().handle(request)

    async def handle_async(self, request: httpx.Request) -> httpx.Response:
        kind = request.url.path.strip("/").removeprefix("fhir/").partition("/")[0]
        if kind in self.slow:
            await anyio.sleep(self.slow[kind])
        return self.handle(request)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle_async)

    def asked(self, kind: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path.rstrip("/").endswith(f"/{kind}")]


def _server(**habits: Any) -> Personality:
    return Personality(resources=CASE.resources(NOW), **habits)


def _call(make_client: AppFactory, fhir: FakeFhir, **settings: Any) -> httpx.Response:
    client = make_client(fhir, **settings)
    response: httpx.Response = client.post("/cds-services/ipt-patient-view", json=_body(CASE))
    assert response.status_code == 200, response.text
    return response


def _body(case: Case) -> dict[str, Any]:
    return case.request(NOW, FHIR_BASE, prefetch=False)


def _cards(response: httpx.Response) -> dict[str, str]:
    return {c["source"]["topic"]["code"]: c["indicator"] for c in response.json()["cards"]}


def _detail(response: httpx.Response, rule: str) -> str:
    card = next(c for c in response.json()["cards"] if c["source"]["topic"]["code"] == rule)
    return str(card["summary"]) + "\n" + str(card.get("detail", ""))


def _hook_line(caplog: pytest.LogCaptureFixture) -> str:
    return next(r.getMessage() for r in caplog.records if r.getMessage().startswith("hook "))


def test_a_server_that_answers_everything_gives_the_cards(make_client: AppFactory) -> None:
    fhir = _server()
    response = _call(make_client, fhir)
    assert _cards(response) == EXPECTED == CASE.expect
    # It ignores _include: the sertraline the order references is read by id.
    assert len(fhir.asked(f"Medication/{CASE.name}-m0-drug")) == 1
    assert "could not be read" not in _detail(response, "ipt-patient-summary")


def test_a_strict_us_core_server_gives_the_same_cards(
    make_client: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    fhir = _server(statement=capability_statement(without=("MedicationStatement",)))
    fhir.strict_us_core = True
    with caplog.at_level(logging.INFO, logger="ipt_cds"):
        response = _call(make_client, fhir)
    assert _cards(response) == EXPECTED
    # Shaped to the statement: nothing it refuses is asked, so nothing is refused.
    assert fhir.asked("MedicationStatement") == []
    assert all("_include" not in r.url.params for r in fhir.requests)
    (orders,) = fhir.asked("MedicationRequest")
    assert orders.url.params["intent"].split(",")[:3] == ["proposal", "plan", "order"]
    assert orders.url.params["patient"] == f"Patient/{CASE.name}"
    assert len(fhir.asked(f"Medication/{CASE.name}-m0-drug")) == 1
    # A type the server does not have is not unknown: US Core records every drug as an order.
    assert "could not be read" not in _detail(response, "ipt-patient-summary")
    assert "medicationStatements:not-offered" in _hook_line(caplog)


def test_a_strict_server_without_a_statement_is_asked_once_more_simpler(
    make_client: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    fhir = _server(strict_us_core=True)
    with caplog.at_level(logging.INFO, logger="ipt_cds"):
        response = _call(make_client, fhir)
    assert _cards(response) == EXPECTED
    first, simpler = fhir.asked("MedicationRequest")
    assert "_include" in first.url.params
    assert dict(simpler.url.params) == {
        "patient": f"Patient/{CASE.name}",
        "intent": first.url.params["intent"],
    }
    # MedicationStatement is refused, simpler too: without a statement saying the server has
    # none, what statements it might hold is unknown, and the card says so.
    assert "medicationStatements:404/not-supported" in _hook_line(caplog)
    assert "medication statements" in _detail(response, "ipt-patient-summary")


def test_scopes_without_service_request_and_procedure_answer_200_with_the_safety_card(
    make_client: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    refused = {"ServiceRequest": (403, "forbidden"), "Procedure": (403, "forbidden")}
    fhir = _server(refuse=refused)
    client = make_client(fhir)
    with caplog.at_level(logging.INFO, logger="ipt_cds"):
        response = client.post("/cds-services/ipt-patient-view", json=_body(CASE))
    assert _cards(response) == EXPECTED
    summary = _detail(response, "ipt-patient-summary")
    assert "therapy could not be read" in summary
    assert "service requests (therapy and referrals), procedures (therapy sessions)" in summary
    line = _hook_line(caplog)
    assert "unreadable=serviceRequests:403/forbidden,procedures:403/forbidden" in line
    # Scope refusals are not asked again simpler: they would be refused again.
    assert len(fhir.asked("ServiceRequest")) == len(fhir.asked("Procedure")) == 1
    metrics = client.get("/metrics").text
    assert (
        'ipt_cds_fhir_unreadable_total{key="procedures",reason="403/forbidden",'
        'server="https://ehr.example.org"} 1.0'
    ) in metrics


def test_medications_refused_are_unknown_never_none(make_client: AppFactory) -> None:
    refused = {
        "MedicationRequest": (400, "not-supported"),
        "MedicationStatement": (403, "forbidden"),
    }
    response = _call(make_client, _server(refuse=refused))
    assert _cards(response) == {"ipt-suicide-risk": "critical", "ipt-patient-summary": "warning"}
    summary = _detail(response, "ipt-patient-summary")
    assert "medications not readable" in summary
    assert "none in the plan" not in summary
    assert "no antidepressant" not in summary


def test_a_medication_that_cannot_be_read_leaves_the_drug_unknown(
    make_client: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    fhir = _server(refuse={"Medication": (403, "forbidden")})
    with caplog.at_level(logging.WARNING, logger="ipt_cds"):
        response = _call(make_client, fhir)
    summary = _detail(response, "ipt-patient-summary")
    assert "the drug of 1 current medication" in summary
    assert "medications not readable" in summary
    assert "1 of 1 referenced resources not read" in caplog.text


def test_an_optional_read_past_the_deadline_is_not_readable(
    make_client: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    fhir = _server(slow={"Procedure": 5.0})
    with caplog.at_level(logging.INFO, logger="ipt_cds"):
        response = _call(make_client, fhir, fhir_total_timeout_seconds=1.0)
    assert _cards(response) == EXPECTED
    assert "procedures:timeout" in _hook_line(caplog)


def test_an_essential_read_past_the_deadline_is_a_412(make_client: AppFactory) -> None:
    client = make_client(_server(slow={"Condition": 5.0}), fhir_total_timeout_seconds=1.0)
    response = client.post("/cds-services/ipt-patient-view", json=_body(CASE))
    assert response.status_code == 412
    assert response.json()["code"] == "fhir_timeout"


def test_an_essential_read_refused_is_a_412(make_client: AppFactory) -> None:
    client = make_client(_server(refuse={"Condition": (403, "forbidden")}))
    response = client.post("/cds-services/ipt-patient-view", json=_body(CASE))
    assert response.status_code == 412
    assert response.json()["code"] == "fhir_unauthorized"


def test_a_server_without_medication_types_leaves_medications_unknown(
    make_client: AppFactory,
) -> None:
    statement = capability_statement(without=("MedicationRequest", "MedicationStatement"))
    fhir = _server(statement=statement)
    response = _call(make_client, fhir)
    assert fhir.asked("MedicationRequest") == []
    assert "medications not readable" in _detail(response, "ipt-patient-summary")


def test_the_capability_statement_is_read_once_per_server(make_client: AppFactory) -> None:
    fhir = _server(statement=capability_statement())
    client = make_client(fhir)
    for _ in range(3):
        response = client.post("/cds-services/ipt-patient-view", json=_body(CASE))
        assert _cards(response) == EXPECTED
    assert len(fhir.asked("metadata")) == 1


def test_a_server_answering_an_outcome_with_200_is_declining(
    make_client: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    fhir = _server()
    serve = fhir.handle

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/Procedure"):
            return httpx.Response(200, json=_outcome("not-supported"))
        return serve(request)

    fhir.handle = handle  # type: ignore[method-assign]
    with caplog.at_level(logging.INFO, logger="ipt_cds"):
        response = _call(make_client, fhir)
    assert _cards(response) == EXPECTED
    assert "procedures:outcome/not-supported" in _hook_line(caplog)
