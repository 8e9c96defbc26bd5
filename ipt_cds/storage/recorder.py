"""Cards shown are recorded in batches, off the request's path.

Writing a row per card inside the hook call would put a commit (an fsync) into every
clinician's click. The recorder collects the rows and writes them together a moment later to
its sink: in the app the local spool (ipt_cds/storage/drain.py ``Drainer.record_cards``),
which the drain takes to the database; a ``Store`` itself in tests. Statistics flush it first,
and shutdown drains it. At worst a crash loses the last fraction of a second of "cards shown"
rows, never feedback, which is spooled before its answer; feedback on those cards is still
attributed to its service and rule, which the card's uuid carries (``protocol.card_ids``). If
the sink falls behind or is full, the backlog is capped and the rows beyond it are counted and
dropped rather than left to fill the worker's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from ipt_cds.ops.config import DEFAULT_MAX_PENDING_CARD_ROWS
from ipt_cds.storage.store import IssuedCard, Remembered

log = logging.getLogger("ipt_cds")

# How long the first card of a batch waits for others to share its commit: a burst of calls
# becomes one write, and a crash loses about this much of the "cards shown" counts.
BATCH_DELAY_SECONDS = 0.2


class CardSink(Protocol):
    def record_cards(
        self, rows: Sequence[IssuedCard], remembered: Sequence[Remembered], /
    ) -> None: ...


class CardRecorder:
    def __init__(
        self,
        store: CardSink,
        max_pending: int = DEFAULT_MAX_PENDING_CARD_ROWS,
        dropped: Callable[[int], object] = lambda _: None,
    ) -> None:
        self._store, self._max_pending = store, max_pending
        self._dropped, self._dropped_since_flush = dropped, 0
        self._pending: list[IssuedCard] = []
        # What the service remembers of the cards shown (ipt_cds/storage/memory.py).
        self._remembered: list[Remembered] = []
        # One thread of its own: the writes are serial anyway, and glibc gives each thread
        # that allocates its own malloc arena, which keeps what a big batch once needed
        # (writing from the shared pool grew a worker by ~20 MB over 50,000 calls).
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="card-writer")
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def add(self, rows: list[IssuedCard], remembered: Sequence[Remembered] = ()) -> None:
        if not rows and not remembered:
            return
        if len(self._pending) + len(rows) > self._max_pending:
            self._dropped(len(rows))
            self._dropped_since_flush += len(rows)
            return
        self._pending.extend(rows)
        self._remembered.extend(remembered)
        self._wake.set()

    async def flush(self) -> None:
        async with self._lock:
            rows, self._pending = self._pending, []
            remembered, self._remembered = self._remembered, []
            if self._dropped_since_flush:
                log.error(
                    "the store is behind: %d card rows were not recorded",
                    self._dropped_since_flush,
                )
                self._dropped_since_flush = 0
            if rows or remembered:
                loop = asyncio.get_running_loop()
                write = self._store.record_cards
                try:
                    await loop.run_in_executor(self._writer, write, rows, remembered)
                except Exception:
                    self._dropped(len(rows))  # lost with the failed write: count them too
                    raise

    async def close(self) -> None:
        try:
            if self._task is not None:
                async with self._lock:  # a write in progress finishes, and is counted, first
                    self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            await self.flush()
        finally:
            self._writer.shutdown()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(BATCH_DELAY_SECONDS)
            try:
                await self.flush()
            except Exception as exc:  # keep recording after a transient database error
                log.error("recording cards failed: %s", type(exc).__name__)
