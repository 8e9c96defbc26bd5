"""Nothing acknowledged is lost: kill the service (SIGKILL) in the middle of a feedback load,
then every item that was answered 200 must be in the store, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import sqlalchemy

from service.storage.store import database_url as driver_url

from ..fhir_server import free_port, wait_until_up

ROOT = Path(__file__).resolve().parents[2]


def _post_until_refused(base: str, acked: list[str], stop: threading.Event) -> None:
    with httpx.Client(timeout=5) as http:
        while not stop.is_set():
            card = str(uuid.uuid4())
            item = {
                "card": card,
                "outcome": "overridden",
                "outcomeTimestamp": "2026-11-25T12:00:00Z",
            }
            try:
                response = http.post(
                    f"{base}/cds-services/ipt-order-sign/feedback", json={"feedback": [item]}
                )
            except httpx.TransportError:
                return
            if response.status_code == 200:
                acked.append(card)


def test_feedback_answered_200_survives_a_kill(database_url: str) -> None:
    port = free_port()
    env = {**os.environ, "IPT_CDS_DATABASE_URL": database_url, "IPT_CDS_LOG_LEVEL": "WARNING"}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "service.http.app:served_app",
            "--port",
            str(port),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    assert wait_until_up(f"{base}/health", server), "the service did not start"
    acked: list[str] = []
    stop = threading.Event()
    workers = [
        threading.Thread(target=_post_until_refused, args=(base, acked, stop)) for _ in range(4)
    ]
    for w in workers:
        w.start()
    time.sleep(1.5)
    server.send_signal(signal.SIGKILL)  # no shutdown, no flush: a crash
    server.wait(timeout=10)
    stop.set()
    for w in workers:
        w.join(timeout=10)

    assert len(acked) > 20, "the load ran long enough to matter"
    engine = sqlalchemy.create_engine(driver_url(database_url))
    with engine.connect() as conn:
        stored = set(conn.execute(sqlalchemy.text("SELECT card_uuid FROM feedback")).scalars())
    engine.dispose()
    missing = set(acked) - stored
    assert not missing, f"{len(missing)} acknowledged feedback items lost"
