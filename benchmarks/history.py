"""python -m benchmarks.history: does a call cost more as the patient's history grows?

One patient, 200 resources, in process (the ASGI app called directly, as benchmarks/inprocess.py
does, tuned as a served worker), each scenario on a fresh database:

- ``chart``: the chart opened 1,500 times (patient-view, a new hookInstance each time), with
  once per visit off so that every open shows its cards and the memory is written each time;
- ``chart-window``: the same with the shipped repeat window (opens after the first hold the
  card back);
- ``retry``: one order-sign call sent 1,000 times (the same hookInstance, as an EHR retrying),
  with the shipped window: each retry shows its cards again.

It reports the p50 of the first 200 calls and of the last 200, their ratio, and the card_memory
rows of the patient at the end. ``--burn`` runs a CPU-bound process beside it (``while True:
pass``; ``--burn 2`` for two), each in a session of its own, as other programs on a shared
machine are. The calls go one after another and the event loop runs between them, so the card
recorder writes its batches meanwhile, as in a server.

Each row also says how many cores processes other than the benchmark and its burners used
during the first 200 calls and the last 200 (from /proc): a p50 that jumps with it is another
program's doing, not the history's.

``--probe`` also times, for the first 200 calls and the last 200, the memory's lookup (the
query and the filtering after it, which every call waits for) and the recorder's batches (in
its own thread, beside the calls): what grows with the history, and what competes for the CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy

from ipt_cds.http.app import create_app
from ipt_cds.ops.config import Settings

from .inprocess import NOW, AsgiCaller, _lifespan, percentile
from .patients import request
from .site import no_repeat_site

SERVER = "https://ehr.example.org/fhir"
POSTGRES = os.environ.get(
    "IPT_CDS_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
EDGE = 200
# name: (hook, calls, a new hookInstance each call, once per visit on)
SCENARIOS = {
    "chart": ("patient-view", 1500, True, False),
    "chart-window": ("patient-view", 1500, True, True),
    "retry": ("order-sign", 1000, False, True),
}


class OtherCpu:
    """The cores other processes keep busy, between marks: the machine's busy time (/proc/stat)
    less this process's and the burners'."""

    def __init__(self, burners: list[int]) -> None:
        self.burners = burners
        self.marks: list[tuple[int, int, int]] = []

    def mark(self) -> None:
        try:
            fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
            busy, total = sum(fields) - fields[3] - fields[4], sum(fields)
            ours = _jiffies(os.getpid()) + sum(_jiffies(pid) for pid in self.burners)
        except (OSError, ValueError, IndexError):
            busy = total = ours = 0
        self.marks.append((busy, total, ours))

    def between(self, start: int, end: int) -> float:
        (busy0, total0, ours0), (busy1, total1, ours1) = self.marks[start], self.marks[end]
        if total1 <= total0:
            return float("nan")
        return (busy1 - busy0 - (ours1 - ours0)) / (total1 - total0) * (os.cpu_count() or 1)


def _jiffies(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


class Probe:
    """Wraps the memory's lookup and the recorder's writes to time them (these names are the
    same before and after the memory became state, so both can be probed)."""

    def __init__(self) -> None:
        self.lookups: list[tuple[int, float]] = []  # (call, ms)
        self.batches: list[tuple[int, float, int]] = []  # (call, ms, rows)
        self.call = 0

    @contextmanager
    def installed(self) -> Iterator[None]:
        from ipt_cds.storage import memory, recall, store

        patched = [
            (recall.SqliteRecall, "recall", self._sync(recall.SqliteRecall.recall)),
            (recall.PostgresRecall, "recall", self._async(recall.PostgresRecall.recall)),
            (memory.CardMemory, "_recall", self._sync(memory.CardMemory._recall)),
            (store.Store, "record_cards", self._batch(store.Store.record_cards)),
        ]
        saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patched]
        for owner, name, wrapper in patched:
            setattr(owner, name, wrapper)
        try:
            yield
        finally:
            for owner, name, original in saved:
                setattr(owner, name, original)

    def _sync(self, f: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return f(*args, **kwargs)
            finally:
                self.lookups.append((self.call, (time.perf_counter() - started) * 1000))

        return timed

    def _async(self, f: Any) -> Any:
        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await f(*args, **kwargs)
            finally:
                self.lookups.append((self.call, (time.perf_counter() - started) * 1000))

        return timed

    def _batch(self, f: Any) -> Any:
        def timed(store: Any, rows: Any, remembered: Any = ()) -> Any:
            started = time.perf_counter()
            try:
                return f(store, rows, remembered)
            finally:
                ms = (time.perf_counter() - started) * 1000
                self.batches.append((self.call, ms, len(rows) + len(remembered)))

        return timed

    def figures(self, calls: int) -> dict[str, Any]:
        def lookup(calls_in: range) -> float:
            per_call: dict[int, float] = {}
            for call, ms in self.lookups:
                if call in calls_in:
                    per_call[call] = per_call.get(call, 0.0) + ms
            return percentile(list(per_call.values()), 0.5) if per_call else float("nan")

        def batch(calls_in: range) -> tuple[float, float]:
            mine = [(ms, rows) for call, ms, rows in self.batches if call in calls_in]
            if not mine:
                return float("nan"), float("nan")
            return sum(ms for ms, _ in mine) / len(mine), sum(r for _, r in mine) / len(mine)

        first, last = range(1, EDGE + 1), range(calls - EDGE + 1, calls + 1)
        return {
            "lookup_first_p50_ms": lookup(first),
            "lookup_last_p50_ms": lookup(last),
            "batch_first_ms_rows": batch(first),
            "batch_last_ms_rows": batch(last),
        }


async def run(
    name: str, database_url: str, probe: Probe | None = None, burners: list[int] | None = None
) -> dict[str, Any]:
    hook, calls, fresh, window = SCENARIOS[name]
    site = None if window else no_repeat_site()
    settings = Settings(database_url=database_url, log_level="WARNING", site_file=site)
    app = create_app(settings, tune_process=True)
    stop = await _lifespan(app)
    caller = AsgiCaller(app)
    path = f"/cds-services/ipt-{hook}"
    body = request(EDGE, NOW, hook, SERVER)
    # Warmed up on another patient (another FHIR server's): the measured one starts afresh.
    warm = orjson.dumps({**body, "fhirServer": "https://warm-up.example.org/fhir"})
    for _ in range(50):
        status, answer = await caller.post(path, warm)
        assert status == 200, answer[:300]
    gc.collect()
    gc.freeze()
    times = []
    fixed = orjson.dumps(body)
    others = OtherCpu(burners or [])
    for i in range(1, calls + 1):
        if i in (1, calls - EDGE + 1):
            others.mark()
        if probe is not None:
            probe.call = i
        sent = orjson.dumps({**body, "hookInstance": str(uuid.uuid4())}) if fresh else fixed
        started = time.perf_counter()
        status, answer = await caller.post(path, sent)
        times.append((time.perf_counter() - started) * 1000)
        assert status == 200, answer[:300]
        await asyncio.sleep(0)  # a server's loop runs between requests: the recorder writes
        if i in (EDGE, calls):
            others.mark()
    gc.unfreeze()
    patient = app.state.ipt.memory.pseudonym(SERVER, body["context"]["patientId"])
    await stop()
    first, last = percentile(times[:EDGE], 0.5), percentile(times[-EDGE:], 0.5)
    return {
        **(probe.figures(calls) if probe is not None else {}),
        "scenario": name,
        "calls": calls,
        "first_p50_ms": first,
        "last_p50_ms": last,
        "ratio": last / first,
        "last_p99_ms": percentile(times[-EDGE:], 0.99),
        "memory_rows": _memory_rows(database_url, patient),
        "other_cores_first": others.between(0, 1),
        "other_cores_last": others.between(2, 3),
    }


def _memory_rows(database_url: str, patient: str) -> int:
    """The measured patient's card_memory rows once the recorder wrote the last of them."""
    engine = sqlalchemy.create_engine(database_url)
    count = sqlalchemy.text("SELECT count(*) FROM card_memory WHERE patient = :p")
    with engine.connect() as conn:
        rows = conn.execute(count, {"p": patient}).scalar_one()
    engine.dispose()
    return int(rows)


