"""CORS for browser clients such as the CDS Hooks sandbox: with IPT_CDS_SANDBOX (``ipt-cds serve
--sandbox``) the public sandbox and pages on this machine may call; any refused preflight is a
JSON answer and one WARNING naming the origin and the settings, where before a browser client
showed no cards and nothing said why."""

from __future__ import annotations

import logging
import os

import pytest
import uvicorn
from fastapi.testclient import TestClient

from service import cli

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


def test_a_listed_origin_is_allowed(make_client: AppFactory) -> None:
    client = make_client(cors_origins=["https://ehr.example.org"])
    assert _preflight(client, "https://ehr.example.org") == (200, "https://ehr.example.org")
    assert _preflight(client, SANDBOX)[0] == 400


def test_serve_sandbox_sets_the_setting_and_prints_the_sandbox_link(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("IPT_CDS_SANDBOX", "false")  # restored after the test, whatever serve sets
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: None)
    assert cli.main(["serve", "--sandbox", "--port", "8123"]) == 0
    assert "serviceDiscoveryURL=http://127.0.0.1:8123/cds-services" in capsys.readouterr().err
    assert os.environ["IPT_CDS_SANDBOX"] == "true"
