"""The Spark engine: the local engine's replay as a Spark job, for exports one machine is slow on.

Only where the work runs changes, not what it is: the same ``Kinds`` decide what each line or
Bundle entry is, the same ``Evaluator`` answers each patient, the same ``Tally`` counts, so
``summary.json`` is byte-identical to the local engine's (``cards.csv`` differs in row order).
Where the local engine stages the export in SQLite, this one caches the read export in Spark
(memory, then disk) and groups it by patient with a shuffle. The Medications that prefetch
``_include``s are few next to the patients' own resources: they are collected on the driver
and broadcast. The driver lists the input folder itself (``input_files``), so the folder must be
at the same path on the driver and every executor (a local disk, or a shared mount).
"""

from __future__ import annotations

import logging
import os
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import date
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyspark
from pyspark import StorageLevel
from pyspark.sql import SparkSession

from ipt_cds.knowledge.base import Knowledge
from ipt_cds.ops.config import Settings
from ipt_cds.replay.evaluate import Evaluator, SharedResources
from ipt_cds.replay.local import CHUNK, Progress, Rows
from ipt_cds.replay.source import (
    Item,
    Kinds,
    Problems,
    ReplayInputError,
    display_names,
    input_files,
    left_out,
    open_lines,
)
from ipt_cds.replay.tally import CardRow, InputFacts, Tally, count

if TYPE_CHECKING:
    from pyspark import Broadcast

    from ipt_cds.replay.run import Options

# Hadoop reads these in a path as a list, a glob or a URI scheme, with no escape for the comma.
_UNSAFE_NAME = frozenset(",{}[]*?\\:")
_TEXT = (
    "org.apache.hadoop.mapreduce.lib.input.TextInputFormat",
    "org.apache.hadoop.io.LongWritable",
    "org.apache.hadoop.io.Text",
)
# A line ends at "\n" only, as Python reads it: Hadoop's default also ends one at a lone "\r"
# (and its old mapred API ignores this setting).
_LINES = {"textinputformat.record.delimiter": "\n"}
Pos = tuple[int, int]  # (partition or file, line): sorts as the local Reader reads
Value = tuple[Pos, str, bytes]  # a resource: where it was read, its type, its body
# (patient id, resource), or ("Medication/<id>", resource with the type "": not a patient's)
Found = tuple[str, Value]


@dataclass
class Part:
    """What one partition read besides its resources: the counts of InputFacts. Problem
    places of an NDJSON partition are numbered from its own first line, fixed on the driver."""

    split: int | None  # the NDJSON partition, None for Bundles (numbered by file already)
    physical: int = 0  # every line, blank ones too, as line numbers count them
    lines: int = 0
    resources: Counter[str] = field(default_factory=Counter)
    problems: Problems = field(default_factory=Problems)
    skipped: list[str] = field(default_factory=list)

    def kept(self, entry: Item | str | None, pos: Pos, name: str) -> Iterator[Found]:
        if isinstance(entry, str):
            self.problems.add(entry, (name, pos[1]))
        elif entry is not None:
            self.resources[entry.kind] += 1
            if entry.patient is None:
                yield f"{entry.kind}/{entry.id}", (pos, "", entry.body)
            else:
                yield entry.patient, (pos, entry.kind, entry.body)


@dataclass(frozen=True)
class Params:
    """What an executor's Evaluator is built from (and cached by)."""

    # None: the knowledge base shipped with the package, where each executor installed it.
    knowledge_dir: Path | None
    site_file: Path | None
    scenarios: tuple[str, ...]
    as_of: date


def run(
    options: Options, kinds: Kinds, rows: Rows, progress: Progress, knowledge: Knowledge
) -> tuple[Tally, InputFacts]:
    """``knowledge``: the driver's; each executor loads its own (it does not pickle)."""
    session, ours = _session(options.workers)
    try:
        return _replay(session, options, kinds, rows, progress)
    finally:
        if ours:
            session.stop()


def _session(workers: int) -> tuple[SparkSession, bool]:
    """The session to run on, and whether we started it (and so stop it)."""
    active = SparkSession.getActiveSession()
    if active is not None:
        return active, False
    # Our own progress bar, not Spark's stage bars over it.
    builder = (
        SparkSession.builder.appName("ipt-cds replay")
        .config("spark.ui.showConsoleProgress", "false")
        # Spark's own start-up warnings (loopback hostname, native Hadoop) are not the user's.
        .config("spark.log.level", "ERROR")
    )
    # spark-submit hands its JVM over in this variable, with the master it was given (or its
    # default). Without it we start the JVM ourselves, whose spark.master is always set already,
    # so SparkConf().contains("spark.master") could not tell the two apart.
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        builder = builder.master(f"local[{workers or '*'}]")
        # Spark starts its Python workers with "python3" from PATH unless told: the one running
        # this replay is the one that has the service installed.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    session = builder.getOrCreate()
    # Spark's INFO and WARN lines would scroll our progress bar away.
    session.sparkContext.setLogLevel("ERROR")
    return session, True


