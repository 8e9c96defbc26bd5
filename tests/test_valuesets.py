"""The value sets in cards/valuesets/: valid FHIR R4, expansions current with their definitions
and sources, free of the known traps of the reference code lists (the code review, sections 11
and 12)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from fhir.resources.R4B.valueset import ValueSet

from ipt_cds.devtools.valueset_expander import EXCLUSION_REASON as REASON
from ipt_cds.devtools.valueset_expander import FOLDER, run
from ipt_cds.knowledge.base import Knowledge

ROOT = Path(__file__).resolve().parents[1]
FILES = sorted((ROOT / "cards" / "valuesets").glob("*.json"))
BASE = "https://fhir.ipt-cds.org/ValueSet/"
VSAC = "http://cts.nlm.nih.gov/fhir/ValueSet/"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
LOINC = "http://loinc.org"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
# The value sets of the clinical specification version 2 (with the 51 of version 1, 61 in all).
VERSION_2 = {
    "suicide-attempt",
    "suicide-risk",
    "suicide-history",
    "psychiatry-referral",
    "nicotine-dependence",
    "bupropion-smoking-cessation",
    "doxepin-hypnotic",
    "trazodone",
    "amitriptyline",
    "bupropion",
}


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
    assert vs.expansion is not None
    # An include names a source value set (narrowed by system, concepts or filters), or a code
    # system with filters (an ICD-10-CM group, an RxNorm ingredient, a code family), or
    # enumerates concepts, each with its display.
    for inc in vs.compose.include:
        if inc.valueSet:
            assert all(str(u).startswith((BASE, VSAC)) for u in inc.valueSet), inc.valueSet
            assert all(f.property in ("display", "code") for f in inc.filter or [])
        elif inc.filter:
            assert inc.system
            assert not inc.concept
            kinds = {(f.property, f.op) for f in inc.filter}
            family = kinds == {("code", "regex")}
            assert family or kinds <= {("group", "="), ("ingredient", "="), ("display", "regex")}
        else:
            assert inc.system
            assert inc.concept
            assert all(c.display for c in inc.concept), inc.system
    # Every exclusion says why.
    for exc in vs.compose.exclude or []:
        assert [e.valueString for e in exc.extension or [] if e.url == REASON], exc


def test_the_version_2_value_sets_are_there() -> None:
    names = {path.stem for path in FILES}
    assert names >= VERSION_2
    assert len(FILES) == 63


def test_psychiatric_care_is_an_evaluation_or_a_follow_up_not_a_referral() -> None:
    """Version 3: care received (CPT 90791/90792, SNOMED 88848003) is named on cards; only the
    bipolar chart-open card takes it as care under way."""
    data = json.loads((FILES[0].parent / "psychiatric-care.json").read_text())
    codes = {
        (inc["system"], c["code"]) for inc in data["compose"]["include"] for c in inc["concept"]
    }
    assert codes == {
        ("http://www.ama-assn.org/go/cpt", "90791"),
        ("http://www.ama-assn.org/go/cpt", "90792"),
        ("http://snomed.info/sct", "88848003"),
    }


def test_expansions_are_current_with_their_definitions_and_sources() -> None:
    out = io.StringIO()
    assert run(FOLDER, FOLDER / "sources", out, check=True) == 0, out.getvalue()


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


def test_suicide_codes_are_read_apart(knowledge: Knowledge) -> None:
    """Version 2: ideation, attempt or self-harm, 'at risk' and history are different bases."""
    terms = knowledge.terms
    ideation, attempt = BASE + "suicidal-ideation", BASE + "suicide-attempt"
    assert terms.contains(ideation, ICD10CM, "R45.851")
    assert terms.contains(ideation, SNOMED, "6471006")
    for code in ("T14.91XA", "T14.91XD", "T14.91XS", "T43.222A", "X78.1XXA"):
        assert not terms.contains(ideation, ICD10CM, code), code
        assert terms.contains(attempt, ICD10CM, code), code
    # 'Suicidal behavior' is behaviour: an attempt basis, not ideation.
    assert not terms.contains(ideation, SNOMED, "425104003")
    assert terms.contains(attempt, SNOMED, "425104003")
    assert terms.contains(BASE + "suicide-risk", SNOMED, "225444004")
    assert terms.contains(BASE + "suicide-history", ICD10CM, "Z91.51")
    assert not terms.contains(ideation, ICD10CM, "Z91.51")
    for url in (ideation, attempt, BASE + "suicide-history"):
        # Non-suicidal self-harm, and homicidal ideation under the R45.85 header.
        for code in ("R45.88", "Z91.52", "R45.85", "R45.850"):
            assert not terms.contains(url, ICD10CM, code), (url, code)


def test_mdd_with_psychotic_features_is_not_psychosis(knowledge: Knowledge) -> None:
    """Version 2 reads MDD with psychotic features only for the current or a recent episode."""
    terms = knowledge.terms
    for system, code in ((ICD10CM, "F32.3"), (ICD10CM, "F33.3"), (SNOMED, "726772006")):
        assert not terms.contains(BASE + "psychosis", system, code), code
        assert terms.contains(BASE + "depression-psychotic-features", system, code), code
    for code in ("F20.0", "F22", "F24", "F53.1", "F31.2", "F31.5"):
        assert terms.contains(BASE + "psychosis", ICD10CM, code), code


def test_drugs_that_are_not_always_an_antidepressant(knowledge: Knowledge) -> None:
    terms = knowledge.terms
    assert terms.displays(BASE + "doxepin-hypnotic") == [
        "doxepin 3 MG Oral Tablet",
        "doxepin 6 MG Oral Tablet",
    ]
    assert terms.contains(BASE + "bupropion-smoking-cessation", RXNORM, "1801289")
    assert terms.contains(BASE + "bupropion", RXNORM, "1801289")
    assert not terms.contains(BASE + "bupropion-smoking-cessation", RXNORM, "993518")
    assert "trazodone hydrochloride 50 MG Oral Tablet" in terms.displays(BASE + "trazodone")
    assert "amitriptyline hydrochloride 25 MG Oral Tablet" in terms.displays(BASE + "amitriptyline")
    for url, ingredient in (
        ("trazodone", "10737"),
        ("amitriptyline", "704"),
        ("bupropion", "42347"),
    ):
        assert terms.contains(BASE + url, RXNORM, ingredient)
    assert terms.contains(BASE + "nicotine-dependence", ICD10CM, "F17.210")
    assert terms.contains(BASE + "nicotine-dependence", SNOMED, "56294008")
    assert terms.contains(BASE + "psychiatry-referral", SNOMED, "308477009")
    assert not terms.contains(BASE + "psychotherapy", SNOMED, "308477009")
