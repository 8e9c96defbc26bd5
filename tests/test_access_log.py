"""The access log is ours: one line per request with the path and never the query string (a
token sent there must not reach the log), left out when the handler logged the call itself
(one INFO line per hook call), probes at DEBUG; uvicorn's own access log is off."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from ipt_cds import cli

from .conftest import AppFactory, FakeFhir, full_prefetch, hook_request, patient

REQUEST = (
    Path(__file__).resolve().parent.parent / "fhir_fixtures/requests/in-suicide-item9-one-ipt.json"
)
SECRET = "eyJhbGciOiJFUzM4NCJ9.c2VjcmV0.c2lnbmF0dXJl"


def _lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The INFO lines (the start-up warning that auth is off aside)."""
    return [r for r in caplog.records if r.name == "ipt_cds" and r.levelno == logging.INFO]


def test_a_token_in_the_query_string_never_reaches_the_log(
    make_client: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client()
    with caplog.at_level(logging.DEBUG, logger="ipt_cds"):
        response = client.get(f"/cds-services?access_token={SECRET}&x=1")
    assert response.status_code in (200, 400, 401)
    (access,) = [r for r in _lines(caplog) if getattr(r, "event", "") == "access"]
    assert access.path == "/cds-services"  # type: ignore[attr-defined]
    assert access.status == response.status_code  # type: ignore[attr-defined]
    assert SECRET not in caplog.text
    assert "access_token" not in caplog.text


def test_a_hook_call_logs_one_info_line(
    make_client: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client()
    body = json.loads(REQUEST.read_text())
    caplog.clear()  # the start-up lines (site profile) aside
    with caplog.at_level(logging.INFO, logger="ipt_cds"):
        assert client.post("/cds-services/ipt-order-sign", json=body).status_code == 200
    assert [getattr(r, "event", "") for r in _lines(caplog)] == ["hook"]


@pytest.mark.parametrize(
    ("prefetch", "counts"),
    [
        (full_prefetch(), (7, 0, 0)),
        ({**full_prefetch(), "procedures": None, "medicationStatements": None}, (5, 0, 2)),
        ({"patient": patient(), "conditions": None}, (1, 5, 1)),
        (None, (0, 7, 0)),
    ],
)
def test_the_hook_line_says_how_the_data_came(
    make_client: AppFactory,
    caplog: pytest.LogCaptureFixture,
    prefetch: dict[str, Any] | None,
    counts: tuple[int, int, int],
) -> None:
    """Given by the client, fetched from the FHIR server, or sent as null (no data)."""
    client = make_client(FakeFhir([patient()]))
    with caplog.at_level(logging.INFO, logger="ipt_cds"):
        body = hook_request("order-sign", prefetch)
        assert client.post("/cds-services/ipt-order-sign", json=body).status_code == 200
    (line,) = [r for r in _lines(caplog) if getattr(r, "event", "") == "hook"]
    fields = ("prefetchGiven", "prefetchFetched", "prefetchMissing")
    assert tuple(getattr(line, f) for f in fields) == counts
    given, fetched, missing = counts
    assert f"prefetch given={given} fetched={fetched} missing={missing}" in line.getMessage()


def test_a_refused_request_gets_an_access_line(
    make_client: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client()
    with caplog.at_level(logging.INFO, logger="ipt_cds"):
        assert client.post("/cds-services/ipt-order-sign?code=1", content=b"{").status_code == 400
        assert client.get("/no/such/page").status_code == 404
    access = [
        (r.method, r.path, r.status)  # type: ignore[attr-defined]
        for r in _lines(caplog)
        if getattr(r, "event", "") == "access"
    ]
    assert access == [("POST", "/cds-services/ipt-order-sign", 400), ("GET", "/no/such/page", 404)]


def test_probes_are_logged_at_debug_only(
    make_client: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client()
    with caplog.at_level(logging.DEBUG, logger="ipt_cds"):
        assert client.get("/health").status_code == 200
    (line,) = [r for r in caplog.records if getattr(r, "event", "") == "access"]
    assert line.levelno == logging.DEBUG


def test_serve_turns_uvicorns_access_log_off(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: seen.update(kw))
    assert cli.main(["serve"]) == 0
    assert seen["access_log"] is False


@pytest.mark.parametrize(
    ("path", "body", "status", "code", "field"),
    [
        # The CDS Hooks sandbox sends this when its Rx View tab is clicked twice, and shows no
        # error body: the log must say why.
        (
            "/cds-services/ipt-order-select",
            {
                "hook": "order-select",
                "hookInstance": "h1",
                "context": {"userId": "Practitioner/x7"},
            },
            400,
            "invalid_request",
            "context.patientId",
        ),
        ("/cds-services/ipt-order-sign", {"hook": "patient-view"}, 400, "hook_mismatch", "hook"),
        ("/cds-services/no-such-service", {}, 404, "unknown_service", None),
    ],
)
def test_a_refusal_logs_its_code_and_field_never_a_value(
    make_client: AppFactory,
    caplog: pytest.LogCaptureFixture,
    path: str,
    body: dict[str, Any],
    status: int,
    code: str,
    field: str | None,
) -> None:
    client = make_client()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ipt_cds"):
        response = client.post(path, json=body)
    assert response.status_code == status, response.text
    assert response.json()["code"] == code
    (access,) = [r for r in _lines(caplog) if getattr(r, "event", "") == "access"]
    assert access.code == code  # type: ignore[attr-defined]
    assert f"code={code}" in access.getMessage()
    assert getattr(access, "field", None) == field
    assert "Practitioner/x7" not in caplog.text


def test_a_field_the_client_named_is_logged_only_as_a_plain_path(
    make_client: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A prefetch key is the client's own text: a newline in it must not forge a log line."""
    client = make_client()
    body = hook_request("patient-view", full_prefetch())
    body["prefetch"]["k\nINFO forged"] = 5
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ipt_cds"):
        response = client.post("/cds-services/ipt-patient-view", json=body)
    assert response.status_code == 400, response.text
    (access,) = [r for r in _lines(caplog) if getattr(r, "event", "") == "access"]
    assert access.field == "-"  # type: ignore[attr-defined]
    assert "forged" not in access.getMessage()


def test_a_refused_cors_preflight_logs_its_code(
    make_client: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ipt_cds"):
        response = client.options(
            "/cds-services",
            headers={"Origin": "https://elsewhere.example", "Access-Control-Request-Method": "GET"},
        )
    assert response.status_code == 400
    (access,) = [r for r in _lines(caplog) if getattr(r, "event", "") == "access"]
    assert access.code == "cors_refused"  # type: ignore[attr-defined]
