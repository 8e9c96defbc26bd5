"""Start and stop the second real FHIR server of the integration tests: Medplum's FHIR router
over its in-memory repository (tests/medplum/server.mjs, its packages installed by scripts/test),
on a free port of 127.0.0.1 with one bearer token. It keeps nothing: each start is empty."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .fhir_server import FhirServer, free_port, wait_until_up

MEDPLUM = Path(__file__).resolve().parent / "medplum"
SERVER = MEDPLUM / "server.mjs"
# The router itself: present once `npm ci --prefix tests/medplum` has run.
INSTALLED = MEDPLUM / "node_modules" / "@medplum" / "fhir-router" / "package.json"
TOKEN = "integration-token-medplum-7c2e"


def missing() -> str | None:
    """Why the server cannot start here, or None if it can."""
    if shutil.which("node") is None:
        return "node is not installed: the Medplum FHIR server needs Node.js 20.19 or newer"
    if not INSTALLED.exists():
        return f"Medplum's FHIR router is not installed in {MEDPLUM}: run scripts/test"
    return None


@contextmanager
def running(folder: Path) -> Iterator[FhirServer]:
    port = free_port()
    base = f"http://127.0.0.1:{port}/fhir"
    node = shutil.which("node") or "node"
    # The token goes by the environment, not argv, where any `ps` would show it.
    env = {**os.environ, "PORT": str(port), "FHIR_TOKEN": TOKEN}
    with (folder / "server.log").open("w") as log:
        process = subprocess.Popen(
            [node, str(SERVER)], cwd=MEDPLUM, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            # Loading the FHIR definitions takes a few seconds; /metadata answers once listening.
            up = wait_until_up(
                f"{base}/metadata", process, headers={"Authorization": f"Bearer {TOKEN}"}
            )
            if not up:
                raise RuntimeError(
                    f"the Medplum FHIR server did not start: {(folder / 'server.log').read_text()}"
                )
            yield FhirServer(base, TOKEN)
        finally:
            process.terminate()
            process.wait(timeout=10)
