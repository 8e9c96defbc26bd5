"""A search as it is asked of one server (ipt_cds/fhir/capabilities.py, searches.py), the filters
applied to what it answers (filters.py), and the references read by id (references.py)."""

from __future__ import annotations

from typing import Any

import pytest

from ipt_cds.fhir.capabilities import Capabilities, CapabilityCache
from ipt_cds.fhir.filters import SearchFilter
from ipt_cds.fhir.references import missing
from ipt_cds.fhir.searches import Plan

from .test_fhir_servers import capability_statement

MEDICATIONS = (
    "MedicationRequest?patient=Patient/p1&intent=order,plan&status=active,on-hold"
    "&_include=MedicationRequest:medication"
)
US_CORE = Capabilities.parse(capability_statement(without=("MedicationStatement",)))


def test_a_statement_lists_what_the_server_offers() -> None:
    assert US_CORE is not None
    assert US_CORE.offers_type("MedicationRequest")
    assert not US_CORE.offers_type("MedicationStatement")


@pytest.mark.parametrize(
    "answer",
    [
        {"resourceType": "Bundle", "type": "searchset"},  # Medplum's /metadata
        {"resourceType": "CapabilityStatement", "rest": [{"mode": "client", "resource": []}]},
        {"resourceType": "CapabilityStatement", "rest": "nonsense"},
        "not even an object",
    ],
)
def test_anything_else_says_nothing_about_the_server(answer: Any) -> None:
    assert Capabilities.parse(answer) is None


def test_a_search_is_shaped_to_what_the_server_lists() -> None:
    plan = Plan.make("medications", MEDICATIONS, US_CORE)
    # No _include is listed: it is left out (the Medications are read by id).
    assert plan.first.text == (
        "MedicationRequest?patient=Patient/p1&intent=order,plan&status=active,on-hold"
    )
    assert plan.simpler is not None
    assert plan.simpler.text == "MedicationRequest?patient=Patient/p1&intent=order,plan"
    assert plan.filter.matches({"status": "active", "intent": "order"})


def test_a_parameter_the_server_does_not_list_is_left_to_the_filters() -> None:
    statement = capability_statement()
    statement["rest"][0]["resource"][3]["searchParam"] = [{"name": "patient"}]  # MR
    plan = Plan.make("medications", MEDICATIONS, Capabilities.parse(statement))
    assert plan.first.text == "MedicationRequest?patient=Patient/p1"
    assert plan.simpler is None, "nothing simpler to ask"
    assert not plan.filter.matches({"status": "stopped", "intent": "order"})


def test_a_type_the_server_lacks_is_not_asked() -> None:
    statements = "MedicationStatement?patient=Patient/p1&status=active"
    assert not Plan.make("medicationStatements", statements, US_CORE).offered


def test_without_a_statement_the_search_is_sent_as_written() -> None:
    plan = Plan.make("medications", MEDICATIONS, None)
    assert plan.first.text == MEDICATIONS
    assert plan.simpler is not None
    assert "_include" not in plan.simpler.text
    assert "status" not in plan.simpler.text


def test_a_read_has_nothing_simpler() -> None:
    plan = Plan.make("patient", "Patient/p1", US_CORE)
    assert (plan.first.is_read, plan.simpler, bool(plan.filter)) == (True, None, False)


def test_the_filters_drop_matches_the_search_did_not_ask_for() -> None:
    search = SearchFilter.of("status=active&code=http://loinc.org|44261-6,|x")
    page = {
        "resourceType": "Bundle",
        "entry": [
            {"resource": _obs("o1", "active", "http://loinc.org", "44261-6")},
            {"resource": _obs("o2", "cancelled", "http://loinc.org", "44261-6")},
            {"resource": _obs("o3", "active", "http://loinc.org", "1234-5")},
            {"resource": _obs("o4", "active", "", "x")},
            {"resource": {"resourceType": "Observation", "id": "o5"}},  # no status, no code
            {"resource": {"resourceType": "Medication", "id": "included"}},
            {"resource": {"resourceType": "OperationOutcome"}},
        ],
    }
    kept = search.apply(page, "Observation")["entry"]
    assert [e["resource"].get("id") for e in kept] == ["o1", "o4", "o5", "included", None]
    assert not search.matches(_obs("o5", "", "", "")), "a server's search would not match it"


