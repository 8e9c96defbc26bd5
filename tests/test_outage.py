"""With the database away, hook calls answer cards, feedback is acknowledged once spooled, and
/ready says "degraded"; when it is back, /stats/cards counts everything of the outage. When not
even the spool can keep feedback, the answer is a 503 with Retry-After, never a 500.

The outage is real: PostgreSQL through a TCP proxy the test cuts and restores
(tests/tcp_proxy.py)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
import yaml
from fastapi.testclient import TestClient

from .conftest import AppFactory, Json, full_prefetch, hook_request, hypertension
from .rules import CountingRule
from .tcp_proxy import TcpProxy
from .test_card_memory import _request

WARNING, CRITICAL = "ipt-add-pharmacotherapy", "ipt-suicide-risk"
OUTAGE_CALLS = 12
# Generous: the drain retries every 5 s at most; nothing here is a timing assertion.
DEADLINE_SECONDS = 60


def _override(card: str, at: str = "2026-11-25T12:00:00Z") -> Json:
    return {"card": card, "outcome": "overridden", "outcomeTimestamp": at}


def _call(client: TestClient, body: Json) -> dict[str, str]:
    response = client.post("/cds-services/ipt-order-sign", json=body)
    assert response.status_code == 200, response.text
    return {c["source"]["topic"]["code"]: c["uuid"] for c in response.json()["cards"]}


def _rules(client: TestClient) -> dict[str, Json] | None:
    response = client.get("/stats/cards")
    if response.status_code != 200:
        return None
    return {r["rule"]: r for s in response.json()["services"] for r in s["rules"]}


def test_during_a_database_outage_nothing_is_lost_and_feedback_answers_200(
    make_client: AppFactory, postgres_via_proxy: tuple[str, TcpProxy], tmp_path: Path
) -> None:
    url, proxy = postgres_via_proxy
    site = tmp_path / "site.yaml"
    # No repeat window: every call shows both cards; an override snoozes the warning.
    site.write_text(
        yaml.safe_dump({"repeat_window_hours": 0, "rules": {WARNING: {"snooze_days": 30}}})
    )
    client = make_client(database_url=url, site_file=site, spool_dir=tmp_path / "spool")
    before = _call(client, {**_request("order-sign", "outage-before")})
    up = client.post(
        "/cds-services/ipt-order-sign/feedback", json={"feedback": [_override(before[WARNING])]}
    )
    assert up.json() == {"received": 1, "stored": 1}

    proxy.cut()
    for i in range(OUTAGE_CALLS):
        body = {**_request("order-sign", f"outage-{i}"), "hookInstance": str(uuid.uuid4())}
        cards = _call(client, body)
        assert set(cards) == {WARNING, CRITICAL}, "hook calls answer cards as before"
        if i == 0:  # a retry of the same call (same hookInstance): counted once
            assert set(_call(client, body)) == {WARNING, CRITICAL}
        answer = client.post(
            "/cds-services/ipt-order-sign/feedback", json={"feedback": [_override(cards[WARNING])]}
        )
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"received": 1, "stored": 0, "pending": 1}
    ready = client.get("/ready")
    assert ready.status_code == 200, "a load balancer keeps the instance"
    assert ready.json()["status"] == "degraded"
    assert ready.json()["degraded"] == ["database"]
    assert ready.json()["spooled"] >= OUTAGE_CALLS
    stats = client.get("/stats/cards")
    assert stats.status_code == 503
    assert stats.json()["code"] == "database_unavailable"
    assert stats.headers["retry-after"].isdigit()

    proxy.restore()
    expected = OUTAGE_CALLS + 1
    deadline = time.monotonic() + DEADLINE_SECONDS
    rules = _rules(client)
    while time.monotonic() < deadline and (
        rules is None or rules.get(WARNING, {}).get("overridden") != expected
    ):
        time.sleep(0.5)
        rules = _rules(client)
    assert rules is not None, "the statistics answer once the database is back"
    assert rules[WARNING]["overridden"] == expected, "every feedback item acknowledged counts"
    assert rules[WARNING]["shown"] == expected, "every card returned counts, a retry once"
    assert rules[CRITICAL]["shown"] == expected
    # The snoozes asked for during the outage were written too. The card memory tries its own
    # connection again at most once a second (ipt_cds/storage/recall.py): until then a call
    # shows every card, so the drain may finish before the memory reads again.
    deadline = time.monotonic() + DEADLINE_SECONDS
    shown = set(_call(client, _request("order-sign", "outage-3")))
    while shown != {CRITICAL} and time.monotonic() < deadline:
        time.sleep(0.2)
        shown = set(_call(client, _request("order-sign", "outage-3")))
    assert shown == {CRITICAL}, "the snoozed warning stays away once the memory reads again"
    assert client.get("/ready").json() == {"status": "ready"}


RULES = (CountingRule("counts-conditions", "Condition", "warning"),)


def _database_away(client: TestClient, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The store's database file cannot be opened until ``monkeypatch.undo()``."""
    store: Any = client.app.state.ipt.store  # type: ignore[attr-defined]
    away = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'no such folder' / 'x.sqlite3'}")
    monkeypatch.setattr(store, "engine", away)


