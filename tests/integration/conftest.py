"""Real FHIR servers for the integration tests: sekmet-fhir (see tests/fhir_server.py) and
Medplum's FHIR router (see tests/medplum_server.py).

Where one is not installed its tests skip, except under CI (or IPT_CDS_REQUIRE_FHIR_SERVER=1),
where they fail.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from ipt_cds.devtools import integrator

from .. import medplum_server as medplum
from ..conftest import NOW
from ..fhir_server import SEKMET, FhirServer, running

__all__ = ["FhirServer", "Loaded"]


def _unavailable(message: str) -> None:
    if os.environ.get("CI") or os.environ.get("IPT_CDS_REQUIRE_FHIR_SERVER"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def fhir_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FhirServer]:
    if not SEKMET.exists():
        _unavailable(f"sekmet-fhir is not installed at {SEKMET}: run scripts/test")
    with running(tmp_path_factory.mktemp("fhir-server")) as server:
        yield server


@dataclass(frozen=True)
class Loaded:
    """The server after ``ipt-cds fixtures load``: its exit status and what it printed."""

    server: FhirServer
    status: int
    report: str


@pytest.fixture(scope="session")
def fixtures_loaded(fhir_server: FhirServer) -> Loaded:
    """sekmet-fhir holding every fixture patient, as the integrator's loader writes them: loaded
    once per worker for the modules that read them (a load takes about 9 s)."""
    out = io.StringIO()
    status = integrator.load(fhir_server.base, fhir_server.token, [], out, now=NOW)
    return Loaded(fhir_server, status, out.getvalue())


@pytest.fixture(scope="session")
def medplum_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FhirServer]:
    why = medplum.missing()
    if why:
        _unavailable(why)
    with medplum.running(tmp_path_factory.mktemp("medplum-server")) as server:
        yield server