@contextmanager
def database(kind: str) -> Iterator[str]:
    """A fresh SQLite file, or a fresh schema on the PostgreSQL of the tests."""
    if kind == "sqlite":
        yield f"sqlite:///{Path(tempfile.mkdtemp(prefix='ipt-history-')) / 'store.sqlite3'}"
        return
    schema = f"ipt_history_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(POSTGRES)
    with admin.begin() as conn:
        conn.execute(sqlalchemy.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{POSTGRES}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sqlalchemy.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@contextmanager
def burning(count: int) -> Iterator[list[int]]:
    """CPU-bound processes beside the benchmark (their pids), stopped at the end. Each in a
    session of its own, as another program is: with the kernel's autogroup scheduling a
    session's processes share one group's part of the CPU, so a burner started in ours would
    compete with the benchmark far less than another program does."""
    burners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
        for _ in range(count)
    ]
    try:
        if burners:
            time.sleep(0.5)
        yield [b.pid for b in burners]
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.history", description=__doc__)
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), action="append")
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument(
        "--burn",
        type=int,
        nargs="?",
        const=1,
        default=0,
        help="CPU-bound processes beside it (1 if no number is given)",
    )
    parser.add_argument("--probe", action="store_true", help="time the lookup and the writes")
    parser.add_argument("--json", type=Path, help="also append the figures to this file")
    args = parser.parse_args()
    os.environ.setdefault("IPT_CDS_LOG_LEVEL", "WARNING")
    print(
        "| scenario | database | load | calls | p50 first 200 ms | p50 last 200 ms | ratio "
        "| p99 last 200 ms | memory rows | other processes, cores (first / last 200) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in args.scenario or list(SCENARIOS):
        probe = Probe() if args.probe else None
        with database(args.database) as url, burning(args.burn) as burners:
            if probe is not None:
                with probe.installed():
                    r = asyncio.run(run(name, url, probe, burners))
            else:
                r = asyncio.run(run(name, url, burners=burners))
        r.update(database=args.database, burn=args.burn)
        print(
            f"| {name} | {args.database} | {_load(args.burn)} "
            f"| {r['calls']:,} | {r['first_p50_ms']:.2f} | {r['last_p50_ms']:.2f} "
            f"| {r['ratio']:.2f} | {r['last_p99_ms']:.2f} | {r['memory_rows']:,} "
            f"| {r['other_cores_first']:.1f} / {r['other_cores_last']:.1f} |",
            flush=True,
        )
        if probe is not None:
            (fb, fr), (lb, lr) = r["batch_first_ms_rows"], r["batch_last_ms_rows"]
            print(
                f"|   probe: lookup p50 {r['lookup_first_p50_ms']:.3f} -> "
                f"{r['lookup_last_p50_ms']:.3f} ms; recorder batch {fb:.1f} ms / {fr:.0f} rows "
                f"-> {lb:.1f} ms / {lr:.0f} rows |",
                flush=True,
            )
        if args.json:
            with args.json.open("a") as out:
                out.write(json.dumps(r) + "\n")


def _load(burners: int) -> str:
    if not burners:
        return "quiet"
    return "1 CPU-bound process" if burners == 1 else f"{burners} CPU-bound processes"


if __name__ == "__main__":
    main()
