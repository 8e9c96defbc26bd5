"""The prefetch templates as replay answers them: which searches it can run, and that it
matches as a FHIR server does (statuses, code tokens with and without a system, panels by their
own code only)."""

from __future__ import annotations

import pytest

from ipt_cds.knowledge.base import Knowledge
from ipt_cds.protocol.models import Service
from ipt_cds.replay.search import ReplayQueryError, compile_searches

from .test_replay import LOINC, mdd, phq9

SNOMED = "http://snomed.info/sct"


def _service(prefetch: dict[str, str]) -> Service:
    return Service(hook="patient-view", id="s", description="d", prefetch=prefetch)


@pytest.mark.parametrize(
    ("template", "why"),
    [
        ("Observation?patient={{context.patientId}}&date=ge2026", "parameter 'date'"),
        ("Condition?code=F32.1", "restricted to the context patient"),
        ("Condition?patient=other", "context patient only"),
        ("MedicationRequest?patient={{context.patientId}}&_include=X:y", "_include=X:y"),
        ("Patient/{{context.patientId}}/_history", "read and searches only"),
        ("Condition?patient={{context.patientId}}&_summary=count", "parameter '_summary'"),
    ],
)
def test_a_prefetch_replay_cannot_answer_is_refused(template: str, why: str) -> None:
    with pytest.raises(ReplayQueryError, match=why):
        compile_searches(_service({"k": template}))


def test_searches_filter_by_status_code_and_system() -> None:
    (search,) = compile_searches(
        _service(
            {
                "o": "Observation?subject=Patient/{{context.patientId}}&status=final"
                "&code=http://loinc.org|44261-6,89204-2&_count=50"
            }
        )
    )
    total = phq9("a", "o1", 10)[0]
    other_system = {
        **total,
        "id": "o2",
        "code": {"coding": [{"system": SNOMED, "code": "44261-6"}]},
    }
    bare = {**total, "id": "o3", "code": {"coding": [{"system": "x", "code": "89204-2"}]}}
    amended = {**total, "id": "o4", "status": "amended"}
    own = {"Observation": [total, other_system, bare, amended]}
    bundle = search.answer("a", own, lambda ref: None)
    assert [e["resource"]["id"] for e in bundle["entry"]] == ["o1", "o3"]
    assert bundle["total"] == 2
    assert search.answer("a", {}, lambda ref: None) == {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": 0,
    }


def test_the_shipped_observation_search_finds_phq9_panels_as_a_server_does(
    knowledge: Knowledge,
) -> None:
    """Version 3: the template asks for the panels by their own code; like a server's ``code``
    search, replay does not look inside components (that is the ``component-code`` parameter)."""
    service = knowledge.services["ipt-patient-view"]
    (search,) = [s for s in compile_searches(service) if s.kind == "Observation"]
    total = phq9("a", "total", 12)[0]
    panel = {**total, "id": "panel", "code": {"coding": [{"system": LOINC, "code": "44249-1"}]}}
    panel["component"] = [{"code": total["code"], "valueInteger": 12}]
    teen = {**panel, "id": "teen", "code": {"coding": [{"system": LOINC, "code": "89206-7"}]}}
    item1 = {**total, "id": "item1", "code": {"coding": [{"system": LOINC, "code": "44250-9"}]}}
    # A total inside an Observation of another code is not found by a code search.
    vitals = {**panel, "id": "vitals", "code": {"coding": [{"system": LOINC, "code": "8867-4"}]}}
    own = {"Observation": [total, panel, teen, item1, vitals]}
    bundle = search.answer("a", own, lambda ref: None)
    assert [e["resource"]["id"] for e in bundle["entry"]] == ["total", "panel", "teen", "item1"]


def test_token_forms_match_as_a_server_matches_them() -> None:
    (search,) = compile_searches(
        _service(
            {"c": "Condition?patient={{context.patientId}}&code=|F32.1,http://snomed.info/sct|"}
        )
    )
    without_system = {**mdd("a", "c1"), "code": {"coding": [{"code": "F32.1"}]}}
    icd = mdd("a", "c2")  # F32.1 in ICD-10-CM: not "without a system"
    snomed = {**mdd("a", "c3"), "code": {"coding": [{"system": SNOMED, "code": "35489007"}]}}
    bundle = search.answer("a", {"Condition": [without_system, icd, snomed]}, lambda ref: None)
    assert [e["resource"]["id"] for e in bundle["entry"]] == ["c1", "c3"]
