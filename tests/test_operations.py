"""Health, readiness, Prometheus metrics, request ids and JSON log lines."""

from __future__ import annotations

import json
import logging

import pytest
from fastapi.testclient import TestClient

from ipt_cds.ops.logs import JsonFormatter

from .conftest import TOKEN, AppFactory, FakeFhir, condition, full_prefetch, hook_request, ipt_order


def test_health_and_ready(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json() == {"status": "ready"}


def test_degraded_but_ready_while_the_store_is_down(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hook calls are answered and feedback spooled: the instance stays in the load balancer."""

    def down() -> None:
        raise ConnectionError("database gone at db.internal")

    monkeypatch.setattr(client.app.state.ipt.store, "ping", down)  # type: ignore[attr-defined]
    response = client.get("/ready")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["degraded"] == ["database"]
    assert body["spooled"] == 0
    assert "ConnectionError" in body["reason"]
    assert "db.internal" not in body["reason"], "the exception's text is not shown"


def _metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_calls_cards_fetches_and_feedback(make_client: AppFactory) -> None:
    fhir = FakeFhir(resources=[condition("c1", "F33.1")], fail={"Condition": 503})
    client = make_client(fhir)
    body = hook_request("order-sign", full_prefetch(condition("c1", "F33.1")), drafts=[ipt_order()])
    cards = client.post("/cds-services/ipt-order-sign", json=body).json()["cards"]
    client.post("/cds-services/ipt-order-sign", json=hook_request("order-sign"))  # fetch fails
    fhir.fail = {"Procedure": 503}  # optional: the call answers without it
    assert client.post("/cds-services/ipt-order-sign", json=hook_request("order-sign")).is_success
    feedback = {
        "card": cards[0]["uuid"],
        "outcome": "overridden",
        "outcomeTimestamp": "2026-11-25T12:00:00Z",
    }
    client.post("/cds-services/ipt-order-sign/feedback", json={"feedback": [feedback]})
    text = client.get("/metrics").text
    hook = {"endpoint": "hook", "service": "ipt-order-sign"}
    assert _metric(text, "ipt_cds_request_seconds_count", **hook, status="200") == 2
    assert _metric(text, "ipt_cds_request_seconds_count", **hook, status="412") == 1
    # F33.1 and no PHQ-9: the card asks for one before IPT alone (the clinical specification v2).
    assert _metric(text, "ipt_cds_cards_total", rule="ipt-measure-severity", indicator="info") == 1
    assert _metric(text, "ipt_cds_fhir_fetch_seconds_count", key="conditions") == 1
    assert _metric(text, "ipt_cds_fhir_fetch_seconds_count", key="capabilities") == 1
    assert _metric(text, "ipt_cds_fhir_errors_total", code="fhir_unavailable") == 1
    unreadable = {"key": "procedures", "reason": "unavailable", "server": "https://ehr.example.org"}
    assert _metric(text, "ipt_cds_fhir_unreadable_total", **unreadable) == 1
    assert (
        _metric(text, "ipt_cds_feedback_total", service="ipt-order-sign", outcome="overridden") == 1
    )
    unknown = client.post("/cds-services/no-such/feedback", json={})
    assert unknown.status_code == 404
    text = client.get("/metrics").text
    assert (
        _metric(text, "ipt_cds_request_seconds_count", endpoint="feedback", service="unknown") == 1
    )


def test_request_id_is_echoed_or_made(client: TestClient) -> None:
    given = client.get("/cds-services", headers={"X-Request-ID": "ehr-call-42"})
    assert given.headers["x-request-id"] == "ehr-call-42"
    made = client.get("/cds-services")
    assert len(made.headers["x-request-id"]) == 32
    hostile = client.get("/cds-services", headers={"X-Request-ID": "a\tb" + "x" * 300})
    assert hostile.headers["x-request-id"] != "a\tb" + "x" * 300


def test_one_json_line_per_call_with_ids_and_no_phi(
    make_client: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(FakeFhir(resources=[condition("c1", "F33.1")]))
    caplog.clear()  # the start-up lines (site profile) aside
    with caplog.at_level(logging.INFO, logger="ipt_cds"):
        client.post(
            "/cds-services/ipt-order-sign",
            json=hook_request("order-sign", drafts=[ipt_order()]),
            headers={"X-Request-ID": "req-7"},
        )
    lines = [
        json.loads(JsonFormatter().format(r)) for r in caplog.records if r.levelno == logging.INFO
    ]
    assert len(lines) == 1
    line = lines[0]
    assert line["event"] == "hook"
    assert line["requestId"] == "req-7"
    assert line["service"] == "ipt-order-sign"
    assert line["hookInstance"] == "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea"
    assert line["rules"] == ["ipt-measure-severity"]
    assert line["ms"] > 0
    text = json.dumps(line)
    assert TOKEN not in text
    assert "F33.1" not in text
    assert "1980-05-01" not in text
