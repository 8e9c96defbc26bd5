"""The card memory's lookup, which every hook call waits for (the clinical spec section 5).

It reads one patient's rows on the primary key of ``card_memory``; the memory keeps the latest
row per rule, draft, kind and owner (store.py), so the lookup answers a bounded number of rows,
the same for a patient's first call and its thousandth, retries included.

Through SQLAlchemy's pool the lookup costs ~175 µs of Python and, run on a worker thread, about
as much again for the hop there and back: together most of a small call's time. So the lookup
is one statement, compiled once by SQLAlchemy, on a connection of its own:

- on an SQLite file, run where the call runs (~0.1 ms): a reader in WAL mode does not wait for
  the card writer, and a short busy timeout bounds the rare wait (a checkpoint, another
  process's recovery);
- on PostgreSQL, with psycopg's asyncio connection, so the round trip (~0.1 ms) waits in the
  event loop rather than in a thread; a lookup slower than its timeout gives up.

A lookup that fails leaves the memory unavailable for that call (ipt_cds/storage/memory.py):
every card shows. A broken PostgreSQL connection is dropped and made again, at most once a
second.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import psycopg
from sqlalchemy import DateTime

from ipt_cds.storage.store import MEMORY_COLUMNS, Remembered, Store, as_remembered

# Longer than a WAL checkpoint of our small rows takes, far shorter than a clinician notices.
SQLITE_WAIT_SECONDS = 0.05
# A PostgreSQL lookup slower than this is abandoned: the call shows every card instead.
POSTGRES_TIMEOUT_SECONDS = 0.25
RECONNECT_AFTER_SECONDS = 1.0
# When a reconnect may be tried (a module name, so that tests can move it).
_clock = time.monotonic


class _TooSoon(ConnectionError):
    """The last connection failed under RECONNECT_AFTER_SECONDS ago: not tried yet."""


class _Statement:
    """The store's recall statement as the driver takes it, with its fixed parameters."""

    def __init__(self, store: Store) -> None:
        compiled = store.recall_statement.compile(dialect=store.engine.dialect)
        self.sql = str(compiled)
        self.names: tuple[str, ...] = tuple(compiled.positiontup or ())
        # The statement's own literals (the row kinds) are parameters too.
        self.fixed: dict[str, Any] = dict(compiled.params)

    def values(self, patient: str, since: Any, now: Any) -> dict[str, Any]:
        return {**self.fixed, "patient": patient, "since": since, "now": now}


class SqliteRecall:
    def __init__(self, store: Store, path: str) -> None:
        dialect = store.engine.dialect
        self._statement = _Statement(store)
        stamp = DateTime(timezone=True).dialect_impl(dialect)
        # SQLAlchemy's own conversions, so that times compare and read back as it wrote them.
        self._bind: Callable[[Any], Any] = stamp.bind_processor(dialect) or (lambda v: v)
        self._read: Callable[[Any], Any] = stamp.result_processor(dialect, None) or (lambda v: v)
        self._times = [i for i, c in enumerate(MEMORY_COLUMNS) if isinstance(c.type, DateTime)]
        # No prepared-statement cache: with this one statement cached, a worker under load
        # grew by ~45 MB (benchmarks/README.md); preparing it again costs ~0.08 ms.
        self._conn = sqlite3.connect(
            path, timeout=SQLITE_WAIT_SECONDS, check_same_thread=False, cached_statements=0
        )
        self._lock = threading.Lock()

    @classmethod
    def open(cls, store: Store) -> SqliteRecall | None:
        """For an SQLite file; None for another database or an in-memory SQLite."""
        url = store.engine.url
        if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
            return None
        return cls(store, url.database)

    def recall(self, patient: str, since: datetime, now: datetime) -> list[Remembered]:
        values = self._statement.values(patient, self._bind(since), self._bind(now))
        with self._lock:
            rows = self._conn.execute(
                self._statement.sql, [values[n] for n in self._statement.names]
            ).fetchall()
        return [as_remembered(self._timed(row)) for row in rows]

    def _timed(self, row: tuple[Any, ...]) -> list[Any]:
        values = list(row)
        for i in self._times:
            values[i] = self._read(values[i])
        return values

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class PostgresRecall:
    def __init__(self, store: Store) -> None:
        self._statement = _Statement(store)
        url = store.engine.url.set(drivername="postgresql")
        self._dsn = url.render_as_string(hide_password=False)
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._connecting = asyncio.Lock()
        self._failed_at = -RECONNECT_AFTER_SECONDS

    @classmethod
    def open(cls, store: Store) -> PostgresRecall | None:
        return cls(store) if store.engine.url.get_backend_name() == "postgresql" else None

    async def recall(self, patient: str, since: datetime, now: datetime) -> list[Remembered]:
        values: Mapping[str, Any] = self._statement.values(patient, since, now)
        try:
            async with asyncio.timeout(POSTGRES_TIMEOUT_SECONDS):
                conn = await self._connection()
                cursor = await conn.execute(self._statement.sql, values)
                rows = await cursor.fetchall()
        except _TooSoon:
            # Not a new failure: the pause runs from the last real one, or under steady traffic
            # (a call every second or faster) it would never end and the memory stay off.
            raise
        except Exception:
            # A connection in an unknown state (timed out mid-query, broken) is not reused.
            await self._drop()
            raise
        return [as_remembered(row) for row in rows]

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        async with self._connecting:  # calls arriving together make one connection
            if self._conn is not None and not self._conn.closed:
                return self._conn
            if _clock() - self._failed_at < RECONNECT_AFTER_SECONDS:
                raise _TooSoon("the card memory's connection failed under a second ago")
            self._conn = await psycopg.AsyncConnection.connect(self._dsn, autocommit=True)
            return self._conn

    async def _drop(self) -> None:
        self._failed_at = _clock()
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # closing a broken connection may fail too
                await conn.close()

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()
