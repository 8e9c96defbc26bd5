"""compose.yaml, tested without a Docker engine (the CI machine has none): it parses, names the
four services with health checks where they run for long, and every variable and command it
gives the service is one the service takes, with values that pass its own start-up checks."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from ipt_cds.cli import main
from ipt_cds.http.trust import global_allowlist
from ipt_cds.ops.config import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]
SETTINGS = {f"IPT_CDS_{name.upper()}" for name in Settings.model_fields}


def test_the_four_services_and_their_health_checks() -> None:
    assert set(SERVICES) == {"postgres", "fhir", "fixtures", "service"}
    for name in ("postgres", "fhir", "service"):
        assert SERVICES[name]["healthcheck"]["test"], name
    assert SERVICES["fixtures"]["restart"] == "no", "a one-shot job"
    assert SERVICES["service"]["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "fhir": {"condition": "service_healthy"},
    }
    assert SERVICES["fixtures"]["depends_on"] == {"fhir": {"condition": "service_healthy"}}
    for name in ("service", "fixtures"):
        assert SERVICES[name]["build"] == "."
        assert SERVICES[name]["network_mode"] == "service:fhir"


def test_the_services_variables_are_settings_that_start_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env: dict[str, str] = SERVICES["service"]["environment"]
    unknown = sorted(set(env) - SETTINGS)
    assert not unknown, f"not settings of the service: {unknown}"
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))
    settings = Settings()
    assert settings.port == 8080
    assert settings.sandbox
    # The FHIR server is on loopback from the shared network namespace: the allowlist takes it.
    assert global_allowlist(settings.fhir_allowlist)
    postgres = SERVICES["postgres"]["environment"]
    url = settings.database_url
    assert url.startswith(f"postgresql://{postgres['POSTGRES_USER']}:")
    assert url.endswith(f"@postgres:5432/{postgres['POSTGRES_DB']}")
    ports = SERVICES["fhir"]["ports"]
    assert any(p.split("#")[0].strip().endswith(f":{settings.port}:{settings.port}") for p in ports)


def test_the_fhir_server_settings_match_the_urls_used() -> None:
    fhir = yaml.safe_load((ROOT / "compose/fhir/settings.yaml").read_text())
    mount = next(v for v in SERVICES["fhir"]["volumes"] if v.endswith(":/config:ro"))
    assert (ROOT / mount.split(":")[0]).resolve() == (ROOT / "compose/fhir").resolve()
    assert fhir["base_url"] == "http://127.0.0.1:8090/fhir"
    assert "server_auth" not in fhir, "open: the CDS Hooks sandbox refuses secured servers"
    allowlist = SERVICES["service"]["environment"]["IPT_CDS_FHIR_ALLOWLIST"]
    assert fhir["base_url"] in yaml.safe_load(allowlist)
    loader = SERVICES["fixtures"]["command"]
    assert loader[loader.index("--fhir-server") + 1] == fhir["base_url"]


def test_the_loader_command_is_one_the_cli_takes(capsys: pytest.CaptureFixture[str]) -> None:
    command = SERVICES["fixtures"]["command"]
    assert command[0] == "ipt-cds"
    cases = command[command.index("--cases") + 1]
    mount = next(v for v in SERVICES["fixtures"]["volumes"] if f":{cases}:" in f"{v}:")
    assert (ROOT / mount.split(":")[0]).is_dir()
    # The same arguments, the mounted folder read from the repository, against nothing: the
    # CLI parses them and fails only on the unreachable server.
    args = [a if a != cases else str(ROOT / mount.split(":")[0]) for a in command[1:]]
    args[args.index("--fhir-server") + 1] = "http://127.0.0.1:9/fhir"
    assert main(args) == 2
    assert "cannot reach the FHIR server" in capsys.readouterr().err, shlex.join(args)
