"""Handing the memory of large, short-lived buffers back to the system.

Two things kept the memory of FHIR answers after they were dropped (measured with 100 calls,
8 at a time, to a FHIR server answering 50 MB Bundles; the worker grew from 97 MB to 430-490 MB
and stayed there):
- cyclic garbage: a task cancelled mid-read (a sibling query failed) keeps its socket, and what
  the socket had buffered, in a cycle through its exception's traceback; a server process
  collects the oldest generation rarely (``ipt_cds/http/app.py``), so it piled up;
- the heap: an answer is read in pieces of up to 256 KiB, below glibc's mmap threshold, and once
  freed they stay in the process between the small objects that outlive them. ``malloc_trim``
  hands them back (390 MB in 12 ms); allocator settings in the environment
  (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_ARENA_MAX``) saved a tenth of that.
So the FHIR client reports how much it read, and after enough has gone through, the garbage is
collected and the heap trimmed, in a worker thread.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
from collections.abc import Callable

log = logging.getLogger("ipt_cds")

# Ordinary answers are a few kB to a few hundred kB: a trim every 16 MiB costs a few ms of a
# worker thread per thousand calls, and keeps what a hostile server leaves behind below it.
TRIM_EVERY_BYTES = 16 * 1024 * 1024


def libc_malloc_trim() -> Callable[[], object] | None:
    """glibc's ``malloc_trim(0)``; None where there is none (musl, macOS)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


class HeapTrimmer:
    """Counts the bytes large buffers took; past ``every`` bytes, collects the garbage and trims
    the heap in a thread, one at a time (a trim gives back what is free at that moment)."""

    def __init__(
        self,
        trim: Callable[[], object] | None,
        every: int = TRIM_EVERY_BYTES,
    ) -> None:
        self._trim = trim
        self._every = every
        self._pending = 0
        self._running: asyncio.Future[object] | None = None
        self.trims = 0

    @classmethod
    def for_this_process(cls) -> HeapTrimmer:
        return cls(libc_malloc_trim())

    def released(self, nbytes: int) -> None:
        """Called on the event loop when buffers of ``nbytes`` in all have been let go."""
        if self._trim is None:
            return
        self._pending += max(nbytes, 0)
        self._maybe_trim()

    def _maybe_trim(self, _done: object = None) -> None:
        # Bytes let go while a trim ran are trimmed right after it, not at the next fetch.
        if self._pending < self._every or (self._running and not self._running.done()):
            return
        self._pending = 0
        self.trims += 1
        self._running = asyncio.get_running_loop().run_in_executor(None, self._trim_quietly)
        self._running.add_done_callback(self._maybe_trim)

    def _trim_quietly(self) -> object:
        assert self._trim is not None
        try:
            gc.collect()
            return self._trim()
        except Exception as exc:  # trimming is a courtesy; it must never fail a call
            log.warning("heap trim failed: %s", type(exc).__name__)
            return None

    async def idle(self) -> None:
        """Wait for a trim under way (tests, shutdown)."""
        if self._running is not None:
            await self._running
