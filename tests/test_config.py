from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.cli import main
from service.config import Settings


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
