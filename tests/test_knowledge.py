"""Start-up validation: a broken knowledge file stops the service and names the file.

Each folder of tests/broken_knowledge/ holds files that replace their namesakes in a copy of
cards/, and ERROR, the exact message the service must refuse to start with.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from service.knowledge.base import Knowledge
from service.knowledge.errors import KnowledgeError
from service.ops.config import Settings

BROKEN = Path(__file__).parent / "broken_knowledge"


@pytest.fixture
def cards(tmp_path: Path) -> Path:
    root = tmp_path / "cards"
    shutil.copytree(Settings().knowledge_dir, root)
    return root


def test_the_shipped_knowledge_loads(knowledge: Knowledge) -> None:
    assert len(knowledge.rulebook.rules) == 20
    assert len(knowledge.services) == 3


@pytest.mark.parametrize("case", sorted(p.name for p in BROKEN.iterdir()))
def test_broken_knowledge_stops_start_up_with_the_exact_error(cards: Path, case: str) -> None:
    folder = BROKEN / case
    for broken in folder.rglob("*"):
        if broken.is_file() and broken.name != "ERROR":
            shutil.copy(broken, cards / broken.relative_to(folder))
    expected = (folder / "ERROR").read_text().strip().format(root=cards)
    with pytest.raises(KnowledgeError) as caught:
        Knowledge.load(cards)
    assert str(caught.value) == expected


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
    from service.http.app import create_app

    (cards / "facts.yaml").write_text("valuesets: {}\nfacts: {}\n")
    with pytest.raises(KnowledgeError, match=r"facts\.yaml: valuesets: 'mdd' is needed"):
        create_app(Settings(knowledge_dir=cards))


def test_rules_doc_is_current_with_cards() -> None:
    from service.cli import rules_doc

    doc = Path(__file__).resolve().parents[1] / "docs" / "rules.md"
    assert doc.read_text() == rules_doc(), (
        "docs/rules.md is stale: run `ipt-cds rules-doc > docs/rules.md`"
    )
