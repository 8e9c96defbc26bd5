"""python -m benchmarks.ab: HTTP latency of this tree, an earlier commit and the bare endpoint.

Each call is another patient with a hookInstance of its own (``patients.lua`` cycles through
``--patients`` different 200-resource records), as an EHR's traffic is: a benchmark that sends
one body over and over lets per-patient work hide in caches. One uvicorn worker, ``wrk`` with
one connection (one call at a time: the latency of a call, not a queue), card statistics
written to SQLite as in production, once per visit off (every call shows its cards and writes
the card memory: the heavier path).

The three servers take turns, round by round, in an order that alternates, so that a change in
the host's load falls on each of them alike. The earlier commit runs from a git worktree of it,
with the same virtualenv. It prints p50 and p99 per round and the ratio bare p50 / p50.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import orjson

from .http import ROOT, _env, _ms, uvicorn
from .inprocess import NOW
from .patients import many

HERE = Path(__file__).resolve().parent
PLACEHOLDER = "HOOK-INSTANCE-HERE"
PATH = "/cds-services/ipt-order-sign"


def bodies(folder: Path, count: int, size: int) -> None:
    for n, body in enumerate(many(count, size, NOW, "order-sign", "https://ehr.example.org/fhir")):
        body["hookInstance"] = PLACEHOLDER
        (folder / f"body-{n}.json").write_bytes(orjson.dumps(body))


def wrk_patients(base: str, folder: Path, count: int, seconds: float) -> dict[str, float]:
    command = ["wrk", "-t1", "-c1", f"-d{seconds:g}s", "--latency", "-s"]
    command += [str(HERE / "patients.lua"), base, "--", str(folder), str(count), PATH]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    figures: dict[str, float] = {}
    for label, pattern in (("p50_ms", "50%"), ("p99_ms", "99%")):
        line = next(x for x in out.splitlines() if x.strip().startswith(pattern))
        figures[label] = _ms(line.split()[1])
    figures["rps"] = float(next(x for x in out.splitlines() if "Requests/sec" in x).split()[1])
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ab", description=__doc__)
    parser.add_argument("--against", default="HEAD~1", help="the earlier commit (a git rev)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--patients", type=int, default=500)
    parser.add_argument("--size", type=int, default=200, help="resources per patient")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (benchmarks/run installs it)")
    work = Path(tempfile.mkdtemp(prefix="ipt-ab-"))
    (work / "bodies").mkdir()
    bodies(work / "bodies", args.patients, args.size)
    before = work / "before"
    subprocess.run(
        ["git", "worktree", "add", "--detach", "-q", str(before), args.against],
        cwd=ROOT,
        check=True,
    )
    servers: dict[str, tuple[str, Path]] = {
        "bare": ("benchmarks.bare:app", ROOT),
        f"before ({args.against})": (f"{_package(before)}.http.app:served_app()", before),
        "after (this tree)": ("ipt_cds.http.app:served_app()", ROOT),
    }
    results: dict[str, list[dict[str, float]]] = {name: [] for name in servers}
    try:
        for n in range(args.rounds):
            order = list(servers) if n % 2 == 0 else list(reversed(servers))
            for name in order:
                app, cwd = servers[name]
                folder = work / f"run-{n}-{len(results[name])}-{name.split()[0]}"
                folder.mkdir()
                env = {**_env(folder), "IPT_CDS_KNOWLEDGE_DIR": str(cwd / "cards")}
                with uvicorn(app, 1, env, cwd=cwd) as (base, _):
                    wrk_patients(base, work / "bodies", args.patients, 2)  # warm up
                    figures = wrk_patients(base, work / "bodies", args.patients, args.seconds)
                results[name].append(figures)
                print(
                    f"round {n + 1} {name}: p50 {figures['p50_ms']:.2f} ms, "
                    f"p99 {figures['p99_ms']:.2f} ms, {figures['rps']:.0f} req/s",
                    flush=True,
                )
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(before)], cwd=ROOT)
    _table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def _package(tree: Path) -> str:
    """The import package of a tree (named ``service`` before 2026-12-07)."""
    return "ipt_cds" if (tree / "ipt_cds").is_dir() else "service"


def _table(results: dict[str, list[dict[str, Any]]]) -> None:
    bare = results["bare"]
    print("\n| server | p50 ms per round | p99 ms per round | ratio bare/ours p50 per round |")
    print("|---|---|---|---|")
    for name, rounds in results.items():
        p50 = " / ".join(f"{r['p50_ms']:.2f}" for r in rounds)
        p99 = " / ".join(f"{r['p99_ms']:.2f}" for r in rounds)
        pairs = zip(bare, rounds, strict=True)
        ratio = " / ".join(f"{b['p50_ms'] / r['p50_ms']:.2f}" for b, r in pairs)
        print(f"| {name} | {p50} | {p99} | {ratio if name != 'bare' else '—'} |")


if __name__ == "__main__":
    main()
