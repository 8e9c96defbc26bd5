"""What a FHIR server may not do to the service: answers past the size cap, compressed,
undecodable or slow; data that is not what was asked or is about another patient; faults that
would leak the client's connection pool. ipt_cds/fhir/client.py and ipt_cds/fhir/decoding.py on
their own, as in test_fhir_client.py."""

from __future__ import annotations

import logging
import re
import zlib
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import orjson
import pytest
import respx

from ipt_cds.fhir import decoding
from ipt_cds.fhir.client import FhirClient
from ipt_cds.ops.config import Settings
from ipt_cds.protocol.errors import PrefetchUnavailable

from .conftest import FHIR_BASE, TOKEN, Json, StreamedBody, hypertension, patient
from .fhir_client_kit import CONDITIONS, fetch_failure, fetch_resources, ids_of, search_page
from .misbehaving_fhir import MIB, MisbehavingFhir, big_bundle, gzip_bomb, gzip_compress

pytestmark = pytest.mark.anyio

# --- what a FHIR server may not do to the service -------------------------------------------

CAP = 256 * 1024  # IPT_CDS_FHIR_MAX_ANSWER_BYTES in these tests


def _streamed(body: StreamedBody, encoding: str | None = None, **headers: str) -> httpx.Response:
    if encoding is not None:
        headers["Content-Encoding"] = encoding
    return httpx.Response(200, headers=headers, stream=body)


def _deflate(data: bytes, wbits: int = zlib.MAX_WBITS) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, wbits)
    return packer.compress(data) + packer.flush()


@pytest.fixture
def decoders(monkeypatch: pytest.MonkeyPatch) -> list[decoding._Decoder]:
    """Every decoder the client makes, to see how much it decompressed."""
    made: list[decoding._Decoder] = []

    class Recorded(decoding._Decoder):
        def __init__(self, encoding: str) -> None:
            super().__init__(encoding)
            made.append(self)

    monkeypatch.setattr(decoding, "_Decoder", Recorded)
    return made


async def test_a_gzip_bomb_is_stopped_at_the_cap(
    fhir: respx.MockRouter, decoders: list[decoding._Decoder]
) -> None:
    """64 MiB of gzip'd spaces, ~64 KiB on the wire: decompression stops one byte past the
    cap, and the rest of the bomb is never even sent."""
    body = StreamedBody(gzip_bomb(64 * MIB))
    fhir.get(f"/{CONDITIONS}").mock(return_value=_streamed(body, "gzip"))
    failure = await fetch_failure({"conditions": CONDITIONS}, fhir_max_answer_bytes=CAP)
    assert failure.code == "fhir_answer_too_large"
    assert "IPT_CDS_FHIR_MAX_ANSWER_BYTES" in failure.message
    [decoder] = decoders
    assert CAP < decoder.produced <= CAP + 1
    assert body.sent < 32 * 1024, "the bomb was read on after the cap"


async def test_a_large_bundle_is_dropped_at_the_cap_without_reading_it_all(
    fhir: respx.MockRouter,
) -> None:
    body = StreamedBody(big_bundle(50 * MIB))
    fhir.get(f"/{CONDITIONS}").mock(return_value=_streamed(body))
    failure = await fetch_failure({"conditions": CONDITIONS}, fhir_max_answer_bytes=CAP)
    assert failure.code == "fhir_answer_too_large"
    assert body.sent < 2 * CAP


async def test_a_content_length_over_the_cap_is_refused_unread(fhir: respx.MockRouter) -> None:
    body = StreamedBody([b"{}"])
    response = _streamed(body, **{"Content-Length": str(50 * MIB)})
    fhir.get(f"/{CONDITIONS}").mock(return_value=response)
    failure = await fetch_failure({"conditions": CONDITIONS}, fhir_max_answer_bytes=CAP)
    assert failure.code == "fhir_answer_too_large"
    assert body.sent == 0


