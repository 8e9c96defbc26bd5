"""Regex families in value sets: FHIR ``compose.include.filter`` with ``property: code`` and
``op: regex``, matched in full against the normalised code (ICD-10-CM upper case, no dots)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from ipt_cds.clinical.terminology import CodeFilter, Concept, Terminology
from ipt_cds.knowledge.base import Knowledge
from ipt_cds.knowledge.errors import KnowledgeError
from ipt_cds.knowledge.valuesets import load_terminology

from .conftest import copy_knowledge

BASE = "https://fhir.ipt-cds.org/ValueSet/"
ATTEMPT = BASE + "suicide-attempt"
NICOTINE = BASE + "nicotine-dependence"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
SNOMED = "http://snomed.info/sct"


def _condition(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


@pytest.mark.parametrize(
    "code",
    [
        "T43.222A",  # SSRI poisoning, intentional self-harm (6th character 2)
        "T43222A",  # sent without the dot
        "t43.222a",  # in lower case
        "T36.0X2A",  # placeholder X in the 5th character
        "T43.92XA",  # intent in the 5th character, placeholder X in the 6th
        "T58.02XS",
        "X71.0XXA",
        "X83.8XXA",
        " X78.1XXD ",
        "T14.91XA",  # enumerated, beside the families
    ],
)
def test_intentional_self_harm_is_a_suicide_attempt(knowledge: Knowledge, code: str) -> None:
    terms = knowledge.terms
    assert terms.contains(ATTEMPT, ICD10CM, code)
    found = terms.match(ATTEMPT, _condition(ICD10CM, code))
    assert found is not None
    assert found.code == code.strip()
    assert ATTEMPT in terms.memberships(_condition(ICD10CM, code))


@pytest.mark.parametrize(
    "code",
    [
        "T43.221A",  # accidental
        "T43.223A",  # assault
        "T43.224A",  # undetermined
        "T43.225A",  # adverse effect
        "T43.91XA",  # accidental, intent in the 5th character
        "T66.XXXA",  # radiation sickness: outside T36-T65
        "T35.0X2A",
        "X70.0XXA",
        "X84",
        "X84.XXXA",
        "T43.22",  # a header: no intent
        "R45.851",  # ideation, not an attempt
    ],
)
def test_other_codes_are_not(knowledge: Knowledge, code: str) -> None:
    terms = knowledge.terms
    assert not terms.contains(ATTEMPT, ICD10CM, code)
    assert terms.match(ATTEMPT, _condition(ICD10CM, code)) is None
    assert ATTEMPT not in terms.memberships(_condition(ICD10CM, code))


def test_a_family_holds_only_codes_of_its_system(knowledge: Knowledge) -> None:
    terms = knowledge.terms
    # The same characters under another system are another code.
    for system in (SNOMED, "urn:oid:2.16.840.1.113883.6.3", "http://example.org/codes"):
        assert not terms.contains(ATTEMPT, system, "T43.222A")
        assert ATTEMPT not in terms.memberships(_condition(system, "X71.0XXA"))
    # The other names ICD-10-CM is sent under are read as ICD-10-CM (reader.SYSTEM_ALIASES).
    for alias in ("urn:oid:2.16.840.1.113883.6.90", "http://hl7.org/fhir/sid/icd-10"):
        assert ATTEMPT in terms.memberships(_condition(alias, "T43.222A"))
        assert terms.match(ATTEMPT, _condition(alias, "X71.0XXA")) is not None


def test_a_filter_on_another_system_does_not_match_icd_codes() -> None:
    other = "http://example.org/local-codes"
    terms = Terminology(
        {"vs": "a family of local codes"},
        {"vs": []},
        {"vs": [CodeFilter(other, re.compile(r"T43.*"))]},
    )
    assert terms.contains("vs", other, "T43222A")
    assert not terms.contains("vs", ICD10CM, "T43222A")
    assert terms.memberships(_condition(ICD10CM, "T43.222A")) == {}
    assert set(terms.memberships(_condition(other, "T43222A"))) == {"vs"}


def test_families_and_concepts_together() -> None:
    """One coding may be in value sets by enumeration and by family at once; each is named
    once, and the display of an enumerated code is used when the coding has none."""
    import re

    terms = Terminology(
        {"a": "A", "b": "B"},
        {"a": [Concept(ICD10CM, "F17.210", "Nicotine dependence, cigarettes, uncomplicated")]},
        {
            "a": [CodeFilter(ICD10CM, re.compile("F172.*"))],
            "b": [CodeFilter(ICD10CM, re.compile("F17.*"))],
        },
    )
    found = terms.memberships(_condition(ICD10CM, "f17.210"))
    assert set(found) == {"a", "b"}
    assert found["a"].display == "Nicotine dependence, cigarettes, uncomplicated"
    assert set(terms.memberships(_condition(ICD10CM, "F17.290"))) == {"a", "b"}
    assert set(terms.memberships(_condition(ICD10CM, "F17.1"))) == {"b"}


def test_nicotine_dependence_is_the_f17_2_family(knowledge: Knowledge) -> None:
    terms = knowledge.terms
    for code in ("F17.200", "F17.210", "F17.213", "f17.290", "F17.2"):
        assert terms.contains(NICOTINE, ICD10CM, code), code
    for code in ("F17", "F10.20", "Z87.891", "Z72.0"):
        assert not terms.contains(NICOTINE, ICD10CM, code), code
    assert terms.contains(NICOTINE, SNOMED, "56294008")


def test_codes_without_a_family_stay_one_dict_lookup(knowledge: Knowledge) -> None:
    """Systems no value set filters on never reach a regex."""
    terms = knowledge.terms
    assert set(terms._filters) == {ICD10CM}
    assert terms.contains(BASE + "mdd", ICD10CM, "F33.1")
    assert not terms.contains(BASE + "mdd", ICD10CM, "T43.222A")


@pytest.mark.parametrize(
    "concept",
    [
        _condition(ICD10CM, "F33.1"),  # in several value sets
        _condition(ICD10CM, "T43.222A"),  # by a regex family
        _condition(ICD10CM, " f33.1 "),  # padded, lower case
        _condition("http://loinc.org", "8867-4"),  # in none
        {"coding": [{"system": ICD10CM, "code": "F33.1", "display": "Recurrent MDD"}]},
        {"coding": [{"system": ICD10CM, "code": "F33.1", "display": 7}]},
        {"coding": [{"system": ICD10CM, "code": 331}]},  # a number: the general walk
        {"coding": [{"system": ICD10CM}]},
        {"coding": [{"code": "F33.1"}]},
        {"coding": [None]},
        {"coding": {"system": ICD10CM, "code": "F33.1"}},  # one coding sent as an object
        {"coding": [{"system": SNOMED, "code": "x"}, {"system": ICD10CM, "code": "F33.1"}]},
        [_condition(ICD10CM, "F32.9"), _condition(ICD10CM, "F33.1")],
        "F33.1",
    ],
)
def test_one_coding_is_answered_as_the_general_walk_answers(
    knowledge: Knowledge, concept: Any
) -> None:
    """Memberships of one well-formed coding take a shortcut; it must agree with the walk
    over any concept, display and odd shapes included."""
    terms = knowledge.terms
    assert terms.memberships(concept) == terms._walk(concept)
    if concept == _condition(ICD10CM, "F33.1"):
        assert BASE + "mdd" in terms.memberships(concept)


# --- checked at start-up ----------------------------------------------------------------------


@pytest.fixture
def valuesets(tmp_path: Path) -> Path:
    return copy_knowledge(tmp_path / "cards") / "valuesets"


def _rewrite_family(folder: Path, **changes: str) -> Path:
    path = folder / "suicide-attempt.json"
    data = json.loads(path.read_text())
    family = next(inc for inc in data["compose"]["include"] if "filter" in inc)
    family["filter"][0].update(changes)
    path.write_text(json.dumps(data))
    return path


def test_the_shipped_families_load(valuesets: Path) -> None:
    terms = load_terminology(valuesets)
    assert terms.contains(ATTEMPT, ICD10CM, "X71.0XXA")


def test_a_broken_regex_stops_start_up_naming_the_file(valuesets: Path) -> None:
    path = _rewrite_family(valuesets, value="X(7[1-9]|8[0-3].*")
    with pytest.raises(KnowledgeError) as caught:
        load_terminology(valuesets)
    message = str(caught.value)
    assert message.startswith(f"{path}: compose.include[3].filter[0].value: not a valid regex")
    assert "X(7[1-9]|8[0-3].*" in message


def test_an_unknown_op_stops_start_up(valuesets: Path) -> None:
    path = _rewrite_family(valuesets, op="is-a")
    with pytest.raises(KnowledgeError, match=r"compose\.include\[3\]\.filter\[0\]\.op") as caught:
        load_terminology(valuesets)
    assert str(caught.value).startswith(f"{path}: ")


def test_an_unknown_property_stops_start_up(valuesets: Path) -> None:
    path = _rewrite_family(valuesets, property="parent")
    with pytest.raises(KnowledgeError, match=r"filter\[0\]\.property") as caught:
        load_terminology(valuesets)
    assert str(caught.value).startswith(f"{path}: ")


def test_an_icd_regex_with_a_literal_dot_stops_start_up(valuesets: Path) -> None:
    path = _rewrite_family(valuesets, value=r"X7[1-9]\..*")
    with pytest.raises(KnowledgeError, match="without dots") as caught:
        load_terminology(valuesets)
    assert str(caught.value).startswith(f"{path}: compose.include[3]: ")


def test_an_include_with_both_or_neither_stops_start_up(valuesets: Path) -> None:
    path = valuesets / "suicide-attempt.json"
    data = json.loads(path.read_text())
    data["compose"]["include"][3]["concept"] = [{"code": "X71.0XXA"}]
    path.write_text(json.dumps(data))
    with pytest.raises(KnowledgeError, match=r"include\[3\]: a code family is code regex filters"):
        load_terminology(valuesets)
    del data["compose"]["include"][3]["concept"]
    del data["compose"]["include"][3]["filter"]
    path.write_text(json.dumps(data))
    with pytest.raises(KnowledgeError, match=r"include\[3\]: needs either concept or filter"):
        load_terminology(valuesets)


def test_a_broken_regex_stops_the_whole_knowledge_base(tmp_path: Path) -> None:
    cards = copy_knowledge(tmp_path / "cards")
    path = _rewrite_family(cards / "valuesets", value="T(3[6-9]")
    with pytest.raises(KnowledgeError) as caught:
        Knowledge.load(cards)
    assert str(caught.value).startswith(f"{path}: ")


def test_codings_looked_up_once_answer_the_same_and_the_table_stays_bounded(
    knowledge: Knowledge, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The per-process table of codings met in records: the second lookup of a coding (with
    its display, or as an integer code) answers as the first did, and a flood of new codes
    (a hostile record) never holds more than its bound."""
    import ipt_cds.clinical.terminology as terminology

    terms = knowledge.terms
    first = terms.memberships(_condition(ICD10CM, "T43.222A"))
    again = terms.memberships(
        {"coding": [{"system": ICD10CM, "code": "T43.222A", "display": "as sent"}]}
    )
    assert ATTEMPT in first
    assert first.keys() == again.keys()
    assert again[ATTEMPT].display == "as sent"
    assert first[ATTEMPT].display != "as sent"
    assert terms.memberships({"coding": [{"system": "urn:x", "code": 7}]}) == {}
    monkeypatch.setattr(terminology, "SEEN_CODES", 50)
    for n in range(500):
        terms.memberships(_condition(ICD10CM, f"Z{n:04d}"))
    assert len(terms._seen) <= 50
    assert ATTEMPT in terms.memberships(_condition(ICD10CM, "t43.222a"))


def test_a_value_set_without_its_expansion_stops_start_up(valuesets: Path) -> None:
    path = valuesets / "mdd.json"
    data = json.loads(path.read_text())
    del data["expansion"]
    path.write_text(json.dumps(data))
    with pytest.raises(KnowledgeError, match=r"expansion: Field required") as caught:
        load_terminology(valuesets)
    assert str(caught.value).startswith(f"{path}: ")


def test_the_service_reads_the_expansion_not_the_definition(valuesets: Path) -> None:
    """How the expansion was made (source value sets, groups, exclusions) is build-time only."""
    path = valuesets / "mdd.json"
    data = json.loads(path.read_text())
    data["compose"]["include"] = [{"valueSet": ["http://cts.nlm.nih.gov/fhir/ValueSet/none"]}]
    data["expansion"]["contains"] = [
        {"system": ICD10CM, "code": "F33.1", "display": "Moderate recurrent"}
    ]
    path.write_text(json.dumps(data))
    terms = load_terminology(valuesets)
    assert terms.contains(BASE + "mdd", ICD10CM, "F33.1")
    assert not terms.contains(BASE + "mdd", ICD10CM, "F32.0")
