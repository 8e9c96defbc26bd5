"""Facts on FHIR whose values have the wrong JSON type: each is read as absent, the rest of the
resource still read; what cannot be read at all is skipped with a warning."""

from __future__ import annotations

import logging
from datetime import date
from typing import Any

import pytest

from ipt_cds.clinical.computed import episode as episode_logic
from ipt_cds.clinical.extractors import condition_is_active
from ipt_cds.clinical.reader import number, parse_date
from ipt_cds.clinical.record import PatientRecord
from ipt_cds.knowledge.base import Knowledge
from ipt_cds.protocol.models import REQUEST_MODELS

from .conftest import (
    NOW,
    Json,
    condition,
    hook_request,
    patient,
)
from .test_facts import (
    ITEM9,
    LOINC,
    PHQ9_TOTAL,
    SERTRALINE_SCD,
    dishonest,
    facts_of,
    med,
    observation,
)

# The reader checks the JSON type of everything it reads: what is not what FHIR says (or one of
# the tolerated departures of tests/test_facts.py) is absent, and the rest of the resource is
# still read.


@pytest.mark.parametrize("component", [5, True, "x", None, [5, "x", None], {"code": 5}])
def test_observation_whose_component_is_not_a_list_keeps_its_own_value(
    knowledge: Knowledge, component: Any
) -> None:
    """Once a TypeError in extractors._observation_items, and a 500."""
    total = observation("o1", PHQ9_TOTAL, valueInteger=16, component=component)
    f = facts_of(knowledge, condition("c1"), total)
    assert (f["phq9"].value, f["severity"]) == (16, "moderately-severe")


def test_a_single_component_object_is_read_as_a_list_of_one(knowledge: Knowledge) -> None:
    panel = observation("panel", "44249-1", valueInteger=11)
    panel["component"] = {"code": {"coding": [{"system": LOINC, "code": ITEM9}]}, "valueInteger": 2}
    assert facts_of(knowledge, panel)["suicidal_ideation"] == "high"


@pytest.mark.parametrize(
    ("contained", "found"),
    [
        (5, False),
        ("m", False),
        ([{"resourceType": "Medication", "id": "m", "code": {}, "ingredient": 5}], False),
        ([{"resourceType": "Medication", "id": "m", "code": {}, "ingredient": "x"}], False),
        # One object for the array, and one for the ingredients: both read.
        (
            {
                "resourceType": "Medication",
                "id": "m",
                "ingredient": {"itemCodeableConcept": SERTRALINE_SCD},
            },
            True,
        ),
    ],
    ids=["contained-int", "contained-str", "ingredient-int", "ingredient-str", "single-objects"],
)
def test_contained_medication_and_ingredients_of_the_wrong_type(
    knowledge: Knowledge, contained: Any, found: bool
) -> None:
    """Once a TypeError in extractors.medication_concepts, and a 500."""
    order = med("m1", medicationReference={"reference": "#m"}, contained=contained)
    assert facts_of(knowledge, order)["on_antidepressant"] is found


@pytest.mark.parametrize(
    "reference", [{"reference": 5}, {"reference": ["#m"]}, {"reference": {"reference": "#m"}}]
)
def test_medication_reference_that_is_not_a_string_is_absent(
    knowledge: Knowledge, reference: Json
) -> None:
    contained = [{"resourceType": "Medication", "id": "m", "code": SERTRALINE_SCD}]
    order = med("m1", medicationReference=reference, contained=contained)
    assert facts_of(knowledge, order)["on_antidepressant"] is False


@pytest.mark.parametrize(
    "value",
    [
        {"valueString": "Infinity"},
        {"valueString": "-inf"},
        {"valueString": "NaN"},
        {"valueString": "1e999"},
        {"valueString": "1_0"},  # float() reads 10
        {"valueString": "\u0662"},  # ARABIC-INDIC DIGIT TWO: float() reads 2
        {"valueString": "2 points"},
        {"valueQuantity": {"value": "Infinity"}},
        {"valueQuantity": {"value": [2]}},
        {"valueQuantity": 2},
        {"valueInteger": True},
        {"valueInteger": None},
    ],
)
def test_a_score_that_is_not_a_finite_decimal_is_absent(knowledge: Knowledge, value: Json) -> None:
    """Infinity once read as an item 9 of inf: a critical suicide-risk card from junk."""
    f = facts_of(knowledge, observation("o1", ITEM9, **value))
    assert (f["item9"], f["suicidal_ideation"]) == (None, None)


@pytest.mark.parametrize(
    ("when", "read"),
    [
        ("2026-11-20", True),
        ("2026-11", True),  # a partial date: its first day, in the window
        ("2026-11-20 09:30", True),
        ("2026-02-30", False),
        ("2026-13-01", False),
        ("99999-11-20", False),  # once read as 9999-11-20
        ("20261120", False),  # once read as 2026-01-01
        ("2026-11-2", False),  # once read as 2026-11-01
        ("\u0662\u0660\u0662\u0666-11-20", False),  # digits of another script
        ("", False),
        (20261120, False),
        (["2026-11-20"], False),
        ({"start": "2026-11-20"}, False),
    ],
)
def test_impossible_or_malformed_dates_are_absent(
    knowledge: Knowledge, when: Any, read: bool
) -> None:
    o = observation("o1", PHQ9_TOTAL, valueInteger=16)
    o["effectiveDateTime"] = when
    assert (facts_of(knowledge, o)["phq9"] is not None) is read


