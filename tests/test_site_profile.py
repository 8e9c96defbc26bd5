"""The site profile (IPT_CDS_SITE_FILE), black-box through HTTP: what a health system sets.

A wrong profile stops start-up naming the file and the field; with a profile, a disabled rule
never appears, a silent one never appears but is counted, the cross-card conditions still see
both (an all-clear never shows because a warning was switched off), the one psychiatry referral
moves to the next card shown, and the site's links, orderable codes and name reach the cards.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from ipt_cds.knowledge.base import Knowledge
from ipt_cds.knowledge.errors import KnowledgeError
from ipt_cds.ops.config import Settings

from .conftest import AppFactory, Json

FIXTURES = Path(__file__).resolve().parent.parent / "fhir_fixtures"
IPT_LOCAL = {"system": "https://ehr.example.org/CodeSystem/orderables", "code": "REF123"}
PHQ9_APP = {"label": "PHQ-9 app", "url": "https://apps.example.org/phq9/launch", "type": "smart"}


def _profile(tmp_path: Path, profile: dict[str, Any]) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(profile))
    return path


@pytest.fixture
def site(tmp_path: Path, make_client: AppFactory, database_url: str) -> Any:
    """A client made with a given site profile, on SQLite and on PostgreSQL. The clients of one
    test share a database, and these tests call the same patient under several profiles: once
    per visit is off unless a test turns it on (tests/test_card_memory.py tests it)."""
    return lambda profile: make_client(
        database_url=database_url,
        site_file=_profile(tmp_path, {"repeat_window_hours": 0, **profile}),
    )


def _call(client: TestClient, fixture: str, hook_instance: str | None = None) -> list[Json]:
    body = json.loads((FIXTURES / "requests" / f"{fixture}.json").read_text())
    if hook_instance is not None:
        body["hookInstance"] = hook_instance
    hook = body["hook"]
    response = client.post(f"/cds-services/ipt-{hook}", json=body)
    assert response.status_code == 200, response.text
    cards: list[Json] = response.json()["cards"]
    return cards


def _rules(cards: list[Json]) -> dict[str, str]:
    return {c["source"]["topic"]["code"]: c["indicator"] for c in cards}


def _stats(client: TestClient, rule: str) -> Json:
    services = client.get("/stats/cards").json()["services"]
    found: Json = next(r for s in services for r in s["rules"] if r["rule"] == rule)
    return found


# --- start-up --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("profile", "field"),
    [
        ({"ehr": "cerner"}, "ehr"),
        ({"colour": "blue"}, "colour"),
        ({"rules": {"ipt-chd": {"enabled": "maybe"}}}, "rules.ipt-chd.enabled"),
        ({"rules": {"ipt-cautions": {"silnet": True}}}, "rules.ipt-cautions.silnet"),
        ({"rules": {"ipt-heart": {"enabled": False}}}, "rules.ipt-heart"),
        ({"links": {"crisis_line": {"label": "x", "url": "not a url"}}}, "links.crisis_line.url"),
        ({"links": {"hotline": {"label": "x", "url": "https://x.org"}}}, "links.hotline"),
        ({"orderables": {"ipt": [{"system": "s"}]}}, "orderables.ipt[0].code"),
        ({"repeat_window_hours": -1}, "repeat_window_hours"),
    ],
)
def test_a_wrong_profile_stops_start_up_naming_file_and_field(
    tmp_path: Path, settings: Settings, profile: dict[str, Any], field: str
) -> None:
    path = _profile(tmp_path, profile)
    with pytest.raises(KnowledgeError) as caught:
        Knowledge.load(settings.knowledge_dir, path)
    assert str(caught.value).startswith(f"{path}: {field}: "), str(caught.value)


def test_a_missing_profile_file_stops_start_up(settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(KnowledgeError, match="file not found"):
        Knowledge.load(settings.knowledge_dir, tmp_path / "nowhere.yaml")


def test_an_empty_profile_is_the_defaults(tmp_path: Path, settings: Settings) -> None:
    path = tmp_path / "site.yaml"
    path.write_text("# nothing set yet\n")
    site = Knowledge.load(settings.knowledge_dir, path).site
    assert (site.ehr, site.repeat_window_hours, site.rules) == ("generic", 12.0, {})


# --- rule controls -----------------------------------------------------------------------------


def test_a_disabled_rule_never_appears(site: Any) -> None:
    client = site({"rules": {"ipt-cautions": {"enabled": False}}})
    cards = _call(client, "in-chd-ischaemic-heart-disease")
    assert "ipt-cautions" not in _rules(cards)
    assert all(
        r["rule"] != "ipt-cautions"
        for s in client.get("/stats/cards").json().get("services", [])
        for r in s["rules"]
    )


def test_a_silent_rule_never_appears_but_is_counted(site: Any) -> None:
    client = site({"rules": {"ipt-cautions": {"silent": True}}})
    for n in range(2):  # two calls (a retry of one would count once)
        cards = _call(client, "in-chd-ischaemic-heart-disease", f"call-{n}")
        assert "ipt-cautions" not in _rules(cards)
    client.__exit__(None, None, None)  # the card recorder writes what it holds on shutdown
    client.__enter__()
    assert _stats(client, "ipt-cautions") == {
        "rule": "ipt-cautions",
        "shown": 0,
        "silent": 2,
        "suppressedAsRepeat": 0,
        "suppressedBySnooze": 0,
        "accepted": 0,
        "overridden": 0,
    }


# --- retired rule ids (cards/rules/_index.yaml `retired`) -----------------------------------


def _load_with_warnings(
    settings: Settings, tmp_path: Path, profile: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> tuple[Knowledge, list[str]]:
    with caplog.at_level(logging.WARNING, logger="ipt_cds"):
        knowledge = Knowledge.load(settings.knowledge_dir, _profile(tmp_path, profile))
    return knowledge, [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_a_profile_naming_a_retired_rule_loads_with_a_warning_naming_its_replacement(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    profile = {"rules": {"ipt-chd": {"snooze_days": 7}}}
    knowledge, warnings = _load_with_warnings(settings, tmp_path, profile, caplog)
    (warning,) = warnings
    assert "rules.ipt-chd: retired rule, replaced by ipt-cautions" in warning
    assert "ipt-chd" not in knowledge.site.rules
    # A shorter snooze is the less restrictive control: it moves to the replacement.
    assert knowledge.site.snooze_days("ipt-cautions") == 7
    assert knowledge.site.control("ipt-cautions").enabled


def test_a_retired_rule_hidden_alone_does_not_hide_its_replacement(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """ipt-cautions also carries cautions ipt-chd never showed (anxiety, past suicidal
    behaviour): a site's choice to hide the CHD card must not hide those."""
    profile = {"rules": {"ipt-chd": {"enabled": False}, "ipt-anxiety": {"silent": True}}}
    knowledge, warnings = _load_with_warnings(settings, tmp_path, profile, caplog)
    assert len(warnings) == 2
    assert all("ipt-cautions" in w and "shown, snooze 30 days" in w for w in warnings)
    control = knowledge.site.control("ipt-cautions")
    assert (control.enabled, control.silent) == (True, False)


