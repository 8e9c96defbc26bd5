"""The card memory is state, not a log (ipt_cds/storage/memory.py): however often a patient is
called, or one call retried, the rows kept for the patient and the rows a lookup answers stay
within a bound set by the rules, drafts, services and clinicians. On SQLite and PostgreSQL;
rows are counted, never timed. Also: migration 6 carries the old log over as its latest rows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
import yaml
from fastapi.testclient import TestClient

from ipt_cds.devtools.fixtures import load_cases
from ipt_cds.storage import migrations
from ipt_cds.storage.memory import CardMemory, Marks, Overridden, Recall
from ipt_cds.storage.store import Remembered, Store, card_memory
from ipt_cds.storage.store import database_url as driver_url

from .conftest import FHIR_BASE, NOW, AppFactory, Json

WINDOW = timedelta(hours=12)
RULES = ("ipt-add-pharmacotherapy", "ipt-suicide-risk")
SERVICES = ("ipt-patient-view", "ipt-order-select", "ipt-order-sign")
USERS = ("Practitioner/alice", "Practitioner/bob")
MARKS = Marks("moderate", "none")


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    store = Store(database_url)
    yield store
    store.close()


def _stored(store: Store, patient: str) -> int:
    """The card_memory rows kept for one patient."""
    count = sqlalchemy.select(sqlalchemy.func.count()).where(card_memory.c.patient == patient)
    with store.engine.connect() as conn:
        return int(conn.execute(count).scalar_one())


@dataclass
class Calls:
    """Hook calls for one patient as the route makes them: each shows both rules' cards, and
    the recorder writes what they remember in batches."""

    memory: CardMemory
    patient: str
    pending: list[Remembered]
    batch: int

    def show(self, i: int, now: datetime, call: str, service: str, user: str) -> list[str]:
        drafts = ("",) if service == "ipt-patient-view" else ("draft-1", "draft-2")
        keys, user_key = self.memory.draft_keys(drafts), self.memory.user_key(user)
        cards = []
        for rule in RULES:
            card = f"{rule}-{i}"
            self.pending += self.memory.shown(
                self.patient,
                rule,
                keys,
                card,
                now,
                call,
                marks=MARKS,
                service=service,
                user=user_key,
            )
            cards.append(card)
        if len(self.pending) >= self.batch:
            self.flush()
        return cards

    def flush(self) -> None:
        if self.pending:
            self.memory.store.record_cards([], self.pending)
        self.pending = []

    def recall(self, now: datetime, call: str) -> Recall:
        async def ask() -> Recall:
            return await self.memory.recall_soon(self.patient, now, call)

        return asyncio.run(ask())


@pytest.fixture
def calls(store: Store) -> Iterator[Calls]:
    memory = CardMemory(store, WINDOW)
    yield Calls(memory, memory.pseudonym(FHIR_BASE, "pat-history"), [], batch=1)
    asyncio.run(memory.close())


def test_1500_chart_opens_and_orders_keep_as_many_rows_as_150(calls: Calls) -> None:
    """Each call a new hookInstance, over three services and two clinicians, some overridden:
    the rows kept and the rows a lookup answers after 1,500 calls are those after 150 (2 rules
    x 5 draft-and-service pairs x 2 clinicians shown, plus a snooze per service and clinician)."""
    store = calls.memory.store
    counts = []
    for i in range(1, 1501):
        now = NOW + timedelta(seconds=10 * i)  # 1,500 calls in about four hours: one window
        service, user = SERVICES[i % 3], USERS[i % 2]
        cards = calls.show(i, now, f"call-{i}", service, user)
        calls.batch = 1 if i < 100 else 40  # written one call at a time, then in batches
        if i % 25 == 0:  # overridden, through every service, by alice and by bob
            assert calls.memory.snooze([Overridden(cards[0], 30)], now) == 1
        if i in (150, 1500):
            calls.flush()
            later = now + timedelta(seconds=11)  # this worker's unwritten copy has gone
            looked_up = calls.recall(later, "a-new-call").rows
            counts.append((_stored(store, calls.patient), len(looked_up)))
            assert len(store.recall(calls.patient, later - WINDOW, later)) == counts[-1][0]
    bound = len(RULES) * 5 * len(USERS) + len(SERVICES) * len(USERS)
    assert counts[0] == counts[1] == (bound, bound)


def test_one_call_retried_1000_times_keeps_one_row_per_card_and_draft(calls: Calls) -> None:
    """The same order-sign call again and again (an EHR retrying): whether written call by call
    or in bursts, the patient keeps a row per rule and draft, the retry's own lookup holds none
    of them back and a new call's holds both rules."""
    store = calls.memory.store
    for i in range(1, 1001):
        calls.batch = 1 if i <= 100 else 200
        calls.show(i, NOW + timedelta(milliseconds=3 * i), "call-retried", SERVICES[2], USERS[0])
        if i in (1, 1000):
            calls.flush()
            assert _stored(store, calls.patient) == len(RULES) * 2
    now = NOW + timedelta(seconds=20)
    assert len(store.recall(calls.patient, now - WINDOW, now)) == len(RULES) * 2
    assert calls.recall(now, "call-retried").rows == (), "a retry is not a repeat"
    again = calls.recall(now, "a-new-call")
    assert len(again.rows) == len(RULES) * 2
    assert {(h.rule_id, h.why) for h in again.holds(("draft-1",))} == {
        (rule, "repeat") for rule in RULES
    }


