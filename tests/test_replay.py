"""The population replay end to end on exports built here: what it reads, skips, counts and
writes, on the local engine (the Spark engine's equality is tests/test_replay_spark.py)."""

from __future__ import annotations

import csv
import gzip
import json
import logging
from pathlib import Path
from typing import Any

import orjson
import pytest

from ipt_cds.cli import main
from ipt_cds.replay.scenarios import SERTRALINE_DRAFT
from ipt_cds.replay.source import ReplayInputError

from .replaying import run_replay

ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


def patient(pid: str, born: str = "1980-03-01") -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "birthDate": born, "gender": "female"}


def mdd(pid: str, rid: str, code: str = "F32.1") -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": rid,
        "subject": {"reference": f"Patient/{pid}"},
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": "active",
                }
            ]
        },
        "code": {"coding": [{"system": ICD10, "code": code}]},
        "recordedDate": "2026-10-01",
    }


def phq9(pid: str, rid: str, total: int, item9: int | None = None) -> list[dict[str, Any]]:
    out = [
        {
            "resourceType": "Observation",
            "id": rid,
            "status": "final",
            "subject": {"reference": f"Patient/{pid}"},
            "code": {"coding": [{"system": LOINC, "code": "44261-6"}]},
            "effectiveDateTime": "2026-11-20",
            "valueInteger": total,
        }
    ]
    if item9 is not None:
        out.append({**out[0], "id": f"{rid}-9", "valueInteger": item9})
        out[1]["code"] = {"coding": [{"system": LOINC, "code": "44260-8"}]}
    return out


def prescription(status: str, **drug: Any) -> dict[str, Any]:
    """Patient a's sertraline prescription; ``drug`` says how the drug is named. Its dose is the
    replay's sertraline draft's, so that signing that draft renews it (a dose change, or a dose
    one of them does not state, would be a new start)."""
    return {
        "resourceType": "MedicationRequest",
        "id": "a-m",
        "status": status,
        "intent": "order",
        "subject": {"reference": "Patient/a"},
        "authoredOn": "2026-10-01",
        "dosageInstruction": SERTRALINE_DRAFT["dosageInstruction"],
        **drug,
    }


def write_ndjson(path: Path, rows: list[Any]) -> None:
    text = b"".join((row if isinstance(row, bytes) else orjson.dumps(row)) + b"\n" for row in rows)
    path.write_bytes(gzip.compress(text) if path.name.endswith(".gz") else text)


@pytest.fixture
def export(tmp_path: Path) -> Path:
    """Three patients in a Bulk layout with numbered parts, gzip, and what a real export has
    wrong: unparsable lines, a resource naming no patient, one whose patient is missing."""
    root = tmp_path / "export"
    root.mkdir()
    write_ndjson(root / "Patient.ndjson", [patient("a"), patient("b", "2012-01-01")])
    write_ndjson(root / "Patient.2.ndjson.gz", [patient("c", "1950-06-01")])
    write_ndjson(
        root / "Condition.ndjson",
        [mdd("a", "a-1"), b"{not json", mdd("b", "b-1"), {"resourceType": "Condition"}],
    )
    write_ndjson(root / "Condition.2.ndjson", [mdd("c", "c-1", "F33.1"), mdd("zz", "zz-1")])
    write_ndjson(
        root / "Observation.ndjson",
        [*phq9("a", "a-o", 12, 2), *phq9("c", "c-o", 16), b"[1, 2]", b""],
    )
    # A file of claims is not parsed beyond its first line: its broken line is not counted.
    write_ndjson(root / "Claim.ndjson", [{"resourceType": "Claim", "id": "c"}, b"{broken"])
    # A name is not a type: this one holds Patients, and is read.
    write_ndjson(root / "Extra.ndjson", [patient("d", "1990-01-01")])
    return root


