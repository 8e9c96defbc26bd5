"""The computed facts of cards/facts.yaml: a Python extractor of the library (its module says its
name and the facts it sets) and its declaration (what those facts read and mean). A new one is
those two places; start-up refuses a declaration that does not match the code or the data."""

from __future__ import annotations

from pathlib import Path

import pytest

from ipt_cds.clinical import fact_library
from ipt_cds.clinical.extractors import Evidence, condition_evidence
from ipt_cds.clinical.fact_library import (
    Call,
    Compute,
    Needs,
    ValueSetKey,
    computes,
    registry,
    typed,
)
from ipt_cds.devtools.glossary import render
from ipt_cds.knowledge.base import Knowledge
from ipt_cds.knowledge.errors import KnowledgeError
from ipt_cds.knowledge.expressions import compile_expression
from ipt_cds.ops.config import Settings

from .conftest import condition
from .test_derived import _cards_with
from .test_facts import facts_of

FACTS_FILE = (Settings().knowledge_dir / "facts.yaml").read_text()


@pytest.fixture
def library(monkeypatch: pytest.MonkeyPatch) -> None:
    """A registry of its own for the test: an extractor registered here is gone after it."""
    monkeypatch.setattr(fact_library, "REGISTRY", dict(registry()))


# The first place: the Python, which says its name and the facts it sets, and reads one name of
# each kind, each resolved at start-up.
def burden(needs: Needs) -> Compute:
    bipolar_codes = needs.valueset("bipolar")
    anxiety = needs.extraction("anxiety")
    depression = needs.fact("depression")
    floor = needs.parameter("item_score_counts")

    def compute(call: Call) -> None:
        found: list[Evidence] = list(call.evidence(anxiety))
        for c, match, _ in call.coded("Condition", bipolar_codes):
            found.append(condition_evidence(c, match))
        count = len(found) + (1 if call.fact(depression) else 0)
        call.set("burden", count, found)
        call.set("burden_high", count >= floor)

    return compute


def _register() -> None:
    computes("burden", {"burden": typed(int, explained=True), "burden_high": typed(bool)})(burden)


# The second place: its declaration, appended to `computed:`, the last section of facts.yaml.
DECLARED = """
  burden:
    sets:
      burden:
        meaning: how many diagnoses of depression, anxiety and bipolar disorder, for the test
        valuesets: [bipolar]
        extractions: [anxiety]
        from_facts: [depression]
      burden_high:
        meaning: a burden at or above item_score_counts, for the test
        parameters: [item_score_counts]
        from_facts: [burden]
"""


@pytest.mark.usefixtures("library")
def test_a_new_python_extractor_is_its_function_and_its_declaration(tmp_path: Path) -> None:
    _register()
    cards = _cards_with(tmp_path, "facts.yaml", DECLARED)
    knowledge = Knowledge.load(cards)
    spec = knowledge.facts["burden"]
    assert (spec.describe(), spec.explained) == ("a whole number", True)
    f = facts_of(knowledge, condition("d", "F32.1"), condition("a", "F41.1"))
    assert (f["burden"], f["burden_high"]) == (2, True)
    assert f.refs["burden"] == ["Condition/a"]
    assert facts_of(knowledge, condition("b", "F31.9"))["burden"] == 1
    # A rule may name it at once; the glossary shows what it reads, as declared.
    compile_expression("burden_high and burden > 2", knowledge.facts, knowledge.params, [])
    glossary = "\n".join(render(knowledge))
    assert "**`burden`** (a whole number): how many diagnoses of depression" in glossary
    assert "  - codes in [Bipolar disorder or manic episode]" in glossary
    assert "  - computed from `depression`" in glossary
    assert knowledge.sources.params["burden_high"] == ("item_score_counts",)


def _stops(cards: Path, error: str) -> None:
    with pytest.raises(KnowledgeError) as caught:
        Knowledge.load(cards)
    assert str(caught.value) == f"{cards / 'facts.yaml'}: {error}"


@pytest.mark.usefixtures("library")
def test_a_python_extractor_without_its_declaration_stops_start_up(tmp_path: Path) -> None:
    _register()
    _stops(
        _cards_with(tmp_path, "facts.yaml", ""),
        "computed: the Python extractor 'burden' (tests.test_computed_facts) is not declared: "
        "declare the facts it sets",
    )


@pytest.mark.usefixtures("library")
def test_a_name_the_code_reads_and_the_declaration_misses_stops_start_up(
    tmp_path: Path,
) -> None:
    """Not a KeyError on every call: the extractor asks for its names as it is bound."""
    _register()
    _stops(
        _cards_with(tmp_path, "facts.yaml", DECLARED.replace("extractions: [anxiety]", "")),
        "computed.burden: tests.test_computed_facts reads the extraction 'anxiety', which no "
        "fact of it declares (add it under extractions of the fact that reads it)",
    )


