"""fact_sources.py: which parameters each fact reads, kept in step with the Python facts."""

from __future__ import annotations

import re
from pathlib import Path

from ipt_cds.clinical.fact_model import FACTS
from ipt_cds.clinical.fact_sources import (
    FACT_BUILT_FROM,
    FACT_PARAMS,
    declared_parameters,
)
from ipt_cds.clinical.fact_sources import fact_parameters as reads
from ipt_cds.knowledge.base import Knowledge

CLINICAL = Path(__file__).resolve().parents[1] / "ipt_cds" / "clinical"
# A parameter read by name in the Python: params["NAME"], params.get("NAME"), since("NAME").
_READ = re.compile(r"""(?:params\[|params\.get\(|since\()\s*["']([A-Za-z_]\w*)["']""")


def test_every_parameter_the_python_facts_read_is_declared() -> None:
    read = {name for path in CLINICAL.glob("*.py") for name in _READ.findall(path.read_text())}
    assert read, "the grep finds the reads"
    assert {"suicidal_ideation_dx_days", "recurrence_phq9"} <= read
    declared = {p for params in FACT_PARAMS.values() for p in params}
    assert sorted(read - declared) == [], "add them to FACT_PARAMS in fact_sources.py"
    assert sorted(declared - read) == [], "FACT_PARAMS names a parameter no fact reads"


def test_the_maps_name_real_facts_and_parameters(knowledge: Knowledge) -> None:
    for fact, params in FACT_PARAMS.items():
        assert fact in FACTS, fact
        assert all(p in knowledge.params for p in params), fact
    for fact, sources in FACT_BUILT_FROM.items():
        assert fact in FACTS, fact
        assert all(s in knowledge.facts for s in sources), fact
    # The derived facts name real facts and parameters (start-up checked their expressions).
    for fact, sources in knowledge.derived.facts_read.items():
        assert sources, fact
        assert all(s in knowledge.facts for s in sources), fact
    for fact, params in knowledge.derived.params_read.items():
        assert all(p in knowledge.params for p in params), fact


def test_a_fact_reads_its_windows_and_those_of_the_facts_it_is_built_from(
    knowledge: Knowledge,
) -> None:
    declared = {n: declared_parameters(d) for n, d in knowledge.factbook.declarations.items()}
    derived = knowledge.derived

    def fact_parameters(fact: str, declared: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
        return reads(fact, declared, derived.facts_read, derived.params_read)

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
    # The verdict reads the windows of every fact its cases name, and the older-adult age.
    verdict = set(fact_parameters("verdict", declared))
    assert {"older_adult_age", "combination_severities", "adult_age", "phq9_bands"} <= verdict
    assert "older_adult_age" in fact_parameters("verdict_reasons", declared)
