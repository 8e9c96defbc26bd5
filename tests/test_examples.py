"""cards/examples/: the evidence pages' example cards, generated from the fixtures and current."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ipt_cds.devtools.examples import CARDS, generated_examples
from ipt_cds.devtools.fixtures import load_cases
from ipt_cds.knowledge.base import Knowledge
from ipt_cds.knowledge.evidence import EXAMPLES, indicators

CASES = load_cases()


def _stale(folder: Path) -> list[str]:
    """The example files of ``folder`` that `ipt-cds fixtures build` would write otherwise, or
    that no rule makes."""
    files = generated_examples(CASES, folder)
    stale = [rel for rel, text in files.items() if not (folder / rel).is_file()]
    stale += [
        rel
        for rel, text in files.items()
        if (folder / rel).is_file() and (folder / rel).read_text(encoding="utf-8") != text
    ]
    on_disk = {f"{EXAMPLES}/{p.name}" for p in (folder / EXAMPLES).glob("*")}
    return sorted({*stale, *(on_disk - set(files))})


def test_the_example_files_are_current() -> None:
    assert _stale(CARDS) == [], "run `ipt-cds fixtures build`"


def test_a_stale_example_file_is_found(tmp_path: Path) -> None:
    cards = tmp_path / "cards"
    shutil.copytree(CARDS, cards, ignore=shutil.ignore_patterns("sources"))
    assert _stale(cards) == []
    path = cards / EXAMPLES / "ipt-suicide-risk.json"
    data = json.loads(path.read_text())
    data["critical"]["card"]["summary"] = "An older wording of the card"
    path.write_text(json.dumps(data, indent=2) + "\n")
    (cards / EXAMPLES / "ipt-gone.json").write_text("{}\n")
    assert _stale(cards) == [f"{EXAMPLES}/ipt-gone.json", f"{EXAMPLES}/ipt-suicide-risk.json"]


def test_every_indicator_of_every_rule_has_an_example(knowledge: Knowledge) -> None:
    assert knowledge.rulebook.rules
    for rule in knowledge.rulebook.rules:
        data = json.loads((CARDS / EXAMPLES / f"{rule.id}.json").read_text())
        assert data, f"{rule.id}: no example card"
        assert list(data) == [ind for ind, _ in indicators(rule.spec)], rule.id
        for indicator, example in data.items():
            case = next(c for c in CASES if c.name == example["case"])
            assert case.rule == rule.id
            assert case.name.startswith("in-")
            assert case.expect[rule.id] == indicator
            card = example["card"]
            assert card["indicator"] == indicator
            assert card["source"]["topic"]["code"] == rule.id
            # Built from the first in- case that gets this indicator.
            first = next(
                c
                for c in CASES
                if c.rule == rule.id
                and c.name.startswith("in-")
                and c.expect.get(rule.id) == indicator
            )
            assert first.name == case.name


def test_examples_carry_no_uuid_and_no_template_code() -> None:
    text = "".join(p.read_text() for p in (CARDS / EXAMPLES).glob("*.json"))
    assert '"uuid"' not in text, "a uuid is new on every call: the files would never be current"
    assert "{{" not in text
    assert "{%" not in text
