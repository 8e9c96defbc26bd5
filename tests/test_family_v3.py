"""the spec v3 (sections 7.1-7.3) for the IPT/antidepressant combination family, the all-clear,
the maintenance order and ipt-psychotherapy-current: what the cards *say* and offer, read from
the JSON the service answers (the fixture cases check only which cards fire), and what they do
when part of the record could not be read (set on the record itself: no fixture can say it)."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ipt_cds.clinical.record import PatientRecord
from ipt_cds.devtools.fixtures import Case, load_cases
from ipt_cds.knowledge.base import Knowledge
from ipt_cds.protocol.models import REQUEST_MODELS, Card

from .conftest import FHIR_BASE, NOW, SERVICE_OF_HOOK, AppFactory

CASES = {c.name: c for c in load_cases()}
Json = dict[str, Any]


def _cards(make_client: AppFactory, name: str) -> dict[str, Json]:
    case = CASES[name]
    client: TestClient = make_client()
    body = case.request(NOW, FHIR_BASE, prefetch=True)
    response = client.post(f"/cds-services/{SERVICE_OF_HOOK[case.hook]}", json=body)
    assert response.status_code == 200, response.text
    return {c["source"]["topic"]["code"]: c for c in response.json()["cards"]}


def _actions(card: Json) -> list[Json]:
    return [a for s in card.get("suggestions", []) for a in s["actions"]]


def _codes(card: Json) -> list[str]:
    return [a["resource"]["code"]["coding"][0]["code"] for a in _actions(card) if "resource" in a]


# --- 7.2 evidence for the right comparison ----------------------------------------------------


def test_maintenance_all_clear_without_an_antidepressant_quotes_the_placebo_comparisons(
    make_client: AppFactory,
) -> None:
    card = _cards(make_client, "in-suitable-maintenance")["ipt-suitable"]
    assert (
        "IPT plus pill placebo vs pill placebo alone, OR 0.5 (95% CI 0.3\N{EN DASH}0.9)"
        in card["detail"]
    )
    assert "did not differ (OR 1.7, 95% CI 0.5\N{EN DASH}5.5)" in card["detail"]
    assert "OR 0.3" not in card["detail"]


def test_maintenance_all_clear_with_an_antidepressant_quotes_the_combination_figure(
    make_client: AppFactory,
) -> None:
    card = _cards(make_client, "in-suitable-maintenance-on-sertraline")["ipt-suitable"]
    assert (
        "IPT plus antidepressant vs antidepressant alone, OR 0.3 (95% CI 0.1\N{EN DASH}0.8)"
        in card["detail"]
    )
    assert "OR 0.5" not in card["detail"]
    assert "OR 1.7" not in card["detail"]


def test_antidepressant_add_ipt_is_one_message(make_client: AppFactory) -> None:
    single = _cards(make_client, "in-addipt-sertraline-sign")["antidepressant-add-ipt"]
    recurrent = _cards(make_client, "in-addipt-recurrent-severe-nortriptyline-select")[
        "antidepressant-add-ipt"
    ]
    # The summary carries one message, the same for a recurrent episode.
    assert single["summary"] == recurrent["summary"]
    assert "mixed" in single["summary"]
    assert "OR" not in single["summary"]
    # The mixed evidence in one sentence: both sides, with their references.
    sentence = next(s for s in re.split(r"(?<=\.) ", single["detail"]) if "mixed" in s)
    assert "refs 17, 18" in sentence
    assert "10 trials" in sentence
    assert "ref 47" in sentence
    assert "want psychotherapy" in single["detail"]
    assert "OR 0.3" not in single["detail"]
    # A recurrent episode adds the one maintenance sentence, with the figure for the plan.
    assert "OR 0.3, 95% CI 0.1\N{EN DASH}0.8" in recurrent["detail"]
    assert "ref 50" not in recurrent["detail"]
    assert "ref 15" not in recurrent["detail"]
    assert _codes(single) == ["443730003"]


def test_the_add_antidepressant_family_cites_refs_9_12_16_only_beside_the_trigger(
    make_client: AppFactory,
) -> None:
    alone = _cards(make_client, "in-addpharm-phq9-15")["ipt-add-pharmacotherapy"]
    assert "refs 17, 18" not in alone["detail"]
    assert "refs 9, 12, 16" in alone["detail"]
    dysthymia = _cards(make_client, "in-dysprefer-ipt-alone")["ipt-dysthymia-prefer-antidepressant"]
    assert "refs 9, 12, 16" not in dysthymia["detail"]
    assert "refs 43, 44" in dysthymia["detail"]
    standing = _cards(make_client, "in-dysprefer-stands-over-add-pharmacotherapy")
    also = next(
        p
        for p in standing["ipt-dysthymia-prefer-antidepressant"]["detail"].split("\n\n")
        if p.startswith("**Also:**")
    )
    assert "PHQ-9" in also
    assert "(refs 9, 12, 16)" in also


def test_the_age_70_card_cites_its_own_trials_only(make_client: AppFactory) -> None:
    card = _cards(make_client, "in-older-acute-age-70")["ipt-older-adult-acute"]
    assert "refs 41, 42" in card["detail"]
    assert "ref 45" not in card["detail"]
    assert "nortriptyline" not in card["detail"]


def test_the_bereavement_card_gives_the_four_arms_once_without_ranking_two(
    make_client: AppFactory,
) -> None:
    for name, indicator in (
        ("in-bereave-ipt-alone-age-50", "warning"),
        ("in-bereave-sertraline-alone-select", "info"),
    ):
        card = _cards(make_client, name)["ipt-bereavement-combination"]
        assert card["indicator"] == indicator
        text = card["summary"] + " " + card["detail"]
        for figure in ("69%", "56%", "45%", "29%"):
            assert text.count(figure) == 1, (name, figure)
        assert "80 patients" in text
        assert "about 20" in text
        assert "ref 45" in text
        assert "better treated with pharmacotherapy than with IPT" in card["detail"]
        assert not re.search(r"remitted (least|most)|did (worst|best)", text), text


def test_the_all_clear_gives_the_session_counts_of_the_trials(make_client: AppFactory) -> None:
    card = _cards(make_client, "in-suitable-phq9-present")["ipt-suitable"]
    assert (
        "6 to 20 sessions (6 by telephone in HIV, ref 55), most often 12\N{EN DASH}16 weekly"
        in (card["detail"])
    )


# --- 7.3 one voice ----------------------------------------------------------------------------


def test_with_cognitive_impairment_the_card_states_the_caution_and_offers_no_ipt(
    make_client: AppFactory,
) -> None:
    # The 80-year-old with Alzheimer's disease and a new sertraline.
    card = _cards(make_client, "in-addipt-alzheimer-80")["antidepressant-add-ipt"]
    assert "suggestions" not in card
    assert "Alzheimer" in card["detail"]
    assert "(G30.9)" in card["detail"]
    assert "cognitive capacity" in card["detail"]
    assert "no IPT order is offered" in card["detail"]


def test_a_card_that_offers_ipt_names_each_caution_in_one_sentence(
    make_client: AppFactory,
) -> None:
    card = _cards(make_client, "in-addipt-cautions-named")["antidepressant-add-ipt"]
    assert _codes(card) == ["443730003"]
    sentences = re.split(r"(?<=\)\.) ", card["detail"])
    for marker, finding in (
        ("Coronary heart disease on record", "284 patients"),
        ("Anxiety disorder on record", "refs 85, 86"),
        ("Personality disorder on record", "avoidant traits did better with CBT"),
    ):
        (sentence,) = [s for s in sentences if marker in s]
        assert finding in sentence
    assert "ref 92" in card["detail"]


def test_from_70_in_remission_the_card_says_an_antidepressant_is_preferred(
    make_client: AppFactory,
) -> None:
    card = _cards(make_client, "in-oldmaint-age-70-full-remission")["ipt-older-adult-maintenance"]
    assert "an antidepressant is preferred" in card["summary"]
    assert "refs 41, 42" in card["detail"]
    assert "suggestions" not in card


def test_a_coded_remission_is_never_questioned(make_client: AppFactory) -> None:
    card = _cards(make_client, "in-suitable-partial-remission-minimal")["ipt-suitable"]
    assert "remitted?" not in card["summary"] + card["detail"]
    assert "partial remission" in card["summary"]
    acute = _cards(make_client, "in-suitable-minimal-symptoms")["ipt-suitable"]
    assert "has the episode remitted?" in acute["summary"]


def test_an_ipt_draft_during_current_cbt_asks_switch_or_addition(make_client: AppFactory) -> None:
    cards = _cards(make_client, "in-psycur-ipt-during-cbt")
    assert list(cards) == ["ipt-psychotherapy-current"]
    card = cards["ipt-psychotherapy-current"]
    assert "switch" in card["summary"]
    assert "addition" in card["summary"]
    assert "Cognitive and behavioral therapy" in card["detail"]
    assert re.search(r"recorded \d{4}-\d{2}-\d{2}", card["detail"])
    (action,) = _actions(card)
    assert action == {
        "type": "delete",
        "description": "Remove the IPT order (keep the current therapy): "
        "ServiceRequest/in-psycur-ipt-during-cbt-d0",
        "resourceId": "ServiceRequest/in-psycur-ipt-during-cbt-d0",
    }


def test_maintenance_ipt_ends_after_a_year_and_says_it_can_be_renewed(
    make_client: AppFactory,
) -> None:
    card = _cards(make_client, "in-maint-full-remission")["antidepressant-maintenance-ipt"]
    (action,) = _actions(card)
    resource = action["resource"]
    assert resource["occurrenceTiming"] == {
        "repeat": {"frequency": 1, "period": 1, "periodUnit": "mo", "count": 12}
    }
    assert "renew" in resource["note"][0]["text"]


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("in-addpharm-severe-code-no-phq9", "ipt-add-pharmacotherapy"),
        ("in-older-acute-severity-unknown", "ipt-older-adult-acute"),
    ],
)
def test_where_severity_decides_a_missing_phq9_is_offered(
    make_client: AppFactory, name: str, rule: str
) -> None:
    card = _cards(make_client, name)[rule]
    assert "44249-1" in _codes(card)


def test_with_a_phq9_no_phq9_is_offered(make_client: AppFactory) -> None:
    card = _cards(make_client, "in-addpharm-phq9-15")["ipt-add-pharmacotherapy"]
    assert "suggestions" not in card


# --- 7.1 what could not be read ---------------------------------------------------------------


def _unread(knowledge: Knowledge, name: str, kinds: set[str]) -> dict[str, Card]:
    """The cards of a fixture case when the EHR could not give ``kinds``: those resources are
    missing from the record and the record says so."""
    case: Case = CASES[name]
    request = REQUEST_MODELS[case.hook].model_validate(case.request(NOW, FHIR_BASE, prefetch=False))
    resources = [r for r in case.resources(NOW) if r["resourceType"] not in kinds]
    record = dataclasses.replace(
        PatientRecord.build(resources, request), unreadable=frozenset(kinds)
    )
    facts = knowledge.factbook.evaluate(record, case.hook, NOW)
    return dict(knowledge.rulebook.outcome(facts, None).shown)


def test_unreadable_therapy_still_fires_add_ipt_but_offers_no_ipt_order(
    knowledge: Knowledge,
) -> None:
    cards = _unread(knowledge, "in-addipt-sertraline-sign", {"ServiceRequest", "Procedure"})
    card = cards["antidepressant-add-ipt"]
    assert card.suggestions is None
    assert card.detail is not None
    assert "service requests (therapy and referrals); procedures (therapy sessions)" in card.detail
    assert "no IPT order is offered" in card.detail
    assert "no psychotherapy current or drafted" not in card.detail


def test_unreadable_medications_still_fire_add_pharmacotherapy_and_say_so(
    knowledge: Knowledge,
) -> None:
    cards = _unread(knowledge, "in-addpharm-phq9-15", {"MedicationRequest", "MedicationStatement"})
    detail = cards["ipt-add-pharmacotherapy"].detail or ""
    assert "No antidepressant is current" not in detail
    assert "medication orders; medication statements" in detail
    assert "an antidepressant may already be prescribed" in detail


@pytest.mark.parametrize(
    "kinds", [{"MedicationRequest"}, {"Observation"}, {"ServiceRequest"}, {"Procedure"}]
)
def test_no_all_clear_when_anything_could_not_be_read(
    knowledge: Knowledge, kinds: set[str]
) -> None:
    assert "ipt-suitable" in _unread(knowledge, "in-suitable-mild-single-episode", set())
    assert "ipt-suitable" not in _unread(knowledge, "in-suitable-mild-single-episode", kinds)


def test_unreadable_observations_offer_no_phq9_order(knowledge: Knowledge) -> None:
    cards = _unread(knowledge, "in-suitable-mild-single-episode", {"Observation"})
    card = cards["ipt-measure-severity"]
    assert card.suggestions is None
    assert "could not be read" in card.summary
    assert "No PHQ-9 in the last" not in (card.detail or "")


def test_unreadable_therapy_withholds_the_maintenance_order(knowledge: Knowledge) -> None:
    card = _unread(knowledge, "in-maint-full-remission", {"Procedure"})[
        "antidepressant-maintenance-ipt"
    ]
    assert card.suggestions is None
    assert "procedures (therapy sessions)" in (card.detail or "")


# --- the verdict --------------------------------------------------------------------------------


def _facts(knowledge: Knowledge, name: str) -> Any:
    case = CASES[name]
    request = REQUEST_MODELS[case.hook].model_validate(case.request(NOW, FHIR_BASE, prefetch=False))
    return knowledge.factbook.evaluate(
        PatientRecord.build(case.resources(NOW), request), case.hook, NOW
    )


def test_from_70_remission_makes_an_antidepressant_preferred(knowledge: Knowledge) -> None:
    at_70 = _facts(knowledge, "in-oldmaint-age-70-full-remission")
    assert at_70["verdict"] == "antidepressant-preferred"
    assert any("refs 41, 42" in r for r in at_70["verdict_reasons"])
    at_69 = _facts(knowledge, "out-oldmaint-age-69-full-remission")
    assert at_69["verdict"] == "suitable"
    # Minimal symptoms with a remission code: the reason does not ask whether it remitted.
    partial = _facts(knowledge, "in-suitable-partial-remission-minimal")
    assert partial["verdict"] == "suitable"
    assert not any("remitted?" in r for r in partial["verdict_reasons"])
