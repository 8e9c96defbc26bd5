"""The six Synthea patients of tests/data/synthea/ through every hook."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ipt_cds.clinical.record import PatientRecord
from ipt_cds.devtools.fixtures import prefetch_of
from ipt_cds.knowledge.base import Knowledge
from ipt_cds.protocol.models import REQUEST_MODELS

from .conftest import DATA, FHIR_BASE, NOW, AppFactory, FakeFhir, Json, ipt_order, load_json

REALISTIC = DATA / "synthea"
MANIFEST = list(csv.reader((REALISTIC / "MANIFEST.tsv").read_text().splitlines(), delimiter="\t"))
PATIENTS = [(row[1], row[2], row[6]) for row in MANIFEST]
# What each patient gets from each hook under knowledge version 2, as (rule, indicator) in the
# order the service returns them. None of the six has a PHQ-9 in the last 90 days, so every
# depressed one is `phq9_due` with severity unknown; the order hooks always carry the IPT draft
# and a new sertraline draft (selected or not, it is in the plan).
DEPRESSED_ORDER_HOOK: list[tuple[str, str]] = [
    # v2: no card. `ipt-suitable` needs a PHQ-9 in 90 days (not `phq9_due`); the
    # `ipt-measure-severity` that replaces it needs no antidepressant in the plan (the sertraline
    # draft is); `ipt-older-adult-acute` likewise; `antidepressant-add-ipt` needs no
    # psychotherapy in the plan (the IPT draft is). v1 answered `ipt-suitable`.
]
NOT_DEPRESSED_ORDER_HOOK = [("ipt-no-depression", "info")]
# v3: from 60 with an antidepressant in the plan (the sertraline draft), an IPT draft gets
# `ipt-cautions`: adding IPT to escitalopram did no better than care management (ref 67).
OLDER_DEPRESSED_ORDER_HOOK = [("ipt-cautions", "info")]
EXPECTED: dict[str, dict[str, list[tuple[str, str]]]] = {
    # Milan Beatty, 53, MDD, fluoxetine active: verdict `suitable`, severity unknown. v2: the
    # summary says to measure severity first and offers a PHQ-9, not an IPT order.
    "8adf7251-257f-4b45-8ef5-0a6b3b9fe0ef": {
        "patient-view": [("ipt-patient-summary", "info")],
        "order-sign": DEPRESSED_ORDER_HOOK,
        "order-select": DEPRESSED_ORDER_HOOK,
    },
    # Sherman McGlynn, 90, MDD not in remission, fluoxetine active: v2 verdict
    # `antidepressant-preferred` (age >= 70, acute, unknown severity counts as above minimal),
    # info because an antidepressant is in the plan.
    "ffb8ae8f-8c7f-4475-8c42-d38419108e94": {
        "patient-view": [("ipt-patient-summary", "info")],
        "order-sign": OLDER_DEPRESSED_ORDER_HOOK,
        "order-select": OLDER_DEPRESSED_ORDER_HOOK,
    },
    # Darron Feeney, 85, MDD not in remission, no antidepressant: v2 verdict
    # `antidepressant-preferred` with none in the plan, so the summary is a warning.
    "577f37fd-d8d5-4b38-8e5f-a5cb8130505a": {
        "patient-view": [("ipt-patient-summary", "warning")],
        "order-sign": OLDER_DEPRESSED_ORDER_HOOK,
        "order-select": OLDER_DEPRESSED_ORDER_HOOK,
    },
    # Gilberto Orosco, 90, sertraline active, no depression; familial early-onset Alzheimer's
    # disease (SNOMED 230265002) active since 1987, which `cognitive_impairment` (dementia, G30)
    # counts (dementia.json takes the Alzheimer's subtypes of the VSAC mental-health sets): an
    # IPT order then also gets `ipt-cognitive-capacity`.
    "d92a3a52-50c3-446f-a3f9-7d34f7680bcb": {
        "patient-view": [],
        "order-sign": [("ipt-cognitive-capacity", "warning"), *NOT_DEPRESSED_ORDER_HOOK],
        "order-select": [("ipt-cognitive-capacity", "warning"), *NOT_DEPRESSED_ORDER_HOOK],
    },
    # Clemente Kreiger and Buster Hoeger: controls, no depression, no antidepressant.
    "d78af07c-9cb9-4f31-9b11-c45a28f2eec8": {
        "patient-view": [],
        "order-sign": NOT_DEPRESSED_ORDER_HOOK,
        "order-select": NOT_DEPRESSED_ORDER_HOOK,
    },
    "e4531916-b162-4f4b-90c2-ce37e132b8d4": {
        "patient-view": [],
        "order-sign": NOT_DEPRESSED_ORDER_HOOK,
        "order-select": NOT_DEPRESSED_ORDER_HOOK,
    },
}
SERTRALINE_DRAFT: Json = {
    "resourceType": "MedicationRequest",
    "id": "ad-draft",
    "status": "draft",
    "intent": "order",
    "medicationCodeableConcept": {
        "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "312940"}]
    },
}


def _resources(file: str) -> list[Json]:
    bundle = load_json(REALISTIC / file)
    return [entry["resource"] for entry in bundle["entry"]]


def _request(hook: str, pid: str, resources: list[Json]) -> Json:
    context: Json = {"userId": "Practitioner/example", "patientId": pid}
    drafts = [ipt_order("ipt-draft"), SERTRALINE_DRAFT]
    if hook != "patient-view":
        context["draftOrders"] = {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [
                {"resource": {**d, "subject": {"reference": f"Patient/{pid}"}}} for d in drafts
            ],
        }
    if hook == "order-select":
        context["selections"] = ["ServiceRequest/ipt-draft"]
    return {
        "hook": hook,
        "hookInstance": f"synthea-{pid}",
        "fhirServer": FHIR_BASE,
        "context": context,
        "prefetch": prefetch_of(resources),
    }


@pytest.mark.parametrize(("file", "pid", "summary"), PATIENTS, ids=[p[0][:14] for p in PATIENTS])
def test_synthea_depression_and_antidepressant_facts(
    knowledge: Knowledge, file: str, pid: str, summary: str
) -> None:
    resources = _resources(file)
    request = REQUEST_MODELS["patient-view"].model_validate(
        _request("patient-view", pid, resources)
    )
    facts = knowledge.factbook.evaluate(
        PatientRecord.build(resources, request), "patient-view", NOW
    )
    depressed = summary.startswith("MDD")
    assert facts["depression"] is depressed
    if depressed:
        assert facts.why["depression"].startswith("Major depression disorder (370143000)")
    on_drug = ("fluoxetine active" in summary) or ("sertraline active" in summary)
    assert facts["on_antidepressant"] is on_drug
    if not depressed:
        assert facts["verdict"] == "not-applicable"


def _every_hook() -> list[Any]:
    cases = []
    for file, pid, summary in PATIENTS:
        for hook in ("patient-view", "order-sign", "order-select"):
            case_id = f"{hook}-{file[:14]}"
            cases.append(pytest.param(file, pid, summary, hook, id=case_id))
    return cases


@pytest.mark.parametrize(("file", "pid", "summary", "hook"), _every_hook())
def test_synthea_patients_through_every_hook(
    make_client: AppFactory, file: str, pid: str, summary: str, hook: str
) -> None:
    client: TestClient = make_client(FakeFhir())
    service = {"patient-view": "ipt-patient-view"}.get(hook, f"ipt-{hook}")
    response = client.post(f"/cds-services/{service}", json=_request(hook, pid, _resources(file)))
    assert response.status_code == 200, response.text
    cards = response.json()["cards"]
    found = [(c["source"]["topic"]["code"], c["indicator"]) for c in cards]
    assert found == EXPECTED[pid][hook], summary
    if hook == "patient-view" and summary.startswith("MDD"):
        # v2: without a PHQ-9 in 90 days the summary offers a PHQ-9 (LOINC 44249-1), no IPT order.
        codes = [
            coding["code"]
            for suggestion in cards[0]["suggestions"]
            for action in suggestion["actions"]
            for coding in action["resource"]["code"]["coding"]
        ]
        assert codes == ["44249-1"]


def test_manifest_lists_the_six_patients() -> None:
    assert len(PATIENTS) == 6
    assert sorted(EXPECTED) == sorted(pid for _, pid, _ in PATIENTS)
    assert all(Path(REALISTIC / f).exists() for f, _, _ in PATIENTS)
