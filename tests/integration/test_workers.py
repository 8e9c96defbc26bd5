"""``ipt-cds serve --workers 2``, as an operator starts it: every scrape of /metrics counts
every worker's calls, the series are there before the first call, and uvicorn's own log lines
are JSON like the service's."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from ipt_cds.devtools.fixtures import load_cases

from ..conftest import FHIR_BASE, NOW
from ..fhir_server import free_port, wait_until_up

CASE = next(c for c in load_cases() if c.name == "in-psychosis-schizophrenia-ipt")
CALLS = 24


def _sum(metrics: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include ``labels``."""
    total = 0.0
    for line in metrics.splitlines():
        match = re.fullmatch(rf"{name}\{{([^}}]*)\}} ([0-9.e+]+)", line)
        if match and all(f'{k}="{v}"' in match[1] for k, v in labels.items()):
            total += float(match[2])
    return total


def test_two_workers_share_their_metrics_and_log_json(tmp_path: Path) -> None:
    port = free_port()
    site = tmp_path / "site.yaml"
    site.write_text("repeat_window_hours: 0\n")  # every call shows its card
    env = {
        **os.environ,
        "IPT_CDS_DATABASE_URL": f"sqlite:///{tmp_path / 'store.sqlite3'}",
        "IPT_CDS_SITE_FILE": str(site),
        "IPT_CDS_FHIR_ALLOWLIST": json.dumps([FHIR_BASE]),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    stderr = tmp_path / "stderr.log"
    with stderr.open("wb") as err:
        server = subprocess.Popen(
            [sys.executable, "-m", "ipt_cds.cli", "serve", "--workers", "2", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            assert wait_until_up(f"{base}/health", server), stderr.read_text()
            before = httpx.get(f"{base}/metrics").text
            assert _sum(before, "ipt_cds_cards_total", rule="ipt-psychosis") == 0
            assert 'ipt_cds_cards_total{indicator="warning",rule="ipt-psychosis"} 0.0' in before
            body = CASE.model_copy(update={"hook": "order-sign"}).request(NOW, FHIR_BASE)
            with httpx.Client(base_url=base) as client:
                for n in range(CALLS):
                    # A new connection each time, so that both workers answer some calls (the
                    # kernel hands each to either): a scrape of one worker alone falls short.
                    answer = client.post(
                        "/cds-services/ipt-order-sign",
                        json={**body, "hookInstance": f"call-{n}"},
                        headers={"Connection": "close"},
                    )
                    assert answer.status_code == 200, answer.text
                for _ in range(6):
                    scrape = httpx.get(f"{base}/metrics").text
                    assert _sum(scrape, "ipt_cds_cards_total", rule="ipt-psychosis") == CALLS
                    assert (
                        _sum(scrape, "ipt_cds_request_seconds_count", endpoint="hook", status="200")
                        == CALLS
                    )
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
    lines = [line for line in stderr.read_text().splitlines() if line.strip()]
    assert any("Started server process" in line for line in lines), lines[:5]
    for line in lines:
        record = json.loads(line)  # every line, uvicorn's too
        assert {"time", "level", "logger", "message"} <= set(record)
