"""Property-based fuzzing over openapi.yaml: no input may produce a 5xx or break the schema.

A fixed, derandomised example budget keeps CI fast and repeatable; docs/security.md shows how
to run a larger one (IPT_CDS_FUZZ_EXAMPLES).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from service.http.app import create_app
from service.ops.config import Settings

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = int(os.environ.get("IPT_CDS_FUZZ_EXAMPLES", "60"))
DB = Path(tempfile.mkdtemp(prefix="ipt-fuzz-")) / "store.sqlite3"
# No FHIR server is allowed: a generated request can never make the service call out.
APP = create_app(Settings(database_url=f"sqlite:///{DB}", fhir_allowlist=[]))

schema = schemathesis.openapi.from_path(ROOT / "openapi.yaml")
schema.app = APP
schema.config.update(base_url="http://testserver")


@pytest.fixture(scope="module")
def started() -> Iterator[None]:
    # The lifespan opens the store; the fuzzer's own client then shares the started app.
    with TestClient(APP):
        yield


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_no_input_gives_a_5xx_or_breaks_the_schema(
    case: schemathesis.Case,  # type: ignore[type-arg]
    started: None,
) -> None:
    response = case.call_and_validate()
    assert response.status_code < 500
