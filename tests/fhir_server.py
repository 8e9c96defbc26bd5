"""Start and stop the real FHIR server of the integration tests and benchmarks: sekmet-fhir,
from its own virtualenv (.fhir-server/venv, installed by scripts/test and benchmarks/run), on a
free port of 127.0.0.1 with a fresh SQLite file and one bearer token."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

SEKMET = Path(__file__).resolve().parents[1] / ".fhir-server" / "venv" / "bin" / "sekmet"
TOKEN = "integration-token-1f3a"


@dataclass(frozen=True)
class FhirServer:
    base: str
    token: str


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until_up(
    url: str,
    process: subprocess.Popen[bytes],
    seconds: float = 60,
    headers: dict[str, str] | None = None,
) -> bool:
    """True once ``url`` answers 200; False if the process exits or time runs out."""
    deadline = time.monotonic() + seconds
    while process.poll() is None and time.monotonic() < deadline:
        try:
            if httpx.get(url, headers=headers, timeout=1).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    return False


@contextmanager
def running(folder: Path) -> Iterator[FhirServer]:
    port = free_port()
    base = f"http://127.0.0.1:{port}/fhir"
    (folder / "settings.yaml").write_text(
        f"base_url: {base}\nhost: 127.0.0.1\nport: {port}\n"
        f"db_path: {folder / 'fhir.db'}\ndata_dir: {folder}\n"
        f"server_auth:\n  types: [bearer]\n  tokens: [{TOKEN}]\n"
    )
    env = {**os.environ, "SEKMET_CONFIG": str(folder / "settings.yaml")}
    with (folder / "server.log").open("w") as log:
        process = subprocess.Popen(
            [str(SEKMET), "serve"], cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            if not wait_until_up(f"{base}/metadata", process):
                raise RuntimeError(
                    f"the FHIR server did not start: {(folder / 'server.log').read_text()}"
                )
            yield FhirServer(base, TOKEN)
        finally:
            process.terminate()
            process.wait(timeout=10)
