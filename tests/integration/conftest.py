"""A real FHIR server for the integration tests: sekmet-fhir, in its own virtualenv.

scripts/test installs it into .fhir-server/venv; each test session starts it on a free port of
127.0.0.1 with a fresh SQLite file and a bearer token, and stops it at the end. Where it is not
installed the tests skip, except under CI (or IPT_CDS_REQUIRE_FHIR_SERVER=1), where they fail.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from ..conftest import free_port

SEKMET = Path(__file__).resolve().parents[2] / ".fhir-server" / "venv" / "bin" / "sekmet"
TOKEN = "integration-token-1f3a"


@dataclass(frozen=True)
class FhirServer:
    base: str
    token: str


@pytest.fixture(scope="session")
def fhir_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FhirServer]:
    if not SEKMET.exists():
        message = f"sekmet-fhir is not installed at {SEKMET}: run scripts/test"
        if os.environ.get("CI") or os.environ.get("IPT_CDS_REQUIRE_FHIR_SERVER"):
            pytest.fail(message)
        pytest.skip(message)
    folder = tmp_path_factory.mktemp("fhir-server")
    port = free_port()
    base = f"http://127.0.0.1:{port}/fhir"
    (folder / "settings.yaml").write_text(
        f"base_url: {base}\nhost: 127.0.0.1\nport: {port}\n"
        f"db_path: {folder / 'fhir.db'}\ndata_dir: {folder}\n"
        f"server_auth:\n  types: [bearer]\n  tokens: [{TOKEN}]\n"
    )
    env = {**os.environ, "SEKMET_CONFIG": str(folder / "settings.yaml")}
    log = (folder / "server.log").open("w")
    process = subprocess.Popen(
        [str(SEKMET), "serve"], cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/metadata", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the FHIR server did not start: {(folder / 'server.log').read_text()}")
            time.sleep(0.2)
        yield FhirServer(base, TOKEN)
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()
