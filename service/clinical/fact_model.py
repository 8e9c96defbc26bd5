"""What a hook call knows about the patient: the facts, by name, with why each holds.

The single list of the facts rules and card templates may name; service/clinical/facts.py
computes them, service/knowledge/ checks every rule against this list at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from service.clinical.extractors import Evidence

# The vocabulary rules and templates may use: every fact a call computes.
FACT_NAMES = frozenset(
    [
        "hook",
        "patient_id",
        "age",
        "depression",
        "dysthymia",
        "episode",
        "remission",
        "current_episode",
        "phq9",
        "severity",
        "severity_basis",
        "item9",
        "suicidal_ideation",
        "suicidal_ideation_basis",
        "neurovegetative",
        "neurovegetative_domains",
        "psychosis",
        "bipolar",
        "cognitive_impairment",
        "anxiety",
        "chd",
        "hiv",
        "personality_disorder",
        "personality_traits",
        "pregnant",
        "postpartum",
        "bereavement",
        "focus_areas",
        "on_antidepressant",
        "on_psychotherapy",
        "draft_ipt",
        "draft_psychotherapy",
        "draft_antidepressant",
        "ipt_draft_refs",
        "antidepressant_in_plan",
        "psychotherapy_in_plan",
        "ipt_in_plan",
        "acute",
        "needs_combination",
        "combination_reasons",
        "verdict",
        "verdict_reasons",
        "cautions",
        "supports",
    ]
)


@dataclass(frozen=True)
class Reading:
    """An observation value for templates: ``PHQ-9 {{ phq9.value }} on {{ phq9.date }}``."""

    value: int | float
    date: str
    ref: str
    answer: str | None = None


@dataclass
class Facts:
    params: dict[str, Any] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    why: dict[str, str] = field(default_factory=dict)
    refs: dict[str, list[str]] = field(default_factory=dict)

    def set(self, name: str, value: Any, evidence: list[Evidence] | None = None) -> None:
        self.values[name] = value
        if evidence:
            self.refs[name] = sorted({e.ref for e in evidence})
            self.why[name] = "; ".join(dict.fromkeys(e.describe() for e in evidence))

    def __getitem__(self, name: str) -> Any:
        return self.values[name]
