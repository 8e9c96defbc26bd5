"""The cards themselves: CDS Hooks conformance, evidence, and suggestions that are valid FHIR R4."""

from __future__ import annotations

import importlib
from collections import Counter
from typing import Any

import pytest
from fhir.resources.R4B.fhirresourcemodel import FHIRResourceModel
from fhir.resources.R4B.servicerequest import ServiceRequest

from service.devtools.fixtures import Case, load_cases
from service.protocol.vocabulary import INDICATOR_RANK, RULE_SYSTEM, SUMMARY_MAX_CHARS

from .conftest import FHIR_BASE, NOW, SERVICE_OF_HOOK, AppFactory, Json

CASES = [c for c in load_cases() if c.name.startswith("in-")]
EMPTY: tuple[Any, ...] = (None, "", [], {})


def _walk_no_empty(value: Any, where: str) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            assert v not in EMPTY, f"{where}.{k} is empty"
            _walk_no_empty(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _walk_no_empty(v, f"{where}[{i}]")


def _call(make_client: AppFactory, case: Case) -> list[Json]:
    client = make_client()
    body = case.request(NOW, FHIR_BASE)
    response = client.post(f"/cds-services/{SERVICE_OF_HOOK[case.hook]}", json=body)
    assert response.status_code == 200, response.text
    cards: list[Json] = response.json()["cards"]
    return cards


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_cards_conform_to_cds_hooks_and_cite_evidence(make_client: AppFactory, case: Case) -> None:
    cards = _call(make_client, case)
    order = INDICATOR_RANK
    assert [order[c["indicator"]] for c in cards] == sorted(order[c["indicator"]] for c in cards)
    for card in cards:
        _walk_no_empty(card, card["source"]["topic"]["code"])
        assert len(card["summary"]) <= SUMMARY_MAX_CHARS < 140
        assert card["uuid"]
        topic = card["source"]["topic"]
        assert topic["system"] == RULE_SYSTEM
        assert topic["display"]
        assert (
            "**Evidence:** Interpersonal Psychotherapy (IPT) for depressed adults, ["
            in card["detail"]
        )
        assert "{{" not in card["detail"]
        assert "{%" not in card["detail"]
        if card["indicator"] != "info":
            assert card["overrideReasons"], "warning and critical cards offer override reasons"
        else:
            assert "overrideReasons" not in card
        if "suggestions" in card:
            assert card["selectionBehavior"] == "at-most-one"
            for suggestion in card["suggestions"]:
                assert suggestion["uuid"]
                for action in suggestion["actions"]:
                    _check_action(action, case)


def _check_action(action: Json, case: Case) -> None:
    if action["type"] == "delete":
        assert action["resourceId"].startswith("ServiceRequest/")
        assert action["resourceId"].split("/")[1].startswith(case.patient_id)
        return
    resource = ServiceRequest.model_validate(action["resource"])
    assert resource.status == "draft"
    assert resource.intent == "order"
    assert resource.code is not None
    assert resource.code.coding is not None
    assert (resource.code.coding[0].system, resource.code.coding[0].code) == (
        "http://snomed.info/sct",
        "443730003",
    )
    assert resource.category is not None
    assert resource.category[0].coding is not None
    assert resource.category[0].coding[0].code == "409063005"
    assert resource.subject.reference == f"Patient/{case.patient_id}"
    assert resource.reasonReference, "the depression Condition is the reason"
    assert resource.reasonReference[0].reference is not None
    assert resource.reasonReference[0].reference.startswith(f"Condition/{case.patient_id}")
    assert resource.note, "the note carries the format"


def test_there_are_cases_with_each_kind_of_action(make_client: AppFactory) -> None:
    kinds: set[str] = set()
    for case in CASES:
        for card in _call(make_client, case):
            for suggestion in card.get("suggestions", []):
                kinds.update(a["type"] for a in suggestion["actions"])
    assert kinds == {"create", "delete"}


def test_every_suggested_resource_of_every_case_is_valid_fhir_r4(make_client: AppFactory) -> None:
    """Over all the cases, in- and out- alike (an out- case stays outside one rule, and others
    may suggest): each resource an action carries validates as its R4B model, and between them
    they show both orders the service builds, the acute and the monthly maintenance one."""
    client = make_client()
    built: Counter[tuple[str, bool]] = Counter()
    for case in load_cases():
        body = case.request(NOW, FHIR_BASE)
        response = client.post(f"/cds-services/{SERVICE_OF_HOOK[case.hook]}", json=body)
        assert response.status_code == 200, response.text
        for card in response.json()["cards"]:
            for suggestion in card.get("suggestions", []):
                for action in suggestion["actions"]:
                    if "resource" not in action:
                        continue
                    resource = action["resource"]
                    module = importlib.import_module(
                        f"fhir.resources.R4B.{resource['resourceType'].lower()}"
                    )
                    model: type[FHIRResourceModel] = getattr(module, resource["resourceType"])
                    model.model_validate(resource)
                    built[resource["resourceType"], "occurrenceTiming" in resource] += 1
    assert set(built) == {("ServiceRequest", False), ("ServiceRequest", True)}, built
