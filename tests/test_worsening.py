"""ipt_cds/clinical/worsening.py: when a held card's trigger is worse (the spec 7.1)."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from ipt_cds.clinical.fact_model import Facts
from ipt_cds.clinical.worsening import RecordState, worse


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
def test_the_band(old: str, new: str, is_worse: bool) -> None:
    assert worse(_state(band=old), _state(band=new)) is is_worse


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
def test_the_ideation_level(old: str, new: str, is_worse: bool) -> None:
    assert worse(_state(ideation=old), _state(ideation=new)) is is_worse


def test_a_new_basis_reference_is_worse_even_at_the_same_level() -> None:
    old = _state(ideation="high", basis={"a"})
    assert worse(old, _state(ideation="high", basis={"a", "b"}))
    assert not worse(old, _state(ideation="high", basis={"a"}))
    assert not worse(_state(ideation="high", basis={"a", "b"}), old), "one gone is not news"


@pytest.mark.parametrize("flag", ["psychosis", "bipolar", "pregnant", "postpartum"])
def test_a_flag_now_on_record_is_worse_and_one_gone_is_not(flag: str) -> None:
    assert worse(_state(), _state(flags={flag}))
    assert not worse(_state(flags={flag}), _state())
    assert not worse(_state(flags={flag}), _state(flags={flag}))


def test_an_unexpected_stored_code_never_hides_worsening() -> None:
    assert worse(_state(band="extreme", ideation="odd"), _state(band="moderate"))
    assert worse(_state(ideation="odd"), _state(ideation="history"))


def test_the_state_of_facts_keys_the_basis_and_reads_the_flags() -> None:
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
    state = RecordState.of(facts, lambda refs: frozenset(f"#{r}" for r in refs))
    assert state == RecordState(
        "unknown", "low", frozenset({"#Observation/o1"}), frozenset({"pregnant", "bipolar"})
    )
    assert RecordState.of(Facts(), frozenset) == RecordState()