def _replay(
    session: SparkSession, options: Options, kinds: Kinds, rows: Rows, progress: Progress
) -> tuple[Tally, InputFacts]:
    sc = session.sparkContext
    root = options.source
    layout, files = input_files(root)
    names = display_names(root, layout, files)
    if layout == "ndjson":
        read, owners, skipped = _ndjson(sc, files, names, kinds)
    else:
        # Read by Python, not binaryFiles: a Bundle is a small file, with nothing to split; so
        # any file name reads, and an unreadable file is skipped as the local Reader does.
        listed = [(i, str(p.absolute()), names[i]) for i, p in enumerate(files)]
        slices = max(sc.defaultParallelism, -(-len(listed) // CHUNK))
        read = sc.parallelize(listed, slices).mapPartitions(partial(_read_bundles, kinds))
        owners, skipped = [], []
    skipped = left_out(root, layout) + skipped
    # Read once: the facts, Medications and patients below all come from this cache.
    read.persist(StorageLevel.MEMORY_AND_DISK)
    progress("resources", 0, 0)
    try:
        parts: list[Part] = []
        medications: dict[str, Value] = {}
        for record in read.filter(_not_own).collect():
            if isinstance(record, Part):
                parts.append(record)
            elif record[0] not in medications or record[1] < medications[record[0]]:
                medications[record[0]] = record[1]  # the first read wins, as in the local engine
        facts = _facts(layout, len(files), parts, owners, skipped)
        progress("resources", sum(facts.resources.values()), 0)
        own = read.filter(_is_own)
        # Per patient id: whether it has a Patient resource, and how many resources it has.
        ids = own.mapValues(_flag).reduceByKey(_either).values().countByValue()
        patients = sum(n for (known, _), n in ids.items() if known)
        orphans = sum(count * n for (known, count), n in ids.items() if not known)
        shared = sc.broadcast({ref: body for ref, (_, _, body) in medications.items()})
        try:
            tally = _evaluate(sc, own, patients, options, shared, rows, progress)
        finally:
            shared.destroy()
    finally:
        read.unpersist()
    return tally, replace(facts, orphans=orphans)


def _ndjson(
    sc: pyspark.SparkContext, files: list[Path], names: list[str], kinds: Kinds
) -> tuple[pyspark.RDD[Any], list[int], list[str]]:
    """Every NDJSON file Spark reads, as one RDD; the file of each of its partitions."""
    rdds: list[pyspark.RDD[Any]] = []
    owners: list[int] = []
    skipped: list[str] = []
    for index, (path, name) in enumerate(zip(files, names, strict=True)):
        if kinds.skips(path):
            skipped.append(name)
            continue
        rdd: pyspark.RDD[Any]
        if path.name.endswith(".gz"):
            # Gunzipped by Python: Hadoop cannot split a gzip either, and so a truncated one is
            # an unreadableFile, what was read before it kept, as in the local Reader.
            rdd = sc.parallelize([str(path.absolute())], 1)
        elif _UNSAFE_NAME & set(str(path.absolute())):
            raise ReplayInputError(
                f"{name}: the spark engine cannot read a path with any of , {{ }} [ ] * ? \\ : "
                "in it (Hadoop reads them as a list, a pattern or a URI); rename it or use "
                "--engine local"
            )
        else:
            rdd = sc.newAPIHadoopFile(f"file://{path.absolute()}", *_TEXT, conf=_LINES)
        rdds.append(rdd)
        owners.extend([index] * rdd.getNumPartitions())
    if not rdds:
        return sc.emptyRDD(), [], skipped
    # One pass, no zipWithIndex (a job per file): each partition numbers its own lines and
    # the driver shifts them by the lines of the file's partitions before it.
    lines = sc.union(rdds).mapPartitionsWithIndex(
        partial(_read_lines, kinds, [(names[i], files[i].name.endswith(".gz")) for i in owners])
    )
    return lines, owners, skipped


def _facts(
    layout: str, files: int, parts: list[Part], owners: list[int], skipped: list[str]
) -> InputFacts:
    problems, resources = Problems(), Counter[str]()
    lines, before = 0, 0
    for part in sorted(parts, key=lambda p: -1 if p.split is None else p.split):
        if part.split is not None:
            first = part.split == 0 or owners[part.split - 1] != owners[part.split]
            before = 0 if first else before
            shift = {
                k: [(n, line + before) for n, line in v] for k, v in part.problems.first.items()
            }
            problems.merge(Problems(dict(part.problems.counts), shift))
            before += part.physical
        else:
            problems.merge(part.problems)
        lines += part.lines
        resources.update(part.resources)
        skipped = skipped + part.skipped
    return InputFacts(layout, files, lines, dict(resources), problems, skipped, 0)


def _evaluate(
    sc: pyspark.SparkContext,
    own: pyspark.RDD[Found],
    patients: int,
    options: Options,
    shared: Broadcast[dict[str, bytes]],
    rows: Rows,
    progress: Progress,
) -> Tally:
    params = Params(
        None if options.knowledge_dir == Settings().knowledge_dir else options.knowledge_dir,
        options.site_file,
        tuple(options.scenarios),
        options.as_of,
    )
    parallel = sc.defaultParallelism
    groups = own.groupByKey(max(parallel, -(-patients // CHUNK)))
    evaluate = partial(_evaluate_part, params, shared)
    tally, done = Tally(), 0
    progress("patients", 0, patients)
    # In waves of as many partitions as there are cores: all of them busy, progress shown as
    # each wave ends, and only one wave's card rows held on the driver at a time.
    for start in range(0, groups.getNumPartitions(), parallel):
        wave = range(start, min(start + parallel, groups.getNumPartitions()))
        for part, found in sc.runJob(groups, evaluate, list(wave)):
            tally.merge(part)
            rows(found)
            done += part.patients
        progress("patients", done, patients)
    return tally


# --- on an executor: module-level functions, shipped by reference -----------------------------


def _read_lines(
    kinds: Kinds, sources: list[tuple[str, bool]], split: int, records: Iterable[Any]
) -> Iterator[Found | Part]:
    """A partition's lines: Hadoop's (offset, text) records, or a gzip file's path."""
    part, (name, gz) = Part(split), sources[split]
    lines = _gunzipped(records) if gz else (text.encode() for _, text in records)
    try:
        for number, raw in enumerate(lines, start=1):
            part.physical = number
            if not raw.strip():
                continue
            part.lines += 1
            yield from part.kept(kinds.line(raw), (split, number), name)
    except (OSError, EOFError):
        part.problems.add("unreadableFile", (name, part.physical + 1))
    yield part


def _gunzipped(paths: Iterable[str]) -> Iterator[bytes]:
    for path in paths:
        with open_lines(Path(path)) as lines:
            yield from lines


def _read_bundles(kinds: Kinds, files: Iterable[tuple[int, str, str]]) -> Iterator[Found | Part]:
    part = Part(None)
    for index, path, name in files:
        entries = kinds.bundle_file(Path(path))
        if entries is None:
            part.skipped.append(name)
            continue
        for number, entry in enumerate(entries, start=1):
            part.lines += 1
            yield from part.kept(entry, (index, number), name)
    yield part


def _not_own(record: Found | Part) -> bool:
    return isinstance(record, Part) or not record[1][1]


def _is_own(record: Found | Part) -> bool:
    return not _not_own(record)


def _flag(value: Value) -> tuple[bool, int]:
    return value[1] == "Patient", 1


def _either(a: tuple[bool, int], b: tuple[bool, int]) -> tuple[bool, int]:
    return a[0] or b[0], a[1] + b[1]


def _evaluate_part(
    params: Params,
    shared: Broadcast[dict[str, bytes]],
    groups: Iterable[tuple[str, Iterable[Value]]],
) -> Iterator[tuple[Tally, list[CardRow]]]:
    # In reading order, as the local engine hands them over: a patient's duplicates count.
    ordered = ((pid, sorted(group)) for pid, group in groups)
    patients = (
        (pid, (body for _, _, body in resources))
        for pid, resources in ordered
        if any(kind == "Patient" for _, kind, _ in resources)  # orphans: counted on the driver
    )
    yield count(_evaluator(params), patients, SharedResources(shared.value.get))


# One per Python worker, which Spark reuses from task to task: loading the knowledge takes
# longer than evaluating a partition of a small export.
_cached: tuple[Params, Evaluator] | None = None


def _evaluator(params: Params) -> Evaluator:
    global _cached
    if _cached is None or _cached[0] != params:
        # The pipeline's warnings about odd resources would be a line per patient in the
        # executors' logs; a replay reports in its summary instead.
        logging.getLogger("ipt_cds").setLevel(logging.ERROR)
        if _cached is not None:
            _cached[1].close()
        _cached = (
            params,
            Evaluator(
                params.knowledge_dir or Settings().knowledge_dir,
                params.site_file,
                list(params.scenarios),
                params.as_of,
            ),
        )
    return _cached[1]
