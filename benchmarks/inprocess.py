"""In-process latency: the whole ASGI app (parse, validate, facts, rules, cards, store) called
directly, without a network or an HTTP client in between."""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from ipt_cds.http.app import create_app
from ipt_cds.ops.config import Settings
from tests.asgi import http_scope

from .patients import request
from .site import no_repeat_site

NOW = datetime.now(UTC)
SERVICES = {"order-sign": "ipt-order-sign", "patient-view": "ipt-patient-view"}


class AsgiCaller:
    """A minimal ASGI client: one POST, the status and body back."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        sent = False
        status, chunks = 0, []

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                await asyncio.sleep(3600)
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        scope = http_scope("POST", path)
        await self.app(scope, receive, send)
        return status, b"".join(chunks)


async def _lifespan(app: Any) -> Callable[[], Any]:
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    done: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await queue.put({"type": "lifespan.startup"})

    async def receive() -> dict[str, Any]:
        return await queue.get()

    async def send(message: dict[str, Any]) -> None:
        await done.put(message)

    task = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send))
    await done.get()

    async def stop() -> None:
        await queue.put({"type": "lifespan.shutdown"})
        await done.get()
        await task

    return stop


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


async def measure(sizes: list[int], calls: int, database_url: str) -> list[dict[str, Any]]:
    # Tuned as a served worker is (served_app): the figures are a server process's.
    settings = Settings(database_url=database_url, log_level="WARNING", site_file=no_repeat_site())
    app = create_app(settings, tune_process=True)
    stop = await _lifespan(app)
    caller = AsgiCaller(app)
    rows = []
    for hook, service in SERVICES.items():
        for size in sizes:
            body = orjson.dumps(request(size, NOW, hook, "https://ehr.example.org/fhir"))
            n = max(20, calls if size <= 1000 else calls // 20)
            for _ in range(min(50, n)):  # warm up
                status, answer = await caller.post(f"/cds-services/{service}", body)
            assert status == 200, answer[:300]
            gc.collect()
            gc.freeze()
            times = []
            for _ in range(n):
                started = time.perf_counter()
                await caller.post(f"/cds-services/{service}", body)
                times.append((time.perf_counter() - started) * 1000)
            gc.unfreeze()
            rows.append(
                {
                    "hook": hook,
                    "resources": size,
                    "body_kb": len(body) // 1024,
                    "calls": n,
                    "p50_ms": percentile(times, 0.5),
                    "p99_ms": percentile(times, 0.99),
                    "mean_ms": statistics.fmean(times),
                    "cards": len(orjson.loads(answer)["cards"]),
                }
            )
    await stop()
    return rows
