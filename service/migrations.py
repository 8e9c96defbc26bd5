"""Schema migrations, applied in order at start-up on SQLite and PostgreSQL alike.

Each migration has a number and runs once; ``ipt_schema_version`` records what ran. On
PostgreSQL an advisory lock makes replicas that start together migrate one after another.
To change the schema, append a migration; never edit one that has shipped.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import Column, Connection, DateTime, Engine, Integer, MetaData, Table, select, text

from . import store

Migration = tuple[int, str, Callable[[Connection], None]]

_versions_metadata = MetaData()
versions = Table(
    "ipt_schema_version",
    _versions_metadata,
    Column("version", Integer, primary_key=True),
    Column("applied_at", DateTime(timezone=True), nullable=False),
)

MIGRATIONS: list[Migration] = [
    (
        1,
        "cards_issued, feedback, jti_seen",
        lambda conn: store.metadata.create_all(
            conn, tables=[store.cards_issued, store.feedback, store.jti_seen]
        ),
    ),
]


def migrate(engine: Engine) -> list[int]:
    """Apply what has not run yet; answer the versions applied now."""
    applied_now = []
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(7242011)"))
        _versions_metadata.create_all(conn)
        done = set(conn.execute(select(versions.c.version)).scalars())
        for number, _, apply in MIGRATIONS:
            if number not in done:
                apply(conn)
                conn.execute(versions.insert().values(version=number, applied_at=datetime.now(UTC)))
                applied_now.append(number)
    return applied_now
