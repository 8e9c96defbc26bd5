"""CORS for browser clients such as the CDS Hooks sandbox: with IPT_CDS_SANDBOX (``ipt-cds serve
--sandbox``) the public sandbox and pages on this machine may call; any refused preflight is a
JSON answer and one WARNING naming the origin and the settings, where before a browser client
showed no cards and nothing said why."""

from __future__ import annotations

import logging
import os
import re
from urllib.parse import parse_qs, urlsplit

import pytest
import uvicorn
from fastapi.testclient import TestClient

from ipt_cds import cli
from ipt_cds.devtools.fixtures import load_cases

from .conftest import AppFactory

SANDBOX = "https://sandbox.cds-hooks.org"


def _preflight(client: TestClient, origin: str) -> tuple[int, str | None]:
    response = client.options(
        "/cds-services/ipt-order-sign",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert response.headers["content-type"] == "application/json"
    return response.status_code, response.headers.get("access-control-allow-origin")


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        (SANDBOX, True),
        ("http://localhost:8000", True),
        ("http://127.0.0.1:3000", True),
        ("http://[::1]:5173", True),
        ("http://localhost", True),
        ("https://sandbox.cds-hooks.org.evil.example", False),
        ("http://localhost.evil.example", False),
        ("https://ehr.example.org", False),
    ],
)
def test_the_sandbox_setting_allows_the_sandbox_and_this_machine(
    make_client: AppFactory, origin: str, allowed: bool
) -> None:
    status, allow = _preflight(make_client(sandbox=True), origin)
    assert (status == 200) is allowed
    assert (allow == origin) is allowed


def test_without_cors_settings_a_preflight_is_refused_and_logged_once(
    make_client: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client()
    with caplog.at_level(logging.WARNING, logger="ipt_cds"):
        assert _preflight(client, SANDBOX)[0] == 400
        assert _preflight(client, SANDBOX)[0] == 400
    refusals = [r for r in caplog.records if getattr(r, "event", "") == "cors-refused"]
    assert len(refusals) == 1, "once per origin"
    message = refusals[0].getMessage()
    assert SANDBOX in message
    assert "IPT_CDS_CORS_ORIGINS" in message
    assert "--sandbox" in message


def _private_network_preflight(client: TestClient, origin: str) -> tuple[int, str | None]:
    response = client.options(
        "/cds-services/ipt-order-sign",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,authorization",
            "Access-Control-Request-Private-Network": "true",
        },
    )
    return response.status_code, response.headers.get("access-control-allow-private-network")


def test_the_sandbox_setting_answers_chromes_private_network_preflight(
    make_client: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """The hosted sandbox is a public page calling this machine: Chrome sends the preflight
    with Access-Control-Request-Private-Network and blocks the call without the answer."""
    sandboxed = make_client(sandbox=True)
    assert _private_network_preflight(sandboxed, SANDBOX) == (200, "true")
    # Only an allowed origin gets through, and the answer only when asked.
    assert _private_network_preflight(sandboxed, "https://ehr.example.org")[0] == 400
    assert "access-control-allow-private-network" not in _preflight_headers(sandboxed, SANDBOX)
    # Without --sandbox a listed origin is not let through to a private network: refused, and
    # the log says what was asked.
    listed = make_client(cors_origins=[SANDBOX])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ipt_cds"):
        assert _private_network_preflight(listed, SANDBOX) == (400, None)
    (refusal,) = [r for r in caplog.records if getattr(r, "event", "") == "cors-refused"]
    assert f"refused for origin {SANDBOX} (private-network)" in refusal.getMessage()


def _preflight_headers(client: TestClient, origin: str) -> dict[str, str]:
    response = client.options(
        "/cds-services/ipt-order-sign",
        headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
    )
    assert response.status_code == 200
    return dict(response.headers)


def test_a_listed_origin_is_allowed(make_client: AppFactory) -> None:
    client = make_client(cors_origins=["https://ehr.example.org"])
    assert _preflight(client, "https://ehr.example.org") == (200, "https://ehr.example.org")
    assert _preflight(client, SANDBOX)[0] == 400


def test_serve_sandbox_sets_the_setting_and_prints_the_sandbox_link(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("IPT_CDS_SANDBOX", "false")  # restored after the test, whatever serve sets
    monkeypatch.setenv("IPT_CDS_FHIR_ALLOWLIST", '["http://127.0.0.1:8091/fhir"]')
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: None)
    assert cli.main(["serve", "--sandbox", "--port", "8123"]) == 0
    assert os.environ["IPT_CDS_SANDBOX"] == "true"
    links = re.findall(r"https://sandbox\.cds-hooks\.org/\?\S+", capsys.readouterr().err)
    views = [{k: v for k, (v,) in parse_qs(urlsplit(link).query).items()} for link in links]
    # The parameters the sandbox reads (cds-hooks/sandbox src/components/MainView): our
    # discovery, the FHIR server the fixtures are loaded into, a fixture patient, the tab.
    fixture = next(c for c in load_cases() if c.name == views[0]["patientId"])
    assert views == [
        {
            "serviceDiscoveryURL": "http://127.0.0.1:8123/cds-services",
            "fhirServiceUrl": "http://127.0.0.1:8091/fhir",
            "patientId": fixture.name,
            "hook": hook,
            "screen": screen,
        }
        for hook, screen in (("patient-view", "patient-view"), ("order-select", "rx-view"))
    ]
    assert fixture.hook == "patient-view"
    assert fixture.expect, "the chart shows a card"


def test_the_sandbox_link_names_the_docs_fhir_server_when_none_is_allowed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("IPT_CDS_SANDBOX", "false")
    monkeypatch.delenv("IPT_CDS_FHIR_ALLOWLIST", raising=False)
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: None)
    assert cli.main(["serve", "--sandbox"]) == 0
    err = capsys.readouterr().err
    assert "open FHIR server http://127.0.0.1:8091/fhir first" in err
    assert err.count("fhirServiceUrl=http://127.0.0.1:8091/fhir&") == 2


def test_a_sandbox_copy_elsewhere_is_allowed_and_linked(
    make_client: AppFactory, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A health system's own copy of the sandbox (IPT_CDS_SANDBOX_URL): its origin may call the
    service with --sandbox, and the printed links open it."""
    copy = "https://cds-sandbox.hospital.example/tools/"
    client = make_client(sandbox=True, sandbox_url=copy)
    assert _preflight(client, "https://cds-sandbox.hospital.example") == (
        200,
        "https://cds-sandbox.hospital.example",
    )
    assert _preflight(client, SANDBOX)[0] == 200, "the public sandbox still may"
    assert (
        _preflight(make_client(sandbox_url=copy), "https://cds-sandbox.hospital.example")[0] == 400
    )
    monkeypatch.setenv("IPT_CDS_SANDBOX", "false")
    monkeypatch.setenv("IPT_CDS_SANDBOX_URL", copy)
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: None)
    assert cli.main(["serve", "--sandbox", "--port", "8124"]) == 0
    links = re.findall(r"https://\S+\?\S+", capsys.readouterr().err)
    assert len(links) == 2
    assert all(link.startswith(copy + "?serviceDiscoveryURL=") for link in links)
