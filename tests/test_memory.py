"""ipt_cds/ops/memory.py, and the FHIR client letting go of what a FHIR server sent.

benchmarks/fuzz.py measures the effect (a worker's memory after 20,000 hostile calls); these
tests pin the mechanisms: the client reports every byte it read, dropped answers included; the
trimmer collects and trims once enough went through, one trim at a time; and a closed response
no longer holds its connection, so what the socket buffered goes without the garbage collector.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

import httpx
import pytest

from ipt_cds.fhir.client import FhirClient
from ipt_cds.ops.config import Settings
from ipt_cds.ops.memory import HeapTrimmer, libc_malloc_trim
from ipt_cds.protocol.errors import PrefetchUnavailable

from .conftest import TOKEN
from .misbehaving_fhir import MIB, MisbehavingFhir

pytestmark = pytest.mark.anyio

CAP = 1 * MIB
QUERIES = {"patient": "Patient/pat-1", "conditions": "Condition?patient=pat-1"}


class Recorded(HeapTrimmer):
    def __init__(self) -> None:
        super().__init__(trim=lambda: None)
        self.reported: list[int] = []

    def released(self, nbytes: int) -> None:
        self.reported.append(nbytes)


class Gate:
    """A trim that blocks until released, to see what happens while one runs."""

    def __init__(self) -> None:
        self.calls = 0
        self.open = threading.Event()

    def __call__(self) -> None:
        self.calls += 1
        self.open.wait(5)


async def test_a_trim_comes_once_enough_was_released() -> None:
    gate = Gate()
    gate.open.set()
    heap = HeapTrimmer(gate, every=100)
    heap.released(60)
    await heap.idle()
    assert gate.calls == 0
    heap.released(40)
    await heap.idle()
    assert gate.calls == 1
    heap.released(99)
    await heap.idle()
    assert gate.calls == 1, "the count starts again after a trim"


async def test_one_trim_at_a_time_and_what_came_meanwhile_is_trimmed_after() -> None:
    gate = Gate()
    heap = HeapTrimmer(gate, every=100)
    heap.released(100)
    for _ in range(5):
        heap.released(100)  # while the first trim is blocked
    assert heap.trims == 1
    gate.open.set()
    await heap.idle()
    await heap.idle()  # the follow-up started when the first ended
    assert gate.calls == heap.trims == 2


async def test_a_failing_trim_never_fails_a_call(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> None:
        raise OSError("no")

    heap = HeapTrimmer(broken, every=1)
    heap.released(10)
    await heap.idle()
    assert "heap trim failed: OSError" in caplog.text


async def test_without_malloc_trim_nothing_is_scheduled() -> None:
    heap = HeapTrimmer(None, every=1)
    heap.released(10**9)
    await heap.idle()
    assert heap.trims == 0


def test_this_machine_has_glibc_malloc_trim() -> None:
    """CI runs on glibc (Debian): the trim the service relies on is there and callable."""
    trim = libc_malloc_trim()
    assert trim is not None
    assert trim() in (0, 1)


@pytest.fixture
def settings() -> Settings:
    return Settings(fhir_retries=0, fhir_max_answer_bytes=CAP, fhir_total_timeout_seconds=20)


@pytest.fixture
def gc_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def test_the_client_reports_the_bytes_of_dropped_answers(settings: Settings) -> None:
    heap = Recorded()
    async with (
        MisbehavingFhir(huge_bytes=8 * MIB).running() as server,
        FhirClient.make_http(settings) as http,
    ):
        fhir = FhirClient(http, settings, heap=heap)
        with pytest.raises(PrefetchUnavailable) as raised:
            await fhir.fetch_all(server.base("large"), {"conditions": QUERIES["conditions"]}, TOKEN)
        assert raised.value.code == "fhir_answer_too_large"
        assert heap.reported[-1] > CAP // 2, "the dropped answer's bytes count too"
        fetched = await fhir.fetch_all(server.base("good"), QUERIES, TOKEN)
    assert fetched.resources["conditions"][0]["entry"][0]["resource"]["id"] == "c1"
    assert 0 < heap.reported[-1] < 10_000, "one report per fetch, with what it read"


async def test_a_closed_response_lets_go_of_its_connection(
    settings: Settings, gc_off: None
) -> None:
    """httpx's response and its stream refer to each other: left so, only the cyclic collector
    frees the connection and what its socket buffered (up to 850 MB of it under the fuzz)."""
    async with (
        MisbehavingFhir(huge_bytes=8 * MIB).running() as server,
        FhirClient.make_http(settings) as http,
    ):
        fhir = FhirClient(http, settings, heap=HeapTrimmer(None))
        for behaviour in ("large", "good"):
            with contextlib.suppress(PrefetchUnavailable):
                await fhir.fetch_all(server.base(behaviour), QUERIES, TOKEN)
        holding = [
            o
            for o in gc.get_objects()
            if isinstance(o, httpx.Response) and not isinstance(o.stream, httpx.ByteStream)
        ]
    assert holding == []
