"""Facts declared once, as data: cards/derived.yaml (facts derived from other facts: the verdict's
case table, sentences with their conditions, the types the declarations give the fact model)
and the extractions of cards/facts.yaml with a meaning. A new fact of either kind is one entry
in one file."""

from __future__ import annotations

from pathlib import Path

import pytest

from ipt_cds.devtools.glossary import render
from ipt_cds.knowledge.base import Knowledge
from ipt_cds.knowledge.errors import KnowledgeError
from ipt_cds.knowledge.expressions import ExpressionError, compile_expression
from ipt_cds.ops.config import Settings

from .conftest import condition, copy_knowledge
from .test_facts import facts_of, observation


def _cards_with(tmp_path: Path, name: str, text: str, append: bool = True) -> Path:
    """A copy of cards/ whose file ``name`` has ``text`` added (or is ``text``)."""
    cards = copy_knowledge(tmp_path / "cards")
    path = cards / name
    path.write_text((path.read_text() if append else "") + text, encoding="utf-8")
    return cards


def test_the_first_case_that_holds_gives_the_verdict_and_its_reasons(
    knowledge: Knowledge,
) -> None:
    # Psychosis comes before bipolar disorder in the table: one verdict, its own reason.
    f = facts_of(knowledge, condition("d", "F32.1"), condition("p", "F29"), condition("b", "F31.9"))
    assert f["verdict"] == "not-recommended"
    assert len(f["verdict_reasons"]) == 1
    assert f["verdict_reasons"][0].startswith("psychotic features (")


def test_a_case_may_take_every_sentence_of_a_list_fact(knowledge: Knowledge) -> None:
    f = facts_of(knowledge, condition("d", "F32.2"), observation("o", "44261-6", valueInteger=22))
    assert f["verdict"] == "combine"
    assert f["combination_reasons"]
    assert f["verdict_reasons"] == f["combination_reasons"]
    assert f["needs_combination"] is True


def test_only_the_sentences_whose_conditions_hold_are_said(knowledge: Knowledge) -> None:
    f = facts_of(knowledge, condition("d", "F32.1"), condition("a", "F41.1"))
    assert f["cautions"] == ["comorbid anxiety disorder"]
    assert f["supports"] == []
    assert facts_of(knowledge, condition("d", "F32.1"))["cautions"] == []


def test_the_declarations_give_the_fact_model_its_words(knowledge: Knowledge) -> None:
    spec = knowledge.facts["verdict"]
    assert spec.values is not None
    assert "suitable" in spec.values
    with pytest.raises(ExpressionError, match="never 'suitabel'"):
        compile_expression("verdict == 'suitabel'", knowledge.facts, knowledge.params, [])
    assert knowledge.facts["verdict_reasons"].describe() == "a list of strings"
    assert knowledge.facts["acute"].describe() == "True or False"


ADDED = """
recurrent_acute:
  meaning: a recurrent episode, not in remission
  is: acute and episode == 'recurrent'
"""


def test_a_new_derived_fact_is_one_entry_in_one_file(tmp_path: Path) -> None:
    cards = _cards_with(tmp_path, "derived.yaml", ADDED)
    knowledge = Knowledge.load(cards)
    assert knowledge.facts["recurrent_acute"].meaning == "a recurrent episode, not in remission"
    assert facts_of(knowledge, condition("d", "F33.1"))["recurrent_acute"] is True
    assert facts_of(knowledge, condition("d", "F32.1"))["recurrent_acute"] is False
    glossary = "\n".join(render(knowledge))
    assert "**`recurrent_acute`** (True or False)" in glossary
    assert "derived: `acute and episode == 'recurrent'`" in glossary
    # A rule may name it at once; a misspelt word in it stops start-up.
    with (cards / "derived.yaml").open("a", encoding="utf-8") as out:
        out.write("typo:\n  meaning: x\n  is: episode == 'recurent'\n")
    with pytest.raises(KnowledgeError, match=r"derived.yaml: typo: is: episode is one of"):
        Knowledge.load(cards)


