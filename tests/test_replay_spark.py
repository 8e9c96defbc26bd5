"""The Spark engine computes what the local engine computes: on one input, summary.json is the
same text and cards.csv holds the same rows (in another order). The NDJSON input carries what
tells the engines apart if one reads differently: files split over partitions, a gzip part and
one cut short, CRLF and blank lines, a skipped Claim file, unparsable lines, resources without a
patient or whose patient is not in the export, and Medications referenced from
MedicationRequests. Under CI a missing PySpark or Java fails the tests rather than skipping them:
scripts/test installs both."""

from __future__ import annotations

import csv
import gzip
import json
import os
import shutil
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .replaying import FIXTURE_BUNDLES, run_replay

# Left out of scripts/test --quick: A JVM starts: Spark local mode.
pytestmark = pytest.mark.slow

UNPARSABLE = [b"not json", b"{", b"[1, 2]", b'{"resourceType": 7}', b"}{", b"\x00", b'"Patient"']
Row = tuple[str, ...]


@pytest.fixture(scope="module")
def session() -> Iterator[object]:
    """One Spark session for the module (starting one takes many seconds): the engine's own,
    which its runs then find active and leave running."""
    if not os.environ.get("CI"):
        pytest.importorskip("pyspark", reason="the spark engine needs: pip install -e '.[spark]'")
    java_home = os.environ.get("JAVA_HOME")
    if shutil.which("java") is None and not (java_home and Path(java_home, "bin/java").exists()):
        message = "no java: scripts/test installs it (apt-get install openjdk-17-jre-headless)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from ipt_cds.replay import spark as engine

    with pytest.MonkeyPatch.context() as patch:
        # A JVM that runs for seconds: its optimising compiler and parallel collector cost
        # CPU the other test workers need (Spark's start-up here: ~30 s of CPU, ~22 s without).
        patch.setenv("JAVA_TOOL_OPTIONS", "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC")
        started, ours = engine._session(2)
    yield started
    if ours:
        started.stop()


def _ndjson(resources: list[dict[str, Any]]) -> list[bytes]:
    return [json.dumps(r, sort_keys=True).encode() for r in resources]


def _write(folder: Path, name: str, lines: list[bytes], ending: bytes = b"\n") -> None:
    data = b"".join(line + ending for line in lines)
    path = folder / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)


def _export(folder: Path) -> dict[str, list[str]]:
    """Every fixture patient as a Bulk Data export; the places of its problems, by kind."""
    by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for path in sorted(FIXTURE_BUNDLES.glob("*.json")):
        for entry in json.loads(path.read_text())["entry"]:
            by_type[entry["resource"]["resourceType"]].append(entry["resource"])
    medications = []
    for n, request in enumerate(by_type["MedicationRequest"]):
        concept = request.pop("medicationCodeableConcept", None)
        if concept is not None:
            medications.append({"resourceType": "Medication", "id": f"m{n}", "code": concept})
            request["medicationReference"] = {"reference": f"Medication/m{n}"}
    assert medications
    patients = _ndjson(by_type.pop("Patient"))
    conditions = _ndjson(by_type.pop("Condition"))
    observations = _ndjson(by_type.pop("Observation"))
    half = len(conditions) // 2
    first, second = conditions[:half], conditions[half:]
    # A byte-order mark before the first Patient, and a byte that is not UTF-8 in a display:
    # both engines read both resources (Hadoop drops the mark and decodes the byte as U+FFFD).
    patients[0] = b"\xef\xbb\xbf" + patients[0]
    odd = next(i for i, line in enumerate(second) if b'"display": "' in line)
    second[odd] = second[odd].replace(b'"display": "', b'"display": "\xe9', 1)
    bad = iter(UNPARSABLE)
    places = []

    def spoil(name: str, lines: list[bytes], at: int) -> None:
        lines.insert(at, next(bad))
        places.append(f"{name}:{at + 1}")

    # Blank lines before the first spoiled one, which shift the numbers of the lines after them.
    first[3:3] = [b"", b"   "]
    spoil("Condition.ndjson", first, 40)
    first.append(b'{"resourceType": "Condition", "id": "no-subject"}')
    no_subject = f"Condition.ndjson:{len(first)}"
    first.append(b'{"resourceType": "Condition",\r"subject": {"reference": "Patient/elsewhere"}}')
    spoil("Condition.2.ndjson", second, 5)
    spoil("Condition.2.ndjson", second, len(second) - 1)  # in the file's last partition
    spoil("Condition.2.ndjson", second, len(second))
    spoil("Observation.ndjson.gz", observations, 30)
    spoil("Patient.ndjson", patients, 100)
    spoil("Patient.ndjson", patients, len(patients))
    _write(folder, "Patient.ndjson", patients)
    _write(folder, "Condition.ndjson", first, b"\r\n")
    _write(folder, "Condition.2.ndjson", second)
    _write(folder, "Observation.ndjson.gz", observations)
    for kind, resources in by_type.items():
        _write(folder, f"{kind}.ndjson", _ndjson(resources))
    _write(folder, "Medication.ndjson", [*_ndjson(medications), b'{"resourceType":"Medication"}'])
    # The same Medication again, read later: the first read is the one both engines keep.
    _write(folder, "Medication.2.ndjson", _ndjson([{**medications[0], "code": {"text": "?"}}]))
    _write(folder, "Claim.ndjson", [b'{"resourceType": "Claim", "id": "c"}', b"never parsed"])
    # A gzip cut short (a transfer that broke): what it held before the cut is read.
    claims = _ndjson([{"resourceType": "Claim", "id": f"claim-{n}"} for n in range(3000)])
    (folder / "part-7.ndjson.gz").write_bytes(gzip.compress(b"\n".join(claims))[:4000])
    places.sort(key=lambda p: (p.split(":")[0], int(p.split(":")[1])))
    return {"unparsable": places[:5], "withoutPatient": [no_subject]}