@pytest.mark.parametrize(
    ("value", "read"),
    [
        ("2026-11-20", date(2026, 11, 20)),
        ("2026-11-20T09:30:00", date(2026, 11, 20)),
        ("2026-11-20T09:30:00+14:00", date(2026, 11, 20)),
        (" 2026-11", date(2026, 11, 1)),
        ("2026", date(2026, 1, 1)),
        ("99999-11-20", None),
        ("20261120", None),
        ("2026-11-2", None),
        ("2026-11-201", None),
        ("0000-01-01", None),
        ("-2026-11-20", None),
    ],
)
def test_the_date_part_of_a_date_or_datetime(value: str, read: date | None) -> None:
    assert parse_date(value) == read


@pytest.mark.parametrize(
    ("value", "read"),
    [
        (15, 15.0),
        (15.4, 15.4),
        (" 15.4 ", 15.4),
        ("-2", -2.0),
        (".5", 0.5),
        ("1e1", 10.0),
        (2**64, float(2**64)),
        pytest.param(10**400, None, id="int-beyond-float"),  # a parser without a 64-bit limit
        ("1e400", None),
        ("Infinity", None),
        ("nan", None),
        (float("nan"), None),
        (float("inf"), None),
        ("1_5", None),
        ("0x1f", None),
        ("", None),
        (True, None),
        ([15], None),
    ],
)
def test_a_number_is_a_finite_decimal(value: Any, read: float | None) -> None:
    assert number(value) == read


@pytest.mark.parametrize(
    ("birth", "age"),
    [
        ("1900-01-01", 126),
        ("0001-01-01", None),  # .NET's DateTime.MinValue, sent for "unknown"
        ("2027-01-01", None),  # born after the call
        ("2026-02-30", None),
        ("99999-01-01", None),
        (19800501, None),
    ],
)
def test_an_impossible_birth_date_is_an_unknown_age(
    knowledge: Knowledge, birth: Any, age: int | None
) -> None:
    request = REQUEST_MODELS["patient-view"].model_validate(hook_request("patient-view", {}))
    record = PatientRecord.build([{**patient(), "birthDate": birth}], request)
    assert knowledge.factbook.evaluate(record, "patient-view", NOW)["age"] == age


@pytest.mark.parametrize(
    ("code", "depression"),
    [
        ({"coding": {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "F33.1"}}, True),
        ([{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "F33.1"}]}], True),
        ({"coding": [{"system": "http://snomed.info/sct", "code": 370143000}]}, True),
        ({"coding": [{"code": "F33.1"}]}, False),  # no system: not a code we can place
        ({"coding": [{"system": 7, "code": "F33.1"}]}, False),
        ({"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": ["F33.1"]}]}, False),
        ({"coding": "F33.1"}, False),
        ({"coding": 5}, False),
        ("F33.1", False),
        (5, False),
    ],
)
def test_codes_and_codings_of_the_wrong_type(
    knowledge: Knowledge, code: Any, depression: bool
) -> None:
    c = {**condition("c1"), "code": code}
    assert facts_of(knowledge, c)["depression"] is depression


@pytest.mark.parametrize("status", [5, None, ["active"], {"code": "active"}])
def test_a_status_that_is_not_a_string_is_absent(knowledge: Knowledge, status: Any) -> None:
    """An order's status must say it is current; an observation without one counts as final."""
    order = med("m1", status=status, medicationCodeableConcept=SERTRALINE_SCD)
    total = observation("o1", PHQ9_TOTAL, valueInteger=16)
    total["status"] = status
    f = facts_of(knowledge, order, total)
    assert (f["on_antidepressant"], f["phq9"].value) == (False, 16)


def test_a_resource_that_cannot_be_read_is_left_out_of_every_fact(
    knowledge: Knowledge, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Should reading a resource raise all the same, that resource is skipped with one warning
    (its type and id), and the facts are computed again without it: the anxiety extractor
    read it before the depression logic failed on it, and must not keep it."""

    def failing(c: Json) -> bool:
        if c.get("id") == "odd":
            raise TypeError("F41.1 cannot be read")
        return condition_is_active(c)

    monkeypatch.setattr(episode_logic, "condition_is_active", failing)
    odd = condition("odd", "F33.1")
    odd["code"]["coding"].append({"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "F41.1"})
    with caplog.at_level(logging.WARNING, logger="ipt_cds"):
        f = facts_of(knowledge, odd, condition("c2", "F20.9"))
    assert (f["depression"], f["anxiety"], f["psychosis"]) == (False, False, True)
    assert [r.getMessage() for r in caplog.records] == [
        "Condition/odd skipped: it cannot be read (TypeError)"
    ]
    assert dishonest(f, knowledge.facts) == []


def test_what_is_not_a_resource_is_skipped_when_the_record_is_built(
    caplog: pytest.LogCaptureFixture,
) -> None:
    request = REQUEST_MODELS["patient-view"].model_validate(hook_request("patient-view", {}))
    odd: list[Any] = ["Jane Doe", {"id": "x"}, {"resourceType": 5, "id": "Jane Doe"}]
    with caplog.at_level(logging.WARNING, logger="ipt_cds"):
        record = PatientRecord.build([patient(), *odd], request)
    assert (record.size, record.patient) == (1, patient())
    assert [r.getMessage() for r in caplog.records] == [
        "a JSON str skipped: not a FHIR resource",
        "resource/x skipped: not a FHIR resource",
        "resource without id skipped: not a FHIR resource",
    ]


def test_a_reference_names_its_target_whatever_its_form() -> None:
    from ipt_cds.clinical.reader import referenced_id

    assert referenced_id("Medication/1") == "1"
    assert referenced_id("https://ehr.example.org/fhir/Condition/c-9/_history/3") == "c-9"
    assert referenced_id("Condition/c-9/_history/3") == "c-9"
    assert referenced_id("") is None
    assert referenced_id(None) is None
    assert referenced_id(7) is None
