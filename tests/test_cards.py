"""The cards themselves: CDS Hooks conformance, evidence, and suggestions that are valid FHIR R4."""

from __future__ import annotations

import importlib
import re
from collections import Counter
from typing import Any

import pytest
from fastapi.testclient import TestClient
from fhir.resources.R4B.fhirresourcemodel import FHIRResourceModel
from fhir.resources.R4B.servicerequest import ServiceRequest

from ipt_cds.devtools.fixtures import Case, load_cases
from ipt_cds.http.app import create_app
from ipt_cds.knowledge.base import Knowledge
from ipt_cds.ops.config import Settings
from ipt_cds.protocol.vocabulary import INDICATOR_RANK, RULE_SYSTEM, SUMMARY_MAX_CHARS

from .conftest import FHIR_BASE, NOW, SERVICE_OF_HOOK, Json

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


@pytest.fixture(scope="module")
def answered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Json]]:
    """Every case's cards, as one service answers them over HTTP (each case is another
    patient); once per visit off, so that no case's cards depend on the cases before it."""
    folder = tmp_path_factory.mktemp("cards")
    site = folder / "site.yaml"
    site.write_text("repeat_window_hours: 0\n")
    settings = Settings(
        database_url=f"sqlite:///{folder / 'store.sqlite3'}",
        fhir_retries=0,
        fhir_allowlist=[FHIR_BASE],
    )
    knowledge = Knowledge.load(settings.knowledge_dir, site)
    out: dict[str, list[Json]] = {}
    with TestClient(create_app(settings, clock=lambda: NOW, knowledge=knowledge)) as client:
        for case in load_cases():
            body = case.request(NOW, FHIR_BASE)
            response = client.post(f"/cds-services/{SERVICE_OF_HOOK[case.hook]}", json=body)
            assert response.status_code == 200, response.text
            out[case.name] = response.json()["cards"]
    return out


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_cards_conform_to_cds_hooks_and_cite_evidence(
    answered: dict[str, list[Json]], case: Case
) -> None:
    cards = answered[case.name]
    order = INDICATOR_RANK
    assert [order[c["indicator"]] for c in cards] == sorted(order[c["indicator"]] for c in cards)
    for card in cards:
        _walk_no_empty(card, card["source"]["topic"]["code"])
        assert len(card["summary"]) <= SUMMARY_MAX_CHARS < 140
        assert card["uuid"]
        topic = card["source"]["topic"]
        assert topic["system"] == RULE_SYSTEM
        assert topic["display"]
        assert card["source"]["url"].endswith(f"/evidence/{topic['code']}")
        # Every card says what its advice rests on: the topic, or (the suicide card's assessment
        # and safety plan) standard of care from outside it, said so.
        assert "**Evidence:**" in card["detail"]
        assert 'UpToDate topic "Interpersonal psychotherapy for depressed adults"' in card["detail"]
        assert "{{" not in card["detail"]
        assert "{%" not in card["detail"]
        _check_paragraphs(card["detail"])
        if card["indicator"] != "info":
            assert card["overrideReasons"], "warning and critical cards offer override reasons"
        else:
            assert "overrideReasons" not in card
        if "suggestions" in card:
            assert card["selectionBehavior"] in ("at-most-one", "any")
            for suggestion in card["suggestions"]:
                assert suggestion["uuid"]
                for action in suggestion["actions"]:
                    _check_action(action, case)
        _check_no_boilerplate(card["detail"], case)


# A line that may follow another line of the same paragraph: a list item or a heading.
_OWN_LINE = ("- ", "* ", "#", "|", ">")


def _check_paragraphs(detail: str) -> None:
    """Short paragraphs: no blank runs left by omitted sections, and no hard line break inside
    a sentence (only list items and headings start a line of their own)."""
    assert "\n\n\n" not in detail, detail
    assert detail == detail.strip()
    for paragraph in detail.split("\n\n"):
        for line in paragraph.split("\n")[1:]:
            assert line.startswith(_OWN_LINE), f"a sentence broken across lines: {line!r}"


