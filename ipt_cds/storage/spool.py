"""The local spool: what must reach the database waits on this machine's disk first, so that
no call waits for the database and nothing acknowledged is lost while it is away.

Cards shown (with what the card memory keeps of them) and feedback are appended here, in
order, and ipt_cds/storage/drain.py writes them to the database and deletes them. An entry is
an SQLite row (the file in WAL mode): feedback is committed with ``synchronous=FULL``, an
fsync, before its 200; a batch of cards and a deletion with ``NORMAL``, which survives the
process being killed and, at worst, loses the last of them (or repeats a deletion's entries:
the drain is idempotent) on a power cut.

One file per worker process, ``spool-<database>-<pid>.sqlite3`` in the spool folder, held by
an exclusive ``flock`` on its ``.lock`` file for the worker's life. Not one file the workers
share: the drain keeps an entry from reading it until the database has it, and sharing would
need a claim on entries across processes, or SQLite's write lock held across the database's
round trip, which would stall every worker's feedback for as long as the database takes to
fail. A file whose worker is gone (kill -9, a crash, a scale-down) has a lock nobody holds:
another worker of the same database takes its entries over whole, at start-up and every
minute after (``adopt_orphans``). ``<database>`` is a digest of the database URL (without
its password), so services on different databases may share a folder and drain only their own.

The spool is bounded (``max_bytes`` of entries): beyond, appends raise ``SpoolUnavailable``,
a 503 with ``Retry-After`` for feedback.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from ipt_cds.protocol.errors import Unavailable

log = logging.getLogger("ipt_cds")

# Free space an emptied spool keeps, and the most its write-ahead log keeps after a checkpoint.
WAL_LIMIT_BYTES = 4 * 1024 * 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    payload BLOB NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rejected (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    payload BLOB NOT NULL,
    at REAL NOT NULL,
    reason TEXT NOT NULL
);
"""


class SpoolUnavailable(Unavailable):
    code = "spool_unavailable"


class DatabaseUnavailable(Unavailable):
    """What only the database can answer (the statistics) while it is away."""

    code = "database_unavailable"


@dataclass(frozen=True)
class Entry:
    seq: int
    id: str
    kind: str
    payload: bytes


def database_key(url: str) -> str:
    """Which database a spool file is for: a digest of its URL without the password, so that a
    rotated password keeps the files and nothing secret is in a file name."""
    try:
        # URL is a named tuple; set(password=None) would leave the password as it is.
        shown = make_url(url)._replace(password=None).render_as_string(hide_password=False)
    except Exception:  # not a URL SQLAlchemy parses: the whole text is still a fine key
        shown = url
    return hashlib.sha256(shown.encode()).hexdigest()[:12]


