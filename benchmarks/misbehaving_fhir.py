"""A FHIR server that misbehaves on purpose, for the long fuzz run (python -m benchmarks.fuzz).

The first path segment picks the behaviour, so that one server offers every kind of failure
and a hook request chooses one through its ``fhirServer``: ``http://host:port/<mode>/fhir``.
``good`` serves the resources of FUZZ_RESOURCES (a JSON list) by read and by type search.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import zlib
from collections.abc import AsyncIterator
from functools import cache
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

FHIR_JSON = "application/fhir+json"
MIB = 1024 * 1024
# What a bomb inflates to, and the size of the Bundle that is simply too big.
BOMB_INFLATED_BYTES = 1024 * MIB
BIG_BUNDLE_BYTES = 50 * MIB
# Longer than any deadline the service may set for a whole fetch.
STALL_SECONDS = 30.0

MODES = (
    "good",
    "slow",
    "truncated",
    "html",
    "invalid-json",
    "not-gzip",
    "gzip-bomb",
    "gzip-gzip-bomb",
    "unknown-encoding",
    "big-bundle",
    "next-loop",
    "next-elsewhere",
    "redirect",
    "wrong-patient",
    "wrong-type",
    "outcome",
    "server-error",
    "unauthorized",
)


@cache
def _resources() -> list[dict[str, Any]]:
    path = os.environ.get("FUZZ_RESOURCES")
    return orjson.loads(Path(path).read_bytes()) if path else []


@cache
def _bomb() -> bytes:
    """~1 MB of gzip that inflates to BOMB_INFLATED_BYTES of zeros; made once, in pieces."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(MIB)
    parts = [packer.compress(zeros) for _ in range(BOMB_INFLATED_BYTES // MIB)]
    return b"".join(parts) + packer.flush()


def _bundle(resources: list[dict[str, Any]], link: str | None = None) -> bytes:
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r, "search": {"mode": "match"}} for r in resources],
    }
    if link:
        bundle["link"] = [{"relation": "next", "url": link}]
    return orjson.dumps(bundle)


def _good(kind: str, rid: str, patient: str | None = None) -> Response:
    found = [r for r in _resources() if r["resourceType"] == kind and (not rid or r["id"] == rid)]
    if patient is not None:
        found = [r for r in found if r.get("subject", {}).get("reference") == f"Patient/{patient}"]
    if rid:
        if not found:
            return Response(status_code=404)
        return Response(orjson.dumps(found[0]), media_type=FHIR_JSON)
    return Response(_bundle(found), media_type=FHIR_JSON)


async def _big_bundle() -> AsyncIterator[bytes]:
    entry = b'{"resource":{"resourceType":"Observation","id":"x","status":"final"}},'
    yield b'{"resourceType":"Bundle","type":"searchset","entry":['
    for _ in range(BIG_BUNDLE_BYTES // (len(entry) * 1000)):
        yield entry * 1000
    yield entry[:-1] + b"]}"


async def fhir(request: Request) -> Response:
    mode = request.path_params["mode"]
    kind, _, rid = request.path_params["path"].partition("/")
    here = str(request.url).split("?")[0]
    match mode:
        case "good":
            return _good(kind, rid, request.query_params.get("patient"))
        case "slow":
            await asyncio.sleep(STALL_SECONDS)
            return _good(kind, rid)
        case "truncated":
            body = _good(kind, rid).body
            return Response(body[: len(body) // 2], headers={"content-length": str(len(body))})
        case "html":
            return Response(b"<html><body>Service Unavailable</body></html>", 200)
        case "invalid-json":
            return Response(b'{"resourceType": "Bundle", "entry": [', media_type=FHIR_JSON)
        case "not-gzip":
            headers = {"content-encoding": "gzip"}
            return Response(_good(kind, rid).body, media_type=FHIR_JSON, headers=headers)
        case "gzip-bomb":
            return Response(_bomb(), media_type=FHIR_JSON, headers={"content-encoding": "gzip"})
        case "gzip-gzip-bomb":
            headers = {"content-encoding": "gzip, gzip"}
            return Response(gzip.compress(_bomb()), media_type=FHIR_JSON, headers=headers)
        case "unknown-encoding":
            headers = {"content-encoding": "x-secret"}
            return Response(_good(kind, rid).body, media_type=FHIR_JSON, headers=headers)
        case "big-bundle":
            return StreamingResponse(_big_bundle(), media_type=FHIR_JSON)
        case "next-loop":
            return Response(_bundle([], link=str(request.url)), media_type=FHIR_JSON)
        case "next-elsewhere":
            link = "http://169.254.169.254/latest/meta-data/"
            return Response(_bundle([], link=link), media_type=FHIR_JSON)
        case "redirect":
            return Response(status_code=302, headers={"location": here.replace(mode, "good")})
        case "wrong-patient":
            other = {"resourceType": "Patient", "id": "somebody-else", "birthDate": "1970-01-01"}
            if rid:
                return Response(orjson.dumps(other), media_type=FHIR_JSON)
            return Response(_bundle([other]), media_type=FHIR_JSON)
        case "wrong-type":
            wrong = {"resourceType": "Patient", "id": "p"}
            body = _bundle([]) if rid else orjson.dumps(wrong)
            return Response(body, media_type=FHIR_JSON)
        case "outcome":
            outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "error"}]}
            return Response(orjson.dumps(outcome), 200, media_type=FHIR_JSON)
        case "server-error":
            return Response(b"upstream failed", 503)
        case "unauthorized":
            return Response(b"", 401)
    return Response(status_code=404)


app = Starlette(routes=[Route("/{mode}/fhir/{path:path}", fhir)])
