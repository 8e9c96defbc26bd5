"""The rule expression language against the fact model: what compiles, what it means, and the
mistakes refused at start-up because in a rule they would silently never (or always) fire."""

from __future__ import annotations

from typing import Any

import pytest

from ipt_cds.clinical.fact_library import registry
from ipt_cds.clinical.fact_model import FactSpec, Reading
from ipt_cds.knowledge.expressions import ExpressionError, compile_expression

# The types of the computed facts, as their Python extractors register them (their meanings,
# in cards/facts.yaml, the language does not need).
FACTS = {
    name: FactSpec(kind.declared, explained=kind.explained)
    for extractor in registry().values()
    for name, kind in extractor.sets.items()
}

PARAMS: dict[str, Any] = {
    "older_adult_age": 70,
    "combination_severities": ["moderately-severe", "severe"],
    "phq9_bands": {"minimal": 0, "mild": 5},
}
# A patient of unknown age with a PHQ-9 of 12 and no item 9 answer.
ENV: dict[str, Any] = {
    "age": None,
    "phq9": Reading(12, "2026-11-20", "Observation/o1"),
    "item9": None,
    "severity": "moderate",
    "remission": None,
    "depression": True,
    "draft_ipt": True,
    "personality_traits": ["avoidant"],
    "hook": "order-sign",
}


def run(text: str) -> Any:
    compiled, _ = compile_expression(text, FACTS, PARAMS, [])
    return compiled(ENV, set())


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("age >= params.older_adult_age", False),
        ("age < params.older_adult_age", False),
        ("age is None", True),
        ("age is not None and age >= 70", False),
        ("phq9.value >= 10", True),
        ("item9.value >= 1", False),
        ("item9.value is None", True),
        ("phq9.date >= '2026-11-01'", True),
        ("severity == 'moderate'", True),
        ("severity in ('moderately-severe', 'severe')", False),
        ("severity not in params.combination_severities", True),
        ("severity in params.phq9_bands", False),
        ("remission in ('full', None)", True),
        ("'avoidant' in personality_traits", True),
        ("'obsessive-compulsive' not in personality_traits", True),
        ("draft_ipt is True and depression", True),
        ("hook == 'patient-view' or draft_ipt", True),
        ("not depression", False),
        # A list fact against a literal list compares its items, whichever side it is on.
        ("personality_traits == ['avoidant']", True),
        ("['avoidant'] == personality_traits", True),
        ("personality_traits != []", True),
        ("personality_traits == []", False),
        ("personality_traits == ('avoidant', 'obsessive-compulsive')", False),
    ],
)
def test_well_typed_expressions_keep_their_meaning(text: str, value: Any) -> None:
    assert run(text) == value


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (
            "phq9.valeu >= 10",
            "unknown attribute phq9.valeu: phq9 is a Reading or None, with value, date, ref, "
            "answer",
        ),
        (
            "current_episode.date is None",
            "unknown attribute current_episode.date: current_episode is an Evidence or None, "
            "with ref, code, display, on, value, answer, answer_codes, selected, ingredient, dose",
        ),
        (
            "age.years >= 70",
            "unknown attribute age.years: age is a whole number or None, with no attributes",
        ),
        (
            "age is 70",
            "'is' compares with None, True or False only: 'age is 70' (use == or != for values)",
        ),
        (
            "severity is not 'severe'",
            "'is not' compares with None, True or False only: \"severity is not 'severe'\" "
            "(use == or != for values)",
        ),
        (
            "severity == 'moderat'",
            "severity is one of 'minimal', 'mild', 'moderate', 'moderately-severe', 'severe' "
            "or None, never 'moderat'",
        ),
        (
            "suicidal_ideation in ('high', 'medium')",
            "suicidal_ideation is one of 'low', 'high', 'history' or None, never 'medium'",
        ),
        (
            "'avoidnt' in personality_traits",
            "personality_traits is a list drawn from 'avoidant', 'obsessive-compulsive', "
            "never holding 'avoidnt'",
        ),
        (
            "focus_areas == 'grief'",
            "focus_areas is a list drawn from 'grief', 'role-transition', 'role-dispute', "
            "'interpersonal-deficits', never the string 'grief'",
        ),
        ("age == '70'", "age is a whole number or None, never the string '70'"),
        ("depression is None", "depression is True or False, never None"),
        ("age is True", "age is a whole number or None, never True"),
        ("age >= None", "'>=' with None is never true"),
        (
            "severity >= 'moderate'",
            "'>=' orders numbers and dates only: severity is one of 'minimal', 'mild', "
            "'moderate', 'moderately-severe', 'severe' or None",
        ),
        (
            "'moderate' in severity",
            "'in' needs a list on its right: severity is one of 'minimal', 'mild', "
            "'moderate', 'moderately-severe', 'severe' or None",
        ),
        (
            "severity in 'moderately-severe'",
            "'in' needs a list on its right, not 'moderately-severe'",
        ),
        (
            "episode == 3",
            "episode is one of 'single', 'recurrent' or None, never the number 3",
        ),
        ("heart_disease", "unknown fact 'heart_disease'"),
        ("params.elderly_age", "unknown parameter params.elderly_age"),
    ],
)
def test_mistakes_are_refused_naming_what_is_wrong(text: str, error: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_expression(text, FACTS, PARAMS, [])
    assert str(caught.value) == error


@pytest.mark.parametrize("name", sorted(n for n, spec in FACTS.items() if spec.values))
def test_every_word_the_model_declares_compiles(name: str) -> None:
    spec = FACTS[name]
    for word in spec.values or ():
        text = f"{word!r} in {name}" if list in spec.kinds else f"{name} == {word!r}"
        compile_expression(text, FACTS, PARAMS, [])


@pytest.mark.parametrize(
    "name", sorted(n for n, spec in FACTS.items() if spec.attributes), ids=lambda n: n
)
def test_every_attribute_the_model_declares_compiles(name: str) -> None:
    for attr in FACTS[name].attributes:
        compile_expression(f"{name}.{attr} is None", FACTS, PARAMS, [])