def read_csv(out: Path) -> list[dict[str, str]]:
    with (out / "cards.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_an_export_is_read_counted_and_replayed(export: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    finished = run_replay(export, out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary == finished.summary
    assert summary["patients"] == 4
    read = summary["input"]
    assert read["resources"] == {"Condition": 4, "Observation": 3, "Patient": 4}
    assert read["skippedFiles"] == ["Claim.ndjson"]
    assert read["problems"] == {
        "unparsable": {"count": 2, "first": ["Condition.ndjson:2", "Observation.ndjson:4"]},
        "withoutPatient": {"count": 1, "first": ["Condition.ndjson:4"]},
        "patientNotInExport": {"count": 1, "first": []},
    }
    view = summary["scenarios"]["patient-view"]
    assert (view["calls"], view["answered"]) == (4, 4)
    # a: item 9 answered 2 is high suicidal ideation; b is 14 (not an adult); c is 76.
    assert view["rules"]["ipt-suicide-risk"]["indicators"] == {"critical": 1}
    assert view["verdicts"]["not-adult"] == 1
    assert sum(int(k) * v for k, v in view["cardsPerCall"].items()) == view["cards"]
    rows = read_csv(out)
    wanted = ("patient-view", "ipt-suicide-risk", "critical", "a", "shown")
    assert wanted in [tuple(row.values()) for row in rows]
    assert len(rows) == sum(s["cards"] for s in summary["scenarios"].values())
    assert "Replayed 4 patients x 3 scenarios as of 2026-11-25" in finished.paragraph
    assert (
        "Skipped from the input: lines or entries that are not a FHIR resource: 2 (first at "
        "Condition.ndjson:2, Observation.ndjson:4); resources naming no patient (or one whose "
        "id is not a FHIR id): 1 (first at Condition.ndjson:4); resources of patients not in "
        "the export: 1." in finished.paragraph
    )


def test_the_summary_does_not_depend_on_the_workers(export: Path, tmp_path: Path) -> None:
    one = run_replay(export, tmp_path / "one", workers=1)
    two = run_replay(export, tmp_path / "two", workers=2)
    assert (tmp_path / "one" / "summary.json").read_bytes() == (
        tmp_path / "two" / "summary.json"
    ).read_bytes()
    assert one.summary["scenarios"]["order-sign-antidepressant"]["cards"] > 0
    assert sorted(map(str, read_csv(tmp_path / "one"))) == sorted(
        map(str, read_csv(tmp_path / "two"))
    )
    assert two.summary["patients"] == 4


def test_patients_are_pseudonyms_unless_ids_are_asked_for(export: Path, tmp_path: Path) -> None:
    run_replay(export, tmp_path / "p", with_ids=False, key=b"k" * 32)
    run_replay(export, tmp_path / "q", with_ids=False, key=b"k" * 32)
    run_replay(export, tmp_path / "r", with_ids=False)
    first, again, other = (read_csv(tmp_path / d) for d in "pqr")
    names = {row["patient"] for row in first}
    assert names.isdisjoint({"a", "b", "c", "d"})
    assert all(n.startswith("p-") and len(n) == 22 for n in names)
    assert names == {row["patient"] for row in again}, "the same key links two runs"
    assert names.isdisjoint({row["patient"] for row in other}), "a new key: new pseudonyms"


def test_the_scenarios_asked_for_are_the_only_calls(export: Path, tmp_path: Path) -> None:
    finished = run_replay(export, tmp_path / "o", scenarios=["order-sign-ipt"])
    assert list(finished.summary["scenarios"]) == ["order-sign-ipt"]
    assert {row["scenario"] for row in read_csv(tmp_path / "o")} <= {"order-sign-ipt"}


def test_medications_are_included_from_the_shared_file(tmp_path: Path) -> None:
    """Already on sertraline through a Medication resource: signing sertraline is a renewal,
    so no add-IPT card; without the Medication the drug is unknown and the card shows."""
    root = tmp_path / "export"
    root.mkdir()
    write_ndjson(root / "Patient.ndjson", [patient("a")])
    write_ndjson(root / "Condition.ndjson", [mdd("a", "a-1")])
    order = prescription("active", medicationReference={"reference": "Medication/sert"})
    write_ndjson(root / "MedicationRequest.ndjson", [order])
    medication = {
        "resourceType": "Medication",
        "id": "sert",
        "code": {"coding": [{"system": RXNORM, "code": "312941"}]},
    }
    without = run_replay(root, tmp_path / "without", scenarios=["order-sign-antidepressant"])
    write_ndjson(root / "Medication.ndjson", [medication])
    with_it = run_replay(root, tmp_path / "with", scenarios=["order-sign-antidepressant"])
    rules_with = with_it.summary["scenarios"]["order-sign-antidepressant"]["rules"]
    rules_without = without.summary["scenarios"]["order-sign-antidepressant"]["rules"]
    assert "antidepressant-add-ipt" in rules_without
    assert "antidepressant-add-ipt" not in rules_with
    assert with_it.summary["input"]["resources"]["Medication"] == 1


def test_a_stopped_order_is_not_in_the_prefetch(tmp_path: Path) -> None:
    """status=active,on-hold: a stopped sertraline is history, so signing one is a new start."""
    root = tmp_path / "export"
    root.mkdir()
    write_ndjson(root / "Patient.ndjson", [patient("a")])
    write_ndjson(root / "Condition.ndjson", [mdd("a", "a-1")])
    sertraline = {"coding": [{"system": RXNORM, "code": "312941"}]}
    order = prescription("stopped", medicationCodeableConcept=sertraline)
    write_ndjson(root / "MedicationRequest.ndjson", [order])
    stopped = run_replay(root, tmp_path / "s", scenarios=["order-sign-antidepressant"])
    assert (
        "antidepressant-add-ipt"
        in stopped.summary["scenarios"]["order-sign-antidepressant"]["rules"]
    )
    write_ndjson(root / "MedicationRequest.ndjson", [{**order, "status": "active"}])
    active = run_replay(root, tmp_path / "a", scenarios=["order-sign-antidepressant"])
    assert active.summary["scenarios"]["order-sign-antidepressant"]["rules"] == {}


def test_bundles_are_read_as_a_server_stores_their_transactions(tmp_path: Path) -> None:
    """References by urn:uuid: to the Patient (which has no id: the server would give it
    one) and to a Medication are followed; a DELETE entry is nothing to read; files are named
    by number (a Bundle's name is often its patient's)."""
    root = tmp_path / "bundles"
    root.mkdir()
    person = patient("ignored")
    del person["id"]
    condition = mdd("x", "a-1")
    condition["subject"] = {"reference": "urn:uuid:1111"}
    order = prescription("active", medicationReference={"reference": "urn:uuid:4444"})
    order["subject"] = {"reference": "urn:uuid:1111"}
    medication = {"resourceType": "Medication", "code": {"coding": [{"system": RXNORM,
                  "code": "312941"}]}}  # fmt: skip
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": "urn:uuid:1111", "resource": person},
            {"fullUrl": "urn:uuid:2222", "resource": condition},
            {"fullUrl": "urn:uuid:3333", "resource": "not an object"},
            {"fullUrl": "urn:uuid:4444", "resource": medication},
            {"fullUrl": "urn:uuid:5555", "resource": order},
            {"request": {"method": "DELETE", "url": "Condition/old"}},
        ],
    }
    (root / "a.json").write_text(json.dumps(bundle))
    (root / "notes.json").write_text('{"hook": "patient-view"}')
    finished = run_replay(root, tmp_path / "o")
    read = finished.summary["input"]
    assert read["layout"] == "bundles"
    assert read["resources"] == {
        "Condition": 1,
        "Medication": 1,
        "MedicationRequest": 1,
        "Patient": 1,
    }
    assert read["skippedFiles"] == ["bundle-2"]
    assert read["problems"] == {"unparsable": {"count": 1, "first": ["bundle-1:3"]}}
    view = finished.summary["scenarios"]["patient-view"]
    assert view["verdicts"] == {"suitable": 1}
    # On sertraline through the Bundle's Medication: signing sertraline is a renewal.
    signing = finished.summary["scenarios"]["order-sign-antidepressant"]
    assert "antidepressant-add-ipt" not in signing["rules"]
    assert {row["patient"] for row in read_csv(tmp_path / "o")} == {"1111"}


