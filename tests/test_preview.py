"""The card preview (/preview), through HTTP: a fixture's or a pasted request's cards rendered
as an EHR shows them, Markdown made safe, and Accept and Dismiss storing real feedback that
/stats/cards counts apart, under the service "preview"; served only when client
authentication is off, or when asked."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ipt_cds.http.card_html import markdown

from .conftest import AppFactory

REQUESTS = Path(__file__).resolve().parent.parent / "fhir_fixtures" / "requests"
SUICIDE = "in-suicide-item9-one-ipt"


def _stats(client: TestClient, rule: str, service: str = "preview") -> dict[str, Any]:
    services = client.get("/stats/cards").json()["services"]
    found: dict[str, Any] = {"accepted": 0, "overridden": 0}
    for entry in services:
        for row in entry["rules"]:
            if row["rule"] == rule and entry["service"] == service:
                found = row
    return found


def _cards(page: str) -> list[tuple[str, str]]:
    """(indicator, rule) of each card on the page."""
    found: list[tuple[str, str]] = re.findall(
        r'<div class="card card-(info|warning|critical)" data-rule="([^"]+)"', page
    )
    return found


def test_a_fixtures_cards_are_shown_as_an_ehr_shows_them(make_client: AppFactory) -> None:
    client = make_client()
    page = client.get("/preview")
    assert page.status_code == 200
    assert "form-action 'self'" in page.headers["content-security-policy"]
    assert "script-src" not in page.headers["content-security-policy"]
    assert f'<option value="{SUICIDE}">' in page.text
    shown = client.post("/preview", data={"fixture": SUICIDE})
    assert shown.status_code == 200
    cards = _cards(shown.text)
    assert ("warning", "ipt-suicide-risk") in cards
    assert "<strong>Recorded:</strong>" in shown.text, "Markdown rendered"
    assert "988 Suicide &amp; Crisis Lifeline" in shown.text
    assert 'class="dismiss"' in shown.text
    assert "Suicide risk assessed; safety plan in place" in shown.text, "override reasons"


def test_accept_and_dismiss_store_feedback_counted_apart(make_client: AppFactory) -> None:
    client = make_client()
    page = client.post("/preview", data={"fixture": "in-psychosis-schizophrenia-ipt"}).text
    card = re.search(r'name="card" value="([^"]+)"', page)
    suggestion = re.search(r'name="suggestion" value="([^"]+)"', page)
    reason = re.search(r'<option value="([^"]+\|[^"]*\|[^"]*)">', page)
    assert card
    assert suggestion
    assert reason
    service = re.search(r'name="service" value="([^"]+)"', page)
    assert service
    before = _stats(client, "ipt-psychosis")
    form = {
        "service": service[1],
        "card": card[1],
        "outcome": "accepted",
        "suggestion": suggestion[1],
    }
    answer = client.post("/preview/feedback", data=form, follow_redirects=False)
    assert answer.status_code == 303
    assert client.get(answer.headers["location"].replace("..", "")).status_code == 200
    dismiss = {"service": service[1], "card": card[1], "outcome": "overridden", "reason": reason[1]}
    assert client.post("/preview/feedback", data=dismiss, follow_redirects=False).status_code == 303
    after = _stats(client, "ipt-psychosis")
    assert after["accepted"] == before["accepted"] + 1
    assert after["overridden"] == before["overridden"] + 1
    listed = {s["service"] for s in client.get("/stats/cards").json()["services"]}
    assert listed == {"preview"}, "no EHR-called service counts the preview's clicks"
    assert _stats(client, "ipt-psychosis", service[1]) == {"accepted": 0, "overridden": 0}


def test_a_pasted_request_and_a_broken_one(make_client: AppFactory) -> None:
    client = make_client()
    body = json.loads((REQUESTS / f"{SUICIDE}.json").read_text())
    shown = client.post("/preview", data={"request": json.dumps(body)})
    assert ("warning", "ipt-suicide-risk") in _cards(shown.text)
    broken = client.post("/preview", data={"request": "{not json"})
    assert broken.status_code == 400
    assert 'id="problem"' in broken.text
    assert "not valid JSON" in broken.text
    bundle = client.post("/preview", data={"request": '{"resourceType": "Bundle"}'})
    assert bundle.status_code == 400


def test_card_markdown_cannot_inject_markup() -> None:
    html = str(markdown("**ok** <script>alert(1)</script> [x](javascript:alert(1)) <img src=x>"))
    assert "<script" not in html
    assert "<img" not in html
    assert 'href="javascript' not in html
    assert "<strong>ok</strong>" in html
    assert '<a href="https://a.org"' in str(markdown("[a](https://a.org)"))


@pytest.mark.parametrize(
    ("given", "served"),
    [
        ({}, True),
        ({"preview": "off"}, False),
        ({"auth_mode": "required"}, False),
        ({"auth_mode": "required", "preview": "on"}, True),
    ],
)
def test_served_when_auth_is_off_or_when_asked(
    make_client: AppFactory, tmp_path: Path, given: dict[str, Any], served: bool
) -> None:
    if given.get("auth_mode") == "required":
        trust = tmp_path / "trust.yaml"
        trust.write_text(
            "issuers:\n  - iss: https://ehr.example.org/\n"
            "    jku_allowed: [https://ehr.example.org/jwks]\n"
        )
        given = {**given, "trust_file": trust}
    client = make_client(**given)
    assert (client.get("/preview").status_code == 200) is served


def test_a_pasted_request_meets_the_limits_of_a_hook_call(make_client: AppFactory) -> None:
    """The preview is no way around the depth and Bundle-size limits of the hook endpoint."""
    client = make_client(max_json_depth=16, max_bundle_entries=5)
    body = json.loads((REQUESTS / f"{SUICIDE}.json").read_text())
    deep = {**body, "extension": {"x": json.loads("[" * 40 + "]" * 40)}}
    answer = client.post("/preview", data={"request": json.dumps(deep)})
    assert answer.status_code == 400
    assert "nested deeper than 16 levels" in answer.text
    entries = body["prefetch"]["conditions"]["entry"]
    body["prefetch"]["conditions"]["entry"] = (entries * 6)[:6]
    answer = client.post("/preview", data={"request": json.dumps(body)})
    assert answer.status_code == 400
    assert "has 6 entries; the limit is 5" in answer.text
