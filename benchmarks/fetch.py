"""The fetch path against a real local FHIR server: the prefetch queries run concurrently, so a
call without prefetch should cost about the slowest query, not the sum of them."""

from __future__ import annotations

import asyncio
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

from ipt_cds.devtools.fixtures import authorization
from ipt_cds.fhir.prefetch import render
from ipt_cds.http.app import create_app
from ipt_cds.ops.config import Settings
from ipt_cds.protocol.models import REQUEST_MODELS
from tests.fhir_server import running

from .http import uvicorn
from .inprocess import AsgiCaller, _lifespan, percentile
from .patients import patient
from .site import no_repeat_site


async def _measure(base: str, token: str, calls: int, load: bool) -> dict[str, Any]:
    now = datetime.now(UTC)
    case, resources = patient(200, now)
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
            for r in resources
        ],
    }
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}
    async with httpx.AsyncClient(headers=headers, timeout=60) as http:
        if load:
            (await http.post(base, json=bundle)).raise_for_status()
        body = case.request(now, base, prefetch=False)
        body["fhirAuthorization"] = authorization(token)
        folder = Path(tempfile.mkdtemp(prefix="ipt-fetch-"))
        app = create_app(
            Settings(
                database_url=f"sqlite:///{folder / 'store.sqlite3'}",
                fhir_allowlist=[base],
                log_level="WARNING",
                site_file=no_repeat_site(),
            ),
            tune_process=True,
        )
        stop = await _lifespan(app)
        caller = AsgiCaller(app)
        raw = orjson.dumps(body)
        service = app.state.ipt.knowledge.services["ipt-order-sign"]
        request = REQUEST_MODELS["order-sign"].model_validate(body)
        queries = {k: render(t, request) for k, t in (service.prefetch or {}).items()}
        for _ in range(5):
            status, answer = await caller.post("/cds-services/ipt-order-sign", raw)
            assert status == 200, answer[:300]
        whole: list[float] = []
        singles: dict[str, list[float]] = {k: [] for k in queries}
        for _ in range(calls):
            started = time.perf_counter()
            await caller.post("/cds-services/ipt-order-sign", raw)
            whole.append((time.perf_counter() - started) * 1000)
            for key, query in queries.items():
                started = time.perf_counter()
                (await http.get(f"{base}/{query}")).raise_for_status()
                singles[key].append((time.perf_counter() - started) * 1000)
        await stop()
    medians = {k: percentile(v, 0.5) for k, v in singles.items()}
    return {
        "call_p50_ms": percentile(whole, 0.5),
        "queries_p50_ms": medians,
        "sum_ms": sum(medians.values()),
        "slowest_ms": max(medians.values()),
    }


def measure(calls: int = 30) -> dict[str, Any]:
    """Against sekmet-fhir (a real server, which answers one query at a time), and against a
    server that answers every query after 20 ms, as a remote EHR would."""
    with running(Path(tempfile.mkdtemp(prefix="ipt-fhir-"))) as server:
        real = asyncio.run(_measure(server.base, server.token, calls, load=True))
    folder = Path(tempfile.mkdtemp(prefix="ipt-slow-"))
    (folder / "resources.json").write_bytes(orjson.dumps(patient(200, datetime.now(UTC))[1]))
    env = {"BENCH_RESOURCES": str(folder / "resources.json"), "BENCH_DELAY_MS": "20"}
    with uvicorn("benchmarks.slow_fhir:app", 1, env, ready="/fhir/metadata") as (base, _):
        delayed = asyncio.run(_measure(f"{base}/fhir", "unused", calls, load=False))
    return {"sekmet": real, "delayed_20ms": delayed}
