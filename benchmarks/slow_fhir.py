"""A FHIR server with a fixed network-like delay, for the fetch-path benchmark: it serves the
resources of BENCH_RESOURCES (a JSON list) by read and by type search, after BENCH_DELAY_MS."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

RESOURCES: list[dict[str, Any]] = orjson.loads(Path(os.environ["BENCH_RESOURCES"]).read_bytes())
DELAY = float(os.environ.get("BENCH_DELAY_MS", "20")) / 1000


async def fhir(request: Request) -> Response:
    await asyncio.sleep(DELAY)
    kind, _, rid = request.path_params["path"].partition("/")
    if kind == "metadata":
        return Response(b'{"resourceType":"CapabilityStatement"}', media_type="application/json")
    found = [r for r in RESOURCES if r["resourceType"] == kind and (not rid or r["id"] == rid)]
    if rid:
        return Response(orjson.dumps(found[0]), media_type="application/fhir+json")
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r} for r in found],
    }
    return Response(orjson.dumps(bundle), media_type="application/fhir+json")


app = Starlette(routes=[Route("/fhir/{path:path}", fhir)])
