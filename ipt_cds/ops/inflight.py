"""A process-wide budget of bytes in flight: request bodies being read and FHIR answers being
read, decompressed, until their call ends.

Each is bounded alone (IPT_CDS_MAX_BODY_BYTES, IPT_CDS_FHIR_MAX_ANSWER_BYTES), but a worker
takes many calls at once: before this budget, eight hostile callers at once, each with a
near-limit body or pointing at a FHIR server that answers near the cap, took a worker to
~500 MB, and its heap kept much of it. With it, what a worker holds for them at any moment is
bounded by IPT_CDS_MAX_BYTES_IN_FLIGHT, whatever the concurrency: past it, a request body is
refused with 503 ``busy`` and ``Retry-After``, and a FHIR answer is dropped (an optional read
becomes *unknown*, as any unreadable one; an essential one answers 503 ``busy``).

Used on the event loop only (each app has one): no lock.
"""

from __future__ import annotations


class BytesInFlight:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        # The most held at once since start: what /metrics reports.
        self.peak = 0
        self.refused = 0

    @property
    def room(self) -> int:
        return max(self.limit - self.held, 0)

    def take(self, nbytes: int) -> bool:
        """Hold ``nbytes`` more, or refuse (and hold nothing) when they do not fit."""
        if self.held + nbytes > self.limit:
            self.refused += 1
            return False
        self.hold(nbytes)
        return True

    def hold(self, nbytes: int) -> None:
        """Hold bytes already allocated (a decompression step may pass the room by a step)."""
        self.held += nbytes
        self.peak = max(self.peak, self.held)

    def give(self, nbytes: int) -> None:
        self.held = max(self.held - nbytes, 0)
