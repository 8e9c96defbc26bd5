"""Nothing acknowledged is lost, and feedback stays attributable: kill the service (SIGKILL) in
the middle of a load of hook calls and feedback on their cards, start it again (it replays its
spool), then every item that was answered 200 must be in the store, and every stored item's
card must lead to its service and rule, on SQLite and PostgreSQL. Killed while PostgreSQL is
away, it keeps what it acknowledged too: counted once the database and the service are back.

The "card shown" rows are spooled in batches, so the kill loses the last of them; the card's
uuid itself names its service and rule (ipt_cds/protocol/card_ids.py), which is what keeps that
feedback attributable."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy

from ipt_cds.knowledge.base import Knowledge
from ipt_cds.protocol.card_ids import CardIds
from ipt_cds.storage.store import database_url as driver_url

from ..fhir_server import free_port, wait_until_up
from ..tcp_proxy import TcpProxy

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fhir_fixtures"
# Fixture requests that make cards, a few per service.
# Enough different patients that the load mostly meets cards not yet overridden: an override
# snoozes its rule for that patient, so a request sent again answers no card to give feedback on.
CALLS_PER_SERVICE = 30
# Generous: the drain retries every 5 s at most; nothing here is a timing assertion.
DEADLINE_SECONDS = 60


@dataclass
class Load:
    # card uuid -> (service, rule) as the hook answer showed it, for every card answered 200
    shown: dict[str, tuple[str, str]] = field(default_factory=dict)
    acked: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _requests() -> list[tuple[str, dict[str, Any]]]:
    expected = json.loads((FIXTURES / "expected.json").read_text())
    chosen: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for name, case in sorted(expected.items()):
        calls = chosen.setdefault(case["service"], [])
        if case["cards"] and len(calls) < CALLS_PER_SERVICE:
            calls.append(
                (case["service"], json.loads((FIXTURES / "requests" / f"{name}.json").read_text()))
            )
    # The services in turn, so that every one is called early in the load.
    return [call for turn in itertools.zip_longest(*chosen.values()) for call in turn if call]


def _call_and_answer(
    base: str, requests: list[tuple[str, dict[str, Any]]], start: int, load: Load
) -> None:
    with httpx.Client(timeout=5) as http:
        for service, body in itertools.islice(itertools.cycle(requests), start, None):
            try:
                answer = http.post(f"{base}/cds-services/{service}", json=body)
                if answer.status_code != 200:
                    continue
                cards = answer.json()["cards"]
                with load.lock:
                    for card in cards:
                        load.shown[card["uuid"]] = (service, card["source"]["topic"]["code"])
                items = [
                    {
                        "card": card["uuid"],
                        "outcome": "overridden",
                        "outcomeTimestamp": "2026-11-25T12:00:00Z",
                    }
                    for card in cards
                ]
                if not items:
                    continue
                response = http.post(
                    f"{base}/cds-services/{service}/feedback", json={"feedback": items}
                )
            except httpx.TransportError:
                return
            if response.status_code == 200:
                with load.lock:
                    load.acked.extend(item["card"] for item in items)


def _serve(database_url: str, spool: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "IPT_CDS_DATABASE_URL": database_url,
        "IPT_CDS_SPOOL_DIR": str(spool),
        "IPT_CDS_LOG_LEVEL": "WARNING",
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "ipt_cds.http.app:served_app",
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
    return server, base


def _stop(server: subprocess.Popen[bytes]) -> None:
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=30)


def test_feedback_answered_200_survives_a_kill_and_stays_attributable(
    database_url: str, knowledge: Knowledge, record_property: Any, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    server, base = _serve(database_url, spool)
    requests = _requests()
    load = Load()
    workers = [
        threading.Thread(target=_call_and_answer, args=(base, requests, 3 * i, load))
        for i in range(4)
    ]
    for w in workers:
        w.start()
    time.sleep(1.5)
    server.send_signal(signal.SIGKILL)  # no shutdown, no flush: a crash
    server.wait(timeout=10)
    for w in workers:
        w.join(timeout=10)

    assert len(load.acked) > 20, "the load ran long enough to matter"
    assert {service for service, _ in load.shown.values()} == set(knowledge.services)
    # Started again, the service replays what the killed one spooled; the statistics wait for
    # it to be written.
    server, base = _serve(database_url, spool)
    assert httpx.get(f"{base}/stats/cards", timeout=30).status_code == 200
    _stop(server)
    engine = sqlalchemy.create_engine(driver_url(database_url))
    with engine.connect() as conn:
        feedback = conn.execute(sqlalchemy.text("SELECT card_uuid, service_id FROM feedback"))
        stored: dict[str, str] = {card: service for card, service in feedback}
        issued = conn.execute(sqlalchemy.text("SELECT card_uuid, rule_id FROM cards_issued"))
        rows: dict[str, str] = {card: rule for card, rule in issued}
    engine.dispose()
    missing = set(load.acked) - set(stored)
    assert not missing, f"{len(missing)} acknowledged feedback items lost"

    # Attribution: by the "card shown" row where the crash left one, else by the uuid.
    ids = CardIds(knowledge.services, [r.id for r in knowledge.rulebook.rules])
    without_row = [card for card in stored if card not in rows]
    decoded = {card: ids.decode(card) for card in without_row}
    without_rule = [card for card, found in decoded.items() if found is None]
    record_property("feedback_rows", len(stored))
    record_property("feedback_rows_without_card_row", len(without_row))
    record_property("feedback_rows_without_rule", len(without_rule))
    print(  # the figures behind the assertion, shown with pytest -s
        f"\n{database_url.split(':')[0]}: {len(stored)} feedback rows, {len(without_row)} "
        f"without a card-shown row, {len(without_rule)} without a rule"
    )
    assert not without_rule, f"{len(without_rule)} feedback rows cannot be attributed to a rule"
    for card, found in decoded.items():
        assert found == load.shown[card], "the uuid names the service and rule that made it"
    for card, rule in rows.items():
        if card in load.shown:
            assert rule == load.shown[card][1]


def test_feedback_acknowledged_while_the_database_is_away_survives_a_kill(
    postgres_via_proxy: tuple[str, TcpProxy], tmp_path: Path
) -> None:
    url, proxy = postgres_via_proxy
    spool = tmp_path / "spool"
    server, base = _serve(url, spool)
    proxy.cut()
    # (service, rule) -> the calls that showed its card, and the feedback items acknowledged.
    shown: dict[tuple[str, str], set[str]] = {}
    acked: Counter[tuple[str, str]] = Counter()
    with httpx.Client(timeout=10) as http:
        for service, body in _requests()[:12]:
            answer = http.post(f"{base}/cds-services/{service}", json=body)
            assert answer.status_code == 200, "hook calls answer while the database is away"
            cards = answer.json()["cards"]
            for card in cards:
                rule = card["source"]["topic"]["code"]
                shown.setdefault((service, rule), set()).add(body["hookInstance"])
            items = [
                {
                    "card": card["uuid"],
                    "outcome": "overridden",
                    "outcomeTimestamp": "2026-11-25T12:00:00Z",
                }
                for card in cards
            ]
            if not items:
                continue
            response = http.post(
                f"{base}/cds-services/{service}/feedback", json={"feedback": items}
            )
            assert response.status_code == 200, response.text
            assert response.json()["pending"] == len(items)
            for card in cards:
                acked[(service, card["source"]["topic"]["code"])] += 1
    assert sum(acked.values()) > 5, "enough feedback to matter"
    server.send_signal(signal.SIGKILL)  # after the 200s: no shutdown, no flush
    server.wait(timeout=10)

    proxy.restore()
    server, base = _serve(url, spool)
    expected = {key: (len(calls), acked[key]) for key, calls in shown.items()}
    counted: dict[tuple[str, str], tuple[int, int]] = {}
    deadline = time.monotonic() + DEADLINE_SECONDS
    while counted != expected and time.monotonic() < deadline:
        stats = httpx.get(f"{base}/stats/cards", timeout=30)
        if stats.status_code == 200:
            counted = {
                (s["service"], r["rule"]): (r["shown"], r["overridden"])
                for s in stats.json()["services"]
                for r in s["rules"]
                if r["shown"] or r["overridden"]  # not only held back
            }
        time.sleep(0.5)
    _stop(server)
    assert counted == expected, "every card shown and every item acknowledged is counted"
