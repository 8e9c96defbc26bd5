"""python -m benchmarks.replay: population replay speed and memory, per engine and size.

For each size, a synthetic export (``ipt-cds population synth``), then ``ipt-cds replay`` over
it with each engine as a separate process. Reported: wall time, patients per second, calls per
second (patients x scenarios), and peak memory: the largest resident set of any one process,
and the peak of the whole process tree summed (sampled every 0.1 s from /proc: the workers, and
for Spark its JVM and Python workers).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

AS_OF = "2026-11-25"
PAGE = os.sysconf("SC_PAGE_SIZE")
TARGET_SECONDS_100K = 300.0


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.replay", description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--engines", nargs="+", default=["local", "spark"])
    parser.add_argument("--spark-sizes", type=int, nargs="+", help="sizes Spark runs (all)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ipt-replay-bench-"))
    rows: list[dict[str, Any]] = []
    print(
        "| patients | resources | engine | seconds | patients/s | calls/s | max process MB "
        "| tree MB | same summary |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for n in args.sizes:
        export = work / f"pop-{n}"
        started = time.perf_counter()
        _run(["population", "synth", "--n", str(n), "--seed", "7", "--out", str(export)])
        synth_seconds = time.perf_counter() - started
        for engine in args.engines:
            if engine == "spark" and args.spark_sizes and n not in args.spark_sizes:
                continue
            out = work / f"out-{n}-{engine}"
            command = ["replay", str(export), "--out", str(out), "--engine", engine]
            command += ["--workers", str(args.workers), "--as-of", AS_OF]
            seconds, biggest, tree = _measured(command)
            summary = json.loads((out / "summary.json").read_text())
            calls = sum(s["calls"] for s in summary["scenarios"].values())
            row = {
                "patients": summary["patients"],
                "resources": sum(summary["input"]["resources"].values()),
                "engine": engine,
                "seconds": round(seconds, 1),
                "patients_per_s": round(summary["patients"] / seconds),
                "calls_per_s": round(calls / seconds),
                "max_process_mb": round(biggest / 2**20),
                "tree_mb": round(tree / 2**20),
                "synth_seconds": round(synth_seconds, 1),
                "export_mb": round(_size(export) / 2**20),
            }
            first = work / f"out-{n}-{args.engines[0]}" / "summary.json"
            row["same_summary_as_" + args.engines[0]] = (
                first.read_bytes() == (out / "summary.json").read_bytes()
            )
            rows.append(row)
            same = "yes" if row["same_summary_as_" + args.engines[0]] else "NO"
            print(
                f"| {n:,} | {row['resources']:,} | {engine} | {row['seconds']} | "
                f"{row['patients_per_s']:,} | {row['calls_per_s']:,} | {row['max_process_mb']} "
                f"| {row['tree_mb']} | {same} |",
                flush=True,
            )
    for row in rows:
        if row["patients"] == 100_000 and row["engine"] == "local":
            verdict = "met" if row["seconds"] <= TARGET_SECONDS_100K else "MISSED"
            print(f"\nTarget 100,000 x 3 locally <= {TARGET_SECONDS_100K:.0f} s: {verdict}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


def _run(args: list[str]) -> None:
    subprocess.run(
        [sys.executable, "-m", "ipt_cds.cli", *args], check=True, stdout=subprocess.DEVNULL
    )


def _measured(args: list[str]) -> tuple[float, int, int]:
    """Wall seconds, the largest RSS of one process, and the peak RSS of the tree summed."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "ipt_cds.cli", *args], stdout=subprocess.DEVNULL
    )
    biggest = tree = 0
    while process.poll() is None:
        sizes = [_rss(pid) for pid in _tree(process.pid)]
        biggest, tree = max(biggest, *sizes, 0), max(tree, sum(sizes))
        time.sleep(0.1)
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"replay failed: {' '.join(args)}")
    return seconds, biggest, tree


def _tree(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
    found, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        found.extend(frontier)
    return found


def _rss(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


if __name__ == "__main__":
    main()