def test_a_slower_replicas_older_row_does_not_replace_a_newer_one(store: Store) -> None:
    def shown(at: datetime, card: str) -> Remembered:
        return Remembered("p", RULES[0], "d", card, "shown", at, at + timedelta(days=1), "c")

    store.remember([shown(NOW, "newer")])
    store.remember([shown(NOW - timedelta(seconds=1), "older")])  # its batch came late
    assert [r.card_uuid for r in store.recall("p", NOW - WINDOW, NOW)] == ["newer"]
    store.record_cards([], [shown(NOW + timedelta(seconds=1), "a"), shown(NOW, "b")])
    assert [r.card_uuid for r in store.recall("p", NOW - WINDOW, NOW)] == ["a"]
    assert _stored(store, "p") == 1


def test_an_override_of_a_card_another_clinician_saw_since_still_snoozes(calls: Calls) -> None:
    """Rows are kept per clinician: bob's later card of the rule does not replace alice's, so
    her override still finds its patient."""
    alice = calls.show(1, NOW, "call-1", SERVICES[2], USERS[0])
    calls.show(2, NOW + timedelta(minutes=1), "call-2", SERVICES[2], USERS[1])
    calls.flush()
    later = NOW + timedelta(minutes=2)
    replica = CardMemory(calls.memory.store, WINDOW)  # finds the card in the store
    assert replica.snooze([Overridden(alice[0], 30)], later) == 1
    asyncio.run(replica.close())
    found = calls.recall(later + timedelta(seconds=11), "c").rows
    snoozed = [r for r in found if r.event == "snooze"]
    assert [(r.rule_id, r.user_key) for r in snoozed] == [
        (RULES[0], calls.memory.user_key(USERS[0]))
    ]


# --- Through HTTP --------------------------------------------------------------------------


def test_retried_calls_and_chart_opens_add_no_rows_through_the_route(
    make_client: AppFactory, database_url: str, tmp_path: Path
) -> None:
    """Through the route, with once per visit off so that every call shows its cards: after 20
    retries of one order-sign call and 20 chart opens, the patient has the rows it had after
    the first of each."""
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({"repeat_window_hours": 0}))
    client = make_client(database_url=database_url, site_file=site)
    memory: CardMemory = client.app.state.ipt.memory  # type: ignore[attr-defined]
    case = next(c for c in load_cases() if c.name == "in-suicide-item9-two-ipt")
    sign: Json = case.model_copy(update={"hook": "order-sign"}).request(NOW, FHIR_BASE)
    view: Json = case.model_copy(update={"hook": "patient-view"}).request(NOW, FHIR_BASE)
    patient = memory.pseudonym(FHIR_BASE, case.patient_id)
    counts = []
    for i in range(20):
        assert _cards(client, "ipt-order-sign", sign), "the same call: its cards every time"
        chart = {**view, "hookInstance": f"0b9f3f0e-8d1c-4f6e-9a57-{i:012d}"}
        assert _cards(client, "ipt-patient-view", chart), "a new chart open: the chart cards"
        if i in (0, 19):
            client.__exit__(None, None, None)  # the recorder writes what it holds
            client.__enter__()
            store = client.app.state.ipt.store  # type: ignore[attr-defined]
            counts.append(_stored(store, patient))
    assert counts[0] >= 3, "both services remembered their cards"
    assert counts[1] == counts[0]


