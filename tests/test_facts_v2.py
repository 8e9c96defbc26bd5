"""The facts version 2 of the clinical specification changed or added, one awkward record at a time.

The fixture cases (fhir_fixtures/cases/) show each through the whole service; these pin the
fact itself, with the boundary on both sides: what supersedes a remission code, which
diagnoses of suicidal ideation or behaviour count and for how long, when an old psychotic-
features code stops blocking IPT, which products of antidepressant ingredients are not
antidepressants, renewals, referrals already in the plan, and the new verdicts.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from ipt_cds.clinical.fact_model import Facts
from ipt_cds.clinical.record import PatientRecord
from ipt_cds.knowledge.base import Knowledge
from ipt_cds.protocol.models import REQUEST_MODELS

from .conftest import NOW, PATIENT_ID, Json, condition, hook_request, ipt_order, patient
from .test_facts import facts_of, observation

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
SNOMED = "http://snomed.info/sct"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"


def _day(days_ago: int) -> str:
    return (NOW - timedelta(days=days_ago)).date().isoformat()


def recorded(c: Json, days_ago: int) -> Json:
    return {**c, "recordedDate": _day(days_ago)}


def phq9(value: int, days_ago: int = 5) -> Json:
    found = observation(f"phq{value}-{days_ago}", "44261-6", valueInteger=value)
    return {**found, "effectiveDateTime": f"{_day(days_ago)}T09:30:00Z"}


def item9(code: str, days_ago: int = 5) -> Json:
    answer = {"coding": [{"system": "http://loinc.org", "code": code}]}
    return observation(f"i9-{code}-{days_ago}", "44260-8", days_ago, valueCodeableConcept=answer)


def drug(rid: str, code: str, kind: str = "MedicationRequest", **more: Any) -> Json:
    resource: Json = {
        "resourceType": kind,
        "id": rid,
        "status": "active",
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": code}]},
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
        **more,
    }
    if kind == "MedicationRequest":
        resource["intent"] = "order"
    return resource


def daily(mg: float, times: int = 1, key: str = "dosageInstruction") -> Json:
    dose = {"doseQuantity": {"value": mg, "unit": "mg"}}
    timing = {"repeat": {"frequency": times, "period": 1, "periodUnit": "d"}}
    return {key: [{"timing": timing, "doseAndRate": [dose]}]}


def draft(rid: str, code: str) -> Json:
    return {**drug(rid, code), "status": "draft"}


# --- remission superseded by a later PHQ-9 --------------------------------------------------


@pytest.mark.parametrize(
    ("score", "phq_days_ago", "remission", "recurrence"),
    [
        (10, 5, None, True),  # 10 after the remission was recorded: probable recurrence
        (9, 5, "full", False),  # below recurrence_phq9: still in remission
        (16, 250, "full", False),  # outside the PHQ-9 window: no phq9 at all
        (16, 30, None, True),  # the same day as the remission code counts as after it
        (16, 31, "full", False),  # the day before it does not
    ],
)
def test_a_later_phq9_of_10_supersedes_a_remission_code(
    knowledge: Knowledge, score: int, phq_days_ago: int, remission: str | None, recurrence: bool
) -> None:
    f = facts_of(knowledge, recorded(condition("c", "F33.42"), 30), phq9(score, phq_days_ago))
    assert (f["remission"], f["probable_recurrence"]) == (remission, recurrence)
    assert f["acute"] is (remission is None)
    if recurrence:
        assert f["probable_recurrence_basis"] == (
            f"PHQ-9 {score} on {_day(phq_days_ago)}, after remission recorded {_day(30)}: "
            "probable recurrence"
        )


def test_a_phq9_before_the_remission_was_recorded_does_not_supersede_it(
    knowledge: Knowledge,
) -> None:
    f = facts_of(knowledge, recorded(condition("c", "F33.42"), 3), phq9(16, 10))
    assert (f["remission"], f["probable_recurrence"]) == ("full", False)


# --- suicidal ideation and behaviour ---------------------------------------------------------


def _si(f: Facts) -> tuple[Any, ...]:
    return (f["suicidal_ideation"], f["suicidal_ideation_sources"], f["ideation_basis"] is not None)


@pytest.mark.parametrize(
    ("code", "system", "sources"),
    [
        ("R45.851", ICD, ["ideation"]),
        ("T14.91XA", ICD, ["attempt"]),
        ("T43.222A", ICD, ["attempt"]),  # poisoning by an antidepressant, intentional
        ("X78.9XXA", ICD, ["attempt"]),  # intentional self-harm by a sharp object
        ("225444004", SNOMED, ["at-risk"]),
    ],
)
def test_recent_diagnoses_of_ideation_or_behaviour_are_high(
    knowledge: Knowledge, code: str, system: str, sources: list[str]
) -> None:
    f = facts_of(knowledge, recorded(condition("si", code, system), 365))
    assert _si(f) == ("high", sources, sources == ["ideation"])
    assert f["suicidal_ideation_basis"].endswith(f"recorded {_day(365)}")


@pytest.mark.parametrize("code", ["T43.221A", "T43.223A", "T43.224A"])
def test_accidental_assault_and_undetermined_poisoning_are_not_self_harm(
    knowledge: Knowledge, code: str
) -> None:
    f = facts_of(knowledge, recorded(condition("p", code), 10))
    assert f["suicidal_ideation"] is None


def test_a_diagnosis_older_than_365_days_is_history(knowledge: Knowledge) -> None:
    f = facts_of(knowledge, recorded(condition("si", "R45.851"), 366))
    assert _si(f) == ("history", [], False)
    assert "past suicidal ideation" in " ".join(f["cautions"])


def test_a_later_item9_of_zero_turns_an_ideation_diagnosis_into_history(
    knowledge: Knowledge,
) -> None:
    si = recorded(condition("si", "R45.851"), 10)
    later = facts_of(knowledge, si, item9("LA6568-5", 9))
    same_day = facts_of(knowledge, si, item9("LA6568-5", 10))
    assert _si(later)[0] == "history"
    assert _si(same_day) == ("high", ["ideation"], True)
    # An answer of 0 is never evidence of ideation.
    assert "item 9" not in same_day["suicidal_ideation_basis"]


def test_an_item9_of_zero_does_not_turn_an_attempt_into_history(knowledge: Knowledge) -> None:
    f = facts_of(knowledge, recorded(condition("a", "T14.91XA"), 10), item9("LA6568-5", 2))
    assert _si(f) == ("high", ["attempt"], False)


def test_a_personal_history_of_suicidal_behaviour_is_history_in_any_status(
    knowledge: Knowledge,
) -> None:
    resolved = condition("h", "Z91.51")
    resolved["clinicalStatus"]["coding"][0]["code"] = "resolved"
    assert facts_of(knowledge, resolved)["suicidal_ideation"] == "history"


def test_item9_of_one_is_low_and_outranks_history(knowledge: Knowledge) -> None:
    f = facts_of(knowledge, condition("h", "Z91.51"), item9("LA6569-3"))
    assert _si(f) == ("low", ["item9"], False)


def test_an_attempt_alone_does_not_call_for_medication(knowledge: Knowledge) -> None:
    f = facts_of(knowledge, condition("d", "F32.1"), recorded(condition("a", "T14.91XA"), 10))
    assert f["suicidal_ideation"] == "high"
    assert f["needs_combination"] is False


# --- psychotic features ------------------------------------------------------------------------


def test_an_old_psychotic_features_code_does_not_block_ipt_for_good(knowledge: Knowledge) -> None:
    old = recorded(condition("old", "F32.3"), 400)
    current = recorded(condition("new", "F32.1"), 20)
    assert facts_of(knowledge, old, current)["psychosis"] is False
    assert facts_of(knowledge, recorded(condition("old", "F32.3"), 200), current)["psychosis"]
    # As the current episode it counts whatever its age.
    assert facts_of(knowledge, old)["psychosis"] is True


def test_psychotic_disorders_count_while_active(knowledge: Knowledge) -> None:
    f = facts_of(knowledge, condition("d", "F32.1"), recorded(condition("s", "F20.9"), 2000))
    assert (f["psychosis"], f["ipt_candidate"], f["verdict"]) == (True, False, "not-recommended")


# --- antidepressants -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resource", "counts"),
    [
        (drug("m", "312941"), True),
        (drug("m", "312941", "MedicationStatement"), True),
        ({**drug("m", "312941", "MedicationStatement"), "status": "intended"}, True),
        ({**drug("m", "312941", "MedicationStatement"), "status": "completed"}, False),
        (drug("m", "856377", **daily(50)), False),  # trazodone 50 mg at night
        (drug("m", "856377", **daily(50, 2)), False),  # 100 mg a day: still a sleep dose
        (drug("m", "856364", **daily(150)), True),  # 150 mg a day
        (drug("m", "856377"), True),  # dose unknown: counts
        (drug("m", "856377", "MedicationStatement", **daily(50, key="dosage")), False),
        (drug("m", "856834", **daily(25)), False),  # amitriptyline 25 mg
        (drug("m", "856834", **daily(25, 3)), True),  # 75 mg a day
        (drug("m", "966787"), False),  # doxepin 3 mg (hypnotic)
        (drug("m", "1801289"), False),  # bupropion labelled for smoking cessation
        (drug("m", "993541"), True),  # bupropion XL 150 mg
        (drug("m", "993541", reasonCode=[{"coding": [{"system": ICD, "code": "F17.210"}]}]), False),
        (drug("m", "993541", note=[{"text": "For smoking cessation"}]), False),
    ],
)
def test_what_counts_as_an_antidepressant(
    knowledge: Knowledge, resource: Json, counts: bool
) -> None:
    assert facts_of(knowledge, resource)["on_antidepressant"] is counts


def test_a_draft_of_a_current_ingredient_and_product_is_a_renewal(knowledge: Knowledge) -> None:
    current = drug("m", "312940")  # sertraline 25 mg
    renewal = draft("d", "312940")  # the same product, no dose stated on either
    stronger = draft("d", "312941")  # sertraline 50 mg: a dose change is a new start (v3)
    start = draft("d", "310385")  # fluoxetine
    f = facts_of(knowledge, current, drafts=[renewal])
    assert (f["draft_antidepressant"], f["new_antidepressant"]) == (True, False)
    f = facts_of(knowledge, current, drafts=[stronger])
    assert (f["draft_antidepressant"], f["new_antidepressant"]) == (True, True)
    f = facts_of(knowledge, current, drafts=[start])
    assert (f["draft_antidepressant"], f["new_antidepressant"]) == (True, True)


def test_a_low_dose_draft_is_not_an_antidepressant_draft(knowledge: Knowledge) -> None:
    f = facts_of(knowledge, drafts=[{**draft("d", "856377"), **daily(50)}])
    assert f["draft_antidepressant"] is False


# --- the plan ----------------------------------------------------------------------------------


def _referral(status: str) -> Json:
    return {
        "resourceType": "ServiceRequest",
        "id": f"ref-{status}",
        "status": status,
        "intent": "order",
        "code": {"coding": [{"system": SNOMED, "code": "308477009"}]},
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
    }


@pytest.mark.parametrize(
    ("status", "in_plan"), [("active", True), ("draft", True), ("completed", False)]
)
def test_a_psychiatry_referral_in_the_plan(
    knowledge: Knowledge, status: str, in_plan: bool
) -> None:
    assert facts_of(knowledge, _referral(status))["psychiatry_in_plan"] is in_plan


def test_a_drafted_referral_in_draft_orders_is_in_the_plan(knowledge: Knowledge) -> None:
    assert facts_of(knowledge, drafts=[_referral("draft")])["psychiatry_in_plan"] is True


def test_an_ipt_draft_in_the_record_puts_ipt_in_the_plan(knowledge: Knowledge) -> None:
    f = facts_of(knowledge, ipt_order("in-record"))
    assert (f["ipt_in_plan"], f["draft_ipt"]) == (True, False)


# --- scope and verdict -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("birth", "adult", "verdict"),
    [
        ("2008-11-25", True, "suitable"),
        ("2008-11-26", False, "not-adult"),
        (None, True, "suitable"),
    ],
)
def test_adult_is_18_or_unknown(
    knowledge: Knowledge, birth: str | None, adult: bool, verdict: str
) -> None:
    person = patient(birth=birth or "")
    if birth is None:
        del person["birthDate"]
    body = hook_request("order-sign", {"patient": person}, drafts=None)
    request = REQUEST_MODELS["order-sign"].model_validate(body)
    record = PatientRecord.build([person, condition("d", "F32.1"), phq9(12)], request)
    f = knowledge.factbook.evaluate(record, "order-sign", NOW)
    assert (f["adult"], f["unipolar_scope"], f["verdict"]) == (adult, adult, verdict)


def test_bipolar_disorder_takes_the_patient_out_of_the_unipolar_advice(
    knowledge: Knowledge,
) -> None:
    f = facts_of(knowledge, condition("b", "F31.81"), condition("d", "F32.2"), phq9(22))
    assert (f["depression"], f["unipolar_scope"], f["ipt_candidate"]) == (True, False, False)
    assert f["verdict"] == "specialist"


@pytest.mark.parametrize(
    ("score", "needs"),
    [(8, False), (12, True)],  # mild vs moderate, with two domains
)
def test_neurovegetative_symptoms_count_only_with_moderate_severity(
    knowledge: Knowledge, score: int, needs: bool
) -> None:
    sleep = observation("s", "44259-0", valueInteger=3)
    energy = observation("e", "44254-1", valueInteger=2)
    f = facts_of(knowledge, condition("d", "F32.1"), phq9(score), sleep, energy)
    assert f["neurovegetative"] == 2
    assert f["needs_combination"] is needs


def test_severity_unknown_is_measured_not_guessed(knowledge: Knowledge) -> None:
    sleep = observation("s", "44259-0", valueInteger=3)
    energy = observation("e", "44254-1", valueInteger=2)
    f = facts_of(knowledge, condition("d", "F32.9"), sleep, energy)
    assert (f["severity"], f["phq9_due"], f["needs_combination"]) == (None, True, False)
    assert f["verdict"] == "suitable"
    assert "measure severity first" in f["verdict_reasons"][0]


def test_minimal_symptoms_do_not_make_dysthymia_prefer_an_antidepressant(
    knowledge: Knowledge,
) -> None:
    f = facts_of(knowledge, condition("d", "F34.1"), phq9(3))
    assert f["verdict"] == "suitable"
    assert facts_of(knowledge, condition("d", "F34.1"), phq9(6))["verdict"] == (
        "antidepressant-preferred"
    )


def test_ehr_text_in_evidence_cannot_inject_markdown(knowledge: Knowledge) -> None:
    c = condition("d", "F32.1")
    c["code"]["coding"][0]["display"] = "[click](https://evil.example) *now*"
    f = facts_of(knowledge, c)
    assert "\\[click\\](https://evil.example) \\*now\\*" in f.why["depression"]
