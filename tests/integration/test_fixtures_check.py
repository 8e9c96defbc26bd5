"""Against a real FHIR server: after `ipt-cds fixtures load`, the services' own searches find
every resource loaded (`ipt-cds fixtures check`)."""

from __future__ import annotations

import pytest

from ipt_cds.cli import main
from ipt_cds.devtools.fixtures import load_cases

from .conftest import FhirServer


def test_fixtures_check_passes_after_load(
    fhir_server: FhirServer, capsys: pytest.CaptureFixture[str]
) -> None:
    server = ["--fhir-server", fhir_server.base, "--token", fhir_server.token]
    assert main(["fixtures", "load", *server, "--quiet"]) == 0, capsys.readouterr().out
    loaded = capsys.readouterr().out
    cases = len(load_cases())
    assert f"Loaded {cases} of {cases} patients" in loaded
    assert main(["fixtures", "check", *server]) == 0, capsys.readouterr().out
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] in loaded, "load checked the same patients"
    # Every search had something to find on one of the patients checked, and found it.
    found = {line.split()[1] for line in lines[:-1] if line.endswith(" ok")}
    assert found == {
        "patient",
        "conditions",
        "observations",
        "medications",
        "medicationStatements",
        "serviceRequests",
        "procedures",
    }