def test_feedback_the_spool_cannot_keep_answers_503_with_retry_after(
    make_client: AppFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    client = make_client(rules=RULES, spool_max_bytes=1024)
    body = hook_request("order-sign", full_prefetch(hypertension("c1")))
    card = _call(client, body)["counts-conditions"]
    assert _rules(client) is not None  # the spool is drained: empty

    _database_away(client, monkeypatch, tmp_path)
    answers = [
        client.post(
            "/cds-services/ipt-order-sign/feedback",
            json={"feedback": [_override(card, f"2026-11-25T12:{minute:02d}:00Z")]},
        )
        for minute in range(8)
    ]
    statuses = [a.status_code for a in answers]
    kept = statuses.count(200)
    assert kept >= 1, "the spool keeps what fits"
    assert statuses == [200] * kept + [503] * (len(statuses) - kept), statuses
    refused = answers[-1]
    assert refused.json()["code"] == "spool_unavailable"
    assert refused.headers["retry-after"].isdigit()
    assert client.get("/ready").json()["degraded"] == ["database", "spool"]

    monkeypatch.undo()  # the database is back: what was kept is written
    deadline = time.monotonic() + DEADLINE_SECONDS
    while (rules := _rules(client)) is None or rules["counts-conditions"]["overridden"] != kept:
        assert time.monotonic() < deadline, "the spool drained"
        time.sleep(0.2)
    # The drain deletes an entry from the spool just after the database's commit: until then
    # the spool is still full, and a post is refused as it would be during the outage.
    while client.get("/ready").json() != {"status": "ready"}:
        assert time.monotonic() < deadline, "the spool gave its room back"
        time.sleep(0.05)
    again = client.post(
        "/cds-services/ipt-order-sign/feedback",
        json={"feedback": [_override(card, "2026-11-25T13:00:00Z")]},
    )
    assert again.json() == {"received": 1, "stored": 1}


def test_the_spool_keeps_no_free_text_comment(
    make_client: AppFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A comment may name the patient: it is not stored, not even while it waits."""
    client = make_client(rules=RULES, spool_dir=tmp_path / "spool")
    card = _call(client, hook_request("order-sign", full_prefetch(hypertension("c1"))))
    _database_away(client, monkeypatch, tmp_path)
    reason = {
        "code": "not-indicated",
        "system": "https://fhir.ipt-cds.org/CodeSystem/override-reason",
    }
    item = {
        **_override(card["counts-conditions"]),
        "overrideReason": {"reason": reason, "userComment": "Jane Doe says no"},
    }
    answer = client.post("/cds-services/ipt-order-sign/feedback", json={"feedback": [item]})
    assert answer.json()["pending"] == 1
    kept = b"".join(p.read_bytes() for p in (tmp_path / "spool").iterdir())
    assert b"not-indicated" in kept, "the item waits in the spool"
    assert b"Jane Doe" not in kept