SIMPLE = """
  heart_failure:
    extractor: active_condition
    valueset: https://fhir.ipt-cds.org/ValueSet/coronary-heart-disease
    meaning: heart disease on record, for the test
"""


def test_a_new_simple_fact_is_one_entry_in_the_facts_file(tmp_path: Path) -> None:
    text = (Settings().knowledge_dir / "facts.yaml").read_text()
    with_it = text.replace("\nfacts:\n", "\nfacts:\n" + SIMPLE, 1)
    knowledge = Knowledge.load(_cards_with(tmp_path, "facts.yaml", with_it, append=False))
    spec = knowledge.facts["heart_failure"]
    assert (spec.describe(), spec.explained) == ("True or False", True)
    f = facts_of(knowledge, condition("d", "F32.1"), condition("h", "I25.10"))
    assert f["heart_failure"] is True
    assert f.refs["heart_failure"] == ["Condition/h"]
    assert facts_of(knowledge, condition("d", "F32.1"))["heart_failure"] is False
    glossary = "\n".join(render(knowledge))
    assert "**`heart_failure`** (True or False): heart disease on record, for the test." in glossary


@pytest.mark.parametrize(
    ("entry", "error"),
    [
        # A sentence that names `shown` would pass for a rule's card and fail on every call.
        (
            "t:\n  meaning: x\n  says:\n    - says: '{{ shown }}'\n",
            "t: says[0].says: unknown template field 'shown'",
        ),
        (
            "t:\n  meaning: x\n  says:\n    - each: focus_areas\n",
            "t: says[0].each: 'focus_areas' is not a fact that lists sentences",
        ),
        (
            "t:\n  meaning: x\n  first_of:\n    - {when: 'True', then: a}\n"
            "    - {when: 'True', then: b}\n",
            "t: first_of[0]: 'True' always holds: the cases after it never",
        ),
    ],
)
def test_a_declaration_that_would_fail_on_calls_stops_start_up(
    tmp_path: Path, entry: str, error: str
) -> None:
    cards = _cards_with(tmp_path, "derived.yaml", "\n" + entry)
    with pytest.raises(KnowledgeError) as caught:
        Knowledge.load(cards)
    assert str(caught.value) == f"{cards / 'derived.yaml'}: {error}"


def _with_sentence(tmp_path: Path, name: str, says: str) -> Knowledge:
    """The shipped knowledge with one more derived fact: a single sentence, ``says``."""
    entry = f'\n{name}:\n  meaning: {name} in words, for the test\n  says:\n    - says: "{says}"\n'
    return Knowledge.load(_cards_with(tmp_path, "derived.yaml", entry))


def test_a_sentence_with_a_test_on_a_fact_is_rendered_on_each_call(tmp_path: Path) -> None:
    said = "{{ 'severity unknown' if severity is none else 'severity known' }}"
    knowledge = _with_sentence(tmp_path, "severity_said", said)
    unknown = facts_of(knowledge, condition("d", "F32.9"))
    known = facts_of(knowledge, condition("d", "F32.2"))
    assert (unknown["severity"], known["severity"]) == (None, "severe")
    assert unknown["severity_said"] == ["severity unknown"]
    assert known["severity_said"] == ["severity known"]


def test_a_name_a_sentence_sets_only_sometimes_is_still_given(tmp_path: Path) -> None:
    """A fact the sentence reads, though it also sets a local of that name in one branch, is
    in the context it renders with (as Jinja itself finds the names a template reads)."""
    said = "{% if depression is none %}{% set age = 0 %}{% endif %}age {{ age }}"
    knowledge = _with_sentence(tmp_path, "age_said", said)
    facts = facts_of(knowledge, condition("d", "F32.2"))
    assert facts["age_said"] == [f"age {facts['age']}"]
