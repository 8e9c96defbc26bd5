"""The plan facts of version 3 (the spec v3, section 7.1): renewal or new start by daily dose,
when a drug's course began, the boxed-warning age, suicidal behaviour at any time, psychiatric
care received, and what could not be read."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from typing import Any

import pytest

from ipt_cds.clinical.computed.plan import course_start
from ipt_cds.clinical.extractors import Evidence
from ipt_cds.clinical.record import PatientRecord
from ipt_cds.knowledge.base import Knowledge
from ipt_cds.protocol.models import REQUEST_MODELS

from .conftest import NOW, Json, condition, hook_request, patient
from .test_facts import RXNORM, facts_of, med

SERTRALINE = {"coding": [{"system": RXNORM, "code": "312941", "display": "sertraline 50 MG"}]}


def sertraline(mid: str, mg: float | None, status: str = "active", **more: Any) -> Json:
    order = med(mid, status, medicationCodeableConcept=SERTRALINE, **more)
    if mg is not None:
        dose = {"doseQuantity": {"value": mg, "unit": "mg", "system": "http://unitsofmeasure.org"}}
        order["dosageInstruction"] = [{"doseAndRate": [dose]}]
    return order


def depression() -> Json:
    return condition("c1", "F32.1")


def past(cid: str, code: str, day: str) -> Json:
    """A resolved diagnosis recorded on ``day``."""
    c = condition(cid, code)
    c["clinicalStatus"]["coding"][0]["code"] = "resolved"
    return {**c, "recordedDate": day}


@pytest.mark.parametrize(
    ("current", "draft", "renewal"),
    [
        (50, 50, True),
        (50, 100, False),  # a dose increase is a new start
        (100, 50, False),  # so is any change of dose
        (None, None, True),  # neither says a dose: the same product is the same dose
        (50, None, False),  # one dose unknown: cannot be shown to be the same
        (None, 50, False),
    ],
)
def test_a_renewal_is_the_same_ingredient_at_the_same_daily_dose(
    knowledge: Knowledge, current: float | None, draft: float | None, renewal: bool
) -> None:
    f = facts_of(
        knowledge,
        depression(),
        sertraline("m1", current),
        drafts=[sertraline("d1", draft, status="draft")],
    )
    assert f["renewed_antidepressant"] is renewal
    assert f["new_antidepressant"] is not renewal


def test_medications_that_could_not_be_read_make_every_draft_a_new_start(
    knowledge: Knowledge,
) -> None:
    hook = "order-sign"
    body = hook_request(hook, {"patient": patient()}, drafts=[sertraline("d1", 50, "draft")])
    request = REQUEST_MODELS[hook].model_validate(body)
    resources = [patient(), depression(), sertraline("m1", 50)]
    record = PatientRecord.build(resources, request)
    record = replace(record, unreadable=frozenset({"MedicationStatement"}))
    f = knowledge.factbook.evaluate(record, hook, NOW)
    assert f["medications_unknown"] is True
    assert f["unreadable"] == ["medication statements"]
    assert f["renewed_antidepressant"] is False
    assert f["new_antidepressant"] is True


def _ev(day: str | None) -> Evidence:
    on = date.fromisoformat(day) if day else None
    return Evidence("MedicationRequest/x", on=on, ingredient="36437")


def test_a_course_starts_at_its_earliest_current_prescription() -> None:
    draft = _ev(None)
    # Two prescriptions current at once leave no gap: the course began with the earlier.
    current = [_ev("2026-08-01"), _ev("2026-04-01")]
    assert course_start(current, draft) == date(2026, 4, 1)
    # An undated prescription: the start is unknown, and unknown counts as new.
    assert course_start([_ev("2026-06-01"), _ev(None)], draft) is None


@pytest.mark.parametrize(
    ("birth", "due"),
    [("2002-01-01", True), ("2001-01-01", False), ("0001-01-01", True)],  # 24, 25, unknown
)
def test_the_boxed_warning_is_due_under_25_or_when_age_is_unknown(
    knowledge: Knowledge, birth: str, due: bool
) -> None:
    hook = "order-sign"
    body = hook_request(hook, {"patient": patient()}, drafts=[sertraline("d1", 50, "draft")])
    request = REQUEST_MODELS[hook].model_validate(body)
    record = PatientRecord.build([patient(birth=birth), depression()], request)
    assert knowledge.factbook.evaluate(record, hook, NOW)["boxed_warning_due"] is due


def test_suicidal_behaviour_counts_at_any_time_and_in_any_status(knowledge: Knowledge) -> None:
    attempt = past("c2", "T14.91XA", "2019-03-02")
    f = facts_of(knowledge, depression(), attempt)
    assert f["suicidal_ideation"] == "history"
    assert f["suicide_behaviour_summary"] == "Past suicide attempt or self-harm recorded 2019-03-02"
    assert "T14.91XA" in f.why["suicide_behaviour"]
    # Past ideation is history too, but not behaviour.
    ideation = past("c3", "R45.851", "2019-03-02")
    f = facts_of(knowledge, depression(), ideation)
    assert f["suicidal_ideation"] == "history"
    assert f["suicide_behaviour"] is None


def test_a_long_psychosis_name_is_shortened_for_the_summary(knowledge: Knowledge) -> None:
    f = facts_of(knowledge, condition("c1", "F32.3"))
    assert f["psychosis_diagnosis"] == "Psychotic features (F32.3)"
    f = facts_of(knowledge, depression(), condition("c2", "F53.1"))
    assert f["psychosis_diagnosis"] == "Puerperal psychosis (F53.1)"
