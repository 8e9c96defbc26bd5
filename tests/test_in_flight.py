"""The process's bytes in flight: request bodies and FHIR answers share one budget; what does
not fit is refused as busy (503, Retry-After) or, for an optional FHIR read, left unknown; every
call gives back what it held."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from fastapi.testclient import TestClient

from .conftest import (
    AppFactory,
    FakeFhir,
    Json,
    StreamedBody,
    full_prefetch,
    hook_request,
    hypertension,
    patient,
)
from .misbehaving_fhir import MIB, big_bundle
from .rules import CountingRule

KIB = 1024
RULES = (CountingRule("counts-conditions", "Condition"),)
SMALL = {"max_bytes_in_flight": MIB, "fhir_max_answer_bytes": MIB, "max_body_bytes": 512 * KIB}


def _in_flight(client: TestClient) -> int:
    held: int = client.app.state.ipt.in_flight.held  # type: ignore[attr-defined]
    return held


def _hold(client: TestClient, nbytes: int) -> None:
    client.app.state.ipt.in_flight.hold(nbytes)  # type: ignore[attr-defined]


def _big(size: int) -> Callable[[], httpx.Response]:
    return lambda: httpx.Response(200, stream=StreamedBody(big_bundle(size)))


def _padded_request(size: int) -> Json:
    body = hook_request("patient-view", prefetch=full_prefetch(hypertension("c1")))
    body["extension"] = {"padding": "x" * size}
    return body


def test_a_body_that_does_not_fit_is_refused_busy_and_taken_once_there_is_room(
    make_client: AppFactory,
) -> None:
    client = make_client(rules=RULES, **SMALL)
    _hold(client, MIB - 100 * KIB)  # other calls' bodies and answers
    request = _padded_request(200 * KIB)
    refused = client.post("/cds-services/ipt-patient-view", json=request)
    assert refused.status_code == 503, refused.text
    assert refused.json()["code"] == "busy"
    assert refused.headers["Retry-After"] == "1"
    assert _in_flight(client) == MIB - 100 * KIB, "a refused body holds nothing"
    client.app.state.ipt.in_flight.give(MIB)  # type: ignore[attr-defined]
    served = client.post("/cds-services/ipt-patient-view", json=request)
    assert served.status_code == 200, served.text
    assert _in_flight(client) == 0
    metrics = client.get("/metrics").text
    assert "ipt_cds_busy_total 1.0" in metrics


def test_an_optional_answer_that_does_not_fit_is_unknown_not_a_failed_call(
    make_client: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    fhir = FakeFhir(resources=[patient(), hypertension("c1")]).answering(
        "Observation", _big(600 * KIB)
    )
    client = make_client(fhir, rules=RULES, **SMALL)
    _hold(client, 512 * KIB)
    response = client.post("/cds-services/ipt-patient-view", json=hook_request("patient-view"))
    assert response.status_code == 200, response.text
    assert response.json()["cards"][0]["summary"] == "1 Condition, 0 selected drafts"
    assert any("unreadable=observations:busy" in r.getMessage() for r in caplog.records)
    assert _in_flight(client) == 512 * KIB, "the call gave back all it held"


def test_an_essential_answer_that_does_not_fit_is_busy_and_fits_later(
    make_client: AppFactory,
) -> None:
    # The same large answer twice: refused while the budget is held, read once it is free.
    fhir = FakeFhir(resources=[patient()]).answering("Condition", _big(600 * KIB), _big(600 * KIB))
    client = make_client(fhir, rules=RULES, **SMALL)
    _hold(client, 512 * KIB)
    response = client.post("/cds-services/ipt-patient-view", json=hook_request("patient-view"))
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "busy"
    assert response.headers["Retry-After"] == "1"
    assert _in_flight(client) == 512 * KIB
    client.app.state.ipt.in_flight.give(512 * KIB)  # type: ignore[attr-defined]
    again = client.post("/cds-services/ipt-patient-view", json=hook_request("patient-view"))
    assert again.status_code == 200, again.text
    assert _in_flight(client) == 0
    assert fhir.answers["Condition"] == [], "the second call read the large answer"


def test_too_small_a_budget_for_one_call_is_refused_at_start_up() -> None:
    from pydantic import ValidationError

    from ipt_cds.ops.config import Settings

    with pytest.raises(ValidationError, match="max_bytes_in_flight"):
        Settings(max_bytes_in_flight=MIB, max_body_bytes=2 * MIB)
