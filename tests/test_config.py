from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.cli import main
from service.config import Settings
from service.knowledge import Knowledge, KnowledgeError


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


@pytest.mark.parametrize(
    ("services", "problem"),
    [
        ("services: [{id: a, hook: order-sign}]", "services[0].description: Field required"),
        (
            "services: [{id: a, hook: order-sign, description: d}, "
            "{id: a, hook: order-sign, description: d}]",
            "duplicate service id 'a'",
        ),
        ("services: [{id: a, hook: encounter-start, description: d}]", "unsupported hook"),
        (
            "services: [{id: a, hook: patient-view, description: d, "
            "prefetch: {p: 'Patient/{{context.patientid}}'}}]",
            "",
        ),
        (
            "services: [{id: a, hook: patient-view, description: d, "
            "prefetch: {p: 'Patient/{{patient}}'}}]",
            "unknown token 'patient'",
        ),
        ("services: [", "not valid YAML"),
    ],
)
def test_broken_service_definitions_stop_start_up_naming_the_file(
    tmp_path: Path, services: str, problem: str
) -> None:
    (tmp_path / "services.yaml").write_text(services)
    if not problem:
        # A context token is looked up when the request comes; it is not an error here.
        assert Knowledge.load(tmp_path).services["a"].hook == "patient-view"
        return
    with pytest.raises(KnowledgeError) as caught:
        Knowledge.load(tmp_path)
    assert str(caught.value).startswith(str(tmp_path / "services.yaml"))
    assert problem in str(caught.value)


def test_missing_knowledge_dir_stops_start_up(tmp_path: Path) -> None:
    with pytest.raises(KnowledgeError, match="file not found"):
        Knowledge.load(tmp_path / "nowhere")
