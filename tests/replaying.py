"""Test helpers for the population replay: run it on a folder, and read its cards back."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Iterable
from datetime import date
from pathlib import Path
from typing import Any

from ipt_cds.devtools.fixtures import Case
from ipt_cds.ops.config import Settings
from ipt_cds.replay.run import Finished, Options, replay
from ipt_cds.replay.scenarios import SCENARIOS

FIXTURE_BUNDLES = Path(__file__).resolve().parents[1] / "fhir_fixtures" / "patients"
AS_OF = date(2026, 11, 25)  # the day the fixture files are dated from
CardsByCall = dict[tuple[str, str], dict[str, str]]


def run_replay(source: Path, out: Path, **options: Any) -> Finished:
    settings = Settings()
    chosen: dict[str, Any] = {
        "as_of": AS_OF,
        "knowledge_dir": settings.knowledge_dir,
        "with_ids": True,
        "workers": 2,
        **options,
    }
    return replay(Options(source=source, out=out, **chosen), io.StringIO())


def cards_by_call(out: Path) -> CardsByCall:
    """(patient id, scenario) -> {rule: indicator} of the cards shown, from cards.csv."""
    found: CardsByCall = defaultdict(dict)
    with (out / "cards.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["status"] == "shown":
                found[(row["patient"], row["scenario"])][row["rule"]] = row["indicator"]
    return found


def scenario_request(scenario: str, patient_id: str, service_hook: str) -> dict[str, Any]:
    """The hook call a scenario stands for, written as an EHR writes one (no prefetch)."""
    context: dict[str, Any] = {"userId": "Practitioner/example", "patientId": patient_id}
    draft = SCENARIOS[scenario].draft
    if draft is not None:
        order = {**draft, "id": "d1", "subject": {"reference": f"Patient/{patient_id}"}}
        context["draftOrders"] = {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"resource": order}],
        }
    return {
        "hook": service_hook,
        "hookInstance": "6a1c8a0e-92f4-4c4c-9d0f-2f7f3b8f7d10",
        "context": context,
    }


def one_per_rule_and_outcome(cases: Iterable[Case]) -> list[Case]:
    """The first ``in-`` and the first ``out-`` case of each rule: a case of every rule either
    way, for the checks that vary a path every case takes alike."""
    seen: set[tuple[str, str]] = set()
    chosen = []
    for case in cases:
        key = (case.rule, case.name.split("-", 1)[0])
        if key not in seen:
            seen.add(key)
            chosen.append(case)
    return chosen
