"""Cards shown are recorded in batches, off the request's path.

Writing a row per card inside the hook call would put a database commit (an fsync on SQLite,
a round trip on PostgreSQL) into every clinician's click. The recorder collects the rows and
writes them together a moment later; statistics flush it first, and shutdown drains it. At
worst a crash loses the last fraction of a second of "cards shown" counts, never feedback,
which is stored synchronously.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.concurrency import run_in_threadpool

from .store import IssuedCard, Store

log = logging.getLogger("ipt_cds")


class CardRecorder:
    def __init__(self, store: Store, interval: float = 0.2) -> None:
        self._store, self._interval = store, interval
        self._pending: list[IssuedCard] = []
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def add(self, rows: list[IssuedCard]) -> None:
        if rows:
            self._pending.extend(rows)
            self._wake.set()

    async def flush(self) -> None:
        async with self._lock:
            rows, self._pending = self._pending, []
            if rows:
                await run_in_threadpool(self._store.record_cards, rows)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(self._interval)  # let a burst of calls share one commit
            try:
                await self.flush()
            except Exception as exc:  # keep recording after a transient database error
                log.error("recording cards failed: %s", type(exc).__name__)
