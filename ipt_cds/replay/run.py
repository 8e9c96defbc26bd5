"""A population replay from start to end: read, evaluate on an engine, write the results.

``summary.json`` (counts only, the same on every engine), ``cards.csv`` (one row per card and
patient, the patient as a keyed pseudonym unless asked for ids) and ``report.html`` (the
summary with plots, for a CDS committee), and one paragraph for the terminal.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import json
import os
import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any, TextIO

from ipt_cds.knowledge.base import Knowledge
from ipt_cds.knowledge.site_summary import effects
from ipt_cds.ops.progress import ProgressBar
from ipt_cds.replay import local
from ipt_cds.replay.local import Job
from ipt_cds.replay.scenarios import SCENARIOS, ScenarioError, bind
from ipt_cds.replay.search import ReplayQueryError, types_read
from ipt_cds.replay.source import PROBLEMS, Kinds, ReplayInputError, input_files
from ipt_cds.replay.tally import CardRow, InputFacts, Tally, summary


class EngineUnavailable(Exception):
    """The engine asked for is not installed."""


# What stops a replay before it starts, each with a message for the command line.
REPLAY_ERRORS = (ReplayInputError, ReplayQueryError, ScenarioError, EngineUnavailable)
CSV_COLUMNS = ("scenario", "rule", "indicator", "patient", "status")


@dataclass(frozen=True)
class Options:
    source: Path
    out: Path
    as_of: date
    knowledge_dir: Path
    site_file: Path | None = None
    scenarios: list[str] = field(default_factory=lambda: list(SCENARIOS))
    engine: str = "local"
    with_ids: bool = False
    workers: int = 0  # 0: every core
    # The pseudonyms' key: a run's own random one unless given (then runs can be linked).
    key: bytes = b""
    # Write into an --out folder that already holds files (ours there are replaced).
    force: bool = False


@dataclass(frozen=True)
class Finished:
    summary: dict[str, Any]
    seconds: float
    files: tuple[Path, ...]
    paragraph: str


Engine = Callable[[Options, Kinds, local.Rows, local.Progress, Knowledge], tuple[Tally, InputFacts]]


def replay(options: Options, terminal: TextIO) -> Finished:
    started = time.perf_counter()
    # A scenario named twice is one scenario: counted twice, its rates would double.
    options = replace(options, scenarios=list(dict.fromkeys(options.scenarios)))
    knowledge = Knowledge.load(options.knowledge_dir, options.site_file)
    calls = bind(options.scenarios, knowledge.services)
    own, shared = types_read(s for call in calls for s in call.searches)
    kinds = Kinds(own, shared)
    input_files(options.source)  # a missing or empty folder fails before anything is written
    _check_out(options)
    options.out.mkdir(parents=True, exist_ok=True)
    bar = _Progress(terminal)
    csv_path = options.out / "cards.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        pseudonym = _pseudonyms(options)

        def rows(found: list[CardRow]) -> None:
            writer.writerows((s, r, i, pseudonym(p), st) for s, r, i, p, st in found)

        try:
            tally, read = _engine(options.engine)(options, kinds, rows, bar.show, knowledge)
        finally:
            bar.clear()
    result = summary(tally, read, options.as_of.isoformat(), options.scenarios)
    seconds = time.perf_counter() - started
    summary_path = options.out / "summary.json"
    summary_path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    report_path = options.out / "report.html"
    titles = {rule.id: rule.spec.title for rule in knowledge.rulebook.rules}
    site = effects(knowledge.site)
    report_path.write_text(_report(result, options, seconds, titles, site), encoding="utf-8")
    files = (summary_path, csv_path, report_path)
    return Finished(result, seconds, files, paragraph(result, options, seconds))


def _check_out(options: Options) -> None:
    out, source = options.out.resolve(), options.source.resolve()
    if out == source or source in out.parents:
        # A second run would read the first one's results as part of the export.
        raise ReplayInputError(f"--out {options.out} is inside the export: choose another folder")
    if out.exists() and not out.is_dir():
        raise ReplayInputError(f"--out {options.out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not options.force:
        # A committee's earlier results are not overwritten by a second run by mistake.
        raise ReplayInputError(
            f"--out {options.out} is not empty: give a new or empty folder, or add --force to "
            "replace the results in it"
        )


def exported_on(source: Path) -> date | None:
    """The day a Bulk Data export was made, from its manifest's transactionTime, if any."""
    try:
        manifest = json.loads((source / "manifest.json").read_text(encoding="utf-8"))
        return date.fromisoformat(str(manifest["transactionTime"])[:10])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _engine(name: str) -> Engine:
    if name == "spark":
        try:
            from ipt_cds.replay import spark
        except ImportError as exc:
            raise EngineUnavailable(
                f"the spark engine needs PySpark and Java 17: pip install -e '.[spark]' ({exc})"
            ) from None
        return spark.run
    return _local


