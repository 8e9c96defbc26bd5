"""The evidence pages (``/evidence``, ``/evidence/{rule_id}``) and every card's ``source.url``."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest
import yaml
from fastapi.testclient import TestClient
from markupsafe import escape
from pydantic import ValidationError

from ipt_cds.devtools.examples import CARDS
from ipt_cds.devtools.fixtures import Case, load_cases
from ipt_cds.http.app import create_app
from ipt_cds.http.evidence import CONTENT_SECURITY_POLICY
from ipt_cds.knowledge.base import Knowledge
from ipt_cds.knowledge.evidence import TOPIC, names_read, pages, used_parameters
from ipt_cds.ops.config import Settings

from .conftest import FHIR_BASE, NOW, SERVICE_OF_HOOK, AppFactory, FakeFhir, Json, copy_knowledge
from .rules import CountingRule
from .test_auth import BASE, _trust_file, token

CASES = [c for c in load_cases() if c.name.startswith("in-")]


def _cards(client: TestClient, case: Case) -> list[Json]:
    body = case.request(NOW, FHIR_BASE)
    response = client.post(f"/cds-services/{SERVICE_OF_HOOK[case.hook]}", json=body)
    assert response.status_code == 200, response.text
    cards: list[Json] = response.json()["cards"]
    return cards


def _esc(text: str) -> str:
    """As the pages escape text (Jinja2's autoescape)."""
    return str(escape(text))


def _is_html_page(response: Any) -> None:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "default-src 'none'" in CONTENT_SECURITY_POLICY
    assert "script-src" not in CONTENT_SECURITY_POLICY
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.text.startswith("<!DOCTYPE html>")
    assert "{{" not in response.text
    assert "{%" not in response.text
    assert "<script" not in response.text.lower()


def test_every_rule_has_a_page_with_its_title_evidence_and_parameters(
    client: TestClient, knowledge: Knowledge
) -> None:
    assert knowledge.rulebook.rules
    for rule in knowledge.rulebook.rules:
        response = client.get(f"/evidence/{rule.id}")
        _is_html_page(response)
        text = response.text
        spec = rule.spec
        assert _esc(spec.title) in text
        assert f"<code>{rule.id}</code>" in text
        for part in spec.evidence.section.split(";"):
            assert _esc(part.strip()) in text
        refs = re.search(r"Topic references:</strong> ([0-9, ]+)<", text)
        shown = refs.group(1).split(", ") if refs else []
        assert shown == [str(r) for r in spec.evidence.refs]
        assert _esc(TOPIC) in text
        assert _esc(" ".join(spec.when.split())) in text
        assert _esc(" ".join(spec.then.split())) in text
        for suggestion in spec.suggestions:
            assert _esc(suggestion.label) in text
        for reason in spec.overrideReasons:
            assert _esc(reason.display) in text
        if spec.evidence.figures:
            assert _esc(" ".join(spec.evidence.figures.split())) in text


def _parameters(page: str) -> dict[str, tuple[str, str]]:
    """The page's table of parameters: name -> (value, what reads it)."""
    rows = re.findall(r"<tr><td><code>(\w+)</code></td><td>([^<]*)</td><td>(.*?)</td></tr>", page)
    return {name: (value, readers) for name, value, readers in rows}


def test_a_page_names_the_parameters_its_rule_uses(client: TestClient) -> None:
    shown = _parameters(client.get("/evidence/ipt-adolescent").text)
    assert shown["adolescent_min_age"][0] == "12"
    assert shown["adolescent_max_age"] == ("17", "the rule")
    assert "older_adult_age" not in shown
    older = _parameters(client.get("/evidence/ipt-older-adult-acute").text)
    assert older["older_adult_age"][0] == "70"


def test_the_suicide_page_lists_the_windows_of_the_facts_it_reads(client: TestClient) -> None:
    """The rule names no parameter itself: its windows are those of suicidal_ideation and item9."""
    shown = _parameters(client.get("/evidence/ipt-suicide-risk").text)
    assert shown["phq9_window_days"][0] == "90"
    assert shown["suicidal_ideation_dx_days"][0] == "365"
    assert "<code>suicidal_ideation</code>" in shown["suicidal_ideation_dx_days"][1]
    assert "<code>item9</code>" in shown["phq9_window_days"][1]
    assert "the rule" not in shown["phq9_window_days"][1]
    assert shown["item_score_counts"][0] == "2"
    assert "older_adult_age" not in shown, "the rule names no fact that reads it"


def test_parameters_are_found_by_name_not_inside_other_words() -> None:
    params = {"age": 1, "older_adult_age": 70, "bands": {"mild": 5}, "sev": ["a", "b"]}
    found = used_parameters(
        ["x >= params.older_adult_age", "severity in params.sev", "params.bands"], params
    )
    assert [(p.name, p.value) for p in found] == [
        ("older_adult_age", "70"),
        ("bands", "mild 5"),
        ("sev", "a, b"),
    ]
    assert used_parameters(["phq9.age > 3", "older_adult_age == 'params.age'"], params) == ()


def test_the_facts_a_rule_reads_are_its_names_not_words_of_its_text(
    knowledge: Knowledge,
) -> None:
    suicide = knowledge.rulebook.by_id["ipt-suicide-risk"].spec
    facts, params = names_read(suicide, knowledge.facts)
    assert {"suicidal_ideation", "item9", "psychiatry_in_plan", "ipt_candidate"} <= facts
    assert not {"shown", "why", "params", "ad_card"} & facts
    # Past suicidal behaviour speaks for patients no chart-open card covers (from age 12 one does).
    assert params == {"adolescent_min_age"}
    # "depression" and "features" are words of its text, not names it reads.
    capacity = knowledge.rulebook.by_id["ipt-cognitive-capacity"].spec
    facts, _ = names_read(capacity, knowledge.facts)
    assert {"draft_ipt", "cognitive_impairment"} <= facts
    assert not {"depression", "features", "capacity"} & facts
    severity = knowledge.rulebook.by_id["ipt-measure-severity"].spec
    assert "phq9_window_days" in names_read(severity, knowledge.facts)[1]


def _example_cards(page: str) -> list[str]:
    return re.findall(r'<div class="card card-(\w+)" data-rule=', page)


def test_a_page_shows_a_rendered_example_card_for_each_indicator(
    client: TestClient, knowledge: Knowledge
) -> None:
    page = client.get("/evidence/ipt-suicide-risk").text
    assert _example_cards(page) == ["critical", "warning", "info"]
    examples = json.loads((CARDS / "examples" / "ipt-suicide-risk.json").read_text())
    for indicator, example in examples.items():
        assert _esc(example["card"]["summary"]) in page
        assert f"<code>{example['case']}</code>" in page
        assert f'data-indicator="{indicator}"' in page
    # Rendered as the EHR shows it: Markdown as tags, suggestions as buttons, reasons offered.
    assert "<strong>Recorded:</strong>" in page
    assert "**" not in page
    assert '<button type="button" class="accept" disabled>Refer to a psychiatrist (urgent)' in page
    assert "<option>Suicide risk assessed; safety plan in place</option>" in page
    assert 'href="https://988lifeline.org" rel="noopener noreferrer" target="_blank"' in page
    assert "<form" not in page, "the buttons send nothing"
    assert "{{" not in page
    assert "{%" not in page
    for rule in knowledge.rulebook.rules:
        shown = _example_cards(client.get(f"/evidence/{rule.id}").text)
        assert shown, f"{rule.id}: no example card"
        assert len(shown) == len(set(shown))


def test_an_example_card_shows_the_sites_links_and_label(
    settings: Settings, tmp_path: Path
) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(
        "organization: Example Health\n"
        "links:\n  crisis_line: {label: Local crisis line, url: 'https://crisis.example.org'}\n"
    )
    knowledge = Knowledge.load(settings.knowledge_dir, site)
    app = create_app(settings, fhir_transport=FakeFhir().transport(), knowledge=knowledge)
    with TestClient(app) as client:
        page = client.get("/evidence/ipt-suicide-risk").text
    assert 'href="https://crisis.example.org" rel="noopener noreferrer" target="_blank"' in page
    assert "988lifeline" not in page
    assert "Source: Example Health: IPT decision support" in page


def test_example_cards_are_escaped_and_link_only_to_http(
    settings: Settings, tmp_path: Path
) -> None:
    cards = copy_knowledge(tmp_path / "cards")
    path = cards / "examples" / "ipt-suitable.json"
    data = json.loads(path.read_text())
    (example,) = data.values()
    example["card"]["summary"] = "<script>alert(1)</script>"
    example["card"]["detail"] = "[click](javascript:alert(1)) <img src=x onerror=alert(1)>"
    example["describe"] = "<b>synthetic</b>"
    path.write_text(json.dumps(data))
    knowledge = Knowledge.load(cards)
    app = create_app(settings, fhir_transport=FakeFhir().transport(), knowledge=knowledge)
    with TestClient(app) as client:
        page = client.get("/evidence/ipt-suitable")
    _is_html_page(page)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert 'href="javascript' not in page.text
    assert "<img" not in page.text
    assert "&lt;b&gt;synthetic&lt;/b&gt;" in page.text


def test_a_knowledge_base_without_examples_still_has_its_pages(
    settings: Settings, tmp_path: Path
) -> None:
    cards = copy_knowledge(tmp_path / "cards", "examples")
    knowledge = Knowledge.load(cards)
    app = create_app(settings, fhir_transport=FakeFhir().transport(), knowledge=knowledge)
    with TestClient(app) as client:
        page = client.get("/evidence/ipt-suicide-risk")
    _is_html_page(page)
    assert _example_cards(page.text) == []
    assert "No fixture of this rule shows a critical card." in page.text


def test_a_page_names_the_retired_ids_it_replaces(client: TestClient, knowledge: Knowledge) -> None:
    """rules/_index.yaml retires ipt-chd, ipt-anxiety, ipt-personality into ipt-cautions: its
    page lists them, other pages list none, and each retired id keeps a page of its own."""
    retired = knowledge.rulebook.retired
    assert set(retired) == {"ipt-chd", "ipt-anxiety", "ipt-personality"}
    built = {p.rule_id: p for p in pages(knowledge)}
    assert set(built["ipt-cautions"].replaces) == set(retired)
    assert built["ipt-psychosis"].replaces == ()
    text = client.get("/evidence/ipt-cautions").text
    assert "Replaces:" in text
    for old in retired:
        assert f"<code>{old}</code>" in text
    assert "Replaces:" not in client.get("/evidence/ipt-psychosis").text


def test_an_unknown_rule_is_a_json_404(client: TestClient) -> None:
    for rule_id in ("nope", "IPT-SUITABLE", "ipt-suitable.yaml", "%3Cscript%3E"):
        response = client.get(f"/evidence/{rule_id}")
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/json"
        assert response.json()["code"] == "unknown_rule"
    assert client.get("/evidence/nope").json() == {
        "code": "unknown_rule",
        "message": "No rule 'nope'.",
    }
    # a near miss is the router's 404, never a redirect
    assert client.get("/evidence/ipt-suitable/").json()["code"] == "not_found"


def test_the_index_links_every_rule(client: TestClient, knowledge: Knowledge) -> None:
    response = client.get("/evidence")
    _is_html_page(response)
    hrefs = re.findall(r'<a href="([^"]+)">', response.text)
    assert hrefs == [f"evidence/{rule.id}" for rule in knowledge.rulebook.rules]
    for rule, href in zip(knowledge.rulebook.rules, hrefs, strict=True):
        assert _esc(rule.spec.title) in response.text
        page = client.get(urljoin(str(response.url), href))
        _is_html_page(page)
        assert 'href="../evidence"' in page.text
        assert urljoin(str(page.url), "../evidence") == str(response.url)
        assert rule.id in page.text


def test_every_card_links_to_its_rules_page(make_client: AppFactory, knowledge: Knowledge) -> None:
    client = make_client()
    seen: set[str] = set()
    for case in CASES:
        for card in _cards(client, case):
            rule_id = card["source"]["topic"]["code"]
            url = card["source"]["url"]
            assert url == f"http://testserver/evidence/{rule_id}"
            assert urlsplit(url).scheme in ("http", "https")
            assert urlsplit(url).netloc
            seen.add(rule_id)
            _is_html_page(client.get(url))
    # The cases fire every rule (tests/test_rule_cases.py): every rule's link was followed.
    assert seen == {rule.id for rule in knowledge.rulebook.rules}


def test_the_public_base_url_is_the_links_base(make_client: AppFactory) -> None:
    base = Settings(public_base_url="https://cds.example.org/ipt/").public_base_url
    assert base == "https://cds.example.org/ipt"
    client = make_client(public_base_url=base)
    cards = [card for case in CASES[:20] for card in _cards(client, case)]
    assert cards
    for card in cards:
        rule_id = card["source"]["topic"]["code"]
        assert card["source"]["url"] == f"https://cds.example.org/ipt/evidence/{rule_id}"


def test_without_a_public_base_url_the_links_keep_the_root_path(
    settings: Settings, knowledge: Knowledge
) -> None:
    app = create_app(settings, fhir_transport=FakeFhir().transport(), knowledge=knowledge)
    with TestClient(app, root_path="/ipt") as client:
        (card, *_) = _cards(client, CASES[0])
        rule_id = card["source"]["topic"]["code"]
        assert card["source"]["url"] == f"http://testserver/ipt/evidence/{rule_id}"
        _is_html_page(client.get(card["source"]["url"]))


@pytest.mark.parametrize(
    "value",
    [
        "cds.example.org",
        "ftp://cds.example.org",
        "https://",
        "https://cds.example.org/?tenant=a",
        "https://cds.example.org/#top",
        "https://user:secret@cds.example.org",
        "https://cds.example.org:99999",
        "https://cds.example.org/a b",
        "https://cds.example.org/\nx",
    ],
)
def test_a_bad_public_base_url_stops_start_up(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IPT_CDS_PUBLIC_BASE_URL", value)
    with pytest.raises(ValidationError, match="public_base_url"):
        Settings()


def test_a_python_rules_cards_link_to_a_page_of_their_own(make_client: AppFactory) -> None:
    client = make_client(rules=(CountingRule("counting-rule", "Condition"),))
    (case,) = [c for c in CASES if c.hook == "order-sign"][:1]
    cards = {c["source"]["topic"]["code"]: c for c in _cards(client, case)}
    url = cards["counting-rule"]["source"]["url"]
    assert url == "http://testserver/evidence/counting-rule"
    page = client.get(url)
    _is_html_page(page)
    assert "written in Python" in page.text
    assert 'href="evidence/counting-rule"' in client.get("/evidence").text


def test_the_pages_are_public_when_authentication_is_required(
    make_client: AppFactory, tmp_path: Path
) -> None:
    client = make_client(
        FakeFhir(), auth_mode="required", trust_file=_trust_file(tmp_path), public_base_url=BASE
    )
    assert client.get("/cds-services").status_code == 401, "authentication is on"
    _is_html_page(client.get("/evidence"))
    _is_html_page(client.get("/evidence/ipt-suitable"))
    assert client.get("/evidence/nope").status_code == 404
    case = next(c for c in CASES if c.hook == "order-sign")
    response = client.post(
        "/cds-services/ipt-order-sign",
        json=case.request(NOW, FHIR_BASE),
        headers={"Authorization": f"Bearer {token()}"},
    )
    assert response.status_code == 200, response.text
    for card in response.json()["cards"]:
        assert card["source"]["url"].startswith(f"{BASE}/evidence/")
        _is_html_page(client.get(card["source"]["url"]))  # without the JWT


def test_everything_on_a_page_is_escaped(settings: Settings, tmp_path: Path) -> None:
    cards = copy_knowledge(tmp_path / "cards")
    rule_id = yaml.safe_load((cards / "rules" / "_index.yaml").read_text())["order"][0]
    rule_file = cards / "rules" / f"{rule_id}.yaml"
    rule = yaml.safe_load(rule_file.read_text())
    rule["title"] = "IPT <script>alert('x')</script> & co"
    rule["when"] = "when <b>bold</b>"
    rule["evidence"]["figures"] = "<img src=x onerror=alert(1)>"
    rule["card"]["summary"] = "<i>{{ verdict }}</i>"
    rule_file.write_text(yaml.safe_dump(rule, allow_unicode=True, sort_keys=False))
    knowledge = Knowledge.load(cards)
    app = create_app(settings, fhir_transport=FakeFhir().transport(), knowledge=knowledge)
    with TestClient(app) as client:
        page = client.get(f"/evidence/{rule_id}")
        index = client.get("/evidence")
    _is_html_page(page)
    _is_html_page(index)
    for text in (page.text, index.text):
        assert "IPT &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; co" in text
    assert "when &lt;b&gt;bold&lt;/b&gt;" in page.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in page.text
    assert "<img" not in page.text
    assert "&lt;i&gt;" not in page.text, "the card's template is never shown"


def test_the_pages_are_built_from_the_knowledge_once(knowledge: Knowledge) -> None:
    built = pages(knowledge)
    rules = [p for p in built if p.replaced_by is None]
    assert [p.rule_id for p in rules] == [r.id for r in knowledge.rulebook.rules]
    assert all(p.sections and p.described for p in rules)
    retired = {p.rule_id: p.replaced_by for p in built if p.replaced_by is not None}
    assert retired == knowledge.rulebook.retired


def test_openapi_describes_the_pages(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    index, page = paths["/evidence"]["get"], paths["/evidence/{rule_id}"]["get"]
    for operation in (index, page):
        assert operation["security"] == []
        assert set(operation["responses"]["200"]["content"]) == {"text/html"}
    assert set(page["responses"]) == {"200", "404"}
    assert page["responses"]["404"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ErrorBody"
    )
    (parameter,) = page["parameters"]
    assert parameter["name"] == "rule_id"
    assert "unknown_rule" in parameter["description"]


def test_the_suicide_page_lists_the_links_its_card_shows(client: TestClient) -> None:
    page = client.get("/evidence/ipt-suicide-risk").text
    assert "Links on the card" in page
    for url in (
        "https://cssrs.columbia.edu",
        "https://suicidesafetyplan.com",
        "https://988lifeline.org",
    ):
        assert f'href="{url}"' in page
    assert "Links on the card" not in client.get("/evidence/ipt-cautions").text
