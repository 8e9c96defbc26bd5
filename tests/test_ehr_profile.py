"""The EHR profile (site profile ``ehr``), black-box through HTTP: every fixture request answered
under ``generic`` and under ``epic`` gives the same cards, shaped as each EHR takes them.

Under ``epic`` (docs/site-profile.md, "The Epic profile"): one action per suggestion (a
delete-and-create becomes two suggestions), ``selectionBehavior`` ``any``, and a topic code of
letters and digits that is the same on every call; what the card says does not change.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from ipt_cds.knowledge.ehr_profile import EPIC_PREFERENCE_LIST, epic_topic_code

from .conftest import AppFactory, Json

REQUESTS = Path(__file__).resolve().parent.parent / "fhir_fixtures" / "requests"
# The prefetched requests: their no-prefetch twins give the same cards (tests/test_rule_cases.py).
FIXTURES = sorted(p.stem for p in REQUESTS.glob("*.json") if not p.stem.endswith(".no-prefetch"))
# A teenager's adult IPT draft: its card replaces the draft by IPT-A, a delete and a create.
REPLACE = "in-teen-16-ipt-sign"
EPIC_EXTENSION = {
    "com.epic.cdshooks.request.bpa-trigger-action": "23",
    "com.epic.cdshooks.request.cds-hooks-specification-version": "1.0",
    "com.epic.cdshooks.request.fhir-version": "R4",
    "com.epic.cdshooks.request.criteria-id": "1234",
    "com.epic.cdshooks.request.epic-version": "11.1",
}


def _client(make_client: AppFactory, tmp_path: Path, ehr: str, **extra: Any) -> TestClient:
    path = tmp_path / f"site-{ehr}.yaml"
    # Once per visit off: both profiles answer the same patients in one database.
    path.write_text(yaml.safe_dump({"ehr": ehr, "repeat_window_hours": 0, **extra}))
    return make_client(site_file=path)


@pytest.fixture
def clients(make_client: AppFactory, tmp_path: Path) -> tuple[TestClient, TestClient]:
    return _client(make_client, tmp_path, "generic"), _client(make_client, tmp_path, "epic")


def _body(fixture: str) -> Json:
    body: Json = json.loads((REQUESTS / f"{fixture}.json").read_text())
    return body


def _cards(client: TestClient, body: Json) -> list[Json]:
    response = client.post(f"/cds-services/ipt-{body['hook']}", json=body)
    assert response.status_code == 200, response.text
    cards: list[Json] = response.json()["cards"]
    return cards


def _actions(card: Json) -> list[str]:
    return sorted(
        json.dumps(action, sort_keys=True)
        for suggestion in card.get("suggestions", [])
        for action in suggestion["actions"]
    )


def _what_it_says(card: Json) -> Json:
    """The card without its uuids and its shape (suggestions, selectionBehavior, topic code)."""
    return {
        **{k: v for k, v in card.items() if k not in ("uuid", "suggestions", "selectionBehavior")},
        "source": {k: v for k, v in card["source"].items() if k != "topic"},
        "topic": card["source"]["topic"]["display"],
    }


def test_every_fixture_gives_the_same_cards_under_both_profiles(
    clients: tuple[TestClient, TestClient],
) -> None:
    generic_client, epic_client = clients
    split = 0
    for fixture in FIXTURES:
        body = _body(fixture)
        generic, epic = _cards(generic_client, body), _cards(epic_client, body)
        assert [epic_topic_code(c["source"]["topic"]["code"]) for c in generic] == [
            c["source"]["topic"]["code"] for c in epic
        ], fixture
        for ours, theirs in zip(generic, epic, strict=True):
            assert _what_it_says(ours) == _what_it_says(theirs), fixture
            assert _actions(ours) == _actions(theirs), f"{fixture}: the same actions"
            code = theirs["source"]["topic"]["code"]
            assert re.fullmatch(r"[A-Za-z0-9]{1,100}", code), f"{fixture}: topic {code!r}"
            if "suggestions" in theirs:
                assert theirs["selectionBehavior"] == "any", fixture
                assert all(len(s["actions"]) == 1 for s in theirs["suggestions"]), fixture
                uuids = [s["uuid"] for s in theirs["suggestions"]]
                assert len(set(uuids)) == len(uuids), f"{fixture}: a uuid per suggestion"
            split += len(theirs.get("suggestions", [])) - len(ours.get("suggestions", []))
    assert split > 0, "some fixture has a suggestion of several actions to split"


def test_a_replacement_becomes_a_removal_and_an_order_under_epic(
    clients: tuple[TestClient, TestClient],
) -> None:
    generic_client, epic_client = clients
    body = _body(REPLACE)
    (generic,) = [c for c in _cards(generic_client, body) if "suggestions" in c]
    (epic,) = [c for c in _cards(epic_client, body) if "suggestions" in c]

    (replace,) = generic["suggestions"]
    assert generic["selectionBehavior"] == "at-most-one"
    assert replace["label"] == "Replace with IPT for adolescents (IPT-A)"
    assert [a["type"] for a in replace["actions"]] == ["delete", "create"]

    remove, order = epic["suggestions"]
    draft = body["context"]["draftOrders"]["entry"][0]["resource"]
    assert remove["actions"] == [replace["actions"][0]]
    assert remove["actions"][0]["resourceId"] == f"ServiceRequest/{draft['id']}"
    assert remove["label"] == remove["actions"][0]["description"]
    assert remove["label"].startswith("Remove the adult IPT order")
    # Epic shows an action's description, not the label: the create alone must not say it
    # replaces anything.
    assert order["actions"] == [replace["actions"][1]]
    assert (
        order["label"]
        == "Order Interpersonal psychotherapy for adolescents (IPT-A), weekly for 16 sessions"
    )
    assert "replace" not in order["label"].lower()
    assert generic["source"]["topic"]["code"] == "ipt-adolescent"
    assert epic["source"]["topic"]["code"] == "IptAdolescent"


def test_epic_request_extensions_are_accepted_and_change_nothing(
    clients: tuple[TestClient, TestClient],
) -> None:
    _, epic_client = clients
    body = _body("in-suicide-item9-one-ipt")
    plain = _cards(epic_client, body)
    extended = _cards(epic_client, {**body, "extension": EPIC_EXTENSION})
    assert [c["summary"] for c in extended] == [c["summary"] for c in plain]
    assert plain, "the fixture gives cards"


def test_feedback_on_a_split_suggestion_is_counted(
    clients: tuple[TestClient, TestClient],
) -> None:
    _, epic_client = clients
    (card,) = [c for c in _cards(epic_client, _body(REPLACE)) if "suggestions" in c]
    accepted = card["suggestions"][1]["uuid"]
    feedback = {
        "feedback": [
            {
                "card": card["uuid"],
                "outcome": "accepted",
                "acceptedSuggestions": [{"id": accepted}],
                "outcomeTimestamp": "2026-11-29T10:00:00Z",
            }
        ]
    }
    response = epic_client.post("/cds-services/ipt-order-sign/feedback", json=feedback)
    assert response.status_code == 200, response.text
    services = epic_client.get("/stats/cards").json()["services"]
    (sign,) = [s for s in services if s["service"] == "ipt-order-sign"]
    (rule,) = [r for r in sign["rules"] if r["rule"] == "ipt-adolescent"]
    assert rule["accepted"] == 1


@pytest.mark.parametrize(
    ("ehr", "orderables", "warned"),
    [
        ("epic", {}, ["ipt", "phq9", "psychiatry_referral"]),
        (
            "epic",
            {
                "ipt": [{"system": EPIC_PREFERENCE_LIST, "code": "12345"}],
                "phq9": [{"system": "https://ehr.example.org/orderables", "code": "PHQ9"}],
            },
            ["phq9", "psychiatry_referral"],
        ),
        ("generic", {}, []),
    ],
)
def test_an_epic_site_is_warned_of_orders_epic_cannot_place(
    make_client: AppFactory,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    ehr: str,
    orderables: Json,
    warned: list[str],
) -> None:
    with caplog.at_level(logging.WARNING, logger="ipt_cds"):
        _client(make_client, tmp_path, ehr, orderables=orderables)
    named = sorted(
        m.group(1)
        for r in caplog.records
        if (m := re.search(r"orderables\.(\w+) has no Epic order preference list item", r.message))
    )
    assert named == warned