def test_a_control_every_retired_rule_shared_moves_to_the_replacement(
    site: Any, settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    silent = {"silent": True}
    retired = {"ipt-chd": silent, "ipt-anxiety": silent, "ipt-personality": silent}
    knowledge, _ = _load_with_warnings(settings, tmp_path, {"rules": retired}, caplog)
    assert knowledge.site.control("ipt-cautions").silent
    client = site({"rules": retired})
    assert "ipt-cautions" not in _rules(_call(client, "in-chd-ischaemic-heart-disease"))
    disabled = {rid: {"enabled": False} for rid in retired}
    knowledge, _ = _load_with_warnings(settings, tmp_path, {"rules": disabled}, caplog)
    assert not knowledge.site.control("ipt-cautions").enabled


def test_the_replacements_own_control_wins_over_a_retired_ones(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    profile = {"rules": {"ipt-cautions": {"silent": True}, "ipt-personality": {"silent": False}}}
    knowledge, warnings = _load_with_warnings(settings, tmp_path, profile, caplog)
    (warning,) = warnings
    assert "rules.ipt-personality" in warning
    assert "ignored: ipt-cautions has its own" in warning
    assert knowledge.site.control("ipt-cautions").silent


def test_a_silenced_warning_still_keeps_the_all_clear_away(site: Any) -> None:
    """Cross-card conditions see every card the rules produced, before the site's controls."""
    default = _rules(_call(site({}), "in-addpharm-phq9-15"))
    assert default == {"ipt-add-pharmacotherapy": "warning"}
    for control in ({"silent": True}, {"enabled": False}):
        cards = _call(site({"rules": {"ipt-add-pharmacotherapy": control}}), "in-addpharm-phq9-15")
        assert cards == []


def test_the_one_referral_moves_to_the_next_card_shown(site: Any) -> None:
    """With the psychosis card switched off, the critical suicide card carries the urgent
    psychiatry referral, and no card points at the one that is not shown."""

    def referrals(cards: list[Json]) -> dict[str, str]:
        found = {}
        for card in cards:
            for suggestion in card.get("suggestions", []):
                for action in suggestion["actions"]:
                    resource = action.get("resource", {})
                    if resource.get("code", {}).get("coding", [{}])[0].get("code") == "308477009":
                        found[card["source"]["topic"]["code"]] = resource["priority"]
        return found

    fixture = "in-ten-09-psychotic-depression-ideation"
    assert referrals(_call(site({}), fixture)) == {"ipt-psychosis": "urgent"}
    profile = {"rules": {"ipt-psychosis": {"enabled": False}}, "acknowledge_safety_rules_off": True}
    cards = _call(site(profile), fixture)
    assert _rules(cards) == {"ipt-suicide-risk": "critical"}
    assert referrals(cards) == {"ipt-suicide-risk": "urgent"}
    assert "psychosis card" not in cards[0]["detail"]


def test_a_silenced_family_member_lets_the_next_one_stand(site: Any) -> None:
    fixture = "in-bereave-stands-over-older-and-severity"
    assert _rules(_call(site({}), fixture)) == {"ipt-bereavement-combination": "warning"}
    cards = _call(site({"rules": {"ipt-bereavement-combination": {"silent": True}}}), fixture)
    (standing,) = _rules(cards)
    assert standing in {"ipt-older-adult-acute", "ipt-add-pharmacotherapy"}
    assert "bereave" in cards[0]["detail"].lower(), "the silent member's reason is still named"


# --- what the site adds ------------------------------------------------------------------------


def test_local_orderable_codes_follow_ours_in_the_suggested_orders(site: Any) -> None:
    client = site(
        {
            "orderables": {
                "ipt": [{**IPT_LOCAL, "display": "Referral to IPT"}],
                "phq9": [{"system": IPT_LOCAL["system"], "code": "PHQ9-LOCAL"}],
            }
        }
    )
    codings = [
        action["resource"]["code"]["coding"]
        for fixture in ("in-summary-suitable-phq9", "in-measure-no-phq9")
        for card in _call(client, fixture)
        for suggestion in card.get("suggestions", [])
        for action in suggestion["actions"]
        if "resource" in action
    ]
    assert [c[0]["code"] for c in codings] == ["443730003", "44249-1"], "ours stay first"
    assert codings[0][1] == {**IPT_LOCAL, "display": "Referral to IPT"}
    assert codings[1][1] == {"system": IPT_LOCAL["system"], "code": "PHQ9-LOCAL"}


def test_the_sites_links_and_name_reach_the_cards(site: Any) -> None:
    crisis = {"label": "Example Health crisis line", "url": "https://example.org/crisis"}
    client = site(
        {
            "organization": "Example Health",
            "links": {"crisis_line": crisis, "phq9_app": PHQ9_APP},
        }
    )
    (suicide,) = [c for c in _call(client, "in-suicide-item9-one-ipt") if "links" in c]
    assert {**crisis, "type": "absolute"} in suicide["links"]
    assert all("988" not in link["url"] for link in suicide["links"])
    assert suicide["source"]["label"].startswith("Example Health: ")
    (measure,) = _call(client, "in-measure-no-phq9")
    assert measure["links"] == [PHQ9_APP], "a PHQ-9 app beside the PHQ-9 order"


def test_without_a_profile_cards_use_our_defaults(site: Any) -> None:
    (suicide, *_) = _call(site({}), "in-suicide-item9-one-ipt")
    assert [link["url"] for link in suicide["links"]] == [
        "https://cssrs.columbia.edu",
        "https://suicidesafetyplan.com",
        "https://988lifeline.org",
    ]
    assert not suicide["source"]["label"].startswith("Example Health")
