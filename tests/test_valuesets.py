"""The value sets in cards/valuesets/: valid FHIR R4, current with their sources, free of the
known traps of the reference code lists (codes.md sections 11 and 12)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fhir.resources.R4B.valueset import ValueSet

from service.knowledge.base import Knowledge

ROOT = Path(__file__).resolve().parents[1]
FILES = sorted((ROOT / "cards" / "valuesets").glob("*.json"))
BASE = "https://fhir.ipt-cds.org/ValueSet/"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
LOINC = "http://loinc.org"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_value_set_is_valid_fhir_r4_with_provenance(path: Path) -> None:
    data = json.loads(path.read_text())
    vs = ValueSet.model_validate(data)
    assert vs.url == BASE + path.stem
    assert vs.version
    assert vs.date
    assert vs.purpose
    assert vs.status == "active"
    assert vs.compose is not None
    assert all(inc.concept for inc in vs.compose.include)


def test_value_sets_are_current_with_the_reference_code_lists() -> None:
    build = [sys.executable, str(ROOT / "scripts" / "build_valuesets.py"), "--check"]
    done = subprocess.run(build, capture_output=True, text=True, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_known_traps_are_handled(knowledge: Knowledge) -> None:
    terms = knowledge.terms
    # A bipolar code sits inside a VSAC MDD value set.
    assert not terms.contains(BASE + "mdd", SNOMED, "67002003")
    assert terms.contains(BASE + "bipolar", SNOMED, "67002003")
    # Synthea codes the PHQ-9 total as 89204-2.
    assert terms.contains(BASE + "phq9-total", LOINC, "89204-2")
    # Psychodynamic-interpersonal therapy is psychotherapy, not IPT.
    assert not terms.contains(BASE + "ipt", SNOMED, "304822001")
    assert terms.contains(BASE + "psychotherapy", SNOMED, "304822001")
    # Oral selegiline is for Parkinson's disease; only the patch is an antidepressant.
    assert "selegiline" not in terms.displays(BASE + "antidepressant-ingredients")
