"""The store's migrations, on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlalchemy

from service.migrations import MIGRATIONS, migrate
from service.store import Store
from service.store import database_url as driver_url


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


def test_plain_postgresql_urls_use_psycopg() -> None:
    assert driver_url("postgresql://u@db/ipt") == "postgresql+psycopg://u@db/ipt"
    assert driver_url("postgres://u@db/ipt") == "postgresql+psycopg://u@db/ipt"
    assert driver_url("sqlite:///x.sqlite3") == "sqlite:///x.sqlite3"
