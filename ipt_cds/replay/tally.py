"""Counting the replay's calls into ``summary.json``: mergeable, so that each worker or Spark
partition counts its own patients and the counts add up to the same summary on any engine.

Every figure is a count or a rate computed from counts, keys are sorted and nothing depends
on the order the patients came in: two engines on one input write byte-identical summaries.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

from ipt_cds.replay.evaluate import Evaluator, Outcome, SharedResources
from ipt_cds.replay.scenarios import SCENARIOS
from ipt_cds.replay.source import Problems, name_order


@dataclass
class ScenarioTally:
    calls: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    per_call: Counter[int] = field(default_factory=Counter)
    verdicts: Counter[str] = field(default_factory=Counter)
    # (rule, indicator) -> cards; the same for cards a site profile made silent.
    shown: Counter[tuple[str, str]] = field(default_factory=Counter)
    silent: Counter[tuple[str, str]] = field(default_factory=Counter)
    # Calls on which a pair of rules both showed a card (rule ids in order).
    together: Counter[tuple[str, str]] = field(default_factory=Counter)
    # Calls (and their cards) for patients with an active depressive disorder on record: the
    # order scenarios give every patient an order, these are the ones it is usually meant for.
    depressed_calls: int = 0
    depressed_cards: int = 0

    def add(self, outcome: Outcome) -> None:
        self.calls += 1
        if outcome.error is not None:
            self.errors[outcome.error] += 1
            return
        if outcome.verdict not in (None, "not-applicable"):
            self.depressed_calls += 1
            self.depressed_cards += len(outcome.shown)
        self.per_call[len(outcome.shown)] += 1
        self.verdicts[outcome.verdict or "none"] += 1
        self.shown.update(outcome.shown)
        self.silent.update(outcome.silent)
        rules = sorted({rule for rule, _ in outcome.shown})
        self.together.update(combinations(rules, 2))

    def merge(self, other: ScenarioTally) -> None:
        self.calls += other.calls
        self.depressed_calls += other.depressed_calls
        self.depressed_cards += other.depressed_cards
        for mine, theirs in (
            (self.errors, other.errors),
            (self.per_call, other.per_call),
            (self.verdicts, other.verdicts),
            (self.shown, other.shown),
            (self.silent, other.silent),
            (self.together, other.together),
        ):
            mine.update(theirs)  # type: ignore[arg-type]


@dataclass
class Tally:
    patients: int = 0
    scenarios: dict[str, ScenarioTally] = field(default_factory=dict)

    def add(self, outcomes: list[Outcome]) -> None:
        self.patients += 1
        for outcome in outcomes:
            self.scenarios.setdefault(outcome.scenario, ScenarioTally()).add(outcome)

    def merge(self, other: Tally) -> Tally:
        self.patients += other.patients
        for name, tally in other.scenarios.items():
            self.scenarios.setdefault(name, ScenarioTally()).merge(tally)
        return self


SKIPPED_LISTED = 20
CardRow = tuple[str, str, str, str, str]  # scenario, rule, indicator, patient id, shown|silent


def count(
    evaluator: Evaluator,
    patients: Iterable[tuple[str, Iterable[bytes]]],
    shared: SharedResources,
) -> tuple[Tally, list[CardRow]]:
    """Some patients through every scenario: their counts, and a row per card."""
    tally, rows = Tally(), list[CardRow]()
    for pid, bodies in patients:
        outcomes = evaluator.patient(pid, bodies, shared)
        tally.add(outcomes)
        for o in outcomes:
            rows.extend((o.scenario, rule, ind, pid, "shown") for rule, ind in o.shown)
            rows.extend((o.scenario, rule, ind, pid, "silent") for rule, ind in o.silent)
    return tally, rows


@dataclass(frozen=True)
class InputFacts:
    """What was read, for the summary: the same on every engine."""

    layout: str
    files: int
    lines: int
    resources: dict[str, int]
    problems: Problems
    skipped_files: list[str]
    # Resources about a patient the export has no Patient resource for.
    orphans: int


def per100(count: int, calls: int) -> float:
    return round(100 * count / calls, 2) if calls else 0.0


def summary(tally: Tally, read: InputFacts, as_of: str, scenarios: list[str]) -> dict[str, Any]:
    problems = {
        kind: {
            "count": n,
            "first": [f"{name}:{line}" for name, line in read.problems.first.get(kind, [])],
        }
        for kind, n in sorted(read.problems.counts.items())
    }
    if read.orphans:
        problems["patientNotInExport"] = {"count": read.orphans, "first": []}
    return {
        "asOf": as_of,
        "patients": tally.patients,
        "input": {
            "layout": read.layout,
            "files": read.files,
            "lines": read.lines,
            "resources": dict(sorted(read.resources.items())),
            "problems": problems,
            # The first names only: a big export has hundreds of Claim parts.
            "skippedFiles": sorted(read.skipped_files, key=name_order)[:SKIPPED_LISTED],
            "skippedFileCount": len(read.skipped_files),
        },
        "scenarios": {
            name: _scenario(name, tally.scenarios.get(name, ScenarioTally())) for name in scenarios
        },
    }


def _scenario(name: str, t: ScenarioTally) -> dict[str, Any]:
    answered = t.calls - sum(t.errors.values())
    rules: dict[str, dict[str, Any]] = {}
    for (rule, indicator), n in t.shown.items():
        entry = rules.setdefault(rule, {"cards": 0, "indicators": {}, "silent": 0})
        entry["cards"] += n
        entry["indicators"][indicator] = entry["indicators"].get(indicator, 0) + n
    for (rule, _), n in t.silent.items():
        rules.setdefault(rule, {"cards": 0, "indicators": {}, "silent": 0})["silent"] += n
    for entry in rules.values():
        entry["per100"] = per100(entry["cards"], answered)
        entry["indicators"] = dict(sorted(entry["indicators"].items()))
    cards = sum(t.shown.values())
    indicators: Counter[str] = Counter()
    for (_, indicator), n in t.shown.items():
        indicators[indicator] += n
    return {
        "meaning": SCENARIOS[name].meaning,
        "calls": t.calls,
        "answered": answered,
        "errors": dict(sorted(t.errors.items())),
        "cards": cards,
        "cardsPer100": per100(cards, answered),
        "callsWithCards": answered - t.per_call.get(0, 0),
        "withDepression": {
            "calls": t.depressed_calls,
            "cards": t.depressed_cards,
            "cardsPer100": per100(t.depressed_cards, t.depressed_calls),
        },
        "indicators": dict(sorted(indicators.items())),
        "cardsPerCall": {str(k): v for k, v in sorted(t.per_call.items())},
        "verdicts": dict(sorted(t.verdicts.items())),
        "rules": dict(sorted(rules.items())),
        "together": [
            {"rules": list(pair), "calls": n}
            for pair, n in sorted(t.together.items(), key=lambda kv: (-kv[1], kv[0]))
        ],
    }
