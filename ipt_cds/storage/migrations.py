"""Schema migrations, applied in order at start-up on SQLite and PostgreSQL alike.

Each migration has a number and runs once; ``ipt_schema_version`` records what ran. On
PostgreSQL an advisory lock makes replicas that start together migrate one after another.

A migration spells out its own tables, frozen as they shipped: it never reads the live table
definitions in store.py, so changing those cannot change what an old migration does on a fresh
install. To change the schema, change store.py and append a migration that brings a database at
the previous version to it (tests/test_store.py checks that a migrated database matches
store.py); never edit one that has shipped.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    select,
    text,
)

Migration = tuple[int, str, Callable[[Connection], None]]

_versions_metadata = MetaData()
versions = Table(
    "ipt_schema_version",
    _versions_metadata,
    Column("version", Integer, primary_key=True),
    Column("applied_at", DateTime(timezone=True), nullable=False),
)

# Any number will do as long as every replica uses the same one.
_MIGRATION_LOCK_ID = 7242011


def _v1_cards_feedback_jti(conn: Connection) -> None:
    schema = MetaData()
    Table(
        "cards_issued",
        schema,
        Column("card_uuid", String(64), primary_key=True),
        Column("service_id", String(128), nullable=False, index=True),
        Column("hook_instance", String(128), nullable=False),
        Column("rule_id", String(128), nullable=False),
        Column("indicator", String(16), nullable=False),
        Column("issued_at", DateTime(timezone=True), nullable=False),
    )
    Table(
        "feedback",
        schema,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("dedupe_key", String(64), nullable=False, unique=True),
        Column("service_id", String(128), nullable=False),
        Column("card_uuid", String(128), nullable=False, index=True),
        Column("outcome", String(16), nullable=False),
        Column("outcome_at", DateTime(timezone=True), nullable=False),
        Column("accepted_suggestions", Text),
        Column("override_reasons", Text),
        Column("received_at", DateTime(timezone=True), nullable=False),
    )
    Table(
        "jti_seen",
        schema,
        Column("iss", String(512), primary_key=True),
        Column("jti", String(256), primary_key=True),
        Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
    )
    schema.create_all(conn)


def _v2_card_disposition(conn: Connection) -> None:
    conn.execute(
        text("ALTER TABLE cards_issued ADD COLUMN disposition VARCHAR(16) NOT NULL DEFAULT 'shown'")
    )


def _v3_card_memory(conn: Connection) -> None:
    schema = MetaData()
    Table(
        "card_memory",
        schema,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("patient", String(64), nullable=False),
        Column("rule_id", String(128), nullable=False),
        Column("draft_key", String(256), nullable=False),
        Column("card_uuid", String(64), index=True),
        Column("event", String(8), nullable=False),
        Column("at", DateTime(timezone=True), nullable=False),
        Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
        Index("ix_card_memory_recall", "patient", "event", "at"),
    )
    Table(
        "memory_key",
        schema,
        Column("id", Integer, primary_key=True),
        Column("secret", String(64), nullable=False),
    )
    schema.create_all(conn)


def _v4_memory_call_key(conn: Connection) -> None:
    conn.execute(text("ALTER TABLE card_memory ADD COLUMN call_key VARCHAR(64)"))


def _v5_memory_record_state(conn: Connection) -> None:
    for column in (
        "service_id VARCHAR(128)",
        "user_key VARCHAR(64)",
        "band VARCHAR(24)",
        "ideation VARCHAR(16)",
        "basis TEXT",
        "flags VARCHAR(64)",
    ):
        conn.execute(text(f"ALTER TABLE card_memory ADD COLUMN {column}"))


def _v6_memory_state(conn: Connection) -> None:
    """card_memory from a log (a row per card shown or overridden, read back whole by every
    call) to state: a row per patient, rule, draft, kind, service and clinician, holding the
    latest. Of the old rows still running, the latest of each key is carried over; the older
    ones of a key add nothing while the record did not improve (ipt_cds/storage/memory.py)."""
    # Kept aside in a temporary table, so that the new table and its indexes take the old
    # names on both databases. NULL service and clinician (rows older than migration 5): "".
    conn.execute(
        text(
            "CREATE TEMPORARY TABLE card_memory_latest AS "
            "SELECT patient, rule_id, draft_key, event, service, clinician, card_uuid, at, "
            "expires_at, call_key, band, ideation, basis, flags FROM ("
            " SELECT *, ROW_NUMBER() OVER ("
            "  PARTITION BY patient, rule_id, draft_key, event, service, clinician"
            "  ORDER BY at DESC, id DESC"
            " ) AS n FROM ("
            "  SELECT card_memory.*, COALESCE(service_id, '') AS service,"
            "   COALESCE(user_key, '') AS clinician"
            "  FROM card_memory WHERE expires_at > :now"
            " ) AS keyed"
            ") AS ranked WHERE n = 1"
        ).bindparams(bindparam("now", datetime.now(UTC), type_=DateTime(timezone=True)))
    )
    conn.execute(text("DROP TABLE card_memory"))
    schema = MetaData()
    Table(
        "card_memory",
        schema,
        Column("patient", String(64), primary_key=True),
        Column("rule_id", String(128), primary_key=True),
        Column("draft_key", String(256), primary_key=True),
        Column("event", String(8), primary_key=True),
        Column("service_id", String(128), primary_key=True),
        Column("user_key", String(64), primary_key=True),
        Column("card_uuid", String(64), index=True),
        Column("at", DateTime(timezone=True), nullable=False),
        Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
        Column("call_key", String(64)),
        Column("band", String(24)),
        Column("ideation", String(16)),
        Column("basis", Text),
        Column("flags", String(64)),
    )
    schema.create_all(conn)
    conn.execute(
        text(
            "INSERT INTO card_memory (patient, rule_id, draft_key, event, service_id, user_key, "
            "card_uuid, at, expires_at, call_key, band, ideation, basis, flags) "
            "SELECT patient, rule_id, draft_key, event, service, clinician, card_uuid, at, "
            "expires_at, call_key, band, ideation, basis, flags FROM card_memory_latest"
        )
    )
    conn.execute(text("DROP TABLE card_memory_latest"))


MIGRATIONS: list[Migration] = [
    (1, "cards_issued, feedback, jti_seen", _v1_cards_feedback_jti),
    (2, "cards_issued.disposition: shown or silent", _v2_card_disposition),
    (3, "card_memory, memory_key: once per visit and snooze", _v3_card_memory),
    (4, "card_memory.call_key: a retried call is not a repeat", _v4_memory_call_key),
    (
        5,
        "card_memory: service, clinician and record state (held cards end on worsening)",
        _v5_memory_record_state,
    ),
    (
        6,
        "card_memory as state: the latest per patient, rule, draft, kind, service, clinician",
        _v6_memory_state,
    ),
]


def migrate(engine: Engine) -> list[int]:
    """Apply what has not run yet; answer the versions applied now."""
    applied_now = []
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK_ID})"))
        _versions_metadata.create_all(conn)
        done = set(conn.execute(select(versions.c.version)).scalars())
        for number, _, apply in MIGRATIONS:
            if number not in done:
                apply(conn)
                conn.execute(versions.insert().values(version=number, applied_at=datetime.now(UTC)))
                applied_now.append(number)
    return applied_now
