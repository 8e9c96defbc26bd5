"""A held card comes back when the record worsens; cards stay on screen while an order is edited;
a documented risk assessment holds a critical card back for its clinician only (the spec
7.1). Black-box through HTTP, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
import yaml
from fastapi.testclient import TestClient

from ipt_cds.clinical.worsening import RecordState
from ipt_cds.devtools.fixtures import Case, load_cases
from ipt_cds.knowledge.base import Knowledge
from ipt_cds.pipeline import recollect
from ipt_cds.protocol.vocabulary import OVERRIDE_SYSTEM
from ipt_cds.storage.store import Remembered

from .conftest import FHIR_BASE, NOW, AppFactory, Json

SERVICE = {
    "order-select": "ipt-order-select",
    "order-sign": "ipt-order-sign",
    "patient-view": "ipt-patient-view",
}
ADD = "ipt-add-pharmacotherapy"
SUICIDE = "ipt-suicide-risk"
DAY = timedelta(days=1)
PHQ9 = "44261-6"
ITEM9 = "44260-8"


def _case(name: str, *observations: Json, conditions: tuple[Any, ...] = ("F33.1",)) -> Case:
    """An adult with recurrent MDD and an IPT draft; the observations as given."""
    return Case(
        name=name,
        describe="memory test",
        hook="order-sign",
        age=45,
        conditions=list(conditions),
        observations=list(observations),
        drafts=["ipt"],
    )


def _phq9(value: int, days_ago: int = 10) -> Json:
    return {"loinc": PHQ9, "value": value, "days_ago": days_ago}


def _item9(value: int, days_ago: int = 10) -> Json:
    return {"loinc": ITEM9, "value": value, "days_ago": days_ago}


class Clinic:
    """One app, a clock that can move, and calls as the EHR makes them."""

    def __init__(self, client: TestClient, clock: list[datetime]) -> None:
        self.client, self.clock = client, clock

    def call(
        self,
        case: Case,
        hook: str = "order-sign",
        user: str = "Practitioner/alice",
        instance: str | None = None,
    ) -> dict[str, Json]:
        """Rule id -> card; each call a new hookInstance unless ``instance`` is given."""
        body = self.body(case, hook, user, instance)
        response = self.client.post(f"/cds-services/{SERVICE[hook]}", json=body)
        assert response.status_code == 200, response.text
        return {c["source"]["topic"]["code"]: c for c in response.json()["cards"]}

    def body(
        self,
        case: Case,
        hook: str = "order-sign",
        user: str = "Practitioner/alice",
        instance: str | None = None,
    ) -> Json:
        update: dict[str, Any] = {"hook": hook}
        if hook == "order-select":
            update["selected"] = [0]
        body = case.model_copy(update=update).request(self.clock[0], FHIR_BASE)
        body["hookInstance"] = instance or str(uuid.uuid4())
        body["context"]["userId"] = user
        return body

    def override(self, card: Json, code: str, at: datetime | None = None) -> None:
        item = {
            "card": card["uuid"],
            "outcome": "overridden",
            "outcomeTimestamp": (at or self.clock[0]).isoformat().replace("+00:00", "Z"),
            "overrideReason": {"reason": {"system": OVERRIDE_SYSTEM, "code": code}},
        }
        answer = self.client.post(
            "/cds-services/ipt-order-sign/feedback", json={"feedback": [item]}
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["stored"] == 1

    def stats(self, rule: str) -> Json:
        services = self.client.get("/stats/cards").json()["services"]
        rows = [r for s in services for r in s["rules"] if r["rule"] == rule]
        keys = ("shown", "suppressedAsRepeat", "suppressedBySnooze")
        return {k: sum(r[k] for r in rows) for k in keys}


@pytest.fixture
def clinic(make_client: AppFactory, database_url: str, tmp_path: Path) -> Callable[..., Clinic]:
    def make(**profile: Any) -> Clinic:
        site = tmp_path / f"site-{len(list(tmp_path.glob('site-*')))}.yaml"
        site.write_text(yaml.safe_dump(profile))
        clock = [NOW]
        client = make_client(database_url=database_url, site_file=site, clock=lambda: clock[0])
        return Clinic(client, clock)

    return make


# --- 1. Snooze and once per visit end when the record worsens ------------------------------


def test_a_snoozed_card_shows_again_when_the_phq9_band_rises(clinic: Callable[..., Clinic]) -> None:
    """PHQ-9 16: the add-antidepressant card, overridden; the same call again keeps it away (a
    snooze); the next day PHQ-9 25 brings it back at once, where 18 (the same band) does not."""
    c = clinic()
    before = _case("in-memory-phq9-16", _phq9(16))
    cards = c.call(before)
    assert {k: v["indicator"] for k, v in cards.items()} == {ADD: "warning"}
    c.override(cards[ADD], "patient-declines-medication")
    assert c.call(before) == {}
    assert c.stats(ADD)["suppressedBySnooze"] == 1
    c.clock[0] = NOW + DAY
    same_band = _case("in-memory-phq9-16", _phq9(16, 11), _phq9(18, 0))
    assert c.call(same_band) == {}, "moderately severe, as when overridden"
    worse = _case("in-memory-phq9-16", _phq9(16, 11), _phq9(25, 0))
    assert list(c.call(worse)) == [ADD]
    assert c.stats(ADD) == {"shown": 2, "suppressedAsRepeat": 0, "suppressedBySnooze": 2}


def test_a_measured_phq9_ends_a_snooze_decided_on_a_diagnosis_code(
    clinic: Callable[..., Clinic],
) -> None:
    """Severe by its diagnosis code alone (F32.2, no PHQ-9): the card is overridden as outdated;
    a PHQ-9 of 25 measured the next day is a band where there was none: the card shows again
    (found black-box: the code's severity used to stand in for the PHQ-9 band)."""
    c = clinic()
    coded = _case("in-memory-coded-severe", conditions=("F32.2",))
    cards = c.call(coded)
    assert list(cards) == [ADD]
    c.override(cards[ADD], "severity-outdated")
    assert c.call(coded) == {}
    c.clock[0] = NOW + DAY
    measured = _case("in-memory-coded-severe", _phq9(25, 0), conditions=("F32.2",))
    assert list(c.call(measured)) == [ADD]


def test_a_repeat_shows_again_when_the_phq9_band_rises_between_select_and_sign(
    clinic: Callable[..., Clinic],
) -> None:
    c = clinic()
    assert list(c.call(_case("in-memory-repeat", _phq9(16)), "order-select")) == [ADD]
    assert c.call(_case("in-memory-repeat", _phq9(16)), "order-sign") == {}, "seen this visit"
    worse = _case("in-memory-repeat", _phq9(16, 11), _phq9(25, 0))
    assert list(c.call(worse, "order-sign")) == [ADD]
    # Shown again at the worse state: a further call at that state is a repeat again.
    assert c.call(worse, "order-sign") == {}
    assert c.stats(ADD)["suppressedAsRepeat"] == 2


def test_a_new_ideation_basis_at_the_same_level_ends_a_snooze(
    clinic: Callable[..., Clinic],
) -> None:
    """Item 9 answered 2 (high); a suicidal-ideation diagnosis recorded later is another basis
    at the same level: the overridden card comes back."""
    c = clinic(repeat_window_hours=0)
    before = _case("in-memory-basis", _phq9(12), _item9(2))
    cards = c.call(before)
    assert cards[ADD]["indicator"] == "warning"
    assert cards[SUICIDE]["indicator"] == "critical"
    c.override(cards[ADD], "patient-declines-medication")
    assert list(c.call(before)) == [SUICIDE]
    ideation = {"code": "R45.851", "days_ago": 0}
    after = _case("in-memory-basis", _phq9(12), _item9(2), conditions=("F33.1", ideation))
    assert set(c.call(after)) == {ADD, SUICIDE}


def test_pregnancy_on_record_since_the_override_ends_a_snooze(
    clinic: Callable[..., Clinic],
) -> None:
    c = clinic(repeat_window_hours=0)
    before = _case("in-memory-pregnant", _phq9(16))
    c.override(c.call(before)[ADD], "patient-declines-medication")
    assert c.call(before) == {}
    pregnant = {"code": "Z34.90", "days_ago": 1}
    after = _case("in-memory-pregnant", _phq9(16), conditions=("F33.1", pregnant))
    assert list(c.call(after)) == [ADD]


def test_a_lower_band_keeps_the_snooze(clinic: Callable[..., Clinic]) -> None:
    c = clinic(repeat_window_hours=0)
    before = _case("in-memory-lower", _phq9(22))
    c.override(c.call(before)[ADD], "severity-outdated")
    c.clock[0] = NOW + DAY
    assert c.call(_case("in-memory-lower", _phq9(22, 11), _phq9(16, 0))) == {}


def test_a_snooze_written_before_the_record_was_kept_holds_as_before(
    clinic: Callable[..., Clinic],
) -> None:
    c = clinic(repeat_window_hours=0)
    app: Any = c.client.app
    memory = app.state.ipt.memory
    patient = memory.pseudonym(FHIR_BASE, "in-memory-old-row")
    old = Remembered(patient, ADD, "", None, "snooze", NOW - DAY, NOW + 29 * DAY)
    memory.store.remember([old])
    assert c.call(_case("in-memory-old-row", _phq9(25))) == {}


def test_the_memory_keeps_codes_and_keyed_hashes_only(
    clinic: Callable[..., Clinic], database_url: str
) -> None:
    c = clinic()
    case = _case("in-memory-no-phi", _phq9(16), _item9(2), conditions=("F33.1", "Z34.90"))
    c.override(c.call(case)[ADD], "patient-declines-medication")
    c.client.__exit__(None, None, None)  # the recorder writes what it holds
    c.client.__enter__()
    engine = sqlalchemy.create_engine(
        database_url.replace("postgresql://", "postgresql+psycopg://")
    )
    with engine.connect() as conn:
        rows = conn.execute(
            sqlalchemy.text("SELECT event, band, ideation, basis, flags, user_key FROM card_memory")
        ).all()
    engine.dispose()
    assert {r.event for r in rows} == {"shown", "snooze"}
    for row in rows:
        assert (row.band, row.ideation, row.flags) == ("moderately-severe", "high", "pregnant")
        assert re.fullmatch("[0-9a-f]{64}", row.basis), "one keyed hash"
        assert len(row.user_key) == 64
    text = repr(rows)
    for secret in ("in-memory-no-phi", "Observation", "Practitioner", "alice"):
        assert secret not in text


# --- 2. A card stays on screen while its order is edited -----------------------------------


def test_order_select_fired_again_for_the_same_order_shows_its_cards_again(
    clinic: Callable[..., Clinic],
) -> None:
    c = clinic()
    case = _case("in-memory-editing", _phq9(16))
    assert list(c.call(case, "order-select")) == [ADD]
    assert list(c.call(case, "order-select")) == [ADD], "the dose changed: still on screen"
    assert c.call(case, "order-sign") == {}, "order-sign does not repeat it"
    assert c.stats(ADD) == {"shown": 2, "suppressedAsRepeat": 1, "suppressedBySnooze": 0}


def test_a_new_chart_open_does_not_repeat_the_chart_card(clinic: Callable[..., Clinic]) -> None:
    c = clinic()
    case = _case("in-memory-chart", _phq9(16))
    first = c.call(case, "patient-view")
    assert first, "the chart-open card"
    assert c.call(case, "patient-view") == {}


def test_a_retried_call_is_counted_once(clinic: Callable[..., Clinic]) -> None:
    c = clinic()
    case = _case("in-memory-retry", _phq9(16))
    body = c.body(case, "order-select")
    for _ in range(2):
        cards = c.client.post("/cds-services/ipt-order-select", json=body).json()["cards"]
        assert [card["source"]["topic"]["code"] for card in cards] == [ADD]
    assert c.stats(ADD) == {"shown": 1, "suppressedAsRepeat": 0, "suppressedBySnooze": 0}


# --- 3. A documented risk assessment holds a critical card for its clinician only ----------

ASSESSED_LINE = "Suicide risk assessed at 2026-11-25 12:00 UTC by another clinician."


def _suicide_case() -> Case:
    case = next(c for c in load_cases() if c.name == "in-suicide-item9-two-ipt")
    return case.model_copy(update={"name": "in-memory-assessed"})


def test_risk_assessed_holds_the_critical_card_for_that_clinician_only(
    clinic: Callable[..., Clinic],
) -> None:
    c = clinic(repeat_window_hours=0)
    case = _suicide_case()
    cards = c.call(case)
    assert cards[SUICIDE]["indicator"] == "critical"
    assert cards[SUICIDE]["overrideReasons"][0] == {
        "system": OVERRIDE_SYSTEM,
        "code": "risk-assessed",
        "display": "Suicide risk assessed; safety plan in place",
    }
    c.override(cards[SUICIDE], "risk-assessed")
    assert SUICIDE not in c.call(case), "held back for the clinician who assessed"
    other = c.call(case, user="Practitioner/bob")[SUICIDE]
    assert other["detail"].startswith(ASSESSED_LINE + "\n\n")
    assert other["indicator"] == "critical"
    assert c.stats(SUICIDE)["suppressedBySnooze"] == 1
    c.clock[0] = NOW + timedelta(hours=11, minutes=59)
    assert SUICIDE not in c.call(case)
    c.clock[0] = NOW + timedelta(hours=12)
    again = c.call(case)[SUICIDE]
    assert "assessed" not in again["detail"].split("\n\n")[0]


def test_a_new_basis_shows_the_assessed_card_again_at_once(
    clinic: Callable[..., Clinic],
) -> None:
    c = clinic(repeat_window_hours=0)
    case = _suicide_case()
    c.override(c.call(case)[SUICIDE], "risk-assessed")
    assert SUICIDE not in c.call(case)
    newer = {"loinc": ITEM9, "value": 1, "days_ago": 0}
    later = case.model_copy(update={"observations": [*case.observations, newer]})
    # Item 9 answered 1 today: the level is now low (a warning), on a basis not assessed.
    card = c.call(later)[SUICIDE]
    assert not card["detail"].startswith("Suicide risk assessed")
    attempt = {"code": "T14.91XA", "days_ago": 0}
    attempted = case.model_copy(update={"conditions": [*case.conditions, attempt]})
    shown = c.call(attempted)[SUICIDE]
    assert shown["indicator"] == "critical"
    # Another clinician is not told of an assessment that predates the new basis.
    assert not c.call(attempted, user="Practitioner/bob")[SUICIDE]["detail"].startswith(
        "Suicide risk assessed"
    )


def test_other_override_reasons_never_hold_a_critical_card(
    clinic: Callable[..., Clinic],
) -> None:
    c = clinic(repeat_window_hours=0)
    case = _suicide_case()
    c.override(c.call(case)[SUICIDE], "crisis-team-involved")
    card = c.call(case)[SUICIDE]
    assert card["indicator"] == "critical"
    assert not card["detail"].startswith("Suicide risk assessed")


def test_an_assessment_reported_late_holds_only_until_12_hours_after_it(
    clinic: Callable[..., Clinic],
) -> None:
    c = clinic(repeat_window_hours=0)
    case = _suicide_case()
    card = c.call(case)[SUICIDE]
    c.clock[0] = NOW + timedelta(hours=13)
    c.override(card, "risk-assessed", at=NOW)
    assert SUICIDE in c.call(case)
    assert not c.call(case, user="Practitioner/bob")[SUICIDE]["detail"].startswith("Suicide")


@dataclass(frozen=True)
class _Held:
    rule_id: str
    why: str
    marks: None
    at: datetime
    mine: bool


def test_another_clinicians_assessment_is_said_in_its_rules_words(knowledge: Knowledge) -> None:
    """The line comes from the rule's holding reason (others_read); a row of a rule that no
    longer declares one (kept from an earlier knowledge base) gets a plain line."""
    held = [_Held("r1", "assessed", None, NOW, False), _Held("r2", "assessed", None, NOW, False)]
    said = {"r1": "Risk assessed at {at} on another ward."}
    memo = recollect(held, RecordState(), knowledge.worsening, said)
    assert memo.notes == {
        "r1": "Risk assessed at 2026-11-25 12:00 UTC on another ward.",
        "r2": "Assessed at 2026-11-25 12:00 UTC by another clinician.",
    }
    assert memo.held == {}, "another clinician's assessment holds nothing back"
