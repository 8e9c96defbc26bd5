from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from ipt_cds.cli import main
from ipt_cds.ops.config import Settings

from .conftest import AppFactory


def test_settings_come_from_ipt_cds_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IPT_CDS_PORT", "9191")
    monkeypatch.setenv("IPT_CDS_DATABASE_URL", "sqlite:////tmp/x.sqlite3")
    monkeypatch.setenv("IPT_CDS_FHIR_MAX_PAGES", "7")
    settings = Settings()
    assert (settings.port, settings.database_url, settings.fhir_max_pages) == (
        9191,
        "sqlite:////tmp/x.sqlite3",
        7,
    )


def test_bad_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IPT_CDS_PORT", "eighty")
    with pytest.raises(ValidationError, match="port"):
        Settings()


def test_cli_requires_a_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([])
    assert "serve" in capsys.readouterr().err


def test_cors_allows_the_configured_origin_only(make_client: AppFactory) -> None:
    client = make_client(cors_origins=["https://sandbox.cds-hooks.org"])
    preflight = client.options(
        "/cds-services/ipt-order-sign",
        headers={
            "Origin": "https://sandbox.cds-hooks.org",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,authorization",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://sandbox.cds-hooks.org"
    other = client.get("/cds-services", headers={"Origin": "https://evil.example.com"})
    assert "access-control-allow-origin" not in other.headers


def test_no_cors_headers_by_default(client: TestClient) -> None:
    response = client.get("/cds-services", headers={"Origin": "https://sandbox.cds-hooks.org"})
    assert "access-control-allow-origin" not in response.headers


def test_configuration_doc_is_current_and_complete() -> None:
    from pathlib import Path

    from ipt_cds.ops.config import describe

    doc = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text()
    assert doc == describe(), "run `ipt-cds config-doc > docs/configuration.md`"
    for name in Settings.model_fields:
        assert f"`IPT_CDS_{name.upper()}`" in doc
