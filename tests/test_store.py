"""The store's migrations and card writes, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy
from sqlalchemy.engine.interfaces import ExecuteStyle

from ipt_cds.storage import store as store_tables
from ipt_cds.storage.migrations import MIGRATIONS, migrate
from ipt_cds.storage.recorder import CardRecorder
from ipt_cds.storage.store import IssuedCard, Remembered, Store
from ipt_cds.storage.store import database_url as driver_url


def test_migrations_run_once_and_are_recorded(database_url: str) -> None:
    first = Store(database_url)
    versions = [n for n, _, _ in MIGRATIONS]
    with first.engine.connect() as conn:
        recorded = list(
            conn.execute(sqlalchemy.text("SELECT version FROM ipt_schema_version")).scalars()
        )
        tables = set(sqlalchemy.inspect(conn).get_table_names())
    assert recorded == versions
    assert {"cards_issued", "feedback", "jti_seen"} <= tables
    assert migrate(first.engine) == []
    first.close()
    second = Store(database_url)  # a restart, or another replica
    second.ping()
    second.close()


def test_the_migrations_build_exactly_the_tables_the_store_uses(database_url: str) -> None:
    # Migrations spell out their own (frozen) tables: when store.py changes a table without a
    # migration that follows, a fresh install would not match what the queries expect.
    store = Store(database_url)
    with store.engine.connect() as conn:
        inspector = sqlalchemy.inspect(conn)
        for table in store_tables.metadata.sorted_tables:
            columns = {c["name"]: c for c in inspector.get_columns(table.name)}
            assert set(columns) == {c.name for c in table.columns}, table.name
            for column in table.columns:
                assert columns[column.name]["nullable"] == column.nullable, (table.name, column)
            primary = inspector.get_pk_constraint(table.name)["constrained_columns"]
            assert set(primary) == {c.name for c in table.primary_key.columns}, table.name
    store.close()


def test_plain_postgresql_urls_use_psycopg() -> None:
    assert driver_url("postgresql://u@db/ipt") == "postgresql+psycopg://u@db/ipt"
    assert driver_url("postgres://u@db/ipt") == "postgresql+psycopg://u@db/ipt"
    assert driver_url("sqlite:///x.sqlite3") == "sqlite:///x.sqlite3"


def test_a_batch_of_cards_is_written_whole_and_sqlite_gets_it_in_one_statement(
    database_url: str,
) -> None:
    store = Store(database_url)
    styles: list[ExecuteStyle] = []
    sqlalchemy.event.listen(
        store.engine,
        "before_cursor_execute",
        lambda _c, _cur, _stmt, _params, ctx, _many: styles.append(ctx.execute_style),
    )
    now = datetime.now(UTC)
    rows = [
        IssuedCard(f"card-{i}", "ipt-order-sign", f"call-{i}", "ipt-suitable", "info", now)
        for i in range(1_000)
    ]
    store.record_cards(rows)
    written_by = list(styles)
    assert store.card_stats().services[0].rules[0].shown == 1_000
    if store.engine.dialect.name == "sqlite":
        # Row by row, the writer thread would trade the GIL with the event loop 1,000 times.
        assert written_by == [ExecuteStyle.INSERTMANYVALUES]

    store.close()


def test_a_card_uuid_recorded_again_is_skipped_without_failing_its_batch(
    database_url: str,
) -> None:
    # Card uuids have 74 random bits: a repeat is all but impossible, and would be one card of
    # the same service and rule; it must not cost the rest of its batch.
    store = Store(database_url)
    now = datetime.now(UTC)
    first = IssuedCard("card-1", "ipt-order-sign", "call-1", "ipt-suitable", "info", now)
    store.record_cards([first])
    later = [
        IssuedCard(f"card-{i}", "ipt-order-sign", f"call-{i}", "ipt-suitable", "info", now)
        for i in (2, 1, 3)
    ]
    store.record_cards(later)
    assert store.card_stats().services[0].rules[0].shown == 3
    store.close()


def test_the_recorder_caps_its_backlog_and_counts_what_it_drops(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = Store(f"sqlite:///{tmp_path / 'store.sqlite3'}")
    dropped: list[int] = []
    now = datetime.now(UTC)

    def call(n: int) -> list[IssuedCard]:
        return [
            IssuedCard(f"{n}-{i}", "ipt-order-sign", f"{n}-{i}", "r", "info", now) for i in range(4)
        ]

    async def scenario() -> None:
        recorder = CardRecorder(store, max_pending=100, dropped=dropped.append)
        for n in range(30):  # 120 rows: the last five calls do not fit
            recorder.add(call(n))
        await recorder.flush()
        recorder.add(call(99))  # room again once written
        await recorder.close()

    with caplog.at_level(logging.ERROR, logger="ipt_cds"):
        asyncio.run(scenario())
    assert dropped == [4] * 5
    assert store.card_stats().services[0].rules[0].shown == 104
    assert [r.getMessage() for r in caplog.records] == [
        "the store is behind: 20 card rows were not recorded"
    ]
    store.close()


def test_a_failed_write_is_counted_and_shutdown_still_completes(tmp_path: Path) -> None:
    class FailingStore(Store):
        def record_cards(
            self, rows: Sequence[IssuedCard], remembered: Sequence[Remembered] = ()
        ) -> None:
            raise sqlalchemy.exc.OperationalError("INSERT …", {}, Exception("disk full"))

    store = FailingStore(f"sqlite:///{tmp_path / 'store.sqlite3'}")
    dropped: list[int] = []
    now = datetime.now(UTC)
    row = IssuedCard("c1", "ipt-order-sign", "call", "r", "info", now)

    async def scenario() -> CardRecorder:
        recorder = CardRecorder(store, dropped=dropped.append)
        recorder.add([row, row])
        with pytest.raises(sqlalchemy.exc.OperationalError):
            await recorder.flush()
        recorder.add([row])
        with pytest.raises(sqlalchemy.exc.OperationalError):
            await recorder.close()
        return recorder

    recorder = asyncio.run(scenario())
    assert dropped == [2, 1]
    assert recorder._writer._shutdown  # the writer thread is stopped even so
    store.close()
