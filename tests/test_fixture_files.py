"""fhir_fixtures/: generated from the cases, current, and valid FHIR R4 throughout."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.fhirresourcemodel import FHIRResourceModel

from ipt_cds.devtools.fixture_labels import UCUM
from ipt_cds.devtools.fixtures import FIXTURES, generated_files, load_cases
from ipt_cds.protocol.models import REQUEST_MODELS

from .conftest import DATA, NOW

CASES = load_cases()
FILES = generated_files(CASES)
SYNTHEA = sorted((DATA / "synthea").glob("*.json"))


def test_generated_files_are_current() -> None:
    stale = [rel for rel, text in FILES.items() if (FIXTURES / rel).read_text() != text]
    assert not stale, f"run `ipt-cds fixtures build`: stale {stale[:5]}"
    on_disk = {str(p.relative_to(FIXTURES)) for p in FIXTURES.glob("*/*.json")}
    assert on_disk == {rel for rel in FILES if rel.count("/") == 1}, "files no case makes"


def _validate(resource: dict[str, Any]) -> None:
    module = __import__(f"fhir.resources.R4B.{resource['resourceType'].lower()}", fromlist=["x"])
    model: type[FHIRResourceModel] = getattr(module, resource["resourceType"])
    model.model_validate(resource)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_every_resource_is_valid_fhir_r4(case: Any) -> None:
    bundle = json.loads(FILES[f"patients/{case.name}.json"])
    Bundle.model_validate(bundle)
    assert bundle["type"] == "transaction"
    for entry in bundle["entry"]:
        _validate(entry["resource"])
        resource = entry["resource"]
        assert entry["request"] == {
            "method": "PUT",
            "url": f"{resource['resourceType']}/{resource['id']}",
        }
    for name in (f"requests/{case.name}.json", f"requests/{case.name}.no-prefetch.json"):
        request = json.loads(FILES[name])
        REQUEST_MODELS[request["hook"]].model_validate(request)
        for entry in request["context"].get("draftOrders", {}).get("entry", []):
            _validate(entry["resource"])


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_every_request_carries_valid_fhir_r4(case: Any) -> None:
    """The FHIR inside each request file as a whole: the draftOrders Bundle, and every prefetch
    value (the Patient, the searchset Bundles), entries included."""
    for name in (f"requests/{case.name}.json", f"requests/{case.name}.no-prefetch.json"):
        request = json.loads(FILES[name])
        carried = [v for v in request.get("prefetch", {}).values() if v is not None]
        if "draftOrders" in request["context"]:
            carried.append(request["context"]["draftOrders"])
        assert carried or request["hook"] == "patient-view", name
        for resource in carried:
            _validate(resource)
            for entry in resource.get("entry", []):
                _validate(entry["resource"])
    prefetch = json.loads(FILES[f"requests/{case.name}.json"])["prefetch"]
    assert prefetch["patient"] is not None, "every case's prefetch carries its Patient"


@pytest.mark.parametrize("path", SYNTHEA, ids=lambda p: p.name[:14])
def test_every_synthea_resource_is_valid_fhir_r4(path: Path) -> None:
    """The vendored Synthea patients of tests/test_realistic.py: each resource, and the Bundle
    around them (its entries' fullUrl and request)."""
    bundle = json.loads(path.read_text())
    envelope = [{k: v for k, v in e.items() if k != "resource"} for e in bundle["entry"]]
    Bundle.model_validate({**bundle, "entry": envelope})
    assert bundle["entry"]
    for entry in bundle["entry"]:
        _validate(entry["resource"])


def test_expected_cards_and_readme_cover_every_case() -> None:
    expected = json.loads(FILES["expected.json"])
    assert set(expected) == {c.name for c in CASES}
    readme = FILES["README.md"]
    for case in CASES:
        assert f"| `{case.name}` |" in readme


def test_fixture_ids_are_stable_and_unique() -> None:
    ids: set[str] = set()
    for case in CASES:
        for entry in json.loads(FILES[f"patients/{case.name}.json"])["entry"]:
            ref = entry["request"]["url"]
            assert ref not in ids
            ids.add(ref)
    assert Path(FIXTURES / "cases").is_dir()


def _codings(value: object) -> list[dict[str, object]]:
    if isinstance(value, list):
        return [c for item in value for c in _codings(item)]
    if not isinstance(value, dict):
        return []
    own = [value] if isinstance(value.get("system"), str) and "code" in value else []
    return own + [c for item in value.values() for c in _codings(item)]


@pytest.mark.parametrize("folder", ["patients", "requests"])
def test_every_fixture_patient_has_a_name_and_every_coding_a_display(folder: str) -> None:
    """What the CDS Hooks sandbox and an EHR show: no "Unknown" patient, no blank choice."""
    files = sorted((FIXTURES / folder).glob("*.json"))
    assert files
    for path in files:
        data = json.loads(path.read_text())
        patients = [r for r in _resources(data) if r.get("resourceType") == "Patient"]
        assert all(p.get("name") for p in patients), path.name
        for coding in _codings(data):
            if coding["system"] != UCUM:
                assert coding.get("display"), f"{path.name}: {coding}"


def test_every_fixture_condition_has_a_code_text() -> None:
    """The sandbox's Rx View lists the conditions an order may treat by ``code.text`` only."""
    conditions = [
        r
        for path in sorted((FIXTURES / "patients").glob("*.json"))
        for r in _resources(json.loads(path.read_text()))
        if r.get("resourceType") == "Condition"
    ]
    assert len(conditions) > 100
    for condition in conditions:
        code: Any = condition["code"]
        assert code.get("text") == code["coding"][0]["display"], condition["id"]


def _resources(value: object) -> list[dict[str, object]]:
    if isinstance(value, list):
        return [r for item in value for r in _resources(item)]
    if not isinstance(value, dict):
        return []
    own = [value] if "resourceType" in value else []
    return own + [r for item in value.values() for r in _resources(item)]


def test_building_requests_leaves_the_shared_cases_as_they_were(tmp_path: Path) -> None:
    """load_cases answers the same Case objects to every module of a process: what a request
    is built from must not be written into (the labels go on copies). The cases read afresh,
    from a copy of the folder, are what they must still be."""
    for case in load_cases():
        case.request(NOW, "https://ehr.example.org/fhir", prefetch=True)
    shutil.copytree(FIXTURES / "cases", tmp_path / "cases")
    fresh = [c.model_dump(mode="json") for c in load_cases(tmp_path / "cases")]
    assert [c.model_dump(mode="json") for c in load_cases()] == fresh
