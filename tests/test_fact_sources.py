"""fact_sources.py: what each fact reads, as cards/facts.yaml declares it, kept in step with the
Python that computes it (start-up binds the two: ipt_cds/knowledge/computed.py)."""

from __future__ import annotations

import re
from pathlib import Path

from ipt_cds.clinical.fact_library import registry
from ipt_cds.clinical.fact_sources import declared_parameters
from ipt_cds.clinical.fact_sources import fact_parameters as reads
from ipt_cds.knowledge.base import Knowledge

COMPUTED = Path(__file__).resolve().parents[1] / "ipt_cds" / "clinical" / "computed"
# A parameter read by name past the declaration: params["NAME"], params.get("NAME"), since("NAME").
_BYPASS = re.compile(r"""(?:params\[|params\.get\(|since\()\s*["']([A-Za-z_]\w*)["']""")
_ASKED = re.compile(r"""needs\.(?:parameter|days)\(\s*["']([A-Za-z_]\w*)["']""")


def test_the_python_reads_parameters_only_as_its_declaration_gives_them(
    knowledge: Knowledge,
) -> None:
    """Start-up hands each extractor only the parameters its facts declare; one read around
    that (the scope's parameters) would go unchecked, and unlisted on the evidence pages."""
    sources = [path.read_text() for path in COMPUTED.glob("*.py")]
    assert [name for text in sources for name in _BYPASS.findall(text)] == []
    asked = {name for text in sources for name in _ASKED.findall(text)}
    assert {"suicidal_ideation_dx_days", "recurrence_phq9"} <= asked, "the grep finds the reads"
    declared = {p for params in knowledge.sources.params.values() for p in params}
    assert asked == declared


def test_the_declarations_name_real_facts_and_parameters(knowledge: Knowledge) -> None:
    computed = {fact for extractor in registry().values() for fact in extractor.sets}
    sources = knowledge.sources
    for fact, params in sources.params.items():
        assert fact in computed, fact
        assert all(p in knowledge.params for p in params), fact
    for fact, built_from in sources.built_from.items():
        assert fact in computed, fact
        assert all(s in knowledge.facts for s in built_from), fact
    # The derived facts name real facts and parameters (start-up checked their expressions).
    for fact, names in knowledge.derived.facts_read.items():
        assert names, fact
        assert all(s in knowledge.facts for s in names), fact
    for fact, params in knowledge.derived.params_read.items():
        assert all(p in knowledge.params for p in params), fact


def test_a_name_is_read_as_the_kind_it_is_declared(knowledge: Knowledge) -> None:
    """``bipolar`` is both a value set alias and an extraction: the declaration says which."""
    sources = knowledge.sources
    assert "bipolar" in sources.valuesets["depression"]
    assert "bipolar" in sources.extractions["dysthymia"]
    assert "bipolar" not in sources.valuesets.get("dysthymia", ())


def test_a_fact_reads_its_windows_and_those_of_the_facts_it_is_built_from(
    knowledge: Knowledge,
) -> None:
    declared = {n: declared_parameters(d) for n, d in knowledge.factbook.declarations.items()}
    derived = knowledge.derived

    def fact_parameters(fact: str, declared: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
        return reads(fact, knowledge.sources, declared, derived.facts_read, derived.params_read)

    assert declared["phq9_total"] == ("phq9_window_days", "phq9_max")
    assert declared["bipolar"] == ()
    assert "amitriptyline_low_dose_max_mg" in declared["antidepressant_orders"]
    suicidal = fact_parameters("suicidal_ideation", declared)
    assert {"phq9_window_days", "suicidal_ideation_dx_days", "item_score_counts"} <= set(suicidal)
    # Derived: ipt_candidate <- unipolar_scope <- adult <- age; and psychosis.
    candidate = set(fact_parameters("ipt_candidate", declared))
    assert {"adult_age", "psychotic_features_window_days"} <= candidate
    assert fact_parameters("hook", declared) == ()
    assert "postpartum_window_days" in fact_parameters("supports", declared)
    assert fact_parameters("psychiatric_care", declared) == ("psychiatric_care_window_days",)
    # The verdict reads the windows of every fact its cases name, and the older-adult age.
    verdict = set(fact_parameters("verdict", declared))
    assert {"older_adult_age", "combination_severities", "adult_age", "phq9_bands"} <= verdict
    assert "older_adult_age" in fact_parameters("verdict_reasons", declared)
