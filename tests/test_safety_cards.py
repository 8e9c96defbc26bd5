"""What the version-3 safety items put on the cards (the spec v3, section 7.1 and 7.3): the
cases' rule ids and indicators are checked by tests/test_rule_cases.py; these tests read the
cards themselves, through the HTTP service, with full prefetch."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from ipt_cds.devtools.fixtures import Case, load_cases

from .conftest import FHIR_BASE, NOW, SERVICE_OF_HOOK, AppFactory, FakeFhir

CASES = {c.name: c for c in load_cases()}
SNOMED = "http://snomed.info/sct"
BOXED = "FDA boxed warning"


def cards_of(client: TestClient, name: str) -> dict[str, dict[str, Any]]:
    case: Case = CASES[name]
    body = case.request(NOW, FHIR_BASE)
    answer = client.post(f"/cds-services/{SERVICE_OF_HOOK[case.hook]}", json=body)
    assert answer.status_code == 200, answer.text
    return {c["source"]["topic"]["code"]: c for c in answer.json()["cards"]}


@pytest.fixture
def client(make_client: AppFactory) -> TestClient:
    return make_client(FakeFhir())


def created(card: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        a["resource"]
        for s in card.get("suggestions", [])
        for a in s["actions"]
        if a["type"] == "create"
    ]


def test_a_psychosis_card_names_the_diagnosis_and_its_referral_cites_it(
    client: TestClient,
) -> None:
    card = cards_of(client, "in-psychosis-puerperal-sertraline")["ipt-psychosis"]
    assert card["indicator"] == "warning"
    assert "Puerperal psychosis (F53.1)" in card["summary"]
    assert "with psychotic features" not in card["summary"]
    (referral,) = created(card)
    assert referral["priority"] == "urgent"
    assert referral["code"]["coding"][0]["code"] == "308477009"
    assert referral["reasonReference"] == [
        {
            "reference": "Condition/in-psychosis-puerperal-sertraline-c0",
            "display": "Puerperal psychosis (F53.1)",
        }
    ]


def test_under_18_the_psychosis_referral_goes_to_child_and_adolescent_psychiatry(
    client: TestClient,
) -> None:
    cards = cards_of(client, "in-psychosis-teen-fluoxetine")
    assert list(cards) == ["ipt-psychosis"]
    card = cards["ipt-psychosis"]
    assert card["indicator"] == "warning"
    (referral,) = created(card)
    assert referral["code"]["coding"][0] == {
        "system": SNOMED,
        "code": "183524004",
        "display": "Referral to psychiatry service",
    }
    assert referral["code"]["text"] == "Child and adolescent psychiatry"
    assert referral["priority"] == "urgent"
    assert card["detail"].count(BOXED) == 1


def test_psychotic_depression_on_chart_open_offers_the_urgent_referral_not_a_phq9(
    client: TestClient,
) -> None:
    card = cards_of(client, "in-summary-psychotic-features")["ipt-patient-summary"]
    assert card["indicator"] == "warning"
    orders = created(card)
    assert [o["code"]["coding"][0]["code"] for o in orders] == ["308477009"]
    assert orders[0]["priority"] == "urgent"
    assert orders[0]["reasonReference"][0]["reference"].endswith("-c0")


def test_the_boxed_warning_line_is_on_one_card_only(client: TestClient) -> None:
    cards = cards_of(client, "in-suicide-19-sertraline-item9-2")
    assert set(cards) == {"ipt-suicide-risk", "antidepressant-add-ipt"}
    lines = {rule: card["detail"].count(BOXED) for rule, card in cards.items()}
    # Once per response, on the most urgent card that may carry it.
    assert lines == {"ipt-suicide-risk": 1, "antidepressant-add-ipt": 0}
    assert "under 25" in cards["ipt-suicide-risk"]["detail"]


def test_no_boxed_warning_from_25_or_on_a_renewal(client: TestClient) -> None:
    cards = cards_of(client, "in-suicide-renewal-item9-after-start")
    assert all(BOXED not in c["detail"] for c in cards.values())
    cards = cards_of(client, "in-addipt-sertraline-sign")
    assert all(BOXED not in c["detail"] for c in cards.values())


def test_an_item9_referral_gives_its_reason_as_a_code_text(client: TestClient) -> None:
    card = cards_of(client, "in-suicide-19-sertraline-item9-2")["ipt-suicide-risk"]
    (referral,) = created(card)
    assert "reasonReference" not in referral
    (reason,) = referral["reasonCode"]
    assert reason["text"].endswith("= 2 on 2026-11-18")


def test_suicide_summaries_carry_the_date(client: TestClient) -> None:
    card = cards_of(client, "in-suicide-19-sertraline-item9-2")["ipt-suicide-risk"]
    assert card["summary"].startswith("Suicidal ideation recorded 2026-11-18")
    assert "Standard of care, from outside the IPT topic" in card["detail"]


def test_a_past_attempt_is_named_in_the_chart_open_summary_line(client: TestClient) -> None:
    card = cards_of(client, "in-summary-past-attempt-800-days")["ipt-patient-summary"]
    assert card["summary"].startswith("Past suicide attempt or self-harm recorded 2024-")
    assert {link["label"] for link in card["links"]} >= {
        "Columbia Suicide Severity Rating Scale (C-SSRS)"
    }
    card = cards_of(client, "in-teen-patient-view-past-attempt")["ipt-adolescent"]
    assert card["summary"].startswith("Past suicide attempt or self-harm recorded 2024-")


def test_earlier_psychiatric_care_is_named_but_does_not_withhold_the_referral(
    client: TestClient,
) -> None:
    card = cards_of(client, "in-psychosis-schizophrenia-care-sertraline")["ipt-psychosis"]
    assert "Psychiatric diagnostic evaluation with medical services (90792)" in card["detail"]
    assert [o["priority"] for o in created(card)] == ["urgent"]


def test_every_chart_open_card_of_the_cases_carries_a_suggestion_or_a_link(
    client: TestClient,
) -> None:
    """Version 3, section 7.3: except the minimal-symptom question."""
    for name, case in CASES.items():
        if case.hook != "patient-view":
            continue
        for rule, card in cards_of(client, name).items():
            if card.get("suggestions") or card.get("links"):
                continue
            assert "has the episode remitted?" in card["summary"], (name, rule)


def test_the_boxed_warning_line_rides_on_the_only_card_about_a_new_antidepressant(
    client: TestClient,
) -> None:
    """A 19-year-old without ideation: the add-IPT card is the one card, so it carries it."""
    case = CASES["in-suicide-19-sertraline-item9-2"]
    calm = case.model_copy(
        update={
            "name": "in-boxed-19-no-ideation",
            "observations": [{"loinc": "44261-6", "value": 12}],
        }
    )
    body = calm.request(NOW, FHIR_BASE)
    answer = client.post(f"/cds-services/{SERVICE_OF_HOOK[calm.hook]}", json=body)
    cards = {c["source"]["topic"]["code"]: c for c in answer.json()["cards"]}
    assert list(cards) == ["antidepressant-add-ipt"]
    assert cards["antidepressant-add-ipt"]["detail"].count(BOXED) == 1


def test_the_chart_open_maintenance_figure_matches_the_plan(client: TestClient) -> None:
    """Version 3, 7.2: without an antidepressant, IPT plus pill placebo against pill placebo (and
    against an antidepressant alone); never the with-antidepressant OR 0.3."""
    card = cards_of(client, "in-summary-remission-maintenance")["ipt-patient-summary"]
    assert "OR 0.5 (95% CI 0.3\u20130.9)" in card["detail"]
    assert "OR 1.7 (0.5\u20135.5), not different" in card["detail"]
    assert "OR 0.3" not in card["detail"]
    (order,) = created(card)
    assert order["occurrenceTiming"]["repeat"] == {
        "frequency": 1,
        "period": 1,
        "periodUnit": "mo",
        "count": 12,
    }


def test_a_combine_verdict_without_an_antidepressant_offers_no_ipt_alone(
    client: TestClient,
) -> None:
    """An IPT order accepted alone would bring the add-antidepressant warning at order entry:
    the chart-open card offers no order the service then cautions against (v3, 7.3)."""
    card = cards_of(client, "in-summary-item9-2")["ipt-patient-summary"]
    assert card["summary"].startswith("IPT with an antidepressant")
    assert all(o["code"]["coding"][0]["code"] != "443730003" for o in created(card))
    assert [link["label"] for link in card["links"]] == [
        "Depression treatment guideline (APA, outside the IPT topic)"
    ]


def test_with_dementia_the_chart_open_card_states_the_caution_instead_of_ipt(
    client: TestClient,
) -> None:
    card = cards_of(client, "in-summary-dementia-untreated")["ipt-patient-summary"]
    assert "cognitive capacity" in card["detail"]
    assert created(card) == []
    assert card["links"]
