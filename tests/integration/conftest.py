"""A real FHIR server for the integration tests (see tests/fhir_server.py).

Where sekmet-fhir is not installed the tests skip, except under CI (or
IPT_CDS_REQUIRE_FHIR_SERVER=1), where they fail.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from ..fhir_server import SEKMET, FhirServer, running

__all__ = ["FhirServer"]


@pytest.fixture(scope="session")
def fhir_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FhirServer]:
    if not SEKMET.exists():
        message = f"sekmet-fhir is not installed at {SEKMET}: run scripts/test"
        if os.environ.get("CI") or os.environ.get("IPT_CDS_REQUIRE_FHIR_SERVER"):
            pytest.fail(message)
        pytest.skip(message)
    with running(tmp_path_factory.mktemp("fhir-server")) as server:
        yield server
