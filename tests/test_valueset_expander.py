"""ipt_cds/devtools/valueset_expander.py on a tiny definitions folder with fake sources: each
kind of include and exclude, dependency order, and the definitions it refuses."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from ipt_cds.devtools.valueset_expander import (
    EXCLUSION_REASON,
    ORDINAL,
    SOURCE_EXTENSION,
    expand_folder,
    run,
)
from ipt_cds.devtools.valueset_sources import DefinitionError

ICD = "http://hl7.org/fhir/sid/icd-10-cm"
SCT = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
VSAC = "http://cts.nlm.nih.gov/fhir/ValueSet/"
OURS = "https://fhir.ipt-cds.org/ValueSet/"
OID = "1.2.3.4"


def write_sources(root: Path) -> Path:
    sources = root / "sources"
    (sources / "vsac").mkdir(parents=True)
    contains = [
        {"system": SCT, "code": "100", "display": "Recurrent depression"},
        {"system": SCT, "code": "200", "display": "Single episode depression"},
        {"system": SCT, "code": "300", "display": "Bipolar II disorder"},
        {"system": ICD, "code": "F33.1", "display": "Old VSAC wording"},
    ]
    fake = {
        "resourceType": "ValueSet",
        "id": OID,
        "url": VSAC + OID,
        "version": "1",
        "expansion": {"timestamp": "2024-01-01", "contains": contains},
    }
    (sources / "vsac" / f"ValueSet-{OID}.json").write_text(json.dumps(fake))
    (sources / "icd10cm_codes_by_group.csv").write_text(
        "group,code,description_ICD10CM_Apr2026,billable_leaf\n"
        "MDD_F33,F33,Major depressive disorder recurrent,N\n"
        "MDD_F33,F33.1,NCHS wording,Y\n"
        "MDD_F33,F30-F39,a block title,N\n"
    )
    (sources / "antidepressant_rxnorm_scd_from_vsac.csv").write_text(
        'rxnorm_code,"display (VSAC, RxNorm 2024-01)",ingredients,class,note,vsac_value_sets\n'
        f"11,trazodone 50 MG Oral Tablet,trazodone,SARI,,Antidepressants ({OID})\n"
        f"12,sertraline 50 MG Oral Tablet,sertraline,SSRI,,Antidepressants ({OID})\n"
    )
    (sources / "codes_recommended.json").write_text(
        json.dumps({"x": [{"system": RXNORM, "code": "11", "display": "trazodone 50 MG"}]})
    )
    (sources / "synthea-displays.tsv").write_text("system\tcode\tdisplay\tverified\n")
    return sources


def definition(vs_id: str, include: list[Any], exclude: list[Any] | None = None) -> dict[str, Any]:
    compose: dict[str, Any] = {"include": include}
    if exclude:
        compose["exclude"] = exclude
    return {
        "resourceType": "ValueSet",
        "id": vs_id,
        "url": OURS + vs_id,
        "version": "1",
        "date": "2026-11-25",
        "title": vs_id,
        "compose": compose,
    }


def reason(text: str) -> list[dict[str, str]]:
    return [{"url": EXCLUSION_REASON, "valueString": text}]


def expand(tmp_path: Path, *defs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    sources = write_sources(tmp_path)
    folder = tmp_path / "valuesets"
    folder.mkdir()
    for d in defs:
        (folder / f"{d['id']}.json").write_text(json.dumps(d))
    texts = expand_folder(folder, sources)
    return {path.stem: json.loads(text) for path, text in texts.items()}


def codes(resource: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(c["system"], c["code"], c["display"]) for c in resource["expansion"]["contains"]]


def test_a_source_value_set_narrowed_by_system_and_display(tmp_path: Path) -> None:
    vs = definition(
        "recurrent",
        [
            {
                "valueSet": [VSAC + OID],
                "system": SCT,
                "filter": [{"property": "display", "op": "regex", "value": "RECURRENT"}],
            }
        ],
    )
    out = expand(tmp_path, vs)["recurrent"]
    assert codes(out) == [(SCT, "100", "Recurrent depression")]
    assert out["extension"] == [{"url": SOURCE_EXTENSION, "valueUri": f"urn:oid:{OID}"}]
    assert out["expansion"]["total"] == 1


def test_concepts_of_a_source_are_an_intersection(tmp_path: Path) -> None:
    vs = definition("two", [{"valueSet": [VSAC + OID], "concept": [{"code": "200"}]}])
    assert codes(expand(tmp_path, vs)["two"]) == [(SCT, "200", "Single episode depression")]
    absent = definition("absent", [{"valueSet": [VSAC + OID], "concept": [{"code": "999"}]}])
    with pytest.raises(DefinitionError, match=r"\['999'\] not in"):
        expand(tmp_path / "again", absent)


def test_a_group_takes_the_csv_codes_with_their_nchs_display(tmp_path: Path) -> None:
    vs = definition(
        "f33", [{"system": ICD, "filter": [{"property": "group", "op": "=", "value": "MDD_F33"}]}]
    )
    out = expand(tmp_path, vs)["f33"]
    # The block title is no code; NCHS wording wins over the VSAC one.
    assert codes(out) == [
        (ICD, "F33", "Major depressive disorder recurrent"),
        (ICD, "F33.1", "NCHS wording"),
    ]
    assert "extension" not in out


def test_an_ingredient_filter_takes_its_drugs_with_their_vsac_provenance(tmp_path: Path) -> None:
    vs = definition(
        "trazodone",
        [
            {"system": RXNORM, "concept": [{"code": "10737", "display": "trazodone"}]},
            {
                "system": RXNORM,
                "filter": [{"property": "ingredient", "op": "=", "value": "trazodone"}],
            },
        ],
    )
    out = expand(tmp_path, vs)["trazodone"]
    assert [c for _s, c, _d in codes(out)] == ["11", "10737"]
    assert out["extension"] == [{"url": SOURCE_EXTENSION, "valueUri": f"urn:oid:{OID}"}]


def test_an_exclusion_removes_its_codes_from_every_include(tmp_path: Path) -> None:
    depression = definition(
        "depression",
        [{"valueSet": [VSAC + OID], "system": SCT}],
        [{"system": SCT, "concept": [{"code": "300"}], "extension": reason("bipolar")}],
    )
    attribute = definition(
        "single",
        [
            {"system": SCT, "concept": [{"code": "7", "display": "Single, explicitly"}]},
            {"valueSet": [OURS + "depression"]},
        ],
        [
            {
                "system": SCT,
                "filter": [{"property": "display", "op": "regex", "value": "recurrent"}],
                "extension": reason("recurrent is not single"),
            }
        ],
    )
    out = expand(tmp_path, attribute, depression)
    assert [c for _s, c, _d in codes(out["depression"])] == ["100", "200"]
    assert [c for _s, c, _d in codes(out["single"])] == ["7", "200"]


def test_an_exclusion_without_its_reason_is_refused(tmp_path: Path) -> None:
    vs = definition(
        "bare",
        [{"valueSet": [VSAC + OID]}],
        [{"system": SCT, "concept": [{"code": "300"}]}],
    )
    with pytest.raises(DefinitionError, match="exclusion-reason"):
        expand(tmp_path, vs)


def test_ordinals_and_code_families_are_kept(tmp_path: Path) -> None:
    ordinal = [{"url": ORDINAL, "valueDecimal": 2}]
    vs = definition(
        "mixed",
        [
            {"system": SCT, "concept": [{"code": "5", "display": "five", "extension": ordinal}]},
            {"system": ICD, "filter": [{"property": "code", "op": "regex", "value": "X7[1-9].*"}]},
        ],
    )
    out = expand(tmp_path, vs)["mixed"]
    assert out["expansion"]["contains"] == [
        {"system": SCT, "code": "5", "display": "five", "extension": ordinal}
    ]
    assert out["compose"] == vs["compose"]


def test_a_cycle_is_refused(tmp_path: Path) -> None:
    a = definition("a", [{"valueSet": [OURS + "b"]}])
    b = definition("b", [{"valueSet": [OURS + "a"]}])
    with pytest.raises(DefinitionError, match=r"include each other: .*/a -> .*/b -> .*/a"):
        expand(tmp_path, a, b)


def test_an_unknown_source_is_refused(tmp_path: Path) -> None:
    vsac = definition("v", [{"valueSet": [VSAC + "9.9.9"]}])
    with pytest.raises(DefinitionError, match=r"unknown source value set .*9\.9\.9"):
        expand(tmp_path, vsac)
    ours = definition("o", [{"valueSet": [OURS + "nowhere"]}])
    with pytest.raises(DefinitionError, match=r"unknown value set .*nowhere"):
        expand(tmp_path / "again", ours)


def test_check_reports_a_stale_expansion_and_write_fixes_it(tmp_path: Path) -> None:
    sources = write_sources(tmp_path)
    folder = tmp_path / "valuesets"
    folder.mkdir()
    path = folder / "one.json"
    path.write_text(json.dumps(definition("one", [{"valueSet": [VSAC + OID], "system": ICD}])))
    out = io.StringIO()
    assert run(folder, sources, out, check=True) == 1
    assert "stale expansion" in out.getvalue()
    assert run(folder, sources, io.StringIO()) == 0
    assert run(folder, sources, io.StringIO(), check=True) == 0
    assert codes(json.loads(path.read_text())) == [(ICD, "F33.1", "NCHS wording")]


def test_a_code_family_the_service_could_not_read_as_defined_is_refused(tmp_path: Path) -> None:
    family = {"system": ICD, "filter": [{"property": "code", "op": "regex", "value": "X7[1-9].*"}]}
    excluded = definition(
        "fam-ex",
        [family, {"system": SCT, "concept": [{"code": "5", "display": "five"}]}],
        [{"system": SCT, "concept": [{"code": "5"}], "extension": reason("not this one")}],
    )
    # The service matches a family at run time and applies no exclusion to it.
    (tmp_path / "a").mkdir()
    with pytest.raises(DefinitionError, match="a code family in a value set with exclusions"):
        expand(tmp_path / "a", excluded)
    group_and_regex = {
        "system": ICD,
        "filter": [
            {"property": "group", "op": "=", "value": "G"},
            {"property": "code", "op": "regex", "value": "F3.*"},
        ],
    }
    mixed = definition("mixed-family", [group_and_regex])
    (tmp_path / "b").mkdir()
    with pytest.raises(DefinitionError, match="a code regex with other filters"):
        expand(tmp_path / "b", mixed)