def test_two_instances_share_a_snooze_through_the_database(
    make_client: AppFactory, database_url: str, tmp_path: Path
) -> None:
    """One instance shows the card, another takes the override (it finds the card's row in the
    database), and the first holds the rule back from then on."""
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({"repeat_window_hours": 0}))
    one, two = (make_client(database_url=database_url, site_file=site) for _ in range(2))
    case = next(c for c in load_cases() if c.name == "in-suicide-item9-two-ipt")
    sign: Json = case.model_copy(update={"hook": "order-sign"}).request(NOW, FHIR_BASE)
    cards = {c["source"]["topic"]["code"]: c for c in _cards(one, "ipt-order-sign", sign)}
    one.__exit__(None, None, None)  # the recorder writes what it holds
    one.__enter__()
    item = {
        "card": cards[RULES[0]]["uuid"],
        "outcome": "overridden",
        "outcomeTimestamp": "2026-11-25T12:00:00Z",
    }
    answer = two.post("/cds-services/ipt-order-sign/feedback", json={"feedback": [item]})
    assert answer.status_code == 200, answer.text
    again = {**sign, "hookInstance": "0b9f3f0e-8d1c-4f6e-9a57-3c2d1e0f4a5b"}
    assert [c["source"]["topic"]["code"] for c in _cards(one, "ipt-order-sign", again)] == [
        RULES[1]
    ]


def _cards(client: TestClient, service: str, body: Json) -> list[Json]:
    answer = client.post(f"/cds-services/{service}", json=body)
    assert answer.status_code == 200, answer.text
    cards: list[Json] = answer.json()["cards"]
    return cards


# --- Migration 6 ---------------------------------------------------------------------------


def test_migration_6_keeps_the_latest_running_row_of_each_key(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = sqlalchemy.create_engine(driver_url(database_url))
    monkeypatch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:5])
    migrations.migrate(engine)
    now = datetime.now(UTC)
    day = timedelta(days=1)

    def row(rule: str, event: str, at: datetime, until: datetime, **extra: Any) -> Json:
        unset = ("call_key", "service_id", "user_key", "band", "ideation", "basis", "flags")
        return {
            **dict.fromkeys(unset),
            "patient": "p",
            "rule_id": rule,
            "draft_key": extra.pop("draft", ""),
            "card_uuid": extra.pop("card", None),
            "event": event,
            "at": at,
            "expires_at": until,
            **extra,
        }

    old = [
        *(
            row(
                "a",
                "shown",
                now - timedelta(hours=h),
                now + day,
                card=f"a-{h}",
                service_id="sign",
                user_key="u1",
                call_key=f"c{h}",
                band="mild",
            )
            for h in (3, 1, 2)
        ),
        row(
            "a",
            "shown",
            now - timedelta(hours=1),
            now + day,
            card="a-select",
            service_id="select",
            user_key="u1",
        ),
        row(
            "a", "shown", now - 2 * day, now - day, card="a-gone", service_id="view", user_key="u1"
        ),
        row("b", "shown", now - timedelta(hours=5), now + day, card="b-old", draft="d"),
        row("b", "shown", now - timedelta(hours=4), now + day, card="b-new", draft="d"),
        row("a", "snooze", now - 3 * day, now + day, service_id="sign", user_key="u1"),
        row(
            "a",
            "snooze",
            now - day,
            now + 29 * day,
            service_id="sign",
            user_key="u1",
            band="severe",
        ),
        row(
            "s",
            "assessed",
            now - timedelta(hours=2),
            now + timedelta(hours=10),
            service_id="sign",
            user_key="u1",
        ),
        row(
            "s",
            "assessed",
            now - timedelta(hours=1),
            now + timedelta(hours=11),
            service_id="sign",
            user_key="u2",
        ),
    ]
    with engine.begin() as conn:
        table = sqlalchemy.Table("card_memory", sqlalchemy.MetaData(), autoload_with=conn)
        conn.execute(table.insert(), old)
    engine.dispose()
    monkeypatch.undo()

    store = Store(database_url)  # runs migration 6
    kept = {
        (r.rule_id, r.event, r.service_id, r.user_key): r
        for r in store.recall("p", now - 2 * day, now)
    }
    store.close()
    assert {k: r.card_uuid for k, r in kept.items() if k[1] == "shown"} == {
        ("a", "shown", "sign", "u1"): "a-1",
        ("a", "shown", "select", "u1"): "a-select",
        ("b", "shown", "", ""): "b-new",
    }
    assert kept[("a", "shown", "sign", "u1")].call_key == "c1"
    assert kept[("a", "snooze", "sign", "u1")].band == "severe"
    assert {k[3] for k in kept if k[1] == "assessed"} == {"u1", "u2"}
    assert len(kept) == 6