async def test_the_cap_holds_for_all_the_pages_of_a_query(fhir: respx.MockRouter) -> None:
    """Each page under the cap, together over it: 50 pages must not make 50 caps."""
    padding = {"text": {"status": "generated", "div": "x" * (CAP // 2)}}
    page2 = f"{FHIR_BASE}/{CONDITIONS}&page=2"
    fhir.get(f"/{CONDITIONS}").respond(
        200, json=search_page({**hypertension("c1"), **padding}, next_url=page2)
    )
    fhir.get(page2).respond(200, json=search_page({**hypertension("c2"), **padding}))
    failure = await fetch_failure({"conditions": CONDITIONS}, fhir_max_answer_bytes=CAP)
    assert failure.code == "fhir_answer_too_large"


@pytest.mark.parametrize(
    "encoding",
    ["gzip", "x-gzip", "deflate", "deflate-raw", "identity", "gzip-members"],
)
async def test_a_single_gzip_or_deflate_encoding_is_decoded(
    fhir: respx.MockRouter, encoding: str
) -> None:
    json = search_page(hypertension("c1"), hypertension("c2"))
    plain = orjson.dumps(json)
    encoded = {
        "gzip": gzip_compress(plain),
        "x-gzip": gzip_compress(plain),
        "deflate": _deflate(plain),
        "deflate-raw": _deflate(plain, -zlib.MAX_WBITS),  # no zlib wrapper, as some servers do
        "identity": plain,
        "gzip-members": gzip_compress(plain[:40]) + gzip_compress(plain[40:]),
    }[encoding]
    header = {"deflate-raw": "deflate", "gzip-members": "gzip"}.get(encoding, encoding)
    # One byte at a time: every decoder state meets a chunk boundary.
    body = StreamedBody(encoded[i : i + 1] for i in range(len(encoded)))
    fhir.get(f"/{CONDITIONS}").mock(return_value=_streamed(body, header))
    fetched = await fetch_resources({"conditions": CONDITIONS})
    assert fetched["conditions"] == [json]


@pytest.mark.parametrize("wbits", [16 + zlib.MAX_WBITS, zlib.MAX_WBITS], ids=["gzip", "deflate"])
async def test_a_chunk_that_decodes_to_whole_steps_is_followed_by_the_next(
    fhir: respx.MockRouter, wbits: int
) -> None:
    """Chunks that each decode to exactly 64 KiB (the decoder's step): the step that comes back
    full, then empty, is the end of the chunk, not a decoder that makes no progress."""
    padding = {"text": {"status": "generated", "div": "x" * (300 * 1024)}}
    plain = orjson.dumps(search_page({**hypertension("c1"), **padding}))
    packer = zlib.compressobj(9, zlib.DEFLATED, wbits)
    chunks = [
        packer.compress(plain[i : i + 64 * 1024]) + packer.flush(zlib.Z_FULL_FLUSH)
        for i in range(0, len(plain), 64 * 1024)
    ]
    chunks.append(packer.flush())
    encoding = "gzip" if wbits > zlib.MAX_WBITS else "deflate"
    fhir.get(f"/{CONDITIONS}").mock(return_value=_streamed(StreamedBody(chunks), encoding))
    fetched = await fetch_resources({"conditions": CONDITIONS})
    assert ids_of(fetched["conditions"]) == ["c1"]


async def test_the_client_asks_only_for_the_encodings_it_decodes(fhir: respx.MockRouter) -> None:
    read = fhir.get("/Patient/pat-1").respond(200, json=patient())
    await fetch_resources({"patient": "Patient/pat-1"})
    assert read.calls.last.request.headers["accept-encoding"] == "gzip, deflate"


@pytest.mark.parametrize(
    ("encoding", "body", "said"),
    [
        ("gzip", b"this is not gzip at all", "is not valid gzip"),
        ("deflate", b"this is not deflate either", "is not valid deflate"),
        ("gzip", gzip_compress(b'{"resourceType": "Bundle"}' * 100)[:60], "truncated"),
        ("gzip", gzip_compress(b'{"resourceType":"Bundle"}') + b"trailing junk", "gzip"),
        ("gzip, gzip", gzip_compress(gzip_compress(b'{"resourceType":"Bundle"}')), "several"),
        ("gzip, deflate", b"", "several"),
        ("br", b"\x0b\x02\x80{}\x03", "Content-Encoding"),
        ("compress", b"", "Content-Encoding"),
    ],
    ids=[
        "bad-gzip",
        "bad-deflate",
        "truncated-gzip",
        "gzip-then-junk",
        "nested-gzip",
        "two-encodings",
        "brotli",
        "unknown",
    ],
)
async def test_an_answer_that_cannot_be_decoded_is_a_412(
    fhir: respx.MockRouter, encoding: str, body: bytes, said: str
) -> None:
    fhir.get(f"/{CONDITIONS}").mock(return_value=_streamed(StreamedBody([body]), encoding))
    fhir.get("/Patient/pat-1").respond(200, json=patient())
    failure = await fetch_failure({"patient": "Patient/pat-1", "conditions": CONDITIONS})
    assert failure.code == "fhir_error"
    assert said in failure.message
    assert "conditions" in failure.message


async def test_the_deadline_covers_reading_the_body(fhir: respx.MockRouter) -> None:
    """Headers at once, then a body that never ends: the whole fetch's deadline still holds."""

    class Forever(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            yield b'{"resourceType": "Bundle", "entry": ['
            while True:
                await anyio.sleep(0.01)
                yield b" "

    response = httpx.Response(200, stream=Forever())
    fhir.get(f"/{CONDITIONS}").mock(return_value=response)
    with anyio.fail_after(30):
        failure = await fetch_failure(
            {"conditions": CONDITIONS}, fhir_total_timeout_seconds=0.3, fhir_timeout_seconds=60
        )
    assert failure.code == "fhir_timeout"


async def test_a_large_answer_is_parsed_off_the_event_loop(fhir: respx.MockRouter) -> None:
    many = [hypertension(f"c{i}") for i in range(8000)]  # ~2 MB
    fhir.get(f"/{CONDITIONS}").respond(200, json=search_page(*many))
    fetched = await fetch_resources({"conditions": CONDITIONS})
    assert len(ids_of(fetched["conditions"])) == 8000


# --- wrong data ---------------------------------------------------------------------------


def _about(resource: Json, reference: Any) -> Json:
    return {**resource, "subject": reference}


@pytest.mark.parametrize(
    ("query", "answer", "said"),
    [
        ("Patient/pat-1", patient("pat-2"), "another Patient than the one read"),
        ("Patient/pat-1", {"resourceType": "Patient"}, "another Patient than the one read"),
        ("Patient/pat-1", hypertension("pat-1"), "a Condition instead of the Patient read"),
        (CONDITIONS, patient(), "a Patient instead of a Bundle"),
        (CONDITIONS, {"resourceType": "Bundle", "entry": [{"fullUrl": "x"}]}, "not a resource"),
        (CONDITIONS, {"resourceType": "Bundle", "entry": ["Condition"]}, "not a resource"),
        (CONDITIONS, {"resourceType": "Bundle", "entry": {"resource": {}}}, "not a list"),
        (CONDITIONS, search_page(patient()), "a Patient entry in a Condition search"),
        (
            CONDITIONS,
            search_page({"resourceType": "Observation"}),
            "an Observation entry in a Condition search",
        ),
        (
            CONDITIONS,
            search_page({"resourceType": "x\n<b>"}),
            "a resource of an unknown type entry",
        ),
    ],
    ids=[
        "read-other-id",
        "read-no-id",
        "read-other-type",
        "search-patient",
        "entry-without-resource",
        "entry-string",
        "entry-not-list",
        "entry-patient",
        "entry-other-type",
        "entry-odd-type",
    ],
)
async def test_an_answer_that_is_not_what_was_asked_is_wrong_data(
    fhir: respx.MockRouter,
    caplog: pytest.LogCaptureFixture,
    query: str,
    answer: Json,
    said: str,
) -> None:
    fhir.get(f"/{query}").respond(200, json=answer)
    with caplog.at_level(logging.WARNING, logger="ipt_cds"):
        failure = await fetch_failure({"key": query})
    assert failure.code == "fhir_wrong_data"
    assert re.search(said, failure.message), failure.message
    assert "pat-2" not in failure.message + caplog.text, "another patient's id is quoted"


@pytest.mark.parametrize("query", ["Patient/pat-1", CONDITIONS], ids=["read", "search"])
async def test_an_operation_outcome_in_place_of_data_is_the_server_declining(
    fhir: respx.MockRouter, query: str
) -> None:
    """Some servers answer 200 with an OperationOutcome for a search they do not support: a
    refusal (an optional read goes without it), not data about someone else."""
    outcome = {"resourceType": "OperationOutcome", "issue": [{"code": "not-supported"}]}
    fhir.get(f"/{query}").respond(200, json=outcome)
    failure = await fetch_failure({"key": query})
    assert failure.code == "fhir_error"
    assert "OperationOutcome (not-supported) instead of data" in failure.message


@pytest.mark.parametrize(
    "reference",
    [
        "Patient/pat-2",
        "https://ehr.example.org/fhir/Patient/pat-2",
        "Patient/pat-2/_history/3",
        "Group/ward-7",
    ],
    ids=["relative", "absolute", "versioned", "a-group"],
)
async def test_a_resource_about_another_patient_is_wrong_data(
    fhir: respx.MockRouter, reference: str
) -> None:
    """Data about the wrong patient must never reach the rules: the whole fetch is refused."""
    mine, theirs = hypertension("c1"), _about(hypertension("c2"), {"reference": reference})
    fhir.get(f"/{CONDITIONS}").respond(200, json=search_page(mine, theirs))
    failure = await fetch_failure({"conditions": CONDITIONS})
    assert failure.code == "fhir_wrong_data"
    assert "a Condition about another patient" in failure.message


async def test_another_patient_on_a_later_page_is_wrong_data(fhir: respx.MockRouter) -> None:
    page2 = f"{FHIR_BASE}/{CONDITIONS}&page=2"
    fhir.get(f"/{CONDITIONS}").respond(200, json=search_page(hypertension("c1"), next_url=page2))
    other = {**hypertension("c2"), "patient": {"reference": "Patient/pat-2"}}
    fhir.get(page2).respond(200, json=search_page(other))
    failure = await fetch_failure({"conditions": CONDITIONS})
    assert failure.code == "fhir_wrong_data"


async def test_what_cannot_name_another_patient_is_accepted(fhir: respx.MockRouter) -> None:
    """References to this patient in every form; no subject; a subject that is only an
    identifier, a contained or a urn:uuid reference (nothing to compare); the server's
    OperationOutcome; and, for an _include, the included resources of another type."""
    entries = [
        _about(hypertension("relative"), {"reference": "Patient/pat-1"}),
        _about(hypertension("absolute"), {"reference": f"{FHIR_BASE}/Patient/pat-1"}),
        _about(hypertension("versioned"), {"reference": "Patient/pat-1/_history/2"}),
        {"resourceType": "Condition", "id": "no-subject"},
        _about(hypertension("identifier"), {"identifier": {"value": "MRN-1"}}),
        _about(hypertension("contained"), {"reference": "#p1"}),
        _about(hypertension("urn"), {"reference": "urn:uuid:0b8a6b4e-9a2c-4b0b-9d6f-5c1e1f0a3d2b"}),
    ]
    page = search_page(*entries)
    page["entry"].append(
        {"resource": {"resourceType": "OperationOutcome"}, "search": {"mode": "outcome"}}
    )
    fhir.get(f"/{CONDITIONS}").respond(200, json=page)
    medications = "MedicationRequest?patient=pat-1&_include=MedicationRequest:medication"
    order = {
        "resourceType": "MedicationRequest",
        "id": "m1",
        "subject": {"reference": "Patient/pat-1"},
    }
    included = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [
            {"resource": order, "search": {"mode": "match"}},
            {"resource": {"resourceType": "Medication", "id": "x"}, "search": {"mode": "include"}},
        ],
    }
    fhir.get(f"/{medications}").respond(200, json=included)
    fetched = await fetch_resources({"conditions": CONDITIONS, "medications": medications})
    assert len(fetched["conditions"][0]["entry"]) == len(entries) + 1
    assert fetched["medications"] == [included]


async def test_an_included_resource_about_another_patient_is_wrong_data(
    fhir: respx.MockRouter,
) -> None:
    query = "Condition?patient=pat-1&_include=Condition:patient"
    page = search_page(hypertension("c1"))
    page["entry"].append({"resource": patient("pat-2"), "search": {"mode": "include"}})
    fhir.get(f"/{query}").respond(200, json=page)
    failure = await fetch_failure({"conditions": query})
    assert failure.code == "fhir_wrong_data"


async def test_an_other_type_is_not_taken_as_an_include_without_one(
    fhir: respx.MockRouter,
) -> None:
    page = search_page(hypertension("c1"))
    page["entry"].append(
        {"resource": {"resourceType": "Medication", "id": "x"}, "search": {"mode": "include"}}
    )
    fhir.get(f"/{CONDITIONS}").respond(200, json=page)
    failure = await fetch_failure({"conditions": CONDITIONS})
    assert failure.code == "fhir_wrong_data"


# --- the connection pool ------------------------------------------------------------------

QUERIES = {
    "patient": "Patient/pat-1",
    "conditions": CONDITIONS,
    "observations": "Observation?patient=pat-1",
    "medications": "MedicationRequest?patient=pat-1",
    "serviceRequests": "ServiceRequest?patient=pat-1",
    "procedures": "Procedure?patient=pat-1",
}
# Answered at once (two rounds of each), then those that wait for a timeout (one round).
QUICK_FAULTS = [
    "bad-gzip",
    "nested-gzip",
    "gzip-bomb",
    "large",
    "truncated",
    "truncated-gzip",
    "hang-up",
]
FAULTS = QUICK_FAULTS * 2 + ["stall", "slow"]


@pytest.mark.slow  # 5-8 s each: a stalling server is waited for
@pytest.mark.parametrize("pool", [2, 6])
async def test_faulty_servers_never_leak_the_connection_pool(pool: int) -> None:
    """A real server on 127.0.0.1 (MockTransport and respx have no pool), a pool of 2 or 6
    connections, six queries a fetch and eight fetches at once, 128 fetches in all: every kind
    of faulty answer, whose failure makes the task group cancel the sibling queries, some
    while they wait for a connection and some while theirs is being closed. Then a good fetch
    must still answer.

    It fails, the good fetch ending in fhir_timeout, on the client before the fix, and on this
    one with either of its two guards taken out: without the client's own limit on requests in
    flight (they wait in the pool's queue, and httpcore#1093 keeps a slot for good when one is
    cancelled just as its connection is made) the pool of 2 dies; with asyncio's TaskGroup and
    timeout instead of anyio's (a native cancellation goes through the shielded clean-up in
    which httpcore closes a connection, which then stays "active") the pool of 6 does."""
    # Timeouts long enough that a fault answered at once (a bad gzip) cannot end in
    # fhir_timeout on a busy machine (it did once in CI with 0.3 s): only stall and slow wait.
    settings = Settings(
        fhir_retries=0,
        fhir_max_connections=pool,
        fhir_timeout_seconds=1.0,
        fhir_total_timeout_seconds=2,
        fhir_max_answer_bytes=CAP,
    )
    codes: dict[str, set[str]] = {}
    unexpected: list[BaseException] = []

    async def faulty(server: MisbehavingFhir, fhir: FhirClient, behaviour: str) -> None:
        try:
            await fhir.fetch_all(server.base(behaviour), QUERIES, TOKEN)
        except PrefetchUnavailable as failure:
            codes.setdefault(behaviour, set()).add(failure.code)
        except Exception as exc:  # the old client: kept, the pool is what this test is about
            unexpected.append(exc)

    # A pool exactly as large as the client's own limit, with nothing to spare: one leaked
    # connection halves it, two kill it.
    limits = httpx.Limits(max_connections=pool, max_keepalive_connections=pool)
    async with (
        MisbehavingFhir(huge_bytes=64 * MIB).running() as server,
        httpx.AsyncClient(limits=limits, timeout=settings.fhir_timeout_seconds) as http,
    ):
        fhir = FhirClient(http, settings)
        for behaviour in FAULTS:
            async with anyio.create_task_group() as group:
                for _ in range(8):
                    group.start_soon(faulty, server, fhir, behaviour)
        with anyio.fail_after(30):
            fetched = await fhir.fetch_all(server.base("good"), QUERIES, TOKEN)
    assert fetched.resources["patient"][0]["id"] == "pat-1"
    assert ids_of(fetched.resources["conditions"]) == ["c1"]
    assert not unexpected
    assert set(codes) == set(FAULTS), "every faulty fetch ends in a 412"
    assert codes["gzip-bomb"] <= {"fhir_answer_too_large", "fhir_timeout"}
    assert codes["bad-gzip"] == codes["nested-gzip"] == {"fhir_error"}
    assert codes["slow"] == {"fhir_timeout"}
