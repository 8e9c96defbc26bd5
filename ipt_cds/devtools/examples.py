"""The example cards of the evidence pages, built from the fixtures: ``cards/examples/<rule>.json``.

For each indicator a rule's card can take, the first ``in-`` case of
``fhir_fixtures/cases/<rule>.yaml`` whose expected cards give the rule that indicator runs
through the pipeline at the fixtures' REFERENCE_TIME, and the rule's card is kept as the service
answered it (without its uuids, which are new on every call). fhir_fixtures/ is not installed
with the package; these files are, inside the knowledge base. ``ipt-cds fixtures build`` writes
them, and a test fails when they are stale. They hold synthetic fixture data only.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from ipt_cds.devtools.fixtures import REFERENCE_TIME, SANDBOX_FHIR, Case
from ipt_cds.knowledge.base import Knowledge
from ipt_cds.knowledge.evidence import EXAMPLES, indicators
from ipt_cds.pipeline import Pipeline

# The repository's knowledge base, where the files are written.
CARDS = Path(__file__).resolve().parents[2] / "cards"


def generated_examples(
    cases: Iterable[Case], folder: Path = CARDS, now: datetime = REFERENCE_TIME
) -> dict[str, str]:
    """Every example file of the knowledge base in ``folder``: path relative to it -> text.
    Built with the default site profile: the pages put a site's links and label in."""
    knowledge = Knowledge.load(folder)
    pipeline = Pipeline(knowledge)
    inside = [c for c in cases if c.name.startswith("in-")]
    files = {}
    for rule in knowledge.rulebook.rules:
        found: dict[str, Any] = {}
        for indicator, _ in indicators(rule.spec):
            case = next(
                (c for c in inside if c.rule == rule.id and c.expect.get(rule.id) == indicator),
                None,
            )
            if case is not None:
                found[indicator] = {
                    "case": case.name,
                    "describe": case.describe,
                    "hook": case.hook,
                    "card": _card(pipeline, knowledge, case, rule.id, now),
                }
        files[f"{EXAMPLES}/{rule.id}.json"] = json.dumps(found, indent=2, ensure_ascii=False) + "\n"
    return files


def _card(
    pipeline: Pipeline, knowledge: Knowledge, case: Case, rule_id: str, now: datetime
) -> dict[str, Any]:
    service = next(s for s in knowledge.services.values() if s.hook == case.hook)
    result = asyncio.run(
        pipeline.run(
            service,
            case.request(now, SANDBOX_FHIR),
            fhir=None,
            fhir_allowed=lambda _: False,
            now=now,
        )
    )
    card = next((c for r, c in result.fired if r == rule_id), None)
    if card is None:
        raise ValueError(f"case {case.name}: no {rule_id} card (run the fixture tests)")
    data: dict[str, Any] = card.model_dump(mode="json")
    data.pop("uuid", None)
    for suggestion in data.get("suggestions", []):
        suggestion.pop("uuid", None)
    return data


def build(cases: Iterable[Case], folder: Path = CARDS) -> int:
    """Rewrite the example files (and drop those of rules that are gone); answer how many."""
    files = generated_examples(cases, folder)
    for old in (folder / EXAMPLES).glob("*.json"):
        if f"{EXAMPLES}/{old.name}" not in files:
            old.unlink()
    for rel, text in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return len(files)
