"""The local engine: stage the export in SQLite, then evaluate patients on every core.

Staging is what keeps memory flat: the export streams into one table of (patient, resource)
and an index groups it by patient, so no process ever holds more than a chunk of patients. The
workers read their own chunks straight from the staging file; what comes back to the main
process is counts and the card rows, in patient order, so a rerun writes the same files.
"""

from __future__ import annotations

import logging
import multiprocessing
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import date
from itertools import groupby
from pathlib import Path

from ipt_cds.knowledge.base import Knowledge
from ipt_cds.replay.evaluate import Evaluator, SharedResources
from ipt_cds.replay.source import Item, Kinds, Reader
from ipt_cds.replay.tally import CardRow, InputFacts, Tally, count

# Patients per task: big enough that a task's overhead (a query, a pickle) is noise, small
# enough that the last tasks keep both cores busy.
CHUNK = 400
_BATCH = 5000
Rows = Callable[[list[CardRow]], None]
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Job:
    staging: Path
    knowledge_dir: Path
    site_file: Path | None
    scenarios: list[str]
    as_of: date


def run(
    job: Job,
    source: Path,
    kinds: Kinds,
    workers: int,
    rows: Rows,
    progress: Progress,
    knowledge: Knowledge | None = None,
) -> tuple[Tally, InputFacts]:
    """``knowledge``: the job's, already loaded; forked workers inherit it."""
    global _loaded
    _loaded = knowledge
    read = stage(source, kinds, job.staging, progress)
    chunks = list(_chunks(job.staging))
    patients = sum(n for _, _, n in chunks)
    tally, done = Tally(), 0
    progress("patients", 0, patients)
    for part, found in _evaluated(job, [(a, b) for a, b, _ in chunks], workers):
        tally.merge(part)
        rows(found)
        done += part.patients
        progress("patients", done, patients)
    return tally, read


def stage(source: Path, kinds: Kinds, path: Path, progress: Progress) -> InputFacts:
    reader = Reader(source, kinds)
    counts: dict[str, int] = {}
    with closing(sqlite3.connect(path)) as db:
        db.executescript(
            """
            PRAGMA journal_mode = OFF;
            PRAGMA synchronous = OFF;
            CREATE TABLE resources (patient TEXT NOT NULL, body BLOB NOT NULL);
            CREATE TABLE patients (id TEXT PRIMARY KEY) WITHOUT ROWID;
            CREATE TABLE shared (ref TEXT PRIMARY KEY, body BLOB NOT NULL) WITHOUT ROWID;
            """
        )
        for batch in _batches(reader.items()):
            own = [(i.patient, i.body) for i in batch if i.patient is not None]
            db.executemany("INSERT INTO resources VALUES (?, ?)", own)
            db.executemany(
                "INSERT OR IGNORE INTO patients VALUES (?)",
                [(i.patient,) for i in batch if i.kind == "Patient"],
            )
            db.executemany(
                "INSERT OR IGNORE INTO shared VALUES (?, ?)",
                [(f"{i.kind}/{i.id}", i.body) for i in batch if i.patient is None],
            )
            for item in batch:
                counts[item.kind] = counts.get(item.kind, 0) + 1
            progress("resources", sum(counts.values()), 0)
        db.execute("CREATE INDEX by_patient ON resources (patient)")
        (orphans,) = db.execute(
            "SELECT count(*) FROM resources r "
            "WHERE NOT EXISTS (SELECT 1 FROM patients p WHERE p.id = r.patient)"
        ).fetchone()
        db.commit()
    return InputFacts(
        reader.layout,
        len(reader.files),
        reader.lines,
        counts,
        reader.problems,
        reader.skipped_files,
        orphans,
    )


def _batches(items: Iterator[Item]) -> Iterator[list[Item]]:
    batch: list[Item] = []
    for item in items:
        batch.append(item)
        if len(batch) >= _BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _chunks(staging: Path) -> Iterator[tuple[str, str, int]]:
    """Ranges of patient ids (first, last, how many), in the staging store's order."""
    with closing(sqlite3.connect(staging)) as db:
        ids: list[str] = []
        for (pid,) in db.execute("SELECT id FROM patients ORDER BY id"):
            ids.append(pid)
            if len(ids) == CHUNK:
                yield ids[0], ids[-1], len(ids)
                ids = []
        if ids:
            yield ids[0], ids[-1], len(ids)


def _evaluated(
    job: Job, ranges: list[tuple[str, str]], workers: int
) -> Iterator[tuple[Tally, list[CardRow]]]:
    if workers <= 1 or len(ranges) <= 1:
        _start(job)
        try:
            yield from map(_chunk, ranges)
        finally:
            _stop()
        return
    # fork: the workers start at once, without importing the service again.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    with context.Pool(workers, initializer=_start, initargs=(job,)) as pool:
        yield from pool.imap(_chunk, ranges)


# --- in a worker ---------------------------------------------------------------------------

_worker: _Worker | None = None
_loaded: Knowledge | None = None


class _Worker:
    def __init__(self, job: Job, log_level: int) -> None:
        self.log_level = log_level
        self.evaluator = Evaluator(
            job.knowledge_dir, job.site_file, job.scenarios, job.as_of, _loaded
        )
        self.db = sqlite3.connect(f"file:{job.staging}?mode=ro", uri=True)
        self.medications = SharedResources(self.shared)

    def shared(self, ref: str) -> bytes | None:
        row = self.db.execute("SELECT body FROM shared WHERE ref = ?", (ref,)).fetchone()
        return bytes(row[0]) if row else None

    def chunk(self, first: str, last: str) -> tuple[Tally, list[CardRow]]:
        known = {
            pid
            for (pid,) in self.db.execute(
                "SELECT id FROM patients WHERE id BETWEEN ? AND ?", (first, last)
            )
        }
        rows = self.db.execute(
            "SELECT patient, body FROM resources WHERE patient BETWEEN ? AND ? ORDER BY patient",
            (first, last),
        )
        patients = (
            (pid, (body for _, body in group))
            for pid, group in groupby(rows, key=lambda row: str(row[0]))
            if pid in known
        )
        return count(self.evaluator, patients, self.medications)


def _start(job: Job) -> None:
    global _worker
    # The pipeline's warnings about odd resources would bury the progress bar under a line per
    # patient; a replay reports in its summary instead.
    logger = logging.getLogger("ipt_cds")
    _worker = _Worker(job, logger.level)
    logger.setLevel(logging.ERROR)


def _stop() -> None:
    """Ends the worker run in this process (the in-process path): the caller's logging as it
    was, for whatever the process does next."""
    global _worker
    if _worker is not None:
        _worker.evaluator.close()
        _worker.db.close()
        logging.getLogger("ipt_cds").setLevel(_worker.log_level)
        _worker = None


def _chunk(span: tuple[str, str]) -> tuple[Tally, list[CardRow]]:
    assert _worker is not None, "the worker was not started"
    return _worker.chunk(*span)