@pytest.mark.parametrize(
    "coding",
    [
        {"system": "urn:oid:2.16.840.1.113883.6.1", "code": "44261-6"},  # LOINC by its OID
        {"system": "http://loinc.org", "code": " 44261-6 "},
    ],
)
def test_an_answer_the_service_filters_is_read_as_the_facts_read_it(
    coding: dict[str, Any],
) -> None:
    """What the facts would count, the service's own filter keeps (ipt_cds/clinical/reader.py
    ``codings``); replay's answers stay those of a server, which compares as written."""
    search = SearchFilter.of("code=http://loinc.org|44261-6")
    observation = {"resourceType": "Observation", "id": "o1", "code": {"coding": [coding]}}
    assert search.matches(observation, lenient=True)
    one = {**observation, "code": {"coding": coding}}  # one coding sent as an object
    assert search.matches(one, lenient=True)
    assert not search.matches(observation), "a server's search compares as written"
    other = {**observation, "code": {"coding": [{**coding, "code": "x"}]}}
    assert not search.matches(other, lenient=True)


def test_a_code_sent_as_a_number_or_a_status_in_capitals_is_kept() -> None:
    search = SearchFilter.of("status=active&code=http://snomed.info/sct|88848003")
    coding = {"system": "urn:oid:2.16.840.1.113883.6.96", "code": 88848003}
    procedure = {"resourceType": "Procedure", "status": "Active", "code": {"coding": [coding]}}
    assert search.matches(procedure, lenient=True)
    assert not search.matches(procedure)
    assert not search.matches({**procedure, "status": "stopped"}, lenient=True)


def test_a_page_the_filters_keep_whole_is_the_same_page() -> None:
    page = {"resourceType": "Bundle", "entry": [{"resource": _obs("o1", "active", "s", "c")}]}
    assert SearchFilter.of("status=active").apply(page, "Observation") is page


def test_references_missing_from_the_answer() -> None:
    orders = [
        _order("m1", "Medication/d1"),
        _order("m2", "https://ehr.example.org/fhir/Medication/d2"),
        _order("m3", "https://elsewhere.example.org/fhir/Medication/d3"),  # not this server's
        _order("m4", "#contained"),
        _order("m5", "Medication/d5"),
        _order("m6", "Medication/d1"),
        {"resourceType": "Medication", "id": "d5"},
    ]
    assert missing(MEDICATIONS, orders, "https://ehr.example.org/fhir") == [
        "Medication/d1",
        "Medication/d2",
    ]
    assert missing("MedicationRequest?patient=Patient/p1", orders, None) == [], "no _include"


def test_the_cache_keeps_a_statement_for_its_lifetime_and_a_bounded_number() -> None:
    cache = CapabilityCache(size=2, lifetime_seconds=3600)
    cache.put("a", US_CORE)
    cache.put("b", None)
    assert cache.get("a") == (True, US_CORE)
    cache.put("c", None)  # "b" was used least recently
    assert cache.get("b") == (False, None)
    cache.put("a", US_CORE, seconds=-1)  # already out of date
    assert cache.get("a") == (False, None)
    assert cache.get("c") == (True, None)


def _obs(oid: str, status: str, system: str, code: str) -> dict[str, Any]:
    coding = {"system": system, "code": code} if system else {"code": code}
    concept = {"coding": [coding]}
    return {"resourceType": "Observation", "id": oid, "status": status, "code": concept}


def _order(oid: str, reference: str) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": oid,
        "medicationReference": {"reference": reference},
    }


@pytest.mark.parametrize(
    "resource",
    [
        {"resourceType": "Observation", "status": ["final"], "code": {"coding": [{"code": "x"}]}},
        {"resourceType": "Observation", "status": {"a": 1}, "code": None},
        {"resourceType": "Observation", "code": {"coding": [{"code": ["44261-6"], "system": 7}]}},
        {"resourceType": "Observation", "code": [{"coding": {"code": "44261-6"}}]},
    ],
    ids=["status-list", "status-object", "code-list", "coding-object"],
)
def test_the_filters_are_total_over_what_a_server_may_send(resource: dict[str, Any]) -> None:
    """Found by tests/test_mutations.py: a list where a code belongs raised TypeError (unhashable),
    which made the whole read unreadable. Whatever the shape, the filter answers."""
    search = SearchFilter.of("status=final&code=http://loinc.org|44261-6")
    page = {"resourceType": "Bundle", "entry": [{"resource": resource}]}
    kept = search.apply(page, "Observation")["entry"]
    assert isinstance(kept, list)
    assert search.matches(resource) is False