def _rows(out: Path) -> Counter[Row]:
    with (out / "cards.csv").open(newline="") as handle:
        return Counter(tuple(row) for row in csv.reader(handle))


def _both(source: Path, out: Path) -> tuple[dict[str, Any], str, str, Path, Path]:
    local, spark = out / "local", out / "spark"
    run_replay(source, local, engine="local")
    finished = run_replay(source, spark, engine="spark")
    texts = [(o / "summary.json").read_text() for o in (local, spark)]
    return finished.summary, texts[0], texts[1], local, spark


def test_the_spark_engine_summarises_an_ndjson_export_as_the_local_one(
    session: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ipt_cds.replay import spark as engine

    export = tmp_path / "export"
    export.mkdir()
    places = _export(export)
    # Splits of 16 kB, so that every file but the gzip one is read as several partitions, and
    # the line numbers go on across them as in the local engine's one pass.
    split = {"mapreduce.input.fileinputformat.split.maxsize": str(16 * 1024)}
    monkeypatch.setattr(engine, "_LINES", {**engine._LINES, **split})
    summary, local_text, spark_text, local, spark = _both(export, tmp_path)
    assert spark_text == local_text
    assert _rows(spark) == _rows(local)
    # Not vacuous: the run read what it was given, and counted each problem.
    assert summary["patients"] > 200
    assert all(s["cards"] > 0 for s in summary["scenarios"].values())
    read = summary["input"]
    assert read["skippedFiles"] == ["Claim.ndjson"]
    assert read["resources"]["Medication"] > 1
    problems = read["problems"]
    assert problems["unparsable"] == {"count": len(UNPARSABLE), "first": places["unparsable"]}
    assert problems["withoutPatient"] == {"count": 1, "first": places["withoutPatient"]}
    assert problems["withoutId"]["count"] == 1
    assert problems["unreadableFile"]["count"] == 1
    assert read["lines"] > sum(read["resources"].values()) + 1000  # read up to the cut
    assert problems["patientNotInExport"]["count"] == 1


def test_the_spark_engine_summarises_bundles_as_the_local_one(
    session: object, tmp_path: Path
) -> None:
    bundles = tmp_path / "bundles"
    for n, path in enumerate(sorted(FIXTURE_BUNDLES.glob("*.json"))[:12]):
        target = bundles / ("a" if n % 2 else "b") / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    (bundles / "notes.json").write_text('{"resourceType": "Patient", "id": "not-a-bundle"}')
    (bundles / "b" / "broken.json").write_text("{")
    summary, local_text, spark_text, local, spark = _both(bundles, tmp_path)
    assert spark_text == local_text
    assert _rows(spark) == _rows(local)
    assert summary["patients"] == 12
    # Named by number: a Bundle file's name is often its patient's.
    assert summary["input"]["skippedFiles"] == ["bundle-7", "bundle-14"]
