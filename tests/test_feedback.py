"""Feedback is validated, stored once, survives a restart, and feeds the per-rule statistics."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy
from fastapi.testclient import TestClient

from ipt_cds.clinical.fact_model import Facts
from ipt_cds.ops.config import Settings
from ipt_cds.pipeline import HookCall
from ipt_cds.protocol.models import Card, Source
from ipt_cds.storage.store import database_url

from .conftest import AppFactory, Json, full_prefetch, hook_request, hypertension
from .rules import CountingRule

RULES = (
    CountingRule("counts-conditions", "Condition", "warning"),
    CountingRule("counts-observations", "Observation", "info"),
)


def _show_cards(client: TestClient, hook_instance: str | None = None) -> dict[str, str]:
    """Call order-sign once; answer rule id -> card uuid."""
    body = hook_request("order-sign", full_prefetch(hypertension("c1")))
    if hook_instance is not None:
        body["hookInstance"] = hook_instance
    cards = client.post("/cds-services/ipt-order-sign", json=body).json()["cards"]
    return {c["source"]["topic"]["code"]: c["uuid"] for c in cards}


def _overridden(card: str, **extra: Any) -> Json:
    return {
        "card": card,
        "outcome": "overridden",
        "outcomeTimestamp": "2026-11-25T12:01:00Z",
        **extra,
    }


def _accepted(card: str) -> Json:
    return {
        "card": card,
        "outcome": "accepted",
        "acceptedSuggestions": [{"id": "e56e1945-20b3-4393-8503-a1a20fd73152"}],
        "outcomeTimestamp": "2026-11-25T12:02:00Z",
    }


@pytest.fixture
def settings(database_url: str) -> Settings:
    """Every feedback test runs on SQLite and on PostgreSQL."""
    return Settings(database_url=database_url, fhir_retries=0, fhir_allowlist=[])


REASON = {"code": "not-indicated", "system": "https://fhir.ipt-cds.org/CodeSystem/override-reason"}


def test_feedback_is_stored_once_when_repeated(make_client: AppFactory) -> None:
    client = make_client(rules=RULES)
    card = _show_cards(client)["counts-conditions"]
    body = {"feedback": [_overridden(card, overrideReason={"reason": REASON})]}
    first = client.post("/cds-services/ipt-order-sign/feedback", json=body)
    again = client.post("/cds-services/ipt-order-sign/feedback", json=body)
    assert first.json() == {"received": 1, "stored": 1}
    assert again.status_code == 200
    assert again.json() == {"received": 1, "stored": 0}
    rules = client.get("/stats/cards").json()["services"][0]["rules"]
    assert next(r for r in rules if r["rule"] == "counts-conditions")["overridden"] == 1


def test_a_later_distinct_answer_on_the_same_card_is_stored(make_client: AppFactory) -> None:
    client = make_client(rules=RULES)
    card = _show_cards(client)["counts-conditions"]
    late = _overridden(card, outcomeTimestamp="2026-11-25T13:00:00Z")
    body = {"feedback": [_overridden(card), late, _overridden(card)]}
    response = client.post("/cds-services/ipt-order-sign/feedback", json=body)
    assert response.json() == {"received": 3, "stored": 2}


def test_stats_count_shown_accepted_overridden_and_reasons(make_client: AppFactory) -> None:
    client = make_client(rules=RULES)
    first, second = _show_cards(client), _show_cards(client, str(uuid.uuid4()))
    _show_cards(client)  # a retry of the first call (same hookInstance) counts once
    other = {**REASON, "code": "patient-declined", "display": "Patient declined"}
    feedback = [
        _overridden(first["counts-conditions"], overrideReason={"reason": REASON}),
        # Epic's plural form, one reason given twice across cards
        _overridden(
            second["counts-conditions"],
            overrideReasons=[
                {"reason": REASON, "userComment": "Jane Doe says no"},
                {"reason": other},
            ],
        ),
        _accepted(first["counts-observations"]),
    ]
    assert client.post(
        "/cds-services/ipt-order-sign/feedback", json={"feedback": feedback}
    ).json() == {
        "received": 3,
        "stored": 3,
    }
    assert client.get("/stats/cards").json() == {
        "services": [
            {
                "service": "ipt-order-sign",
                "rules": [
                    {
                        "rule": "counts-conditions",
                        "shown": 2,
                        "silent": 0,
                        "suppressedAsRepeat": 0,
                        "suppressedBySnooze": 0,
                        "accepted": 0,
                        "overridden": 2,
                        "overrideReasons": [
                            {**REASON, "count": 2},
                            {**other, "count": 1},
                        ],
                    },
                    {
                        "rule": "counts-observations",
                        "shown": 2,
                        "silent": 0,
                        "suppressedAsRepeat": 0,
                        "suppressedBySnooze": 0,
                        "accepted": 1,
                        "overridden": 0,
                    },
                ],
            }
        ]
    }


def test_feedback_survives_an_app_restart(make_client: AppFactory) -> None:
    client = make_client(rules=RULES)
    card = _show_cards(client)["counts-observations"]
    body = {"feedback": [_accepted(card)]}
    assert client.post("/cds-services/ipt-order-sign/feedback", json=body).json()["stored"] == 1
    client.__exit__(None, None, None)

    restarted = make_client(rules=RULES)
    assert restarted.post("/cds-services/ipt-order-sign/feedback", json=body).json()["stored"] == 0
    stats = restarted.get("/stats/cards").json()["services"][0]["rules"]
    assert {r["rule"]: (r["shown"], r["accepted"]) for r in stats} == {
        "counts-conditions": (1, 0),
        "counts-observations": (1, 1),
    }


def test_feedback_on_a_card_whose_shown_row_was_lost_is_attributed_by_its_uuid(
    make_client: AppFactory, settings: Settings
) -> None:
    """A crash loses the last batch of "card shown" rows; the card's uuid names its service and
    rule, so its feedback still counts. Feedback on a card we never issued does not."""
    client = make_client(rules=RULES)
    kept, lost = _show_cards(client), _show_cards(client)
    client.get("/stats/cards")  # the recorder has written both calls' rows
    engine = sqlalchemy.create_engine(database_url(settings.database_url))
    with engine.begin() as conn:
        conn.execute(
            sqlalchemy.text("DELETE FROM cards_issued WHERE card_uuid IN (:a, :b)"),
            {"a": lost["counts-conditions"], "b": lost["counts-observations"]},
        )
    engine.dispose()
    feedback = [
        _overridden(kept["counts-conditions"], overrideReason={"reason": REASON}),
        _overridden(lost["counts-conditions"], overrideReason={"reason": REASON}),
        _accepted(lost["counts-observations"]),
        _overridden(str(uuid.uuid4())),  # not ours: stored, but attributed to no rule
    ]
    answer = client.post("/cds-services/ipt-order-sign/feedback", json={"feedback": feedback})
    assert answer.json() == {"received": 4, "stored": 4}
    rules = client.get("/stats/cards").json()["services"][0]["rules"]
    assert {r["rule"]: (r["shown"], r["accepted"], r["overridden"]) for r in rules} == {
        # shown: the row left, plus the card known only from its feedback
        "counts-conditions": (2, 0, 2),
        "counts-observations": (2, 1, 0),
    }
    assert rules[0]["overrideReasons"] == [{**REASON, "count": 2}]


def test_free_text_comments_are_not_stored(make_client: AppFactory, settings: Settings) -> None:
    client = make_client(rules=RULES)
    card = _show_cards(client)["counts-conditions"]
    item = _overridden(card, overrideReason={"reason": REASON, "userComment": "Jane Doe, MRN 123"})
    client.post("/cds-services/ipt-order-sign/feedback", json={"feedback": [item]})
    engine = sqlalchemy.create_engine(database_url(settings.database_url))
    with engine.connect() as conn:
        rows = [str(tuple(r)) for r in conn.execute(sqlalchemy.text("SELECT * FROM feedback"))]
    engine.dispose()
    assert any("not-indicated" in r for r in rows)
    assert not any("Jane Doe" in r for r in rows)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "feedback"),
        ({"feedback": []}, "feedback"),
        (
            {"feedback": [{"outcome": "overridden", "outcomeTimestamp": "2026-11-25T12:00:00Z"}]},
            "feedback[0].card",
        ),
        ({"feedback": [{"card": "c", "outcome": "overridden"}]}, "feedback[0].outcomeTimestamp"),
        (
            {"feedback": [{"card": "c", "outcome": "overridden", "outcomeTimestamp": "yesterday"}]},
            "feedback[0].outcomeTimestamp",
        ),
        (
            {
                "feedback": [
                    {"card": "c", "outcome": "accepted", "outcomeTimestamp": "2026-11-25T12:00:00Z"}
                ]
            },
            "feedback[0]",
        ),
        ({"feedback": "accepted"}, "feedback"),
    ],
)
def test_invalid_feedback_answers_400_and_stores_nothing(
    client: TestClient, body: Json, field: str
) -> None:
    response = client.post("/cds-services/ipt-order-sign/feedback", json=body)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_request"
    assert response.json()["field"] == field
    assert client.get("/stats/cards").json() == {"services": []}


def test_one_bad_item_rejects_the_whole_batch(make_client: AppFactory) -> None:
    client = make_client(rules=RULES)
    card = _show_cards(client)["counts-conditions"]
    body = {"feedback": [_overridden(card), {"card": card, "outcome": "maybe"}]}
    assert client.post("/cds-services/ipt-order-sign/feedback", json=body).status_code == 400
    retry = {"feedback": [_overridden(card)]}
    assert client.post("/cds-services/ipt-order-sign/feedback", json=retry).json()["stored"] == 1


def test_malformed_feedback_json_answers_400(client: TestClient) -> None:
    response = client.post("/cds-services/ipt-order-sign/feedback", content=b"{feedback")
    assert response.status_code == 400
    assert response.json()["code"] == "malformed_json"


@pytest.mark.parametrize(
    "stamp", [0, 1732875600, "2026-11-29", "2026-11-29T10:00:00", True], ids=repr
)
def test_an_outcome_timestamp_must_be_an_instant_with_its_offset(
    client: TestClient, stamp: object
) -> None:
    # Unix seconds would be stored as of 1970, a naive or date-only time at a guessed zone.
    item = {"card": "c", "outcome": "overridden", "outcomeTimestamp": stamp}
    body = {"feedback": [item]}
    response = client.post("/cds-services/ipt-order-sign/feedback", json=body)
    assert response.status_code == 400
    assert response.json()["field"] == "feedback[0].outcomeTimestamp"
    assert client.get("/stats/cards").json() == {"services": []}


@dataclass(frozen=True)
class _UntitledRule(CountingRule):
    """A Python rule whose card names no rule in source.topic (CDS Hooks makes topic optional)."""

    def evaluate(self, call: HookCall, facts: Facts) -> Card | None:
        card = super().evaluate(call, facts)
        return None if card is None else card.model_copy(update={"source": Source(label="x")})


def test_a_card_without_a_topic_is_counted_under_the_rule_that_made_it(
    make_client: AppFactory,
) -> None:
    client = make_client(rules=(_UntitledRule("untitled", "Condition"),))
    body = hook_request("order-sign", full_prefetch(hypertension("c1")))
    cards = client.post("/cds-services/ipt-order-sign", json=body).json()["cards"]
    assert [c.get("source", {}).get("topic") for c in cards] == [None]
    rules = client.get("/stats/cards").json()["services"][0]["rules"]
    assert [(r["rule"], r["shown"]) for r in rules] == [("untitled", 1)]