EPISODE = "computed.episode: ipt_cds.clinical.computed.episode"
# (text of the shipped facts.yaml, what replaces it, the error after the file's name)
BROKEN = [
    (
        "  scores:\n    sets:",
        "  score:\n    sets:",
        "computed.score: no Python extractor 'score' (there are: episode, life, patient, "
        "personality, plan, scores, suicide, unreadable)",
    ),
    (
        "      patient_id:\n",
        "      patient_name:\n        meaning: x\n      patient_id:\n",
        "computed.patient.sets: 'patient_name' is not a fact the extractor sets "
        "(ipt_cds.clinical.computed.patient sets hook, patient_id, age)",
    ),
    (
        "      patient_id:\n        meaning: the id of the Patient the call is about\n",
        "",
        "computed.patient.sets: 'patient_id', which the extractor sets "
        "(ipt_cds.clinical.computed.patient), is not declared",
    ),
    (
        "      item9:\n",
        "      age:\n        meaning: x\n      item9:\n",
        "computed.scores.sets: 'age' is already a fact",
    ),
    (
        "valuesets: [recurrent, single_episode]",
        "valuesets: [recurrent, single_episod]",
        "computed.episode.sets.episode.valuesets: no value set alias 'single_episod' under "
        "valuesets",
    ),
    (
        "extractions: [phq9_total]",
        "extractions: [phq9_totl]",
        "computed.scores.sets.phq9.extractions: no extraction 'phq9_totl' under facts",
    ),
    (
        "parameters: [phq9_bands]",
        "parameters: [phq9_band]",
        "computed.episode.sets.severity.parameters: no parameter 'phq9_band' in parameters.yaml",
    ),
    (
        "from_facts: [neurovegetative]",
        "from_facts: [neurovegetative, depression]",
        "computed.scores.sets.neurovegetative_domains.from_facts: no fact 'depression' set "
        "before it",
    ),
    # The value set of the same name is declared: the extraction is not.
    (
        "extractions: [dysthymia_conditions, bipolar]",
        "extractions: [dysthymia_conditions]",
        f"{EPISODE} reads the extraction 'bipolar', which no fact of it declares (add it "
        "under extractions of the fact that reads it)",
    ),
    (
        "        parameters: [recurrence_phq9]\n",
        "",
        f"{EPISODE} reads the parameter 'recurrence_phq9', which no fact of it declares (add "
        "it under parameters of the fact that reads it)",
    ),
    (
        "        meaning: the CDS hook called\n",
        "        meaning: the CDS hook called\n        valuesets: [mdd]\n",
        "computed.patient: valuesets: ipt_cds.clinical.computed.patient does not read the "
        "value set alias 'mdd'",
    ),
    # An alias no fact reads would look like a code list that decides something.
    (
        "  mdd: https://fhir.ipt-cds.org/ValueSet/mdd\n",
        "  mdd: https://fhir.ipt-cds.org/ValueSet/mdd\n"
        "  hiv: https://fhir.ipt-cds.org/ValueSet/hiv\n",
        "valuesets.hiv: no computed fact reads it",
    ),
]


@pytest.mark.parametrize(("text", "broken", "error"), BROKEN, ids=lambda v: str(v)[:24])
def test_a_declaration_that_does_not_match_stops_start_up(
    tmp_path: Path, text: str, broken: str, error: str
) -> None:
    assert text in FACTS_FILE
    cards = _cards_with(tmp_path, "facts.yaml", FACTS_FILE.replace(text, broken), append=False)
    _stops(cards, error)


def test_a_bound_extractor_asks_for_nothing_more_on_a_call(knowledge: Knowledge) -> None:
    """What it asks for on a call would go unchecked until that call: only binding may ask."""
    needs = Needs({k: {"mdd"} for k in fact_library.KINDS}, knowledge.terms, {"mdd": "u"}, {})
    assert needs.valueset("mdd") == ValueSetKey("u")
    needs.sealed = True
    with pytest.raises(RuntimeError, match="ask while binding"):
        needs.valueset("mdd")


@pytest.mark.usefixtures("library")
def test_two_extractors_of_one_name_stop_start_up_naming_both_modules(tmp_path: Path) -> None:
    def episode(needs: Needs) -> Compute:
        return lambda call: None

    episode.__module__ = "ipt_cds.clinical.computed.episode_copy"
    with pytest.raises(fact_library.DuplicateExtractor) as caught:
        computes("episode", {})(episode)
    assert "ipt_cds.clinical.computed.episode and ipt_cds.clinical.computed.episode_copy" in str(
        caught.value
    )


def test_a_file_no_import_could_name_is_not_a_module_of_the_library(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """An editor's backup or a Finder copy ("episode copy.py") beside the modules is skipped."""
    from ipt_cds.clinical import computed

    folder = tmp_path / "computed"
    folder.mkdir()
    (folder / "episode copy.py").write_text("raise AssertionError('imported')\n")
    monkeypatch.setattr(computed, "__path__", [*computed.__path__, str(folder)])
    assert "episode" in registry()


def test_the_library_reads_names_only_through_needs() -> None:
    """Start-up checks what an extractor asks of its Needs; a key made by hand, or a value set
    or parameter taken from behind Needs, would escape that check."""
    from ipt_cds.clinical import computed

    for path in Path(computed.__path__[0]).glob("*.py"):
        source = path.read_text()
        keys = ("Extraction(", "FactKey(", "ValueSetKey(")
        behind = ("._valuesets", "._params", "._terms", "._scope", "Terminology", "knowledge_dir")
        for escape in (*keys, *behind):
            assert escape not in source, f"{path.name} uses {escape}"