def test_a_truncated_gzip_keeps_what_was_read(tmp_path: Path) -> None:
    root = tmp_path / "export"
    root.mkdir()
    whole = gzip.compress(b"".join(orjson.dumps(patient(f"p{i}")) + b"\n" for i in range(500)))
    (root / "Patient.ndjson.gz").write_bytes(whole[: len(whole) // 2])
    finished = run_replay(root, tmp_path / "o", scenarios=["patient-view"])
    assert finished.summary["input"]["problems"]["unreadableFile"]["count"] == 1
    assert 0 < finished.summary["patients"] < 500


@pytest.mark.parametrize("make", ["missing", "empty", "file"])
def test_no_export_is_a_clear_error(make: str, tmp_path: Path) -> None:
    source = tmp_path / "export"
    if make == "empty":
        source.mkdir()
    elif make == "file":
        source.write_text("x")
    with pytest.raises(ReplayInputError, match=r"folder|nothing to replay"):
        run_replay(source, tmp_path / "out")
    assert not (tmp_path / "out" / "summary.json").exists()


def test_the_command_line_replays_and_refuses_clearly(
    export: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code = main(["replay", str(export), "--out", str(out), "--as-of", "2026-11-25"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "Replayed 4 patients x 3 scenarios as of 2026-11-25" in printed.out
    assert {p.name for p in out.iterdir()} == {"summary.json", "cards.csv", "report.html"}
    assert main(["replay", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert f"{tmp_path / 'nowhere'} does not exist" in capsys.readouterr().err
    assert main(["replay", str(export / "Patient.ndjson"), "--out", str(out)]) == 2
    assert "Patient.ndjson is a file, not a folder" in capsys.readouterr().err
    # A second run into the first one's folder: refused unless --force, the results kept.
    before = (out / "summary.json").read_text()
    (out / "summary.json").write_text("{}")
    assert main(["replay", str(export), "--out", str(out), "--as-of", "2026-11-25"]) == 2
    assert f"--out {out} is not empty" in capsys.readouterr().err
    assert (out / "summary.json").read_text() == "{}"
    again = ["replay", str(export), "--out", str(out), "--as-of", "2026-11-25", "--force"]
    assert main(again) == 0
    assert (out / "summary.json").read_text() == before
    assert main(["replay", str(export), "--out", str(out), "--scenarios", "order-select"]) == 2
    assert "unknown scenario 'order-select'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["replay", str(export), "--out", str(out), "--as-of", "30/11/2026"])
    assert "not a day" in capsys.readouterr().err


def _mutations(resource: dict[str, Any]) -> list[dict[str, Any]]:
    """The resource as buggy EHR exports write it: each a copy with one field wrong."""
    deep: dict[str, Any] = {}
    for _ in range(100):
        deep = {"extension": [deep]}
    wrong: list[dict[str, Any]] = [
        {"code": [resource.get("code")]},
        {"category": {"coding": [{"code": "x"}]}},
        {"status": 7},
        {"valueInteger": "twelve"},
        {"valueQuantity": {"value": "9"}},
        {"birthDate": "not-a-date"},
        {"effectiveDateTime": "2026-13-45"},
        {"medicationReference": "Medication/x"},
        {"clinicalStatus": "active"},
        {"id": 12},
        {"extension": [deep]},
        {"code": {"coding": "F32.1"}},
        {"dosageInstruction": [{"timing": {"repeat": {"frequency": "x"}}}]},
    ]
    return [{**resource, **change} for change in wrong]


def test_buggy_exports_are_replayed_without_a_failed_call(tmp_path: Path) -> None:
    """Every fixture patient's resources, each also in a dozen non-conformant variants: the
    calls are answered (odd resources skipped by the tolerant reader), none fails."""
    from .replaying import FIXTURE_BUNDLES

    root = tmp_path / "export"
    root.mkdir()
    lines: list[Any] = []
    for path in sorted(FIXTURE_BUNDLES.glob("*.json"))[::4]:
        for entry in json.loads(path.read_text())["entry"]:
            resource = entry["resource"]
            lines.append(resource)
            if resource["resourceType"] != "Patient":
                lines.extend(_mutations(resource))
    lines.append({**patient("bad id with spaces")})
    lines.append(b"[" * 100_000 + b"]" * 100_000)  # deeper than any parser recurses
    write_ndjson(root / "Everything.ndjson", lines)
    finished = run_replay(root, tmp_path / "out")
    assert finished.summary["patients"] > 60
    for name, scenario in finished.summary["scenarios"].items():
        assert "internal_error" not in scenario["errors"], name
        assert scenario["answered"] >= scenario["calls"] - 1, name
    assert finished.summary["input"]["problems"]["unparsable"]["count"] == 1


def test_a_synthetic_population_replays_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pop, out = tmp_path / "pop", tmp_path / "out"
    assert main(["population", "synth", "--n", "300", "--seed", "3", "--out", str(pop)]) == 0
    assert "Wrote 300 synthetic patients" in capsys.readouterr().out
    assert main(["replay", str(pop), "--out", str(out), "--as-of", "2026-11-25"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["patients"] == 300
    assert summary["input"]["problems"] == {}
    fired = {rule for s in summary["scenarios"].values() for rule in s["rules"]}
    assert len(fired) >= 8, "a synthetic population exercises most rules"
    assert main(["population", "synth", "--n", "5", "--out", str(pop)]) == 2
    assert "is not an empty folder" in capsys.readouterr().err


def test_the_site_profile_applies_silent_and_disabled_rules(tmp_path: Path) -> None:
    """A committee replays the profile it means to switch on: a silent rule is counted as
    what would have shown, a disabled one not at all."""
    from .replaying import FIXTURE_BUNDLES

    site = tmp_path / "site.yaml"
    site.write_text(
        "rules:\n  ipt-suicide-risk: {silent: true}\n  ipt-bipolar: {enabled: false}\n"
        "acknowledge_safety_rules_off: true\n"
    )
    plain = run_replay(FIXTURE_BUNDLES, tmp_path / "plain", scenarios=["patient-view"])
    profiled = run_replay(
        FIXTURE_BUNDLES, tmp_path / "site", scenarios=["patient-view"], site_file=site
    )
    before = plain.summary["scenarios"]["patient-view"]["rules"]
    after = profiled.summary["scenarios"]["patient-view"]["rules"]
    assert before["ipt-suicide-risk"]["cards"] > 0
    assert after["ipt-suicide-risk"]["cards"] == 0
    assert after["ipt-suicide-risk"]["silent"] == before["ipt-suicide-risk"]["cards"]
    assert before["ipt-bipolar"]["cards"] > 0
    assert "ipt-bipolar" not in after
    statuses = {row["status"] for row in read_csv(tmp_path / "site")}
    assert statuses == {"shown", "silent"}
    report = (tmp_path / "site" / "report.html").read_text()
    assert "site.yaml" in report
    assert "<li>rule ipt-suicide-risk: silent, snooze 30 days</li>" in report
    assert "<li>rule ipt-bipolar: disabled, snooze 30 days</li>" in report


def test_the_fixtures_folder_replays_as_it_is(tmp_path: Path) -> None:
    """fhir_fixtures/ whole: its patients are Bundles; its hook requests and expected.json are
    other JSON, listed as skipped (the first few, with their count)."""
    from .replaying import FIXTURE_BUNDLES

    finished = run_replay(FIXTURE_BUNDLES.parent, tmp_path / "o", scenarios=["patient-view"])
    read = finished.summary["input"]
    assert finished.summary["patients"] == len(list(FIXTURE_BUNDLES.glob("*.json")))
    requests = len(list((FIXTURE_BUNDLES.parent / "requests").glob("*.json")))
    assert read["skippedFileCount"] == requests + 1
    assert len(read["skippedFiles"]) == 20
    # By number, never by name: these are named after their patients.
    assert read["skippedFiles"][0] == "bundle-1"
    assert not any("in-" in name or "out-" in name for name in read["skippedFiles"])
    assert read["problems"] == {}


def test_a_byte_order_mark_and_a_stray_byte_do_not_lose_a_resource(tmp_path: Path) -> None:
    root = tmp_path / "export"
    root.mkdir()
    write_ndjson(root / "Patient.ndjson", [b"\xef\xbb\xbf" + orjson.dumps(patient("a"))])
    condition = orjson.dumps({**mdd("a", "a-1"), "note": [{"text": "caf?"}]})
    write_ndjson(root / "Condition.ndjson", [condition.replace(b"caf?", b"caf\xe9")])
    finished = run_replay(root, tmp_path / "o", scenarios=["patient-view"])
    assert finished.summary["patients"] == 1
    assert finished.summary["input"]["problems"] == {}
    assert finished.summary["scenarios"]["patient-view"]["verdicts"] == {"suitable": 1}


def test_a_versioned_medication_reference_is_followed(tmp_path: Path) -> None:
    """Medication/sert/_history/2 names the Medication sert, in replay's include and in the
    pipeline's reading of the order alike."""
    root = tmp_path / "export"
    root.mkdir()
    write_ndjson(root / "Patient.ndjson", [patient("a")])
    write_ndjson(root / "Condition.ndjson", [mdd("a", "a-1")])
    ref = {"reference": "https://ehr.example.org/fhir/Medication/sert/_history/2"}
    write_ndjson(
        root / "MedicationRequest.ndjson", [prescription("active", medicationReference=ref)]
    )
    sertraline = {"coding": [{"system": RXNORM, "code": "312941"}]}
    write_ndjson(root / "Medication.ndjson", [{"resourceType": "Medication", "id": "sert",
                                              "code": sertraline}])  # fmt: skip
    finished = run_replay(root, tmp_path / "o", scenarios=["order-sign-antidepressant"])
    assert finished.summary["scenarios"]["order-sign-antidepressant"]["rules"] == {}


def test_what_a_run_is_given_is_checked_first(export: Path, tmp_path: Path) -> None:
    with pytest.raises(ReplayInputError, match="inside the export"):
        run_replay(export, export / "results")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ReplayInputError, match="is a file"):
        run_replay(export, tmp_path / "file")
    twice = run_replay(export, tmp_path / "o", scenarios=["patient-view", "patient-view"])
    assert list(twice.summary["scenarios"]) == ["patient-view"]
    assert twice.summary["scenarios"]["patient-view"]["calls"] == 4


def test_a_day_before_the_export_and_an_export_without_patients_are_told(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "export"
    root.mkdir()
    write_ndjson(root / "Condition.ndjson", [mdd("a", "a-1")])
    (root / "manifest.json").write_text('{"transactionTime": "2026-11-28T10:00:00Z"}')
    code = main(["replay", str(root), "--out", str(tmp_path / "o"), "--as-of", "2026-11-25"])
    printed = capsys.readouterr()
    assert code == 2
    assert "no patient was replayed" in printed.err
    assert "the export was made on 2026-11-28, after the replay's day 2026-11-25" in printed.out
    assert (tmp_path / "o" / "summary.json").exists()


def test_an_empty_gzip_is_a_damaged_file(tmp_path: Path) -> None:
    root = tmp_path / "export"
    root.mkdir()
    write_ndjson(root / "Patient.ndjson", [patient("a")])
    (root / "Condition.ndjson.gz").write_bytes(b"")
    finished = run_replay(root, tmp_path / "o", scenarios=["patient-view"])
    assert finished.summary["input"]["problems"]["unreadableFile"] == {
        "count": 1,
        "first": ["Condition.ndjson.gz:1"],
    }


def test_synth_dates_from_the_day_given(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("a", "b"):
        out = str(tmp_path / name)
        assert (
            main(["population", "synth", "--n", "40", "--out", out, "--as-of", "2026-01-05"]) == 0
        )
    assert (tmp_path / "a" / "Patient.ndjson").read_bytes() == (
        tmp_path / "b" / "Patient.ndjson"
    ).read_bytes()
    assert "2026-01-05" in (tmp_path / "a" / "manifest.json").read_text()


def test_a_replay_in_this_process_leaves_the_logging_as_it_was(
    export: Path, tmp_path: Path
) -> None:
    logger = logging.getLogger("ipt_cds")
    before = logger.level
    run_replay(export, tmp_path / "o", workers=1)
    assert logger.level == before
