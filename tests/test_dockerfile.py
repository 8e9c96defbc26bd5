"""This machine has no Docker engine, so the container's promises are checked in the file."""

from __future__ import annotations

import re
from pathlib import Path

DOCKERFILE = (Path(__file__).resolve().parents[1] / "Dockerfile").read_text()
LINES = [
    line.strip() for line in DOCKERFILE.splitlines() if line.strip() and not line.startswith("#")
]


def test_base_image_is_slim_and_pinned() -> None:
    base = next(line for line in LINES if line.startswith("FROM "))
    assert re.fullmatch(r"FROM python:3\.11\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base)
    assert ":latest" not in base


def test_runs_as_a_non_root_user() -> None:
    users = [line for line in LINES if line.startswith("USER ")]
    assert users, "a USER instruction"
    assert users[-1].split()[1].split(":")[0] not in ("root", "0")
    assert LINES.index(users[-1]) > max(
        i for i, line in enumerate(LINES) if line.startswith("RUN ")
    )


def test_healthcheck_calls_health() -> None:
    health = DOCKERFILE[DOCKERFILE.index("HEALTHCHECK") :]
    assert "/health" in health.split("CMD", 2)[1]


def test_workers_and_port_come_from_the_environment() -> None:
    assert "IPT_CDS_WORKERS=" in DOCKERFILE
    assert "IPT_CDS_HOST=0.0.0.0" in DOCKERFILE
    assert LINES[-1] == 'CMD ["ipt-cds", "serve"]'


def test_the_image_holds_the_knowledge_base() -> None:
    assert "COPY cards ./cards" in LINES
    assert "COPY service ./service" in LINES
