"""The drain: the spool's entries written to the database in order, then deleted from it.

One task per worker, on a thread of its own. It drains as soon as something is appended;
while the database is away it retries the oldest entry with a growing pause (at most
``BACKOFF_MAX_SECONDS``), so that it drains within seconds of the database's return. Writes
are idempotent (a card by its uuid, feedback by the digest of its meaning), so an entry written
again, after a crash between the database's commit and the spool's deletion, counts once.

An entry the database refuses as such (a constraint, a value it cannot hold) or that cannot be
read is set aside in the spool file (``Spool.reject``) and counted, rather than holding back
everything after it; any other failure means the database is away, and the entry waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from sqlalchemy.exc import DataError, IntegrityError

from ipt_cds.storage.entries import (
    CARDS,
    FEEDBACK,
    SpooledFeedback,
    decode_cards,
    decode_feedback,
    encode_cards,
    encode_feedback,
)
from ipt_cds.storage.memory import Overridden
from ipt_cds.storage.spool import Entry, Spool
from ipt_cds.storage.store import IssuedCard, Remembered, Store

log = logging.getLogger("ipt_cds")

BACKOFF_FIRST_SECONDS = 0.25
BACKOFF_MAX_SECONDS = 5.0
# A drain step reads at most this much: a backlog is written in steps, each its own commit.
BATCH_ENTRIES = 64
BATCH_BYTES = 4 * 1024 * 1024
# How often an idle worker looks for spool files a stopped worker left.
ADOPT_EVERY_SECONDS = 60.0
# How often a caller waiting for the drain (statistics, shutdown) looks again.
DRAIN_POLL_SECONDS = 0.05

Snooze = Callable[[Sequence[Overridden], datetime], object]


class Drainer:
    def __init__(
        self,
        spool: Spool,
        store: Store,
        snooze: Snooze,
        rejected: Callable[[int], object] = lambda _: None,
    ) -> None:
        self.spool, self._store, self._snooze, self._rejected = spool, store, snooze, rejected
        # False from a failed write until the next one succeeds; the failure's type.
        self.database_ok, self.error = True, ""
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="spool-drain")
        self._wake = asyncio.Event()
        # Feedback posts waiting to learn how many of their items were new, by entry id (each
        # future of the loop its request runs on).
        self._waiting: dict[str, asyncio.Future[int | None]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.spool.on_append = self.wake
        self._task = asyncio.create_task(self._run())

    def wake(self) -> None:
        """From any thread: something was appended."""
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closing
                self._loop.call_soon_threadsafe(self._wake.set)

    def record_cards(self, rows: Sequence[IssuedCard], remembered: Sequence[Remembered]) -> None:
        """Spool a batch of cards shown and what the memory keeps of them: the card recorder's
        write (ipt_cds/storage/recorder.py), on its thread."""
        self.spool.append(CARDS, encode_cards(rows, remembered), durable=False)

    async def feedback(self, entry: SpooledFeedback, wait: float) -> int | None:
        """Spool a feedback post, fsync'd (``SpoolUnavailable`` when it cannot be); then wait
        up to ``wait`` seconds for the database to have it, and answer how many items were
        new, or None when it has not yet (the database is away, or slow)."""
        entry_id = secrets.token_hex(16)
        answer: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._waiting[entry_id] = answer
        try:
            await asyncio.to_thread(
                self.spool.append, FEEDBACK, encode_feedback(entry), entry_id, durable=True
            )
            if not self.database_ok:
                return None
            async with asyncio.timeout(wait):
                return await answer
        except TimeoutError:
            return None
        finally:
            self._waiting.pop(entry_id, None)

    async def drain(self, within: float) -> bool:
        """Wait until what is spooled now is in the database; False when it is not within
        ``within`` seconds, or the database is away."""
        target = await asyncio.to_thread(self.spool.last_seq)
        if target is None:
            return True
        self.wake()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        # Polled: the caller's loop need not be the drain's (a test client's).
        while not await asyncio.to_thread(self.spool.drained_through, target):
            if not self.database_ok or loop.time() > deadline:
                return False
            await asyncio.sleep(DRAIN_POLL_SECONDS)
        return True

    async def close(self, within: float) -> None:
        """Drain what the database will take ``within`` seconds; the rest stays spooled for
        the next start."""
        try:
            if self._task is not None:
                if self.database_ok:
                    await self.drain(within)
                # The flag too: a cancel that meets a wake-up can be lost in the wait.
                self._stopping = True
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        finally:
            self.spool.on_append = lambda: None
            # A write stuck on the database must not hold the shutdown: what it was writing is
            # still spooled.
            self._thread.shutdown(wait=False)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        pause = BACKOFF_FIRST_SECONDS
        while not self._stopping:
            self._wake.clear()
            try:
                drained = await loop.run_in_executor(self._thread, self._drain_step)
            except Exception as exc:
                self._away(exc)
                await asyncio.sleep(pause)
                pause = min(pause * 2, BACKOFF_MAX_SECONDS)
                continue
            if not self.database_ok:
                log.warning("database back: draining %d spooled entries", self.spool.entries)
                self.database_ok, self.error = True, ""
            pause = BACKOFF_FIRST_SECONDS
            if drained:
                continue
            try:
                async with asyncio.timeout(ADOPT_EVERY_SECONDS):
                    await self._wake.wait()
            except TimeoutError:
                try:
                    await loop.run_in_executor(self._thread, self.spool.adopt_orphans)
                except Exception as exc:  # the folder unreadable: this worker drains on
                    log.error(
                        "spool: looking for stopped workers' files failed: %s", type(exc).__name__
                    )

    def _away(self, exc: Exception) -> None:
        if self.database_ok:
            log.warning(
                "database unavailable (%s): cards shown and feedback wait in the spool",
                type(exc).__name__,
            )
        self.database_ok, self.error = False, type(exc).__name__
        for entry_id in list(self._waiting):  # no need to wait: they stay pending
            self._answer(entry_id, None)

    def _answer(self, entry_id: str, stored: int | None) -> None:
        """From any thread: tell a waiting feedback post, on its own loop."""
        waiting = self._waiting.get(entry_id)
        if waiting is not None:
            with contextlib.suppress(RuntimeError):  # its loop is closed: nobody waits
                waiting.get_loop().call_soon_threadsafe(_settle, waiting, stored)

    # --- on the drain's thread ----------------------------------------------------------

    def _drain_step(self) -> int:
        entries = self.spool.oldest(BATCH_ENTRIES, BATCH_BYTES)
        for group in _groups(entries):
            self._write(group)
        return len(entries)

    def _write(self, group: list[Entry]) -> None:
        try:
            self._apply(group)
        except Exception as exc:
            if not _refused(exc):
                raise  # the database is away: the group waits, in order
            if len(group) > 1:  # find the one it refuses
                for entry in group:
                    self._write([entry])
                return
            log.error("spool entry %s set aside: %s", group[0].id, type(exc).__name__)
            self.spool.reject(group[0], type(exc).__name__)
            self._rejected(1)
            return
        self.spool.remove(group)

    def _apply(self, group: list[Entry]) -> None:
        kind = group[0].kind
        if kind == CARDS:
            rows: list[IssuedCard] = []
            remembered: list[Remembered] = []
            for entry in group:
                more, kept = decode_cards(entry.payload)
                rows += more
                remembered += kept
            self._store.record_cards(rows, remembered)
        elif kind == FEEDBACK:
            posts = [decode_feedback(entry.payload) for entry in group]
            counts = self._store.insert_feedback_posts([post.rows for post in posts])
            for entry, post, stored in zip(group, posts, counts, strict=True):
                if post.overridden:
                    self._snooze(post.overridden, post.at)
                self._answer(entry.id, stored)
        else:
            raise ValueError(f"unknown kind {kind[:20]!r}")


def _settle(waiting: asyncio.Future[int | None], stored: int | None) -> None:
    if not waiting.done():
        waiting.set_result(stored)


def _groups(entries: list[Entry]) -> list[list[Entry]]:
    """Runs of entries of one kind become one write, in order: after an outage, a commit per
    feedback post would drain a backlog of thousands for minutes."""
    out: list[list[Entry]] = []
    for entry in entries:
        if out and out[-1][0].kind == entry.kind:
            out[-1].append(entry)
        else:
            out.append([entry])
    return out


def _refused(exc: Exception) -> bool:
    """The database (or the decoding) refuses this entry itself, and would again."""
    return isinstance(exc, IntegrityError | DataError | ValueError | TypeError | KeyError)
