"""HTTP throughput and latency under uvicorn, side by side with the bare FastAPI endpoint, with
wrk as the load generator (client and server share this machine's cores)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson

from tests.fhir_server import free_port

from .site import no_repeat_site

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


@contextmanager
def uvicorn(
    app: str,
    workers: int,
    env: dict[str, str] | None = None,
    ready: str = "/cds-services",
    cwd: Path = ROOT,
) -> Iterator[tuple[str, int]]:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        *(["--factory", app.removesuffix("()")] if app.endswith("()") else [app]),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{base}{ready}", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"{app} did not start") from None
                time.sleep(0.2)
        yield base, process.pid
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def wrk(base: str, path: str, body: Path, connections: int, seconds: float) -> dict[str, float]:
    threads = 1 if connections == 1 else 2
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "-s",
        str(HERE / "post.lua"),
        base,
        "--",
        str(body),
        path,
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": _ms(re.search(r"50%\s+([\d.]+\w+)", out).group(1)),  # type: ignore[union-attr]
        "p99_ms": _ms(re.search(r"99%\s+([\d.]+\w+)", out).group(1)),  # type: ignore[union-attr]
        "requests": float(re.search(r"(\d+) requests in", out).group(1)),  # type: ignore[union-attr]
        "errors": float(len(re.findall(r"Non-2xx|Socket errors", out))),
    }


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def compare(body: dict[str, Any], seconds: float, concurrency: list[int]) -> list[dict[str, Any]]:
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (benchmarks/run installs it)")
    body_file, env = _workspace(body, "ipt-bench-")
    rows = []
    for workers in (1, 2):
        for c in concurrency:
            row: dict[str, Any] = {"workers": workers, "connections": c}
            for name, app in (
                ("service", "ipt_cds.http.app:served_app()"),
                ("bare", "benchmarks.bare:app"),
            ):
                with uvicorn(app, workers, env) as (base, _):
                    wrk(base, "/cds-services/ipt-order-sign", body_file, c, 1)  # warm up
                    row[name] = wrk(base, "/cds-services/ipt-order-sign", body_file, c, seconds)
            row["ratio"] = row["service"]["rps"] / row["bare"]["rps"]
            rows.append(row)
    return rows


def memory(body: dict[str, Any], checkpoints: list[int]) -> list[dict[str, float]]:
    """RSS of a single-worker server as the calls pass each checkpoint (the last is the total);
    the card statistics are written to SQLite throughout, as in production."""
    body_file, env = _workspace(body, "ipt-mem-")
    done = 0
    samples: list[dict[str, float]] = []
    with uvicorn("ipt_cds.http.app:served_app()", 1, env) as (base, pid):
        for checkpoint in checkpoints:
            while done < checkpoint:
                # Short runs near a checkpoint, so that it is not overshot by much.
                seconds = 1 if checkpoint - done < 5_000 else 10
                done += int(
                    wrk(base, "/cds-services/ipt-order-sign", body_file, 16, seconds)["requests"]
                )
            samples.append({"calls": done, "rss_mb": _rss_mb(pid)})
    return samples


def _workspace(body: dict[str, Any], prefix: str) -> tuple[Path, dict[str, str]]:
    """A fresh folder holding the request body, and the service's environment using it."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    (folder / "body.json").write_bytes(orjson.dumps(body))
    return folder / "body.json", _env(folder)


def _env(folder: Path) -> dict[str, str]:
    return {
        "IPT_CDS_DATABASE_URL": f"sqlite:///{folder / 'store.sqlite3'}",
        "IPT_CDS_LOG_LEVEL": "WARNING",
        "IPT_CDS_SITE_FILE": str(no_repeat_site()),
    }


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")