class Spool:
    def __init__(self, path: Path, prefix: str, lock_fd: int, max_bytes: int) -> None:
        self.path, self.max_bytes = path, max_bytes
        self._prefix, self._lock_fd = prefix, lock_fd
        # One connection, its uses serialised: each is a short local write or read.
        self._mutex = threading.Lock()
        self._conn = sqlite3.connect(
            f"{path.absolute().as_uri()}?mode=rwc", uri=True, check_same_thread=False
        )
        # Incremental vacuum (set before the tables exist) lets an emptied spool give back what
        # an outage grew it to; the WAL is cut back after each checkpoint.
        self._conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
        self._conn.executescript(_SCHEMA)
        self._synchronous = ""
        self._closed = False
        self._entries = self._bytes = 0
        self._count()
        # Called after each append (from the appending thread): the drain's wake-up.
        self.on_append: Callable[[], object] = lambda: None

    @classmethod
    def open(cls, folder: Path, database_url: str, max_bytes: int) -> Spool:
        """This worker's spool in ``folder``, with the entries of files no worker holds."""
        folder.mkdir(parents=True, exist_ok=True)
        prefix = f"spool-{database_key(database_url)}"
        pid = os.getpid()
        # The pid is taken again by a later process (in a container, often): its old file,
        # unlocked, is then simply ours. Locked, it is another app in this same process.
        for name in (f"{prefix}-{pid}", f"{prefix}-{pid}-{secrets.token_hex(4)}"):
            fd = _claim(folder / f"{name}.lock")
            if fd is None:
                continue
            try:
                spool = cls(folder / f"{name}.sqlite3", prefix, fd, max_bytes)
            except BaseException:
                os.close(fd)
                raise
            spool.adopt_orphans()
            return spool
        raise SpoolUnavailable(f"No spool file could be locked in {folder}.")

    @property
    def entries(self) -> int:
        return self._entries

    @property
    def size(self) -> int:
        """Bytes of entries held."""
        return self._bytes

    def append(self, kind: str, payload: bytes, entry_id: str = "", *, durable: bool) -> str:
        """Keep an entry; answer its id. ``durable``: fsync'd before this returns."""
        entry_id = entry_id or secrets.token_hex(16)
        with self._mutex:
            self._check_open()
            if self._bytes + len(payload) > self.max_bytes:
                raise SpoolUnavailable(
                    "The service cannot keep this now: its spool is full while the database "
                    "is away. Send it again later."
                )
            try:
                self._sync(durable)
                with self._conn:
                    self._conn.execute(
                        "INSERT INTO entries (id, kind, payload, at) VALUES (?, ?, ?, ?)",
                        (entry_id, kind, payload, time.time()),
                    )
            except sqlite3.Error as exc:
                log.error("spool write failed: %s", type(exc).__name__)
                raise SpoolUnavailable(
                    "The service cannot keep this now: its spool failed. Send it again later."
                ) from None
            self._entries += 1
            self._bytes += len(payload)
        self.on_append()
        return entry_id

    def oldest(self, limit: int, max_bytes: int) -> list[Entry]:
        """The first entries in order: at most ``limit``, and ``max_bytes`` unless one alone
        is larger."""
        out: list[Entry] = []
        size = 0
        with self._mutex:
            self._check_open()
            rows = self._conn.execute(
                "SELECT seq, id, kind, payload FROM entries ORDER BY seq LIMIT ?", (limit,)
            )
            for seq, entry_id, kind, payload in rows:  # read one by one: stop at the budget
                if out and size + len(payload) > max_bytes:
                    break
                out.append(Entry(seq, entry_id, kind, payload))
                size += len(payload)
            rows.close()  # the read ends here, not when the cursor is collected
        return out

    def remove(self, entries: Sequence[Entry]) -> None:
        """Entries the database has now."""
        if not entries:
            return
        with self._mutex:
            self._check_open()
            self._sync(durable=False)
            with self._conn:
                self._conn.executemany(
                    "DELETE FROM entries WHERE seq = ?", [(e.seq,) for e in entries]
                )
            self._entries -= len(entries)
            self._bytes -= sum(len(e.payload) for e in entries)
            if not self._entries:
                self._shrink()

    def reject(self, entry: Entry, reason: str) -> None:
        """Set aside an entry the database refuses (or that cannot be read), so that it does
        not hold back those after it; it stays in the file for an operator to look at."""
        with self._mutex:
            self._check_open()
            self._sync(durable=True)
            with self._conn:
                self._conn.execute(
                    "INSERT OR IGNORE INTO rejected (id, kind, payload, at, reason) "
                    "SELECT id, kind, payload, at, ? FROM entries WHERE seq = ?",
                    (reason, entry.seq),
                )
                self._conn.execute("DELETE FROM entries WHERE seq = ?", (entry.seq,))
            self._entries -= 1
            self._bytes -= len(entry.payload)

    def last_seq(self) -> int | None:
        """The newest entry's position, None when the spool is empty."""
        with self._mutex:
            self._check_open()
            found: int | None = self._conn.execute("SELECT max(seq) FROM entries").fetchone()[0]
        return found

    def drained_through(self, seq: int) -> bool:
        """Whether every entry up to ``seq`` is gone (written, or set aside)."""
        with self._mutex:
            self._check_open()
            first: int | None = self._conn.execute("SELECT min(seq) FROM entries").fetchone()[0]
        return first is None or first > seq

    def adopt_orphans(self) -> int:
        """Take over the entries of this database's spool files that no worker holds; answer
        how many. Their order is kept, after this file's own."""
        taken = 0
        for other in sorted(self.path.parent.glob(f"{self._prefix}-*.sqlite3")):
            if other == self.path:
                continue
            fd = _claim(other.with_suffix(".lock"))
            if fd is None:
                continue  # its worker is alive
            try:
                if other.exists():  # not taken over by another worker meanwhile
                    taken += self._take(other)
                    _remove(other)
                other.with_suffix(".lock").unlink(missing_ok=True)
            except sqlite3.Error as exc:
                log.error("spool file %s not taken over: %s", other.name, type(exc).__name__)
            finally:
                os.close(fd)
        if taken:
            log.warning("spool: took over %d entries left by a stopped worker", taken)
        return taken

    def close(self) -> None:
        """Close; an empty file is deleted, one with entries is left for the next start."""
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            try:
                rejected = self._conn.execute("SELECT count(*) FROM rejected").fetchone()[0]
                self._conn.close()
                if not self._entries and not rejected:
                    _remove(self.path)
                    self.path.with_suffix(".lock").unlink(missing_ok=True)
            finally:  # the next worker may take over what is left
                os.close(self._lock_fd)

    def _take(self, other: Path) -> int:
        before = self._entries
        with self._mutex:
            self._check_open()
            # Attached and copied inside SQLite: an orphan may hold hundreds of megabytes.
            self._conn.execute(
                "ATTACH DATABASE ? AS orphan", (f"{other.absolute().as_uri()}?mode=rw",)
            )
            try:
                self._sync(durable=True)
                with self._conn:
                    self._conn.execute(
                        "INSERT OR IGNORE INTO main.entries (id, kind, payload, at) "
                        "SELECT id, kind, payload, at FROM orphan.entries ORDER BY seq"
                    )
                    self._conn.execute(
                        "INSERT OR IGNORE INTO main.rejected SELECT * FROM orphan.rejected"
                    )
            finally:
                self._conn.execute("DETACH DATABASE orphan")
            self._count()
        return self._entries - before

    def _shrink(self) -> None:
        free = self._conn.execute("PRAGMA freelist_count").fetchone()[0]
        if free * self._page_size() > WAL_LIMIT_BYTES:
            # As a script: execute() would step it once, freeing one page.
            self._conn.executescript("PRAGMA incremental_vacuum;")

    def _page_size(self) -> int:
        size: int = self._conn.execute("PRAGMA page_size").fetchone()[0]
        return size

    def _count(self) -> None:
        self._entries, self._bytes = self._conn.execute(
            "SELECT count(*), coalesce(sum(length(payload)), 0) FROM entries"
        ).fetchone()

    def _sync(self, durable: bool) -> None:
        wanted = "FULL" if durable else "NORMAL"
        if wanted != self._synchronous:
            self._conn.execute(f"PRAGMA synchronous={wanted}")
            self._synchronous = wanted

    def _check_open(self) -> None:
        if self._closed:
            raise SpoolUnavailable("The service is stopping. Send it again later.")


def _claim(lock: Path) -> int | None:
    """An exclusive lock on ``lock`` (made if missing), or None when a live process holds it.
    The kernel drops a flock when its process dies, kill -9 included."""
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # A worker that took a file over deletes its lock file before letting go of it: a
        # lock got on that deleted file guards nothing any more.
        if os.fstat(fd).st_ino != os.stat(lock).st_ino:
            raise BlockingIOError
    except (BlockingIOError, FileNotFoundError):
        os.close(fd)
        return None
    return fd


def _remove(db: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            Path(f"{db}{suffix}").unlink()
