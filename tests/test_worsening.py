"""ipt_cds/clinical/worsening.py: when a held card's trigger is worse (the spec 7.1), with what
cards/worsening.yaml compares."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from ipt_cds.clinical.fact_model import Facts
from ipt_cds.clinical.worsening import RecordState, Worsening, worse
from ipt_cds.knowledge.base import Knowledge


@pytest.fixture
def spec(knowledge: Knowledge) -> Worsening:
    return knowledge.worsening


def _state(
    band: str = "moderate",
    ideation: str = "none",
    basis: Iterable[str] = (),
    flags: Iterable[str] = (),
) -> RecordState:
    return RecordState(band, ideation, frozenset(basis), frozenset(flags))


@pytest.mark.parametrize(
    ("old", "new", "is_worse"),
    [
        ("minimal", "mild", True),
        ("mild", "moderate", True),
        ("moderate", "moderately-severe", True),
        ("moderately-severe", "severe", True),
        ("severe", "severe", False),
        ("severe", "moderate", False),
        ("unknown", "minimal", False),
        ("unknown", "mild", False),
        ("unknown", "moderate", True),
        ("unknown", "severe", True),
        ("moderate", "unknown", False),
        ("unknown", "unknown", False),
    ],
)
def test_the_band(old: str, new: str, is_worse: bool, spec: Worsening) -> None:
    assert worse(_state(band=old), _state(band=new), spec) is is_worse


@pytest.mark.parametrize(
    ("old", "new", "is_worse"),
    [
        ("none", "history", True),
        ("history", "low", True),
        ("low", "high", True),
        ("none", "high", True),
        ("high", "high", False),
        ("high", "low", False),
        ("low", "none", False),
    ],
)
def test_the_ideation_level(old: str, new: str, is_worse: bool, spec: Worsening) -> None:
    assert worse(_state(ideation=old), _state(ideation=new), spec) is is_worse


def test_a_new_basis_reference_is_worse_even_at_the_same_level(spec: Worsening) -> None:
    old = _state(ideation="high", basis={"a"})
    assert worse(old, _state(ideation="high", basis={"a", "b"}), spec)
    assert not worse(old, _state(ideation="high", basis={"a"}), spec)
    assert not worse(_state(ideation="high", basis={"a", "b"}), old, spec), "one gone is not news"


@pytest.mark.parametrize("flag", ["psychosis", "bipolar", "pregnant", "postpartum"])
def test_a_flag_now_on_record_is_worse_and_one_gone_is_not(flag: str, spec: Worsening) -> None:
    assert worse(_state(), _state(flags={flag}), spec)
    assert not worse(_state(flags={flag}), _state(), spec)
    assert not worse(_state(flags={flag}), _state(flags={flag}), spec)


def test_an_unexpected_stored_code_never_hides_worsening(spec: Worsening) -> None:
    assert worse(_state(band="extreme", ideation="odd"), _state(band="moderate"), spec)
    assert worse(_state(ideation="odd"), _state(ideation="history"), spec)


def test_the_state_of_facts_keys_the_basis_and_reads_the_flags(spec: Worsening) -> None:
    facts = Facts(
        values={
            "severity": None,
            "suicidal_ideation": "low",
            "pregnant": True,
            "psychosis": False,
            "bipolar": True,
            "postpartum": False,
        },
        refs={"suicidal_ideation": ["Observation/o1"]},
    )
    state = RecordState.of(facts, lambda refs: frozenset(f"#{r}" for r in refs), spec)
    assert state == RecordState(
        "unknown", "low", frozenset({"#Observation/o1"}), frozenset({"pregnant", "bipolar"})
    )
    assert RecordState.of(Facts(), frozenset, spec) == RecordState()