def _check_no_boilerplate(detail: str, case: Case) -> None:
    """No text in favour of IPT that names pregnancy or HIV for a patient who has neither."""
    # The session counts name the HIV telephone trial as a trial (the spec v3 7.2), not as
    # something about the patient.
    detail = detail.replace("(6 by telephone in HIV, ref 55)", "")
    codes = [str(c if isinstance(c, str) else c["code"]) for c in case.conditions]
    loincs = [str(o["loinc"]) for o in case.observations]
    perinatal = any(c.startswith(("Z33", "Z34", "Z39", "O", "F53", "86569001")) for c in codes)
    # "postpartum depression" names a diagnosis; "postpartum" alone speaks of the patient.
    if re.search(r"pregnan|postpartum(?! depression)", detail, re.IGNORECASE):
        assert perinatal or "82810-3" in loincs, detail
    if "HIV" in detail:
        assert any(c.startswith(("B20", "Z21", "B97.35", "O98.7")) for c in codes), detail


def _check_action(action: Json, case: Case) -> None:
    if action["type"] == "delete":
        assert action["resourceId"].startswith("ServiceRequest/")
        assert action["resourceId"].split("/")[1].startswith(case.patient_id)
        return
    resource = ServiceRequest.model_validate(action["resource"])
    assert resource.status == "draft"
    assert resource.intent == "order"
    assert resource.subject.reference == f"Patient/{case.patient_id}"
    assert resource.code is not None
    assert resource.code.coding is not None
    coding = resource.code.coding[0]
    match (coding.system, coding.code):
        case ("http://snomed.info/sct", "443730003"):
            assert resource.category is not None
            assert resource.category[0].coding is not None
            assert resource.category[0].coding[0].code == "409063005"
            assert resource.occurrenceTiming is not None, "the schedule is in occurrenceTiming"
            assert resource.reasonReference, "the depression Condition is the reason"
            assert resource.reasonReference[0].reference is not None
            assert resource.reasonReference[0].reference.startswith(f"Condition/{case.patient_id}")
            assert resource.note, "the note carries the format"
        case ("http://snomed.info/sct", "308477009"):
            assert resource.priority in ("routine", "urgent")
            assert resource.reasonReference or resource.reasonCode, "a referral gives its reason"
        case ("http://snomed.info/sct", "183524004"):
            # Under 18: the psychiatry-service referral, to child and adolescent psychiatry.
            assert resource.priority == "urgent"
            assert resource.code.text == "Child and adolescent psychiatry"
            assert resource.reasonReference or resource.reasonCode, "a referral gives its reason"
        case ("http://loinc.org", "44249-1" | "89206-7"):
            pass
        case other:
            raise AssertionError(f"an order the service does not suggest: {other}")


def test_no_response_has_more_than_three_cards_or_two_referrals(
    answered: dict[str, list[Json]],
) -> None:
    """the spec section 3: aim for at most three cards; at most one card suggests a
    psychiatry referral."""
    for name, cards in answered.items():
        assert len(cards) <= 3, name
        referring = [
            card["source"]["topic"]["code"]
            for card in cards
            for suggestion in card.get("suggestions", [])
            for action in suggestion["actions"]
            if "308477009" in str(action.get("resource", ""))
        ]
        assert len(referring) <= 1, (name, referring)


def test_there_are_cases_with_each_kind_of_action(answered: dict[str, list[Json]]) -> None:
    kinds: set[str] = set()
    for case in CASES:
        for card in answered[case.name]:
            for suggestion in card.get("suggestions", []):
                kinds.update(a["type"] for a in suggestion["actions"])
    assert kinds == {"create", "delete"}


def test_every_suggested_resource_of_every_case_is_valid_fhir_r4(
    answered: dict[str, list[Json]],
) -> None:
    """Over all the cases, in- and out- alike (an out- case stays outside one rule, and others
    may suggest): each resource an action carries validates as its R4B model, and between them
    they show every order the service builds."""
    built: Counter[str] = Counter()
    for cards in answered.values():
        for card in cards:
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
                    built[_kind(resource)] += 1
    assert set(built) == {
        "ipt weekly",
        "ipt monthly",
        "ipt-a",
        "referral",
        "child psychiatry referral",
        "phq9",
        "phq9 teen",
    }


def _kind(resource: Json) -> str:
    code = resource["code"]["coding"][0]["code"]
    if code == "443730003":
        if "adolescents" in resource["code"].get("text", ""):
            return "ipt-a"
        unit = resource["occurrenceTiming"]["repeat"]["periodUnit"]
        return {"wk": "ipt weekly", "mo": "ipt monthly"}[unit]
    return {
        "308477009": "referral",
        "183524004": "child psychiatry referral",
        "44249-1": "phq9",
        "89206-7": "phq9 teen",
    }[code]