def _local(
    options: Options,
    kinds: Kinds,
    rows: local.Rows,
    progress: local.Progress,
    knowledge: Knowledge,
) -> tuple[Tally, InputFacts]:
    workers = options.workers or os.cpu_count() or 1
    # Beside the output, not in /tmp: the staging store is as big as the export's used part.
    with tempfile.TemporaryDirectory(prefix=".staging-", dir=options.out) as folder:
        job = Job(
            Path(folder) / "staging.sqlite3",
            options.knowledge_dir,
            options.site_file,
            options.scenarios,
            options.as_of,
        )
        return local.run(job, options.source, kinds, workers, rows, progress, knowledge)


def _pseudonyms(options: Options) -> Callable[[str], str]:
    if options.with_ids:
        return str
    key = options.key or secrets.token_bytes(32)

    def pseudonym(patient_id: str) -> str:
        digest = hmac.new(key, patient_id.encode(), hashlib.sha256).hexdigest()
        return f"p-{digest[:20]}"

    return pseudonym


def _report(
    result: dict[str, Any],
    options: Options,
    seconds: float,
    titles: dict[str, str],
    site: list[str],
) -> str:
    from ipt_cds.replay.report import render

    run = {
        "Engine": options.engine,
        "Input": options.source.name or str(options.source),
        "As of": options.as_of.isoformat(),
        "Scenarios": ", ".join(options.scenarios),
        "Duration": f"{seconds:.1f} s",
        "Site profile": options.site_file.name if options.site_file else "none (defaults)",
    }
    return render(result, run, titles, site)


def paragraph(result: dict[str, Any], options: Options, seconds: float) -> str:
    """The run in one paragraph of plain words, for the end of the terminal output."""
    n = result["patients"]
    parts = [
        f"Replayed {n:,} patients x {len(options.scenarios)} scenarios as of "
        f"{result['asOf']} in {seconds:.1f} s ({options.engine} engine)."
    ]
    for s in result["scenarios"].values():
        critical = s["indicators"].get("critical", 0)
        top = max(s["rules"].items(), key=lambda kv: (kv[1]["cards"], kv[0]), default=None)
        line = (
            f"{s['meaning'][:1].upper()}{s['meaning'][1:]}: {s['cardsPer100']:.1f} cards per 100 "
            f"({s['cards']:,} cards on {s['callsWithCards']:,} of {s['answered']:,} calls"
            f"{f', {critical:,} critical' if critical else ''}"
        )
        depressed = s["withDepression"]
        if depressed["calls"] and depressed["calls"] != s["answered"]:
            line += f"; {depressed['cardsPer100']:.1f} per 100 with depression on record"
        if top is not None:
            line += f"; most often {top[0]}, {top[1]['per100']:.1f} per 100"
        errors = sum(s["errors"].values())
        parts.append(line + (f"; {errors:,} calls refused" if errors else "") + ").")
    made = exported_on(options.source)
    if made is not None and made > options.as_of:
        parts.append(
            f"Note: the export was made on {made}, after the replay's day {options.as_of}; "
            "what was recorded in between was read as if already known."
        )
    problems = result["input"]["problems"]
    if problems:
        each = [
            f"{PROBLEMS.get(kind, kind)}: {p['count']:,}"
            + (f" (first at {', '.join(p['first'][:3])})" if p["first"] else "")
            for kind, p in problems.items()
        ]
        parts.append(f"Skipped from the input: {'; '.join(each)}.")
    parts.append(f"Results in {options.out}: summary.json, cards.csv, report.html.")
    return " ".join(parts)


class _Progress:
    """Staging counts resources (their total is unknown), then a bar over the patients."""

    def __init__(self, terminal: TextIO) -> None:
        self.terminal = terminal
        self.shown = terminal.isatty()
        self.bar: ProgressBar | None = None

    def show(self, phase: str, done: int, total: int) -> None:
        if not self.shown:
            return
        if phase == "resources":
            self.terminal.write(f"\rReading the export: {done:,} resources")
            self.terminal.flush()
            return
        if self.bar is None:
            self.terminal.write("\n")
            self.bar = ProgressBar(self.terminal, total, True)
        self.bar.show(done)

    def clear(self) -> None:
        if self.bar is not None:
            self.bar.clear()
        elif self.shown:
            self.terminal.write("\n")
