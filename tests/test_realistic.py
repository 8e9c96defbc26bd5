"""The six Synthea patients of tests/data/synthea/ through every hook."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.clinical.record import PatientRecord
from service.devtools.fixtures import prefetch_of
from service.knowledge.base import Knowledge
from service.protocol.models import REQUEST_MODELS

from .conftest import DATA, FHIR_BASE, NOW, AppFactory, FakeFhir, Json, ipt_order, load_json

REALISTIC = DATA / "synthea"
MANIFEST = list(csv.reader((REALISTIC / "MANIFEST.tsv").read_text().splitlines(), delimiter="\t"))
PATIENTS = [(row[1], row[2], row[6]) for row in MANIFEST]
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


@pytest.mark.parametrize(("file", "pid", "summary"), PATIENTS, ids=[p[0][:14] for p in PATIENTS])
@pytest.mark.parametrize("hook", ["patient-view", "order-sign", "order-select"])
def test_synthea_patients_through_every_hook(
    make_client: AppFactory, file: str, pid: str, summary: str, hook: str
) -> None:
    client: TestClient = make_client(FakeFhir())
    service = {"patient-view": "ipt-patient-view"}.get(hook, f"ipt-{hook}")
    response = client.post(f"/cds-services/{service}", json=_request(hook, pid, _resources(file)))
    assert response.status_code == 200, response.text
    rules = [c["source"]["topic"]["code"] for c in response.json()["cards"]]
    depressed = summary.startswith("MDD")
    if hook == "patient-view":
        assert rules == (["ipt-patient-summary"] if depressed else [])
    else:
        assert ("ipt-suitable" in rules) is depressed
        assert ("ipt-no-depression" in rules) is not depressed


def test_manifest_lists_the_six_patients() -> None:
    assert len(PATIENTS) == 6
    assert all(Path(REALISTIC / f).exists() for f, _, _ in PATIENTS)
