"""Start-up validation: a broken knowledge file stops the service and names the file.

Each folder of tests/broken_knowledge/ breaks a copy of cards/: with files that replace their
namesakes (a rule of its own), or with EDITS.yaml, exact changes to the shipped files (a line
of a file every change to the knowledge touches, such as rules/_index.yaml or facts.yaml, so
that a new rule or fact does not have to be copied into the case). ERROR is the exact message
the service must refuse to start with.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from ipt_cds.knowledge.base import Knowledge
from ipt_cds.knowledge.errors import KnowledgeError
from ipt_cds.ops.config import Settings

from .conftest import copy_knowledge

BROKEN = Path(__file__).parent / "broken_knowledge"


@pytest.fixture
def cards(tmp_path: Path) -> Path:
    return copy_knowledge(tmp_path / "cards")


def test_the_shipped_knowledge_loads(knowledge: Knowledge) -> None:
    """Every rule file, in the order of rules/_index.yaml, and every service: read from the
    files, so that adding a rule or a hook does not mean editing a count here."""
    root = Settings().knowledge_dir
    listed = yaml.safe_load((root / "rules" / "_index.yaml").read_text())["order"]
    files = {p.stem for p in (root / "rules").glob("*.yaml") if not p.name.startswith("_")}
    assert [rule.id for rule in knowledge.rulebook.rules] == listed
    assert set(listed) == files
    assert len(listed) >= 20
    services = yaml.safe_load((root / "services.yaml").read_text())["services"]
    assert sorted(knowledge.services) == sorted(s["id"] for s in services)
    assert {s.hook for s in knowledge.services.values()} >= {"order-select", "order-sign"}


def _break(cards: Path, case: str) -> str:
    """Lay the case's files over ``cards`` and make its edits; answer the error it must stop
    start-up with."""
    folder = BROKEN / case
    for broken in folder.rglob("*"):
        if broken.is_file() and broken.name not in ("ERROR", "EDITS.yaml"):
            shutil.copy(broken, cards / broken.relative_to(folder))
    edits = folder / "EDITS.yaml"
    for edit in yaml.safe_load(edits.read_text()) if edits.exists() else []:
        path = cards / edit["file"]
        text = path.read_text()
        # Once, exactly: an edit whose text the knowledge no longer holds must fail loudly here,
        # not leave the case testing nothing.
        assert text.count(edit["replace"]) == 1, f"{case}: not once in {edit['file']}"
        path.write_text(text.replace(edit["replace"], edit["with"]))
    return (folder / "ERROR").read_text().strip().format(root=cards)


@pytest.mark.parametrize("case", sorted(p.name for p in BROKEN.iterdir()))
def test_broken_knowledge_stops_start_up_with_the_exact_error(cards: Path, case: str) -> None:
    expected = _break(cards, case)
    with pytest.raises(KnowledgeError) as caught:
        Knowledge.load(cards)
    assert str(caught.value) == expected


@pytest.mark.parametrize(
    "name", ["parameters.yaml", "rules/ipt-suitable.yaml", "valuesets/hiv.json"]
)
def test_a_knowledge_file_not_in_utf8_stops_start_up_naming_it(cards: Path, name: str) -> None:
    """Saved by an editor as Latin-1 (a "é" in a card's text), a file must stop start-up with
    its name, not with Python's decoding error."""
    path = cards / name
    text = path.read_text(encoding="utf-8")
    at = len(text.encode()) - 1
    path.write_bytes(text.encode()[:at] + b"\xe9" + text.encode()[at:])
    with pytest.raises(KnowledgeError) as caught:
        Knowledge.load(cards)
    assert str(caught.value) == f"{path}: not UTF-8 text (byte {at})"


# Mistakes the fact model (ipt_cds/clinical/fact_model.py) catches, each of which would
# otherwise leave a rule silently never (or always) firing, or a card failing as it renders:
# the case, the file and the field the error must name.
AGAINST_THE_FACT_MODEL = [
    ("misspelt-fact-attribute", "rules/ipt-cautions.yaml", "applies"),
    ("is-with-a-number", "rules/ipt-older-adult-maintenance.yaml", "applies"),
    ("number-fact-against-a-string", "rules/ipt-older-adult-acute.yaml", "applies"),
    ("value-outside-a-fact", "rules/antidepressant-perinatal-ipt.yaml", "applies"),
    ("misspelt-verdict-in-a-suggestion", "rules/ipt-patient-summary.yaml", "suggestions[0].when"),
    ("misspelt-template-attribute", "rules/ipt-suicide-risk.yaml", "card.summary"),
    ("value-outside-a-fact-in-a-template", "rules/ipt-cautions.yaml", "card.summary"),
    ("why-of-a-fact-without-one", "rules/ipt-adolescent.yaml", "card.detail"),
    ("severity-outside-the-model", "parameters.yaml", "combination_severities"),
]


@pytest.mark.parametrize(("case", "file", "field"), AGAINST_THE_FACT_MODEL)
def test_a_mistake_against_the_fact_model_stops_the_app_naming_file_and_field(
    cards: Path, case: str, file: str, field: str
) -> None:
    from ipt_cds.http.app import create_app

    expected = _break(cards, case)
    with pytest.raises(KnowledgeError) as caught:
        create_app(Settings(knowledge_dir=cards))
    assert str(caught.value).startswith(f"{cards / file}: {field}: ")
    assert str(caught.value) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{{ phq9['valeu'] }}", "unknown attribute phq9.valeu: phq9 is a Reading or None, with "),
        ("{{ why['chd_date'] }}", "unknown fact 'chd_date' in why.chd_date"),
        ("{{ why }}", "why is read one fact at a time"),
        ("{{ why|tojson }}", "why is read one fact at a time"),
        ("{% for f in focus_areas %}{{ why[f] }}{% endfor %}", "why is read one fact at a time"),
        ("{{ why.bipolar }} {{ why['pregnant'] }}", None),
        ("{% for why in focus_areas %}{% endfor %}{{ why }}", "why names the service's own"),
        ("{% set params = 1 %}{{ params.nothing }}", "params names the service's own"),
        ("{{ params.elderly_age }}", "unknown parameter params.elderly_age"),
        ("{% if hook == 'order-sing' %}x{% endif %}", "hook is one of 'order-select', "),
        ("{% if age > '70' %}x{% endif %}", "age is a whole number or None, never the string"),
        # A name the template binds is not the fact of that name.
        ("{% for phq9 in focus_areas %}{{ phq9.anything }}{% endfor %}", None),
        ("{% for a in focus_areas %}{% if a == 'griev' %}x{% endif %}{% endfor %}", None),
        ("{{ current_episode.display }} {{ item9['answer'] }} {{ params.phq9_max }}", None),
    ],
)
def test_card_templates_are_checked_against_the_fact_model(
    cards: Path, text: str, problem: str | None
) -> None:
    rule = cards / "rules" / "ipt-cautions.yaml"
    detail = "    {% set secs = [] %}"
    source = rule.read_text()
    assert detail in source
    rule.write_text(source.replace(detail, f"    {text}\n{detail}"))
    if problem is None:
        Knowledge.load(cards)
        return
    with pytest.raises(KnowledgeError) as caught:
        Knowledge.load(cards)
    assert str(caught.value).startswith(f"{rule}: card.detail: {problem}")


