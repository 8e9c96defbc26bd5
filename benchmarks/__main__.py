"""python -m benchmarks: every figure of benchmarks/README.md, with the targets beside them."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import fetch, http
from .inprocess import NOW, measure
from .patients import request

TARGETS = {
    "p50_200": 2.0,
    "p99_200": 10.0,
    "ms_10000": 150.0,
    "throughput_ratio": 0.5,
    "rss_mb": 150.0,
}


def main() -> None:
    parser = argparse.ArgumentParser(prog="benchmarks/run", description=__doc__)
    parser.add_argument("--calls", type=int, default=1000, help="in-process calls per size")
    parser.add_argument("--seconds", type=float, default=5, help="wrk duration per point")
    parser.add_argument("--memory-calls", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="a short run, for trying it out")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    if args.quick:
        args.calls, args.seconds, args.memory_calls = 100, 2, 5_000
    os.environ.setdefault("IPT_CDS_LOG_LEVEL", "WARNING")
    results: dict[str, Any] = {"machine": _machine(), "when": datetime.now(UTC).isoformat()}

    print(f"# IPT CDS benchmarks  ({results['machine']})\n")
    db = Path(tempfile.mkdtemp(prefix="ipt-bench-")) / "store.sqlite3"
    rows = asyncio.run(measure([50, 200, 1000, 10000], args.calls, f"sqlite:///{db}"))
    results["inprocess"] = rows
    print("## In-process latency per call (ASGI app called directly)\n")
    print("| hook | resources | body KB | p50 ms | p99 ms | cards |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['hook']} | {r['resources']:,} | {r['body_kb']:,} | {r['p50_ms']:.2f} | "
            f"{r['p99_ms']:.2f} | {r['cards']} |"
        )
    sign = {r["resources"]: r for r in rows if r["hook"] == "order-sign"}
    print(
        f"\nTargets: 200 resources p50 {sign[200]['p50_ms']:.2f} ms (<= {TARGETS['p50_200']}), "
        f"p99 {sign[200]['p99_ms']:.2f} ms (<= {TARGETS['p99_200']}); 10,000 resources "
        f"{sign[10000]['p50_ms']:.0f} ms (<= {TARGETS['ms_10000']:.0f}); growth per resource "
        f"{_per_resource(sign):s}\n"
    )

    print("## HTTP throughput with uvicorn, against a bare FastAPI endpoint (same body)\n")
    body = request(200, NOW, "order-sign", "https://ehr.example.org/fhir")
    points = http.compare(body, args.seconds, [1, 16, 64])
    results["http"] = points
    print(
        "| workers | connections | service req/s | p50 ms | p99 ms | bare req/s | p50 ms | ratio |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for p in points:
        s, b = p["service"], p["bare"]
        print(
            f"| {p['workers']} | {p['connections']} | {s['rps']:.0f} | {s['p50_ms']:.1f} | "
            f"{s['p99_ms']:.1f} | {b['rps']:.0f} | {b['p50_ms']:.1f} | {p['ratio']:.2f} |"
        )
    worst = min(p["ratio"] for p in points)
    print(f"\nTarget: throughput >= {TARGETS['throughput_ratio']:.0%} of bare; worst {worst:.0%}\n")

    print("## Fetch path: a call without prefetch, 200-resource patient\n")
    f = fetch.measure()
    results["fetch"] = f
    print(
        "| FHIR server | slowest query alone ms | all queries one after another ms "
        "| whole call ms |"
    )
    print("|---|---|---|---|")
    for name, label in (("delayed_20ms", "20 ms per answer"), ("sekmet", "sekmet-fhir, local")):
        r = f[name]
        print(f"| {label} | {r['slowest_ms']:.1f} | {r['sum_ms']:.1f} | {r['call_p50_ms']:.1f} |")
    print("\nTarget: the whole call close to the slowest query, far below their sum.\n")

    print("## Resident memory of one uvicorn worker\n")
    checkpoints = [c for c in (1_000, 10_000, 25_000, 50_000) if c < args.memory_calls]
    m = http.memory(body, [*checkpoints, args.memory_calls])
    results["memory"] = m
    print("| calls | RSS MB |")
    print("|---|---|")
    for sample in m:
        print(f"| {sample['calls']:,.0f} | {sample['rss_mb']:.1f} |")
    largest = max(sample["rss_mb"] for sample in m)
    growth = m[-1]["rss_mb"] - m[1]["rss_mb"] if len(m) > 2 else float("nan")
    print(
        f"\nTarget: <= {TARGETS['rss_mb']:.0f} MB and flat; largest {largest:.0f} MB, "
        f"{growth:+.1f} MB from the second checkpoint to the last"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


def _per_resource(rows: dict[int, dict[str, Any]]) -> str:
    small, big = rows[1000], rows[10000]
    slope = (big["p50_ms"] - small["p50_ms"]) / 9000 * 1000
    return f"{slope:.1f} ms per 1,000 resources between 1,000 and 10,000"


def _machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


if __name__ == "__main__":
    main()
