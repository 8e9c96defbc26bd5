"""The card memory's lookup on its own connection (ipt_cds/storage/recall.py) answers exactly
what the store's SQLAlchemy query answers, at every boundary of the window and the snooze, on
SQLite and PostgreSQL; a lookup that fails leaves the call to show every card, and a broken
PostgreSQL connection is made again."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy

from ipt_cds.storage import recall as recall_module
from ipt_cds.storage.memory import CardMemory
from ipt_cds.storage.recall import PostgresRecall, SqliteRecall
from ipt_cds.storage.store import Remembered, Store

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
SINCE = NOW - timedelta(hours=12)
DAY = timedelta(days=1)
TICK = timedelta(microseconds=1)


def _row(patient: str, rule: str, event: str, at: datetime, until: datetime) -> Remembered:
    return Remembered(patient, rule, "draft", f"{rule}-{at:%H%M%S%f}", event, at, until, "call")


ROWS = [
    _row("p1", "at-the-window-start", "shown", SINCE, NOW + DAY),
    _row("p1", "before-the-window", "shown", SINCE - TICK, NOW + DAY),
    _row("p1", "shown-now", "shown", NOW, NOW + DAY),
    _row("p1", "snooze-running", "snooze", NOW - DAY, NOW + TICK),
    _row("p1", "snooze-ending-now", "snooze", NOW - DAY, NOW),
    _row("p2", "another-patient", "shown", NOW, NOW + DAY),
]


@pytest.fixture
def store(database_url: str) -> Any:
    store = Store(database_url)
    store.record_cards([], ROWS)
    yield store
    store.close()


def _memory(store: Store) -> CardMemory:
    return CardMemory(store, timedelta(hours=12))


def _rules(memory: CardMemory, patient: str) -> set[str]:
    async def recall() -> set[str]:
        found = await memory.recall_soon(patient, NOW)
        return {row.rule_id for row in found.rows}

    return asyncio.run(recall())


@pytest.mark.parametrize("patient", ["p1", "p2", "p3"])
def test_the_lookup_answers_as_the_store_does(store: Store, patient: str) -> None:
    expected = sorted(store.recall(patient, SINCE, NOW), key=repr)
    sqlite, postgres = SqliteRecall.open(store), PostgresRecall.open(store)
    assert (sqlite is None) != (postgres is None), "one lookup for each database"
    if sqlite is not None:
        found = sqlite.recall(patient, SINCE, NOW)
        sqlite.close()
    else:
        assert postgres is not None

        async def remote() -> list[Remembered]:
            assert postgres is not None
            try:
                return await postgres.recall(patient, SINCE, NOW)
            finally:
                await postgres.close()

        found = asyncio.run(remote())
    assert sorted(found, key=repr) == expected
    if patient == "p1":
        assert {r.rule_id for r in found} == {"at-the-window-start", "shown-now", "snooze-running"}


def test_no_own_connection_for_an_in_memory_database() -> None:
    assert SqliteRecall.open(Store("sqlite://")) is None


def test_a_failed_lookup_recalls_nothing(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    memory = _memory(store)
    if memory._sqlite is not None:
        memory._sqlite.close()  # a closed connection fails as a broken database would
    else:
        assert memory._postgres is not None
        memory._postgres._dsn = "postgresql://postgres@127.0.0.1:1/test"  # nothing listens
    assert _rules(memory, "p1") == set()
    assert "card memory unavailable:" in caplog.text


def test_a_broken_postgresql_connection_is_made_again(
    store: Store, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only: an SQLite file has no connection to break")
    memory = _memory(store)
    expected = {"at-the-window-start", "shown-now", "snooze-running"}

    async def scenario() -> list[set[str]]:
        async def rules() -> set[str]:
            found = await memory.recall_soon("p1", NOW)
            return {row.rule_id for row in found.rows}

        first = await rules()
        assert memory._postgres is not None
        assert memory._postgres._conn is not None
        pid = memory._postgres._conn.info.backend_pid
        with store.engine.begin() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        broken = await rules()  # the server hung up: nothing recalled, the cards show
        soon = await rules()  # under a second later: not tried again yet
        monkeypatch.setattr(recall_module, "RECONNECT_AFTER_SECONDS", 0.0)
        again = await rules()
        await memory.close()
        return [first, broken, soon, again]

    assert asyncio.run(scenario()) == [expected, set(), set(), expected]


def test_steady_calls_after_a_break_do_not_keep_the_memory_off(
    store: Store, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found under load: each call refused within the second after a failure restarted that
    second, so with a call every 0.4 s the connection was never made again."""
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only: an SQLite file has no connection to break")
    memory = _memory(store)
    expected = {"at-the-window-start", "shown-now", "snooze-running"}
    now = [1000.0]
    monkeypatch.setattr(recall_module, "_clock", lambda: now[0])

    async def scenario() -> list[set[str]]:
        async def rules() -> set[str]:
            found = await memory.recall_soon("p1", NOW)
            return {row.rule_id for row in found.rows}

        assert await rules() == expected
        assert memory._postgres is not None
        assert memory._postgres._conn is not None
        pid = memory._postgres._conn.info.backend_pid
        with store.engine.begin() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        seen = [await rules()]  # the break itself
        for _ in range(4):  # a call every 0.4 s: 0.4, 0.8 refused; 1.2 reconnects
            now[0] += 0.4
            seen.append(await rules())
        await memory.close()
        return seen

    assert asyncio.run(scenario()) == [set(), set(), set(), expected, expected]
