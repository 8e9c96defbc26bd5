"""Retired rule ids (``retired`` in cards/rules/_index.yaml) stay known: cards made under one
still decode to it and count under it in /stats/cards, and its evidence page says what replaced
it. (Site profiles naming one: tests/test_site_profile.py; a wrong ``retired`` map:
tests/broken_knowledge/retired-*.)"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from ipt_cds.knowledge.base import Knowledge
from ipt_cds.protocol import card_ids
from ipt_cds.protocol.card_ids import CardIds
from ipt_cds.storage.store import IssuedCard

from .conftest import AppFactory

RETIRED = {
    "ipt-chd": "ipt-cautions",
    "ipt-anxiety": "ipt-cautions",
    "ipt-personality": "ipt-cautions",
}

# The rule code inside a card uuid, as cards already issued carry it: a code is a hash of the id
# alone, so these never change, whatever rules are added or removed.
PINNED = {
    "ipt-chd": 0x03987505,
    "ipt-anxiety": 0x5A7105F4,
    "ipt-personality": 0x57CA4C63,
    "ipt-cautions": 0x3DB5791E,
    "ipt-suicide-risk": 0x04E80CAB,
    "ipt-suitable": 0xF3E72336,
    "ipt-patient-summary": 0x33F95778,
}


def test_the_shipped_knowledge_retires_the_three_caution_rules(knowledge: Knowledge) -> None:
    assert knowledge.rulebook.retired == RETIRED
    ids = {r.id for r in knowledge.rulebook.rules}
    assert "ipt-cautions" in ids
    assert not ids & set(RETIRED)


@pytest.mark.parametrize(("rule_id", "code"), sorted(PINNED.items()))
def test_a_rules_code_is_stable(rule_id: str, code: int) -> None:
    assert card_ids.rule_code(rule_id) == code
    assert card_ids.mint("ipt-order-sign", rule_id).startswith(f"{code:08x}-")


def test_adding_or_removing_rules_renumbers_no_other(knowledge: Knowledge) -> None:
    rules = [r.id for r in knowledge.rulebook.rules]
    full = CardIds(knowledge.services, rules, knowledge.rulebook.retired)
    fewer = CardIds(knowledge.services, rules[::2], ["ipt-chd"])
    more = CardIds(knowledge.services, [*rules, "a-new-rule"], knowledge.rulebook.retired)
    for rule_id in [*rules[::2], "ipt-chd"]:
        card = card_ids.mint("ipt-order-select", rule_id)
        assert full.decode(card) == fewer.decode(card) == more.decode(card)
        assert full.decode(card) == ("ipt-order-select", rule_id)


def test_the_services_card_uuids_of_retired_rules_decode_to_them(client: TestClient) -> None:
    ids = client.app.state.ipt.pipeline.card_ids  # type: ignore[attr-defined]
    for rule_id in RETIRED:
        card = card_ids.mint("ipt-order-sign", rule_id)
        assert ids.decode(card) == ("ipt-order-sign", rule_id)


def _overridden(card: str) -> dict[str, str]:
    return {"card": card, "outcome": "overridden", "outcomeTimestamp": "2026-11-25T12:01:00Z"}


def test_stats_count_a_retired_rules_cards_under_its_id(
    make_client: AppFactory, database_url: str
) -> None:
    """Cards stored before the rule was retired, and feedback on one whose "card shown" row was
    lost (attributed by its uuid alone), both count under the old id."""
    client = make_client(database_url=database_url)
    store = client.app.state.ipt.store  # type: ignore[attr-defined]
    stored = card_ids.mint("ipt-order-sign", "ipt-chd")
    lost = card_ids.mint("ipt-order-sign", "ipt-chd")
    when = datetime(2026, 11, 20, tzinfo=UTC)
    store.record_cards([IssuedCard(stored, "ipt-order-sign", "h-1", "ipt-chd", "info", when)])
    feedback = {"feedback": [_overridden(stored), _overridden(lost)]}
    answer = client.post("/cds-services/ipt-order-sign/feedback", json=feedback)
    assert answer.json() == {"received": 2, "stored": 2}
    services = client.get("/stats/cards").json()["services"]
    (row,) = [r for s in services for r in s["rules"] if r["rule"] == "ipt-chd"]
    assert (row["shown"], row["overridden"]) == (2, 2)


def test_a_retired_rules_evidence_page_links_its_replacement(client: TestClient) -> None:
    page = client.get("/evidence/ipt-chd")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "Content-Security-Policy" in page.headers
    assert "<code>ipt-chd</code> is retired" in page.text
    assert '<a href="ipt-cautions"><code>ipt-cautions</code></a>' in page.text
    assert client.get("/evidence/ipt-cautions").status_code == 200


def test_the_index_lists_rules_not_retired_ids(client: TestClient) -> None:
    index = client.get("/evidence").text
    assert 'href="evidence/ipt-cautions"' in index
    assert 'href="evidence/ipt-chd"' not in index


def test_an_unknown_id_is_still_a_404(client: TestClient) -> None:
    assert client.get("/evidence/ipt-heart").status_code == 404