@pytest.mark.parametrize(
    ("services", "problem"),
    [
        ("services: [{id: a, hook: order-sign}]", "services[0].description: Field required"),
        (
            "services: [{id: a, hook: order-sign, description: d}, "
            "{id: a, hook: order-sign, description: d}]",
            "duplicate service id 'a'",
        ),
        ("services: [{id: a, hook: encounter-start, description: d}]", "unsupported hook"),
        (
            "services: [{id: a, hook: patient-view, description: d, "
            "prefetch: {p: 'Patient/{{patient}}'}}]",
            "unknown token 'patient'",
        ),
        ("services: [", "not valid YAML"),
    ],
)
def test_broken_service_definitions_stop_start_up(cards: Path, services: str, problem: str) -> None:
    (cards / "services.yaml").write_text(services)
    with pytest.raises(KnowledgeError) as caught:
        Knowledge.load(cards)
    assert str(caught.value).startswith(f"{cards / 'services.yaml'}: ")
    assert problem in str(caught.value)


def test_a_missing_knowledge_file_names_it(cards: Path) -> None:
    (cards / "parameters.yaml").unlink()
    with pytest.raises(KnowledgeError, match=r"parameters\.yaml: file not found"):
        Knowledge.load(cards)


def test_the_app_refuses_to_start_on_broken_knowledge(cards: Path) -> None:
    from ipt_cds.http.app import create_app

    (cards / "facts.yaml").write_text("valuesets: {}\nfacts: {}\ncomputed: {}\n")
    with pytest.raises(KnowledgeError, match=r"facts\.yaml: computed: the Python extractor '\w+'"):
        create_app(Settings(knowledge_dir=cards))


def test_rules_doc_is_current_with_cards() -> None:
    from ipt_cds.cli import rules_doc

    doc = Path(__file__).resolve().parents[1] / "docs" / "rules.md"
    assert doc.read_text() == rules_doc(), (
        "docs/rules.md is stale: run `ipt-cds rules-doc > docs/rules.md`"
    )
