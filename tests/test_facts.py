"""Facts on awkward, real-world FHIR: each test is one way EHR data departs from the textbook."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import pytest

from ipt_cds.clinical import extractors
from ipt_cds.clinical.declarations import LatestObservation
from ipt_cds.clinical.fact_model import Facts, FactSpec
from ipt_cds.clinical.record import PatientRecord
from ipt_cds.knowledge.base import Knowledge
from ipt_cds.protocol.models import REQUEST_MODELS

from .conftest import (
    FHIR_BASE,
    NOW,
    PATIENT_ID,
    Json,
    condition,
    hook_request,
    ipt_order,
    patient,
)

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
LOINC = "http://loinc.org"
PHQ9_TOTAL, ITEM9 = "44261-6", "44260-8"


def facts_of(
    knowledge: Knowledge,
    *resources: Json,
    drafts: list[Json] | None = None,
    hook: str = "order-sign",
    selections: list[str] | None = None,
) -> Facts:
    body = hook_request(hook, {"patient": patient()}, drafts=drafts, selections=selections)
    request = REQUEST_MODELS[hook].model_validate(body)
    record = PatientRecord.build([patient(), *copy.deepcopy(list(resources))], request)
    return knowledge.factbook.evaluate(record, hook, NOW)


def observation(oid: str, code: str, days_ago: int = 5, **value: Any) -> Json:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "effectiveDateTime": f"2026-11-{25 - days_ago:02d}T09:30:00Z",
        **value,
    }


def med(mid: str, status: str = "active", **drug: Any) -> Json:
    return {
        "resourceType": "MedicationRequest",
        "id": mid,
        "status": status,
        "intent": "order",
        **drug,
    }


def dishonest(f: Facts, model: Mapping[str, FactSpec]) -> list[str]:
    """Every way ``f`` departs from the model, in words (empty when it honours it)."""
    wrong = [f"missing {n}" for n in model if n not in f.values]
    for name, value in f.values.items():
        spec = model.get(name)
        if spec is None:
            wrong.append(f"{name} is not in the model")
        elif not spec.accepts(value):
            wrong.append(f"{name} = {value!r} is not {spec.describe()}")
        elif value is not None:
            for attr, attr_spec in spec.attributes.items():
                if not attr_spec.accepts(getattr(value, attr)):
                    wrong.append(f"{name}.{attr} = {getattr(value, attr)!r}")
    for name in sorted({*f.why, *f.refs}):
        if name not in model or not model[name].explained:
            wrong.append(f"why.{name}: the model says it never has one")
    return wrong


def test_every_fact_of_the_vocabulary_is_computed(knowledge: Knowledge) -> None:
    assert set(facts_of(knowledge).values) == set(knowledge.facts)


# --- depression codes --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("coding", "episode"),
    [
        ({"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "F33.1"}, "recurrent"),
        ({"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "F331"}, "recurrent"),
        ({"system": "urn:oid:2.16.840.1.113883.6.90", "code": "f33.1"}, "recurrent"),
        ({"system": "http://snomed.info/sct", "code": "370143000"}, None),
        ({"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "F32.1"}, "single"),
    ],
)
def test_depression_from_icd10cm_and_snomed(
    knowledge: Knowledge, coding: Json, episode: str | None
) -> None:
    c = condition("c1")
    c["code"] = {"coding": [coding]}
    f = facts_of(knowledge, c)
    assert f["depression"] is True
    assert f["episode"] == episode
    assert f.refs["depression"] == ["Condition/c1"]


def test_bipolar_code_is_not_depression(knowledge: Knowledge) -> None:
    f = facts_of(knowledge, condition("c1", "F31.4"))
    assert (f["depression"], f["bipolar"]) == (False, True)


def test_condition_without_clinical_status_counts_unless_abated(knowledge: Knowledge) -> None:
    bare = condition("c1")
    del bare["clinicalStatus"]
    assert facts_of(knowledge, bare)["depression"] is True
    bare["abatementDateTime"] = "2026-01-01"
    assert facts_of(knowledge, bare)["depression"] is False


@pytest.mark.parametrize("status", ["refuted", "entered-in-error"])
def test_refuted_condition_does_not_count(knowledge: Knowledge, status: str) -> None:
    c = condition("c1")
    c["verificationStatus"] = {"coding": [{"code": status}]}
    assert facts_of(knowledge, c)["depression"] is False


def test_category_as_an_object_is_tolerated(knowledge: Knowledge) -> None:
    c = condition("c1", "F20.9")
    c["category"] = {"coding": [{"code": "problem-list-item"}]}
    assert facts_of(knowledge, c)["psychosis"] is True


def test_current_episode_is_the_most_recent_and_names_remission(knowledge: Knowledge) -> None:
    old = {**condition("old", "F33.2"), "recordedDate": "2024-01-01"}
    new = {**condition("new", "F33.41"), "recordedDate": "2026-10-01"}
    f = facts_of(knowledge, old, new)
    assert (f["remission"], f["acute"], f["episode"]) == ("partial", False, "recurrent")
    assert f["current_episode"].ref == "Condition/new"


def test_undated_tie_prefers_the_episode_not_in_remission(knowledge: Knowledge) -> None:
    remitted, acute = condition("a", "F33.42"), condition("b", "F33.1")
    f = facts_of(knowledge, remitted, acute)
    assert (f["remission"], f["acute"], f["current_episode"].ref) == (None, True, "Condition/b")


# --- PHQ-9 -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "severity"),
    [
        ({"valueQuantity": {"value": 15.4}}, "moderately-severe"),
        ({"valueQuantity": {"value": 14.9}}, "moderate"),
        ({"valueInteger": 20}, "severe"),
        ({"valueString": "9"}, "mild"),
        ({"valueQuantity": {"value": 4}}, "minimal"),
    ],
)
def test_phq9_bands_integers_decimals_and_strings(
    knowledge: Knowledge, value: Json, severity: str
) -> None:
    f = facts_of(knowledge, condition("c1"), observation("o1", "44261-6", **value))
    assert f["severity"] == severity
    assert f.refs["phq9"] == ["Observation/o1"]


def test_phq9_synthea_code_and_datetime_without_zone(knowledge: Knowledge) -> None:
    o = observation("o1", "89204-2", valueQuantity={"value": 16})
    o["effectiveDateTime"] = "2026-11-20T10:00:00"
    f = facts_of(knowledge, condition("c1"), o)
    assert (f["phq9"].value, f["phq9"].date, f["severity"]) == (
        16,
        "2026-11-20",
        "moderately-severe",
    )


def test_latest_phq9_wins_and_old_ones_expire(knowledge: Knowledge) -> None:
    recent = observation("new", "44261-6", days_ago=3, valueQuantity={"value": 8})
    older = observation("old", "44261-6", days_ago=20, valueQuantity={"value": 22})
    assert facts_of(knowledge, recent, older)["phq9"].value == 8
    stale = {**older, "effectiveDateTime": "2026-08-26"}  # 91 days before the request
    assert facts_of(knowledge, stale)["phq9"] is None


def test_out_of_range_phq9_is_passed_over(knowledge: Knowledge) -> None:
    bad = observation("bad", "44261-6", days_ago=1, valueQuantity={"value": 270})
    good = observation("good", "44261-6", days_ago=9, valueQuantity={"value": 12})
    assert facts_of(knowledge, bad, good)["phq9"].value == 12


@pytest.mark.parametrize(
    ("value", "level"),
    [
        ({"valueCodeableConcept": {"coding": [{"system": LOINC, "code": "LA6570-1"}]}}, "high"),
        ({"valueCodeableConcept": {"coding": [{"system": LOINC, "code": "LA6571-9"}]}}, "high"),
        ({"valueCodeableConcept": {"coding": [{"system": LOINC, "code": "LA6569-3"}]}}, "low"),
        ({"valueCodeableConcept": {"coding": [{"system": LOINC, "code": "LA6568-5"}]}}, None),
        ({"valueInteger": 2}, "high"),
        ({"valueQuantity": {"value": 1}}, "low"),
        ({"valueInteger": 0}, None),
    ],
)
def test_item9_as_answer_code_or_number(
    knowledge: Knowledge, value: Json, level: str | None
) -> None:
    assert facts_of(knowledge, observation("o1", "44260-8", **value))["suicidal_ideation"] == level


def test_a_coded_answer_scores_in_the_answers_value_set_its_extraction_names(
    knowledge: Knowledge,
) -> None:
    """`answers` belongs to the extraction: without it a coded answer is kept for its codes
    only, unscored."""
    item9 = knowledge.factbook.declarations["phq9_item9"]
    assert isinstance(item9, LatestObservation)
    assert item9.answers is not None
    unscored = item9.model_copy(update={"answers": None})
    answer = {"system": LOINC, "code": "LA6570-1"}  # "More than half the days"
    o = observation("o1", "44260-8", valueCodeableConcept={"coding": [answer]})
    body = hook_request("order-sign", {"patient": patient()})
    request = REQUEST_MODELS["order-sign"].model_validate(body)
    scope = extractors.Scope(
        PatientRecord.build([patient(), o], request),
        knowledge.terms,
        NOW.date(),
        knowledge.factbook.params,
    )
    scored = extractors.build(item9, knowledge.terms, knowledge.factbook.params)(scope)
    kept = extractors.build(unscored, knowledge.terms, knowledge.factbook.params)(scope)
    assert [(e.value, e.answer_codes) for e in scored] == [(2.0, ((LOINC, "LA6570-1"),))]
    assert [(e.value, e.answer_codes) for e in kept] == [(None, ((LOINC, "LA6570-1"),))]


def test_item9_as_a_component_of_the_phq9_panel(knowledge: Knowledge) -> None:
    panel = observation("panel", "44249-1", valueQuantity={"value": 11})
    panel["component"] = [
        {"code": {"coding": [{"system": LOINC, "code": "44260-8"}]}, "valueInteger": 2},
        {"code": {"coding": [{"system": LOINC, "code": "44259-0"}]}, "valueInteger": 3},
        {"code": {"coding": [{"system": LOINC, "code": "44254-1"}]}, "valueInteger": 2},
    ]
    f = facts_of(knowledge, panel)
    assert f["suicidal_ideation"] == "high"
    assert (f["neurovegetative"], f["neurovegetative_domains"]) == (2, ["sleep", "energy"])


# --- PHQ-9 recorded as a panel (the spec version 3, s.7.1) -----------------------------
# Items 1 to 9 of the PHQ-9, and the panels' codes.
PHQ9_ITEMS = (
    "44250-9",
    "44255-8",
    "44259-0",
    "44254-1",
    "44251-7",
    "44258-2",
    "44252-5",
    "44253-3",
    "44260-8",
)
ADULT_PANEL, TEEN_PANEL, TEEN_TOTAL = "44249-1", "89206-7", "89204-2"


def _part(code: str, value: int) -> Json:
    return {"code": {"coding": [{"system": LOINC, "code": code}]}, "valueInteger": value}


def _phq9_panel(oid: str, code: str = ADULT_PANEL, days_ago: int = 5, **parts: Any) -> Json:
    """A PHQ-9 panel: ``components`` {code: value}, ``members`` [Observation ids]."""
    panel = observation(oid, code, days_ago=days_ago)
    if "components" in parts:
        panel["component"] = [_part(c, v) for c, v in parts["components"].items()]
    if "members" in parts:
        panel["hasMember"] = [{"reference": f"Observation/{m}"} for m in parts["members"]]
    return panel


def _member(oid: str, code: str, value: int, dated: bool = True) -> Json:
    member = observation(oid, code, valueInteger=value)
    if not dated:  # the panel's date stands for it
        del member["effectiveDateTime"]
    return member


def test_phq9_total_and_item9_as_components_of_the_panel(knowledge: Knowledge) -> None:
    panel = _phq9_panel("panel", components={PHQ9_TOTAL: 18, ITEM9: 3})
    f = facts_of(knowledge, condition("c1"), panel)
    assert (f["phq9"].value, f["severity"], f["phq9_due"]) == (18, "moderately-severe", False)
    assert (f["item9"].value, f["suicidal_ideation"]) == (3, "high")
    assert f.refs["phq9"] == f.refs["item9"] == ["Observation/panel"]


def test_teen_panel_with_the_teen_total_as_a_component(knowledge: Knowledge) -> None:
    panel = _phq9_panel("teen", TEEN_PANEL, components={TEEN_TOTAL: 12, ITEM9: 1})
    f = facts_of(knowledge, condition("c1"), panel)
    assert (f["phq9"].value, f["severity"], f["suicidal_ideation"]) == (12, "moderate", "low")


def test_members_named_by_has_member_are_read_dated_by_the_panel(knowledge: Knowledge) -> None:
    panel = _phq9_panel("panel", members=["total", "item9", "sleep", "energy"])
    members = [
        _member("total", PHQ9_TOTAL, 16, dated=False),
        _member("item9", ITEM9, 2, dated=False),
        _member("sleep", "44259-0", 3, dated=False),
        _member("energy", "44254-1", 2, dated=False),
    ]
    f = facts_of(knowledge, condition("c1"), panel, *members)
    assert (f["phq9"].value, f["phq9"].date) == (16, "2026-11-20")
    assert f.refs["phq9"] == ["Observation/total"]
    assert (f["item9"].value, f["suicidal_ideation"]) == (2, "high")
    assert f["neurovegetative_domains"] == ["sleep", "energy"]
    # Without the panel nothing dates them: no reading at all.
    assert facts_of(knowledge, condition("c1"), *members)["phq9"] is None


def test_has_member_reference_forms_and_contained_members(knowledge: Knowledge) -> None:
    absolute = _phq9_panel("panel")
    absolute["hasMember"] = [{"reference": f"{FHIR_BASE}/Observation/total/_history/3"}]
    f = facts_of(knowledge, absolute, _member("total", PHQ9_TOTAL, 21, dated=False))
    assert (f["phq9"].value, f["severity"]) == (21, "severe")
    contained = _phq9_panel("panel")
    contained["contained"] = [_member("i9", ITEM9, 3, dated=False)]
    contained["hasMember"] = [{"reference": "#i9"}]
    f = facts_of(knowledge, contained)
    assert (f["item9"].value, f["suicidal_ideation"]) == (3, "high")
    assert f.refs["item9"] == ["Observation/panel"]


@pytest.mark.parametrize("shape", ["components", "members"])
def test_nine_items_and_no_total_read_as_their_sum(knowledge: Knowledge, shape: str) -> None:
    answers = dict(zip(PHQ9_ITEMS, (2, 2, 3, 2, 1, 2, 2, 1, 2), strict=True))  # 17
    if shape == "components":
        resources = [_phq9_panel("panel", components=answers)]
    else:
        ids = [f"i{n}" for n in range(1, 10)]
        members = [
            _member(i, code, v, dated=False)
            for i, (code, v) in zip(ids, answers.items(), strict=True)
        ]
        resources = [_phq9_panel("panel", members=ids), *members]
    f = facts_of(knowledge, condition("c1"), *resources)
    assert (f["phq9"].value, f["severity"], f["phq9_due"]) == (17, "moderately-severe", False)
    assert f.refs["phq9"] == ["Observation/panel"]
    assert f["suicidal_ideation"] == "high"


def test_eight_items_are_no_total_and_a_recorded_total_beats_the_sum(knowledge: Knowledge) -> None:
    eight = dict.fromkeys(PHQ9_ITEMS[:8], 3)
    assert facts_of(knowledge, condition("c1"), _phq9_panel("p", components=eight))["phq9"] is None
    nine = dict.fromkeys(PHQ9_ITEMS, 1)  # 9
    with_total = _phq9_panel("p", components={**nine, PHQ9_TOTAL: 14})
    assert facts_of(knowledge, condition("c1"), with_total)["phq9"].value == 14
    separate = observation("sep", PHQ9_TOTAL, valueInteger=7)
    f = facts_of(knowledge, condition("c1"), _phq9_panel("p", components=nine), separate)
    assert (f["phq9"].value, f.refs["phq9"]) == (7, ["Observation/sep"])


@pytest.mark.parametrize("first", ["panel", "standalone"])
def test_same_day_item9_answers_that_disagree_the_higher_stands(
    knowledge: Knowledge, first: str
) -> None:
    panel = _phq9_panel("panel", components={ITEM9: 2})
    standalone = observation("alone", ITEM9, valueInteger=0)
    pair = [panel, standalone] if first == "panel" else [standalone, panel]
    f = facts_of(knowledge, *pair)
    assert (f["item9"].value, f["suicidal_ideation"]) == (2, "high")
    assert f.refs["item9"] == ["Observation/panel"]
    # And the other way round: a standalone 3 over a panel's 1; a later 0 still wins.
    low = _phq9_panel("panel", components={ITEM9: 1})
    high = observation("alone", ITEM9, valueInteger=3)
    assert facts_of(knowledge, low, high)["item9"].value == 3
    later = observation("later", ITEM9, days_ago=2, valueInteger=0)
    assert facts_of(knowledge, panel, later)["item9"].value == 0


@pytest.mark.parametrize("first", ["panel", "separate"])
def test_same_day_panel_total_and_separate_total_the_separate_stands(
    knowledge: Knowledge, first: str
) -> None:
    panel = _phq9_panel("panel", components={PHQ9_TOTAL: 20})
    separate = observation("sep", PHQ9_TOTAL, valueInteger=12)
    pair = [panel, separate] if first == "panel" else [separate, panel]
    f = facts_of(knowledge, condition("c1"), *pair)
    assert (f["phq9"].value, f["severity"], f.refs["phq9"]) == (12, "moderate", ["Observation/sep"])
    # On another day the most recent stands, panel or not.
    newer = _phq9_panel("panel", days_ago=2, components={PHQ9_TOTAL: 20})
    assert facts_of(knowledge, condition("c1"), newer, separate)["phq9"].value == 20


def test_panel_marked_entered_in_error_is_not_read(knowledge: Knowledge) -> None:
    panel = _phq9_panel("panel", components=dict.fromkeys(PHQ9_ITEMS, 3))
    panel["status"] = "entered-in-error"
    f = facts_of(knowledge, condition("c1"), panel)
    assert (f["phq9"], f["item9"], f["suicidal_ideation"]) == (None, None, None)


@pytest.mark.parametrize(
    "has_member",
    [5, "x", [5, None, {"reference": 5}], {"reference": "Observation/nowhere"}, [{}]],
)
def test_has_member_of_the_wrong_type_is_no_member(knowledge: Knowledge, has_member: Any) -> None:
    panel = _phq9_panel("panel", components={PHQ9_TOTAL: 11})
    panel["hasMember"] = has_member
    assert facts_of(knowledge, condition("c1"), panel)["phq9"].value == 11


def test_suicidal_ideation_condition_is_high(knowledge: Knowledge) -> None:
    f = facts_of(knowledge, condition("si", "R45.851"))
    assert f["suicidal_ideation"] == "high"
    assert f.refs["suicidal_ideation"] == ["Condition/si"]


def test_neurovegetative_domains_count_once(knowledge: Knowledge) -> None:
    sleep = observation("s", "44259-0", valueInteger=3)
    recent = {"recordedDate": (NOW - timedelta(days=20)).date().isoformat()}
    insomnia, fatigue = condition("insomnia", "G47.00"), condition("f", "R53.83")
    f = facts_of(knowledge, sleep, {**insomnia, **recent}, {**fatigue, **recent})
    assert (f["neurovegetative"], f["neurovegetative_domains"]) == (2, ["sleep", "energy"])


def test_symptom_diagnoses_count_only_when_recorded_in_the_window(knowledge: Knowledge) -> None:
    """the spec v2: insomnia, appetite, fatigue, libido Conditions recorded within 90 days;
    an old or undated one is history, not a current symptom."""
    old = {"recordedDate": (NOW - timedelta(days=91)).date().isoformat()}
    f = facts_of(knowledge, {**condition("i", "G47.00"), **old}, condition("f", "R53.83"))
    assert (f["neurovegetative"], f["neurovegetative_domains"]) == (0, [])


# --- drugs and orders ----------------------------------------------------------------------


SERTRALINE_SCD = {"coding": [{"system": RXNORM, "code": "312940"}]}


@pytest.mark.parametrize(
    "drug",
    [
        {"medicationCodeableConcept": SERTRALINE_SCD},
        {"medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "36437"}]}},
        {"medicationCodeableConcept": {"text": "Sertraline HCl 50 mg tablet"}},
        {
            "medicationCodeableConcept": {
                "coding": [{"system": "urn:x", "code": "1", "display": "FLUOXETINE 20MG CAP"}]
            }
        },
        {"medicationReference": {"display": "escitalopram 10 mg"}},
        {
            "medicationReference": {"reference": "#m"},
            "contained": [{"resourceType": "Medication", "id": "m", "code": SERTRALINE_SCD}],
        },
    ],
    ids=["clinical-drug", "ingredient", "text", "display", "reference-display", "contained"],
)
def test_antidepressant_by_code_ingredient_text_or_reference(
    knowledge: Knowledge, drug: Json
) -> None:
    f = facts_of(knowledge, med("m1", **drug))
    assert f["on_antidepressant"] is True
    assert f.refs["on_antidepressant"] == ["MedicationRequest/m1"]


def test_medication_included_by_reference(knowledge: Knowledge) -> None:
    included = {"resourceType": "Medication", "id": "med-9", "code": SERTRALINE_SCD}
    order = med("m1", medicationReference={"reference": "Medication/med-9"})
    assert facts_of(knowledge, order, included)["on_antidepressant"] is True


def test_stopped_antidepressant_and_non_antidepressant_do_not_count(knowledge: Knowledge) -> None:
    stopped = med("m1", status="stopped", medicationCodeableConcept=SERTRALINE_SCD)
    other = med("m2", medicationCodeableConcept={"text": "metformin 500 mg"})
    assert facts_of(knowledge, stopped, other)["on_antidepressant"] is False


def test_dozens_of_duplicate_active_orders(knowledge: Knowledge) -> None:
    orders = [med(f"m{i}", medicationCodeableConcept=SERTRALINE_SCD) for i in range(60)]
    f = facts_of(knowledge, *orders, orders[0], orders[1])
    assert f["on_antidepressant"] is True
    assert len(f.refs["on_antidepressant"]) == 60


def test_ipt_draft_by_code_or_text_but_not_psychodynamic_interpersonal(
    knowledge: Knowledge,
) -> None:
    by_text = {**ipt_order("t"), "code": {"text": "Interpersonal psychotherapy (IPT), 12 sessions"}}
    pit = {
        **ipt_order("p"),
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "304822001"}]},
    }
    pit_text = {**ipt_order("q"), "code": {"text": "Psychodynamic-interpersonal psychotherapy"}}
    assert facts_of(knowledge, drafts=[ipt_order("a")])["draft_ipt"] is True
    assert facts_of(knowledge, drafts=[by_text])["draft_ipt"] is True
    for draft in (pit, pit_text):
        f = facts_of(knowledge, drafts=[draft])
        assert (f["draft_ipt"], f["draft_psychotherapy"]) == (False, True)


def test_unselected_drafts_are_in_the_plan_but_not_the_subject(knowledge: Knowledge) -> None:
    ad = med("ad", status="draft", medicationCodeableConcept=SERTRALINE_SCD)
    f = facts_of(
        knowledge, drafts=[ipt_order("i"), ad], hook="order-select", selections=["ServiceRequest/i"]
    )
    assert (f["draft_ipt"], f["draft_antidepressant"], f["antidepressant_in_plan"]) == (
        True,
        False,
        True,
    )
    assert f["ipt_draft_refs"] == ["ServiceRequest/i"]


# --- life context --------------------------------------------------------------------------


def test_stale_pregnancy_is_not_a_pregnancy(knowledge: Knowledge) -> None:
    recent = {**condition("p", "Z34.90"), "recordedDate": "2026-06-01"}
    stale = {**condition("p", "Z34.90"), "recordedDate": "2024-01-01"}
    assert facts_of(knowledge, recent)["pregnant"] is True
    assert facts_of(knowledge, stale)["pregnant"] is False


def test_pregnancy_from_status_observation(knowledge: Knowledge) -> None:
    o = observation(
        "o", "82810-3", valueCodeableConcept={"coding": [{"system": LOINC, "code": "LA15173-0"}]}
    )
    f = facts_of(knowledge, o)
    assert f["pregnant"] is True
    assert "role-transition" in f["focus_areas"]


def test_focus_areas_and_interpersonal_deficits_only_alone(knowledge: Knowledge) -> None:
    f = facts_of(
        knowledge, condition("b", "Z63.4"), condition("d", "Z63.0"), condition("i", "Z60.2")
    )
    assert f["focus_areas"] == ["grief", "role-dispute"]
    assert facts_of(knowledge, condition("i", "Z60.2"))["focus_areas"] == ["interpersonal-deficits"]


def test_age_from_birth_date_and_unknown_without_it(knowledge: Knowledge) -> None:
    assert facts_of(knowledge)["age"] == 46
    body = hook_request("order-sign", {"patient": None})
    request = REQUEST_MODELS["order-sign"].model_validate(body)
    record = PatientRecord.build([], request)
    assert knowledge.factbook.evaluate(record, "order-sign", NOW)["age"] is None
    assert record.patient_id == PATIENT_ID
