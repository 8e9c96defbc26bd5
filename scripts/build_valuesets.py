#!/usr/bin/env python3
"""Build the clinical value sets of the IPT CDS service as FHIR R4 ValueSet resources.

Each concept that a fact of the spec section 1 reads (depression, episode, remission,
severity, psychosis, bipolar, PHQ-9 items, antidepressants, psychotherapy, ...) becomes one
ValueSet, written to ``cards/valuesets/<id>.json`` with its codes enumerated extensionally in
``compose.include`` (no ``expansion``). Code families that no source enumerates in full
(ICD-10-CM X71-X83, T36-T65 intentional self-harm, F17.2 nicotine dependence) are written as
one ``include`` per family with a ``filter`` ``{"property": "code", "op": "regex"}``; the
service matches the regex in full against the normalised code (ICD-10-CM: upper case, no dots,
so ``T43.222A`` is matched as ``T43222A``; see ipt_cds/clinical/terminology.py).

The codes come from the vendored terminology sources (``--reference``, by default
``cards/valuesets/sources/``; its README gives each file's origin and licence):

* ``codes_recommended.json`` -- the project's verified code lists (used for displays and as the
  checklist every value set is checked against); the traps they warn about are encoded below;
* ``synthea-displays.tsv`` -- displays of the SNOMED codes Synthea emits that no VSAC value set
  carries;
* ``icd10cm_codes_by_group.csv`` -- ICD-10-CM categories with every header and billable leaf
  (NCHS April 2026 descriptions, preferred over the older VSAC displays);
* ``antidepressant_rxnorm_scd_from_vsac.csv`` -- the VSAC antidepressant clinical drugs mapped to
  ingredient and class (used to remove the non-antidepressants);
* ``vsac/*.json`` -- VSAC expansions. A ValueSet that takes codes from one of them carries
  one ``source-valueset`` extension per VSAC value set it took codes from.

Before anything is written the script checks the result (traps removed, no depression code in
bipolar, every code code review lists for a concept present, disjoint severity/remission classes,
each regex family against every reference code of its range, ...) and stops with a list of
problems if a check fails. Output is deterministic: sorted concepts,
sorted keys, 2-space indent, trailing newline.

Usage (from the repository root)::

    python scripts/build_valuesets.py              # (re)write cards/valuesets/
    python scripts/build_valuesets.py --check      # exit 1 if the files on disk are stale
    python scripts/build_valuesets.py --validate   # also parse every file with fhir.resources
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_REFERENCE = REPO / "cards" / "valuesets" / "sources"
DEFAULT_OUT = REPO / "cards" / "valuesets"

CANONICAL = "https://fhir.ipt-cds.org/ValueSet/"
SOURCE_EXTENSION = "https://fhir.ipt-cds.org/StructureDefinition/source-valueset"
ORDINAL_EXTENSION = "http://hl7.org/fhir/StructureDefinition/ordinalValue"
VERSION = "2026.11.0"
DATE = "2026-11-25"
PUBLISHER = "IPT CDS project"

ICD = "http://hl7.org/fhir/sid/icd-10-cm"
SCT = "http://snomed.info/sct"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CPT = "http://www.ama-assn.org/go/cpt"

COPYRIGHT = {
    SCT: "Includes SNOMED CT content, copyright SNOMED International, used under licence.",
    LOINC: "Includes LOINC content (http://loinc.org), copyright Regenstrief Institute, Inc. "
    "and the LOINC Committee, available at no cost under the licence at http://loinc.org/license.",
    CPT: "CPT codes and descriptors are copyright the American Medical Association.",
}

# VSAC value sets (keys are the file stems under valuesets/, i.e. the OID, plus a version
# suffix for an older expansion of the same value set).
MAJOR_DEPRESSION_INCL_REMISSION = "2.16.840.113883.3.67.1.101.3.2444"  # sic: published form
MAJOR_DEPRESSION = "2.16.840.1.113883.3.464.1003.105.12.1007"
MDD_ACTIVE = "2.16.840.1.113883.3.526.3.1491"  # contains bipolar 67002003 (code review s.11)
DYSTHYMIA = "2.16.840.1.113883.3.67.1.101.1.254"
SCHIZOPHRENIA_OR_PSYCHOTIC = "2.16.840.1.113883.3.464.1003.105.12.1104"
SCHIZOPHRENIA_OR_PSYCHOTIC_2021 = "2.16.840.1.113883.3.464.1003.105.12.1104.v20210219"
DELIRIUM_DEMENTIA_PSYCHOSES = "2.16.840.1.113762.1.4.1248.168"
BIPOLAR_DISORDER = "2.16.840.1.113883.3.67.1.101.1.128"
BIPOLAR_DISORDER_2021 = "2.16.840.1.113883.3.464.1003.105.12.1157"
BIPOLAR_DIAGNOSIS = "2.16.840.1.113883.3.600.450"
DEMENTIA_MENTAL_DEGENERATIONS = "2.16.840.1.113883.3.526.3.1005"
DEMENTIA_RELATED_PATHOLOGIES = "2.16.840.1.113883.3.3157.4043"
GENERALIZED_ANXIETY = "2.16.840.1.113883.3.464.1003.105.12.1210"
MENTAL_BEHAVIORAL_NEURODEV = "2.16.840.1.113883.3.464.1003.105.12.1203"
MENTAL_HEALTH_DIAGNOSES = "2.16.840.1.113883.3.464.1003.105.12.1004"
PSYCHIATRIC_MH_DIAGNOSIS = "2.16.840.1.113883.3.117.1.7.1.299"
CAD_NO_MI = "2.16.840.1.113883.3.526.3.369"
ISCHEMIC_HEART_DISEASE = "2.16.840.1.113762.1.4.1047.46"
MYOCARDIAL_INFARCTION = "2.16.840.1.113762.1.4.1108.101"
INITIAL_MI = "2.16.840.1.113883.3.526.3.403"
HIV = "2.16.840.1.113883.3.464.1003.120.12.1003"
HIV_IN_PREGNANCY = "2.16.840.1.113762.1.4.1029.272"
PREGNANCY = "2.16.840.1.113883.3.526.3.378"
PREGNANT_STATE = "2.16.840.1.113883.3.3157.4055"
PREGNANCY_OBSTETRIC_MATERNAL = "2.16.840.1.113883.3.600.1.1623"
SUICIDE_ATTEMPT = "2.16.840.1.113762.1.4.1248.130"
PHQ9_TOOLS = "2.16.840.1.113883.3.67.1.101.1.263"
# PHQ-9 items 1 to 9, in the order of the questionnaire (LOINC panel 44249-1).
PHQ9_ITEMS = (
    "44250-9",
    "44255-8",
    "44259-0",
    "44254-1",
    "44251-7",
    "44258-2",
    "44252-5",
    "44253-3",
    "44260-8",
)
ANTIDEPRESSANT_MEDICATION = "2.16.840.1.113883.3.464.1003.196.12.1213"
ADULT_DEPRESSION_MEDICATIONS = "2.16.840.1.113883.3.526.3.1566"
ANTIDEPRESSANTS = "2.16.840.1.113762.1.4.1248.163"
HARMFUL_ANTIDEPRESSANTS_OLDER = "2.16.840.1.113883.3.464.1003.1054"
# The VSAC expansions antidepressant_rxnorm_scd_from_vsac.csv was made from.
ANTIDEPRESSANT_VALUESETS = (
    ANTIDEPRESSANT_MEDICATION,
    ADULT_DEPRESSION_MEDICATIONS,
    ANTIDEPRESSANTS,
    HARMFUL_ANTIDEPRESSANTS_OLDER,
)
PSYCH_VISIT_PSYCHOTHERAPY = "2.16.840.1.113883.3.526.3.1496"
GROUP_PSYCHOTHERAPY = "2.16.840.1.113883.3.526.3.1187"
FAMILY_PSYCHOTHERAPY = "2.16.840.1.113883.3.526.3.1018"
PSYCHOANALYSIS = "2.16.840.1.113883.3.526.3.1141"
PSYCHOTHERAPY_PHARM_MGMT = "2.16.840.1.113883.3.464.1003.101.12.1055"
FOLLOW_UP_ADULT_DEPRESSION = "2.16.840.1.113883.3.526.3.1568"
REFERRAL_ADULT_DEPRESSION = "2.16.840.1.113883.3.526.3.1571"
PSYCH_VISIT_DIAGNOSTIC_EVALUATION = "2.16.840.1.113883.3.526.3.1492"

# Displays for codes the reference folder does not carry with a display, each with its source.
EXTRA_DISPLAYS: dict[tuple[str, str], str] = {
    # PHQ-9 items 1, 2, 6, 7, 8 (LOINC long names, as in HL7 FHIR IG PHQ-9 Questionnaires, e.g.
    # the Personal Health Device IG's; code review s.6 gives items 1 and 2 without the method).
    (LOINC, "44250-9"): "Little interest or pleasure in doing things in last 2 weeks "
    "[Reported.PHQ]",
    (LOINC, "44255-8"): "Feeling down, depressed, or hopeless in last 2 weeks [Reported.PHQ]",
    (LOINC, "44258-2"): "Feeling bad about yourself - or that you are a failure or have let "
    "yourself or your family down in last 2 weeks [Reported.PHQ]",
    (LOINC, "44252-5"): "Trouble concentrating on things, such as reading the newspaper or "
    "watching television in last 2 weeks [Reported.PHQ]",
    (LOINC, "44253-3"): "Moving or speaking so slowly that other people could have noticed. Or "
    "the opposite - being so fidgety or restless that you have been moving around a lot more "
    "than usual in last 2 weeks [Reported.PHQ]",
    # PHQ-9 items 3, 4, 5 (LOINC long names as in the HL7 US Core PHQ-9 Questionnaire example).
    (LOINC, "44259-0"): "Trouble falling or staying asleep, or sleeping too much in last 2 weeks "
    "[Reported.PHQ]",
    (LOINC, "44254-1"): "Feeling tired or having little energy in last 2 weeks [Reported.PHQ]",
    (LOINC, "44251-7"): "Poor appetite or overeating in last 2 weeks [Reported.PHQ]",
    # Pregnancy status and its 'pregnant' answer (HL7 IPS ValueSet pregnancy-status-uv-ips, which
    # maps LA15173-0 to SNOMED 77386006).
    (LOINC, "82810-3"): "Pregnancy status",
    (LOINC, "LA15173-0"): "Pregnant",
    # Condition.severity qualifiers (FHIR R4 ValueSet condition-severity).
    (SCT, "255604002"): "Mild",
    (SCT, "6736007"): "Moderate",
    (SCT, "24484000"): "Severe",
    # ICD-10-CM headers over the O98.7x leaves (NCHS tabular, FY2026).
    (ICD, "O98.7"): "Human immunodeficiency virus [HIV] disease complicating pregnancy, "
    "childbirth and the puerperium",
    (ICD, "O98.71"): "Human immunodeficiency virus [HIV] disease complicating pregnancy",
    # Psychotherapy codes Synthea emits (code review s.8a, V-SYNTHEA; its displays).
    (SCT, "425680009"): "Cognitive behavioral therapy by multidisciplinary team",
    (SCT, "183401008"): "Anti-suicide psychotherapy",
    # 'At risk for suicide': named by the clinical spec (the spec version 2, s.1,
    # `suicidal_ideation`, "as Synthea records it"); in no VSAC expansion, code review or Synthea
    # display we vendor, so NOT verified against the reference. Display (SNOMED FSN) as the
    # HL7 FHIR R4 example PlanDefinition uses it; check it in a SNOMED CT browser.
    (SCT, "225444004"): "At risk for suicide (finding)",
}

ACRONYMS = {"phq9": "PHQ9", "phq": "PHQ", "mdd": "MDD", "nos": "NOS", "hiv": "HIV", "ipt": "IPT"}

CODE_FORMATS = {
    ICD: re.compile(r"^[A-Z][0-9][0-9A-Z](\.[0-9A-Z]{1,4})?$"),
    SCT: re.compile(r"^[1-9][0-9]{5,17}$"),
    LOINC: re.compile(r"^(LA)?[0-9]{1,6}-[0-9]$"),
    RXNORM: re.compile(r"^[0-9]+$"),
    CPT: re.compile(r"^[0-9]{4}[0-9A-Z]$"),
}

Key = tuple[str, str]  # (system, code)


@dataclass(frozen=True)
class Concept:
    system: str
    code: str
    display: str


class ReferenceError_(Exception):
    """The reference material lacks something the value sets need."""


class Reference:
    """The reference terminology folder, indexed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        required = [
            "codes_recommended.json",
            "synthea-displays.tsv",
            "icd10cm_codes_by_group.csv",
            "antidepressant_rxnorm_scd_from_vsac.csv",
            "vsac",
        ]
        for name in required:
            if not (root / name).exists():
                raise ReferenceError_(f"{root / name}: not found (use --reference)")
        with (root / "synthea-displays.tsv").open(encoding="utf-8", newline="") as f:
            self.synthea_displays: dict[Key, str] = {
                (row["system"], row["code"]): row["display"]
                for row in csv.DictReader(f, delimiter="\t")
            }
        self.recommended: dict[str, Any] = json.loads(
            (root / "codes_recommended.json").read_text(encoding="utf-8")
        )
        self.expansions: dict[str, list[Concept]] = {}
        self.oids: dict[str, str] = {}
        timestamps: dict[str, str] = {}
        for path in sorted((root / "vsac").glob("ValueSet-*.json")):
            key = path.stem.removeprefix("ValueSet-")
            data = json.loads(path.read_text(encoding="utf-8"))
            self.oids[key] = data["id"]
            timestamps[key] = data.get("expansion", {}).get("timestamp", "")
            self.expansions[key] = [
                Concept(c["system"], c["code"], c["display"])
                for c in data.get("expansion", {}).get("contains", [])
            ]
        self.icd_rows: list[tuple[str, str, str, bool]] = []
        with (root / "icd10cm_codes_by_group.csv").open(encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                if "-" in row["code"]:  # block titles such as F20-F29 are not codes
                    continue
                self.icd_rows.append(
                    (
                        row["group"],
                        row["code"],
                        row["description_ICD10CM_Apr2026"],
                        row["billable_leaf"] == "Y",
                    )
                )
        self.drugs: dict[str, dict[str, str]] = {}
        with (root / "antidepressant_rxnorm_scd_from_vsac.csv").open(
            encoding="utf-8", newline=""
        ) as f:
            for row in csv.DictReader(f):
                self.drugs[row["rxnorm_code"]] = row

        # Display index. SNOMED/RxNorm/LOINC/CPT: the most recent VSAC expansion, else
        # codes_recommended.json. ICD-10-CM: the NCHS April 2026 description (csv), else
        # codes_recommended.json (also NCHS), else VSAC (ICD-10-CM 2024).
        self.display: dict[Key, str] = {}
        for key in sorted(self.expansions, key=lambda k: (timestamps[k], k)):
            for c in self.expansions[key]:
                self.display[(c.system, c.code)] = c.display
        for c in self._recommended_concepts(self.recommended):
            if c.system == ICD or (c.system, c.code) not in self.display:
                self.display[(c.system, c.code)] = c.display
        for _group, code, description, _billable in self.icd_rows:
            self.display[(ICD, code)] = description
        for extra, display in EXTRA_DISPLAYS.items():
            if extra in self.display:
                raise ReferenceError_(f"EXTRA_DISPLAYS shadows a reference display: {extra}")
            self.display[extra] = display

    @staticmethod
    def _recommended_concepts(node: Any) -> Iterator[Concept]:
        if isinstance(node, dict):
            if isinstance(node.get("code"), str) and "system" in node and "display" in node:
                yield Concept(node["system"], node["code"], node["display"])
            for value in node.values():
                yield from Reference._recommended_concepts(value)
        elif isinstance(node, list):
            for value in node:
                yield from Reference._recommended_concepts(value)

    def recommended_list(self, path: str) -> list[Any]:
        node: Any = self.recommended
        for part in path.split("."):
            node = node[part]
        if not isinstance(node, list):
            raise ReferenceError_(f"codes_recommended.json: {path} is not a list")
        return node

    def concept(self, system: str, code: str) -> Concept:
        try:
            return Concept(system, code, self.display[(system, code)])
        except KeyError:
            raise ReferenceError_(f"no display for {system}|{code} in the reference") from None

    def expansion(self, key: str) -> list[Concept]:
        try:
            return self.expansions[key]
        except KeyError:
            raise ReferenceError_(f"vsac/ValueSet-{key}.json: not found") from None

    def icd_group(self, group: str) -> list[str]:
        codes = [code for g, code, _d, _b in self.icd_rows if g == group]
        if not codes:
            raise ReferenceError_(f"icd10cm_codes_by_group.csv: no group {group!r}")
        return codes


@dataclass
class Spec:
    """One value set under construction."""

    ref: Reference
    id: str
    title: str
    description: str
    purpose: str
    concepts: dict[Key, str] = field(default_factory=dict)
    provenance: dict[Key, set[str]] = field(default_factory=dict)  # VSAC expansions per code
    ordinal: dict[Key, int] = field(default_factory=dict)
    # Regex families (system, regex), each written as its own include with a filter. The regex
    # is matched in full against the normalised code (ICD-10-CM: upper case, no dots).
    filters: list[Key] = field(default_factory=list)

    # -- adding codes -------------------------------------------------------------------------
    def add(self, system: str, *codes: str) -> Spec:
        for code in codes:
            c = self.ref.concept(system, code)
            self.concepts[(c.system, c.code)] = c.display
        return self

    def icd(self, *codes: str) -> Spec:
        return self.add(ICD, *codes)

    def sct(self, *codes: str) -> Spec:
        return self.add(SCT, *codes)

    def icd_groups(self, *groups: str) -> Spec:
        for group in groups:
            self.icd(*self.ref.icd_group(group))
        return self

    def regex(self, system: str, pattern: str) -> Spec:
        """A code family: every code of ``system`` whose normalised form (ICD-10-CM: upper case,
        no dots) ``pattern`` matches in full. check() tries it against the reference codes."""
        re.compile(pattern)
        # An unescaped '.' is a wildcard and fine; a literal dot never matches a normalised code.
        if system == ICD and "\\." in pattern:
            raise ReferenceError_(f"{self.id}: ICD-10-CM regex {pattern!r} has a literal dot")
        if (system, pattern) in self.filters:
            raise ReferenceError_(f"{self.id}: duplicate regex {pattern!r}")
        self.filters.append((system, pattern))
        return self

    def drugs(self, where: Callable[[dict[str, str]], bool]) -> Spec:
        """Take the RxNorm clinical drugs of the antidepressant csv that ``where`` accepts (a csv
        row), displayed as in the VSAC expansions, with the expansions each code is in."""
        found = sorted(code for code, row in self.ref.drugs.items() if where(row))
        if not found:
            raise ReferenceError_(f"{self.id}: no clinical drug of the csv fits")
        for code in found:
            self.add(RXNORM, code)
            for key in ANTIDEPRESSANT_VALUESETS:
                if any(c.system == RXNORM and c.code == code for c in self.ref.expansion(key)):
                    self.provenance.setdefault((RXNORM, code), set()).add(key)
        return self

    def vsac(
        self,
        key: str,
        system: str | None = None,
        *,
        codes: Iterable[str] | None = None,
        where: Callable[[Concept], bool] | None = None,
    ) -> Spec:
        """Take codes from a VSAC expansion: all of them, those of one system, the listed codes
        (each must be in the expansion) or those a predicate accepts."""
        wanted = set(codes) if codes is not None else None
        found: set[str] = set()
        for c in self.ref.expansion(key):
            if system is not None and c.system != system:
                continue
            if wanted is not None and c.code not in wanted:
                continue
            if where is not None and not where(c):
                continue
            found.add(c.code)
            # The display index holds the preferred display (NCHS for ICD-10-CM).
            self.concepts[(c.system, c.code)] = self.ref.display[(c.system, c.code)]
            self.provenance.setdefault((c.system, c.code), set()).add(key)
        if wanted is not None and wanted - found:
            raise ReferenceError_(f"{self.id}: {sorted(wanted - found)} not in VSAC {key}")
        if not found:
            raise ReferenceError_(f"{self.id}: nothing taken from VSAC {key}")
        return self

    def take(self, other: Spec, where: Callable[[Concept], bool] | None = None) -> Spec:
        """Take the codes of another value set (optionally filtered), with their provenance."""
        for (system, code), display in other.concepts.items():
            if where is None or where(Concept(system, code, display)):
                self.concepts[(system, code)] = display
                self.provenance.setdefault((system, code), set()).update(
                    other.provenance.get((system, code), set())
                )
        return self

    def drop(self, system: str, *codes: str) -> Spec:
        """Remove codes a source brought in; each must be present (the trap is real)."""
        for code in codes:
            if (system, code) not in self.concepts:
                raise ReferenceError_(f"{self.id}: cannot drop absent {system}|{code}")
            del self.concepts[(system, code)]
        return self

    def drop_where(self, where: Callable[[Concept], bool]) -> list[Concept]:
        removed = [
            Concept(s, c, d) for (s, c), d in self.concepts.items() if where(Concept(s, c, d))
        ]
        for c in removed:
            del self.concepts[(c.system, c.code)]
        return removed

    # -- queries --------------------------------------------------------------------------------
    def codes(self, system: str | None = None) -> set[str]:
        return {c for (s, c) in self.concepts if system is None or s == system}

    def keys(self) -> set[Key]:
        return set(self.concepts)

    def holds(self, system: str, code: str) -> bool:
        """Whether the code is in the value set as the service reads it: enumerated, or in a
        regex family (matched against the normalised code)."""
        if (system, code) in self.concepts:
            return True
        normal = normal_code(system, code)
        return any(s == system and re.fullmatch(p, normal) for s, p in self.filters)

    def sources(self) -> list[str]:
        """OIDs of the VSAC value sets that at least one final code was taken from."""
        keys = set().union(*(self.provenance.get(k, set()) for k in self.concepts))
        return sorted({self.ref.oids[key] for key in keys})

    # -- output -------------------------------------------------------------------------------
    def resource(self) -> dict[str, Any]:
        by_system: dict[str, list[dict[str, Any]]] = {}
        for (system, code), display in sorted(self.concepts.items(), key=_concept_order):
            entry: dict[str, Any] = {"code": code, "display": display}
            if (system, code) in self.ordinal:
                entry["extension"] = [
                    {"url": ORDINAL_EXTENSION, "valueDecimal": self.ordinal[(system, code)]}
                ]
            by_system.setdefault(system, []).append(entry)
        includes: list[tuple[str, dict[str, Any]]] = [
            (system, {"system": system, "concept": by_system[system]}) for system in by_system
        ]
        for system, pattern in self.filters:
            # One include per family: filters within one include would all have to hold.
            regex = {"property": "code", "op": "regex", "value": pattern}
            includes.append((system, {"system": system, "filter": [regex]}))
        includes.sort(key=lambda item: (item[0], "filter" in item[1]))  # stable: families in order
        systems = sorted({system for system, _include in includes})
        resource: dict[str, Any] = {
            "resourceType": "ValueSet",
            "id": self.id,
            "url": CANONICAL + self.id,
            "version": VERSION,
            "name": pascal_case(self.id),
            "title": self.title,
            "status": "active",
            "date": DATE,
            "publisher": PUBLISHER,
            "description": self.description,
            "purpose": self.purpose,
            "compose": {"include": [include for _system, include in includes]},
        }
        sources = self.sources()
        if sources:
            resource["extension"] = [
                {"url": SOURCE_EXTENSION, "valueUri": f"urn:oid:{oid}"} for oid in sources
            ]
        notices = [COPYRIGHT[s] for s in systems if s in COPYRIGHT]
        if notices:
            resource["copyright"] = " ".join(notices)
        return resource


def _concept_order(item: tuple[Key, str]) -> tuple[str, int, int, str]:
    (system, code), _display = item
    if code.isdigit():
        return (system, 0, int(code), code)
    return (system, 1, 0, code)


def normal_code(system: str, code: str) -> str:
    """The form the service matches codes in (ipt_cds/clinical/terminology.py normal_code):
    ICD-10-CM upper case without dots, other systems as they are."""
    code = code.strip()
    return code.upper().replace(".", "") if system == ICD else code


def pascal_case(value: str) -> str:
    return "".join(ACRONYMS.get(part, part[:1].upper() + part[1:]) for part in value.split("-"))


def rx(pattern: str) -> Callable[[Concept], bool]:
    compiled = re.compile(pattern, re.IGNORECASE)
    return lambda c: bool(compiled.search(c.display))


def snomed_where(pattern: str, unless: str | None = None) -> Callable[[Concept], bool]:
    match = re.compile(pattern, re.IGNORECASE)
    veto = re.compile(unless, re.IGNORECASE) if unless else None
    return lambda c: (
        c.system == SCT
        and bool(match.search(c.display))
        and not (veto is not None and veto.search(c.display))
    )


# Display patterns that classify SNOMED depression concepts by episode attribute.
RECURRENT = r"\brecurrent\b"
SINGLE = r"\bsingle (major depressive )?episode\b"
FULL_REMISSION = r"\bfull remission\b"
PARTIAL_REMISSION = r"\bpartial remission\b"
IN_REMISSION = r"\bin remission\b"
MILD = r"\b(mild|minimal)\b"
MODERATE = r"\bmoderate\b"
MODERATELY_SEVERE = r"\bmoderately severe\b"
SEVERE = r"\bsevere\b"
PSYCHOTIC = r"psychotic|psychosis"
NOT_PSYCHOTIC = r"without psychotic"

# Trap lists (code review sections 7, 11, 12).
BIPOLAR_IN_VSAC_MDD = "67002003"
PSYCHODYNAMIC_INTERPERSONAL = "304822001"
IPT = "443730003"
LOW_DOSE_DOXEPIN = ("966787", "966793")  # doxepin 3 mg / 6 mg tablets: hypnotic-only strengths
SMOKING_CESSATION_BUPROPION = "1801289"  # 'Smoking Cessation 12 HR bupropion ... 150 MG' (Zyban)
SUICIDAL_BEHAVIOUR = "425104003"  # 'Suicidal behavior (finding)': behaviour, not ideation

# Regex families, matched in full against the normalised code (ICD-10-CM upper case, no dots).
# ICD-10-CM X71-X83: intentional self-harm by drowning, firearm, ..., other specified means
# (every category, every 7th character).
SELF_HARM_X71_X83 = r"X(7[1-9]|8[0-3]).*"
# T36-T65 poisoning / toxic effect whose 6th character is the intent 2 (intentional self-harm):
# T43.222A -> T43222A, T36.0X2A -> T360X2A. 1 is accidental, 3 assault, 4 undetermined,
# 5 adverse effect, 6 underdosing.
SELF_HARM_POISONING = r"T(3[6-9]|[45][0-9]|6[0-5])[0-9A-Z]{2}2.*"
# The same intent in the 5th character, with the placeholder X in the 6th: the 'unspecified'
# codes T36.92XA, T43.92XA, T65.92XA, ... ('..., intentional self-harm' in NCHS). The rule
# "6th character is 2" misses them; check() shows every such reference code says
# 'intentional self-harm' and no other code matches (28 such codes in the reference, e.g.
# T58.02XA carbon monoxide from motor vehicle exhaust).
SELF_HARM_POISONING_UNSPECIFIED = r"T(3[6-9]|[45][0-9]|6[0-5])[0-9A-Z]2X.*"
# ICD-10-CM F17.2 Nicotine dependence (headers included): F17.20x unspecified, F17.21x
# cigarettes, F17.22x chewing tobacco, F17.29x other tobacco product.
NICOTINE_DEPENDENCE_F17_2 = r"F172.*"
NOT_ANTIDEPRESSANT_INGREDIENTS = {"lamotrigine", "5-hydroxytryptophan"}
INGREDIENTS_LEFT_OUT = {
    "9639": "selegiline: an antidepressant only as the transdermal system; the ingredient name "
    "would also match oral (Parkinson) selegiline in the text fallback",
    "6448": "lithium: mood stabiliser used for augmentation, not an antidepressant",
}
COMBINATION_PARTNERS = {"olanzapine", "dextromethorphan"}  # in combination products only


def build(ref: Reference) -> dict[str, Spec]:
    specs: dict[str, Spec] = {}

    def new(vs_id: str, title: str, description: str, purpose: str) -> Spec:
        if vs_id in specs:
            raise ReferenceError_(f"duplicate value set id {vs_id}")
        spec = Spec(ref, vs_id, title, description, purpose)
        specs[vs_id] = spec
        return spec

    # ---- Depressive disorders ------------------------------------------------------------------
    mdd = new(
        "mdd",
        "Major depressive disorder",
        "Major depressive disorder, single episode or recurrent, any severity or remission state: "
        "ICD-10-CM F32.0-F32.5, F32.9 and all of F33 (headers F33 and F33.4 included), and the "
        "SNOMED CT concepts of the VSAC MDD value sets.",
        "Feeds the `depression` fact (the spec s.1) and the current-episode choice behind "
        "`episode`, `remission` and `severity`. The bipolar II code 67002003 that VSAC lists in "
        "'Major Depressive Disorder Active' is removed here and kept in the bipolar value set.",
    )
    mdd.icd("F32.0", "F32.1", "F32.2", "F32.3", "F32.4", "F32.5", "F32.9")
    mdd.icd_groups("MDD_recurrent_F33")
    for key in (MAJOR_DEPRESSION_INCL_REMISSION, MAJOR_DEPRESSION, MDD_ACTIVE):
        mdd.vsac(key, SCT)
    mdd.drop(SCT, BIPOLAR_IN_VSAC_MDD)
    # Recurrent MDD with anxiety, in full remission: in no MDD set, only in the anxiety sets.
    mdd.vsac(GENERALIZED_ANXIETY, SCT, codes=["16265061000119105"])

    nos = new(
        "depression-nos",
        "Depression, not otherwise specified",
        "Depressive disorder or episode not specified as MDD: ICD-10-CM F32.A (Depression, "
        "unspecified), F32.89 (Other specified depressive episodes) with headers F32 and F32.8, "
        "and SNOMED CT Depressive disorder and its pregnancy, childbirth and remission variants. "
        "Premenstrual dysphoric disorder F32.81 is not included.",
        "Feeds the `depression` fact (depression NOS, F32.A) and, as a possible current episode, "
        "`episode`/`remission`. Counting unspecified depression keeps `ipt-no-depression` from "
        "claiming there is no depressive disorder on record.",
    )
    nos.icd("F32", "F32.8", "F32.89", "F32.A")
    nos.vsac(
        MENTAL_BEHAVIORAL_NEURODEV,
        SCT,
        codes=["35489007", "94631000119100", "10835871000119104", "698957003"],
    )

    ppd = new(
        "postpartum-depression",
        "Postpartum depression",
        "Postpartum depression: ICD-10-CM F53.0 and SNOMED CT 58703003 Postpartum depression with "
        "the postpartum-onset and postpartum-remission MDD concepts code review lists under it.",
        "Feeds the `depression` fact (postpartum depression, F53.0, SNOMED 58703003) and the "
        "current-episode choice.",
    )
    ppd.icd("F53.0")
    ppd.vsac(PSYCHIATRIC_MH_DIAGNOSIS, SCT, codes=["58703003"])
    ppd.vsac(
        MAJOR_DEPRESSION_INCL_REMISSION, SCT, codes=["104851000119103", "25922000", "71336009"]
    )

    dysthymia = new(
        "dysthymia",
        "Dysthymia (persistent depressive disorder)",
        "Dysthymic disorder / persistent depressive disorder: ICD-10-CM F34.1 and the SNOMED CT "
        "concepts of VSAC 'Dysthymia'. Cyclothymia (F34.0) is bipolar-spectrum and not included.",
        "Feeds the `dysthymia` fact and, through it, `depression`; dysthymia makes the verdict "
        "`antidepressant-preferred` and drives the two dysthymia rules.",
    )
    dysthymia.vsac(DYSTHYMIA)

    depression_codes = Spec(ref, "_depression", "", "", "")
    for part in (mdd, nos, ppd):
        depression_codes.take(part)

    # ---- Episode attributes of the depression codes --------------------------------------------
    attr_purpose = "Read from the code of the current episode (the spec s.1) for the `{fact}` fact"
    recurrent = new(
        "depression-recurrent",
        "Depression episode: recurrent",
        "Depression codes that say the disorder is recurrent: all of ICD-10-CM F33 (headers "
        "included) and the SNOMED CT depression concepts whose name says recurrent.",
        attr_purpose.format(fact="episode") + " (`recurrent`); a recurrent episode supports "
        "maintenance IPT.",
    )
    recurrent.icd_groups("MDD_recurrent_F33")
    recurrent.take(depression_codes, snomed_where(RECURRENT))

    single = new(
        "depression-single-episode",
        "Depression episode: single",
        "Depression codes that say single episode: ICD-10-CM F32.0-F32.5, F32.9 and the SNOMED CT "
        "depression concepts whose name says single episode.",
        attr_purpose.format(fact="episode") + " (`single`). F32.A, F32.89 and the F32 header do "
        "not say single episode and leave the episode unknown.",
    )
    single.icd("F32.0", "F32.1", "F32.2", "F32.3", "F32.4", "F32.5", "F32.9")
    single.take(depression_codes, snomed_where(SINGLE))

    full = new(
        "depression-remission-full",
        "Depression in full remission",
        "Depression codes in full remission: ICD-10-CM F32.5, F33.42 and the SNOMED CT depression "
        "concepts in full remission.",
        attr_purpose.format(fact="remission") + " (`full`). A remission code is not an active "
        "episode, so `acute` is false.",
    )
    full.icd("F32.5", "F33.42")
    full.take(depression_codes, snomed_where(FULL_REMISSION))

    partial = new(
        "depression-remission-partial",
        "Depression in partial remission",
        "Depression codes in partial remission: ICD-10-CM F32.4, F33.41 and the SNOMED CT "
        "depression concepts in partial remission.",
        attr_purpose.format(fact="remission") + " (`partial`).",
    )
    partial.icd("F32.4", "F33.41")
    partial.take(depression_codes, snomed_where(PARTIAL_REMISSION))

    unspecified = new(
        "depression-remission-unspecified",
        "Depression in remission, unspecified",
        "Depression codes in remission without saying full or partial: ICD-10-CM F33.40 and its "
        "header F33.4, and the SNOMED CT depression concepts 'in remission'.",
        attr_purpose.format(fact="remission") + " (`unspecified`).",
    )
    unspecified.icd("F33.4", "F33.40")
    unspecified.take(
        depression_codes, snomed_where(IN_REMISSION, unless=f"{FULL_REMISSION}|{PARTIAL_REMISSION}")
    )

    mild = new(
        "depression-severity-mild",
        "Depression severity: mild",
        "Mild (or minimal) depression codes: ICD-10-CM F32.0, F33.0 and the SNOMED CT MDD concepts "
        "named mild or minimal.",
        attr_purpose.format(fact="severity") + " (`mild`) when there is no PHQ-9 within 90 days.",
    )
    mild.icd("F32.0", "F33.0")
    mild.take(depression_codes, snomed_where(MILD))

    moderate = new(
        "depression-severity-moderate",
        "Depression severity: moderate",
        "Moderate depression codes: ICD-10-CM F32.1, F33.1 and the SNOMED CT MDD concepts named "
        "moderate (not 'moderately severe').",
        attr_purpose.format(fact="severity") + " (`moderate`) when there is no PHQ-9 within 90 "
        "days.",
    )
    moderate.icd("F32.1", "F33.1")
    moderate.take(depression_codes, snomed_where(MODERATE))

    moderately_severe = new(
        "depression-severity-moderately-severe",
        "Depression severity: moderately severe",
        "SNOMED CT MDD concepts named 'moderately severe' (ICD-10-CM has no such class).",
        attr_purpose.format(fact="severity") + " (`moderately-severe`, which makes "
        "`needs_combination` true). codes_recommended.json files these codes under 'moderate'; "
        "the spec gives them moderately-severe, the reading that does not under-call severity.",
    )
    moderately_severe.take(depression_codes, snomed_where(MODERATELY_SEVERE))

    severe = new(
        "depression-severity-severe",
        "Depression severity: severe",
        "Severe depression codes with or without psychotic features: ICD-10-CM F32.2, F32.3, "
        "F33.2, F33.3 and the SNOMED CT MDD concepts named severe or with psychotic features.",
        attr_purpose.format(fact="severity") + " (`severe`) when there is no PHQ-9 within 90 days.",
    )
    severe.icd("F32.2", "F32.3", "F33.2", "F33.3")
    severe.take(depression_codes, snomed_where(SEVERE, unless=MODERATELY_SEVERE))

    psychotic_features = new(
        "depression-psychotic-features",
        "Depression with psychotic features",
        "MDD with psychotic features or symptoms: ICD-10-CM F32.3, F33.3 and the SNOMED CT MDD "
        "concepts with psychotic features.",
        "The `psychosis` fact reads these codes apart from the psychosis value set (which no "
        "longer holds them): only for the current episode (not in remission) or a Condition "
        "recorded within 365 days (the spec version 2). Also severity (these codes are "
        "severe).",
    )
    psychotic_features.icd("F32.3", "F33.3")
    psychotic_features.take(depression_codes, snomed_where(PSYCHOTIC, unless=NOT_PSYCHOTIC))
    severe.take(psychotic_features)  # e.g. 726772006 'Major depression with psychotic features'

    # ---- Condition.severity qualifiers ---------------------------------------------------------
    for level, code in (("mild", "255604002"), ("moderate", "6736007"), ("severe", "24484000")):
        new(
            f"condition-severity-{level}",
            f"Condition severity: {level}",
            f"SNOMED CT severity qualifier {code} '{ref.display[(SCT, code)]}' as used in "
            "Condition.severity (FHIR ValueSet condition-severity).",
            f"Gives `severity` = {level} from the current episode's Condition.severity when "
            "neither a PHQ-9 nor the episode code says the severity.",
        ).sct(code)

    # ---- Bipolar disorder ----------------------------------------------------------------------
    bipolar = new(
        "bipolar",
        "Bipolar disorder or manic episode",
        "Bipolar disorder and manic episodes: all of ICD-10-CM F30 and F31 (headers included), "
        "the bipolar-spectrum F34.0 cyclothymia and F25.0 schizoaffective disorder, bipolar type, "
        "and the SNOMED CT concepts of the VSAC bipolar value sets.",
        "Feeds the `bipolar` fact (caution; `ipt-bipolar`; blocks `antidepressant-add-ipt`) and "
        "is subtracted from every depression value set. Holds 67002003, the bipolar II code VSAC "
        "lists inside 'Major Depressive Disorder Active'. F34.0 and F25.0 (code review 'optional') "
        "are included so unipolar-only advice is not given for bipolar-spectrum illness.",
    )
    bipolar.icd_groups("Manic_F30", "Bipolar_F31")
    bipolar.icd("F34.0", "F25.0")
    for key in (BIPOLAR_DISORDER, BIPOLAR_DISORDER_2021, BIPOLAR_DIAGNOSIS):
        bipolar.vsac(key, SCT)

    # ---- Psychosis -----------------------------------------------------------------------------
    psychosis = new(
        "psychosis",
        "Psychotic disorder or bipolar disorder with psychotic features",
        "Psychotic disorders and manic/bipolar episodes with psychotic features: ICD-10-CM "
        "F20-F29 (incl. F22, F24 and headers), F30.2, F31.2, F31.5, F31.64, puerperal psychosis "
        "F53.1, psychotic disorder due to a physiological condition F06.0/F06.2 and "
        "substance-induced psychotic disorders (F1x.x5x); SNOMED CT schizophrenia-spectrum, "
        "postpartum psychosis and bipolar 'with psychotic features' concepts. MDD with psychotic "
        "features (F32.3, F33.3 and SNOMED) is not here: it is depression-psychotic-features.",
        "Feeds the `psychosis` fact (any active Condition): verdict `not-recommended` and the "
        "`ipt-psychosis` card. Version 2 reads MDD with psychotic features apart, from "
        "depression-psychotic-features, only for the current episode or within 365 days, so an "
        "old code does not block IPT for ever. VSAC 'Schizophrenia or Psychotic Disorder' lacks "
        "F22 and F24 (code review s.3); they are added. Hallucination symptom codes R44.x are not "
        "included (they do not establish a psychotic disorder).",
    )
    psychosis.icd_groups("Schizophrenia_spectrum_F20-F29")
    # F32.3/F33.3 come in with psychotic_features below and are dropped again with it.
    psychosis.icd("F32.3", "F33.3", "F30.2", "F31.2", "F31.5", "F31.64", "F53.1", "F06.0", "F06.2")
    psychosis.vsac(
        DELIRIUM_DEMENTIA_PSYCHOSES,
        ICD,
        where=lambda c: c.code.startswith("F1") and "psychotic disorder" in c.display,
    )
    psychosis.vsac(SCHIZOPHRENIA_OR_PSYCHOTIC, SCT)
    psychosis.vsac(SCHIZOPHRENIA_OR_PSYCHOTIC_2021, SCT)
    psychosis.sct(*(e["code"] for e in ref.recommended_list("psychosis.snomed")))
    psychosis.take(psychotic_features)
    psychosis.take(bipolar, snomed_where(PSYCHOTIC, unless=NOT_PSYCHOTIC))

    # Bipolar codes never count as depression (the spec: `depression` excludes bipolar).
    for part in (mdd, nos, ppd, dysthymia, *_attribute_specs(specs)):
        part.drop_where(lambda c: (c.system, c.code) in bipolar.concepts)
    # MDD with psychotic features is read from depression-psychotic-features alone (version 2:
    # current episode or within 365 days); bipolar with psychotic features stays in psychosis.
    psychosis.drop_where(lambda c: (c.system, c.code) in psychotic_features.concepts)

    # ---- Other conditions ----------------------------------------------------------------------
    dementia = new(
        "dementia",
        "Dementia / major neurocognitive disorder",
        "Dementia: all of ICD-10-CM F01-F03 (FY2023 severity codes and headers included) and G30, "
        "frontotemporal and Lewy body neurocognitive disorders G31.01/G31.09/G31.83, "
        "substance-induced persisting dementia, and the SNOMED CT dementia concepts of the VSAC "
        "dementia value sets. Delirium, mild cognitive impairment (G31.84) and other "
        "degenerations are not included.",
        "Feeds `cognitive_impairment` (warning `ipt-cognitive-capacity`). The VSAC dementia sets "
        "predate the FY2023 F01-F03 severity codes (code review s.11); the csv supplies them.",
    )
    dementia.icd_groups("Dementia_F01", "Dementia_F02", "Dementia_F03", "Alzheimer_G30")
    dementia.vsac(DELIRIUM_DEMENTIA_PSYCHOSES, ICD, codes=["G31.01", "G31.09", "G31.83"])
    dementia.vsac(
        DELIRIUM_DEMENTIA_PSYCHOSES,
        ICD,
        where=lambda c: c.code.startswith("F1") and "dementia" in c.display,
    )
    for key in (DEMENTIA_MENTAL_DEGENERATIONS, DEMENTIA_RELATED_PATHOLOGIES):
        dementia.vsac(key, SCT, where=rx(r"dementia|alzheimer|lewy bod"))
    # The VSAC dementia sets lack the Alzheimer's disease subtypes Synthea records (e.g.
    # 230265002 "Familial Alzheimer's disease of early onset"); the mental-health sets hold them.
    for key in (MENTAL_HEALTH_DIAGNOSES, MENTAL_BEHAVIORAL_NEURODEV):
        dementia.vsac(key, SCT, where=rx(r"alzheimer"))

    anxiety = new(
        "anxiety",
        "Anxiety disorder",
        "Anxiety disorders: all of ICD-10-CM F40 and F41 (headers included) and the SNOMED CT "
        "concepts of VSAC 'Generalized Anxiety Disorder' (which also holds panic, phobic, "
        "stress-related and MDD-with-anxiety concepts).",
        "Feeds the `anxiety` fact (caution; info card `ipt-anxiety`).",
    )
    anxiety.icd_groups("Phobic_anxiety_F40", "Other_anxiety_F41")
    anxiety.vsac(GENERALIZED_ANXIETY, SCT)

    personality = new(
        "personality-disorder",
        "Personality disorder",
        "Specific personality disorders: all of ICD-10-CM F60 (headers included) and the SNOMED CT "
        "personality disorder concepts that correspond to F60 (organic, drug-induced, "
        "post-concussional, schizotypal, multiple-personality and depressive/hypomanic "
        "personality concepts are not included).",
        "Feeds the `personality_disorder` fact (caution; info card `ipt-personality`).",
    )
    personality.icd_groups("Personality_F60")
    personality.vsac(
        MENTAL_BEHAVIORAL_NEURODEV,
        SCT,
        where=lambda c: (
            "personality" in c.display.lower()
            and not re.search(
                r"organic|drug|caused by|concussional|multiple personality|change in personality"
                r"|schizotypal|limbic epilepsy|depressive personality|hypomanic personality",
                c.display,
                re.IGNORECASE,
            )
        ),
    )

    avoidant = new(
        "personality-avoidant",
        "Avoidant personality disorder",
        "Avoidant (anxious) personality disorder: ICD-10-CM F60.6 and SNOMED CT 37746008 with its "
        "'anxious personality disorder' and 'in remission' concepts.",
        "Names the avoidant subtype in `ipt-personality` (avoidant traits did better with CBT).",
    )
    avoidant.icd("F60.6")
    avoidant.vsac(MENTAL_BEHAVIORAL_NEURODEV, SCT, codes=["37746008", "231528008", "698690001"])

    ocpd = new(
        "personality-obsessive-compulsive",
        "Obsessive-compulsive personality disorder",
        "Obsessive-compulsive (anankastic) personality disorder: ICD-10-CM F60.5 and SNOMED CT "
        "1376001 with the compulsive and obsessional personality disorder concepts.",
        "Names the obsessive-compulsive subtype in `ipt-personality` (those traits did better "
        "with IPT).",
    )
    ocpd.icd("F60.5")
    ocpd.vsac(MENTAL_BEHAVIORAL_NEURODEV, SCT, codes=["1376001", "473456000", "473457009"])

    chd = new(
        "coronary-heart-disease",
        "Coronary heart disease",
        "Coronary (ischaemic) heart disease: all of ICD-10-CM I20-I25 (headers included) and the "
        "SNOMED CT concepts of the VSAC coronary artery disease, ischaemic heart disease and "
        "myocardial infarction value sets, without congenital coronary anomalies and coronary "
        "sinus occlusion. Status codes (Z95.1, Z95.5, Z98.61) are not included.",
        "Feeds the `chd` fact (caution; info card `ipt-chd`) and, when recorded within 180 days, "
        "the role-transition focus area (new serious diagnosis).",
    )
    chd.icd_groups("Ischemic_heart_I20-I25")
    chd.vsac(CAD_NO_MI, SCT)
    chd.drop(SCT, "74218008", "75398000")  # anomalous origin of coronary artery (congenital)
    chd.vsac(ISCHEMIC_HEART_DISEASE, SCT)
    chd.drop(SCT, "457592003", "461417000")  # occlusion of the coronary sinus (a vein)
    chd.vsac(MYOCARDIAL_INFARCTION, SCT)
    chd.vsac(INITIAL_MI, SCT)

    hiv = new(
        "hiv",
        "HIV disease or infection",
        "HIV disease or infection: ICD-10-CM B20, Z21, B97.35, O98.7x (headers included) and the "
        "SNOMED CT concepts of VSAC 'HIV'. Inconclusive HIV test (R75) and HIV exposure (Z20.6) "
        "are not HIV.",
        "Feeds the `hiv` fact (IPT is efficacious in HIV: a supporting population) and, when "
        "recorded within 180 days, the role-transition focus area.",
    )
    hiv.icd("B20", "Z21", "B97.35", "O98.7", "O98.71")
    hiv.vsac(HIV, ICD)
    hiv.vsac(HIV_IN_PREGNANCY, ICD)
    hiv.vsac(HIV, SCT)

    pregnancy = new(
        "pregnancy",
        "Pregnancy",
        "Pregnancy conditions: VSAC 'Pregnancy' (pregnancy O-codes, Z3A weeks of gestation, "
        "Z33.1, Z33.3, Z32.01, SNOMED CT pregnancy findings incl. 77386006), VSAC 'Pregnant "
        "State', and all of Z34 (headers included). Peripartum cardiomyopathy O90.3 is moved to "
        "postpartum.",
        "Feeds the `pregnant` fact (a Condition recorded or with onset within 280 days). Puerperal "
        "codes mean postpartum, not pregnant (code review s.5f), and the rules treat the two "
        "apart, so O90.x stays in the postpartum value set.",
    )
    pregnancy.vsac(PREGNANCY)
    pregnancy.drop(ICD, "O90.3")
    pregnancy.vsac(PREGNANT_STATE)
    pregnancy.icd_groups("Supervision_normal_pregnancy_Z34")

    postpartum = new(
        "postpartum",
        "Postpartum state",
        "Postpartum (puerperal) conditions: all of ICD-10-CM Z39 and O90 (headers included), F53 "
        "(postpartum depression, puerperal psychosis), O99.345, O98.73 and the other codes of VSAC "
        "'Pregnancy Obstetric or Maternal Diagnoses' that say puerperium, postpartum, following "
        "delivery or lactation; SNOMED CT 86569001 Postpartum state and the postpartum "
        "depression/psychosis concepts.",
        "Feeds the `postpartum` fact (recorded within 365 days): a supporting population, the "
        "role-transition focus area and `antidepressant-perinatal-ipt`.",
    )
    postpartum.icd_groups(
        "Postpartum_care_Z39", "Puerperal_complications_O90", "Puerperal_mental_F53"
    )
    postpartum.icd("O99.345", "O98.73")
    postpartum.vsac(
        PREGNANCY_OBSTETRIC_MATERNAL,
        ICD,
        where=lambda c: (
            bool(re.search(r"puerper|postpartum|following delivery|lactation", c.display, re.I))
            and "pregnancy" not in c.display.lower()  # O92.2x: 'pregnancy and the puerperium'
            and not c.code.startswith("O94")
        ),  # sequelae, possibly years later
    )
    postpartum.sct(*(e["code"] for e in ref.recommended_list("postpartum.snomed")))

    new(
        "bereavement",
        "Bereavement",
        "Bereavement: ICD-10-CM Z63.4 (Disappearance and death of family member, incl. "
        "bereavement) and F43.81 Prolonged grief disorder. No SNOMED CT bereavement concept could "
        "be verified (code review s.5h).",
        "Feeds the `bereavement` fact (the grief focus area and `ipt-bereavement-combination`). "
        "The F43.8 header is not included: it also covers F43.89 other stress reactions.",
    ).icd("Z63.4", "F43.81")

    role_transition = new(
        "role-transition",
        "Role transition",
        "Life events that are IPT role transitions: ICD-10-CM Z63.5 (separation and divorce), all "
        "of Z56 (employment problems, headers included), Z60.0 (life-cycle transition, incl. "
        "retirement) and SNOMED CT 73438004 Unemployed.",
        "Feeds the `focus_areas` fact (role-transition). 73438004 is third-party corroborated "
        "only (code review s.11, C-3P); it can only add a focus-area hint.",
    )
    role_transition.icd("Z63.5", "Z60.0")
    role_transition.icd_groups("Employment_problems_Z56")
    role_transition.sct("73438004")

    new(
        "role-dispute",
        "Role dispute",
        "Interpersonal disputes: ICD-10-CM Z63.0 (spouse or partner), Z63.1 (in-laws), Z63.8 "
        "(other primary support group problems) and Z73.5 (social role conflict).",
        "Feeds the `focus_areas` fact (role-dispute).",
    ).icd("Z63.0", "Z63.1", "Z63.8", "Z73.5")

    new(
        "interpersonal-deficits",
        "Interpersonal deficits",
        "Social isolation and inadequate social skills: ICD-10-CM Z60.2 (living alone), Z60.4 "
        "(social exclusion and rejection) and Z73.4 (inadequate social skills).",
        "Feeds the `focus_areas` fact (interpersonal-deficits, only when no other area applies).",
    ).icd("Z60.2", "Z60.4", "Z73.4")

    # ---- Suicide: ideation, attempt or self-harm, 'at risk', history ---------------------------
    # the spec version 2 reads these apart: an ideation diagnosis followed by an item 9
    # answer of 0 on a later day is `history`, an attempt or 'at risk' finding is not; only
    # an ideation basis counts for `needs_combination`; Z91.51 is `history` in any status.
    suicidal = new(
        "suicidal-ideation",
        "Suicidal ideation",
        "Suicidal ideation recorded as a condition: ICD-10-CM R45.851 Suicidal ideations and the "
        "SNOMED CT suicidal thought, intent and planning findings of code review s.9 (6471006, "
        "267073005, 304594002, 247650009, 102911000, 401229000, 711561004), all V-VSAC "
        "(MentalHealthDx). Ideation only: attempts and self-harm are in suicide-attempt, "
        "'At risk for suicide' in suicide-risk, personal history in suicide-history.",
        "An active Condition here recorded within 365 days makes `suicidal_ideation` high with an "
        "ideation basis (`ipt-suicide-risk`; counts for `needs_combination`). Left out: the "
        "R45.85 header (it also covers homicidal ideation R45.850), 425104003 Suicidal behavior "
        "(behaviour, in suicide-attempt), T14.91XA/XD/XS (suicide-attempt), Z91.51 "
        "(suicide-history), and non-suicidal self-harm R45.88/Z91.52 (in no suicide value set).",
    )
    suicidal.icd("R45.851")
    suicidal.vsac(
        MENTAL_HEALTH_DIAGNOSES,
        SCT,
        codes=[
            e["code"]
            for e in ref.recommended_list("suicidal_ideation.snomed")
            if e["code"] != SUICIDAL_BEHAVIOUR
        ],
    )

    attempt = new(
        "suicide-attempt",
        "Suicide attempt or intentional self-harm",
        "Suicide attempt and intentional self-harm recorded as a condition: ICD-10-CM T14.91XA, "
        "T14.91XD, T14.91XS (NCHS; T14.91XA also VSAC 'Suicide Attempt'), SNOMED CT 425104003 "
        "Suicidal behavior (V-VSAC), and three ICD-10-CM families given as regex filters: "
        "X71-X83 (intentional self-harm by any means, every code), T36-T65 poisoning or toxic "
        "effect whose 6th character is 2 (intentional self-harm, e.g. T43.222A, T36.0X2A), and the "
        "same with the intent in the 5th character and placeholder X in the 6th (T43.92XA, "
        "T58.02XA, ...). A regex is matched in full against the normalised code: ICD-10-CM upper "
        "case without dots (T43.222A is matched as T43222A).",
        "An active Condition here recorded within 365 days makes `suicidal_ideation` high with an "
        "attempt basis (`ipt-suicide-risk`; an attempt alone does not make `needs_combination`). "
        "The families cannot be enumerated from our sources (VSAC lists only initial encounters); "
        "scripts/build_valuesets.py tries each regex against every T36-T65 and X71-X83 code of "
        "its sources and refuses a family that takes in a code not named self-harm. 425104003 "
        "'Suicidal behavior' is behaviour, not ideation, so it is here rather than in "
        "suicidal-ideation. No SNOMED CT suicide-attempt concept (e.g. Synthea's 86849004, "
        "287185009, 287182007) could be verified in the reference; none is included.",
    )
    attempt.icd("T14.91XD", "T14.91XS")
    attempt.vsac(SUICIDE_ATTEMPT, ICD, codes=["T14.91XA"])
    attempt.vsac(MENTAL_HEALTH_DIAGNOSES, SCT, codes=[SUICIDAL_BEHAVIOUR])
    attempt.regex(ICD, SELF_HARM_X71_X83)
    attempt.regex(ICD, SELF_HARM_POISONING)
    attempt.regex(ICD, SELF_HARM_POISONING_UNSPECIFIED)

    new(
        "suicide-risk",
        "At risk for suicide",
        "SNOMED CT 225444004 'At risk for suicide (finding)', the finding Synthea records. The "
        "code and its meaning come from the clinical specification (the spec version 2); it is "
        "in no VSAC expansion or code list of the reference and is not verified there.",
        "An active Condition here recorded within 365 days makes `suicidal_ideation` high with an "
        "'at risk' basis (`ipt-suicide-risk`; not by itself `needs_combination`).",
    ).sct("225444004")

    new(
        "suicide-history",
        "Personal history of suicidal behaviour",
        "ICD-10-CM Z91.51 Personal history of suicidal behavior (NCHS). Z91.52 (history of "
        "non-suicidal self-harm) is not included.",
        "Z91.51 in any clinical status makes `suicidal_ideation` `history` (a caution), never "
        "high.",
    ).icd("Z91.51")

    nicotine = new(
        "nicotine-dependence",
        "Nicotine dependence",
        "Nicotine dependence: ICD-10-CM F17.2 and every code under it (F17.20x unspecified, "
        "F17.21x cigarettes, F17.22x chewing tobacco, F17.29x other tobacco product) as a regex "
        "filter, matched in full against the normalised code (upper case, no dots: F17.210 is "
        "matched as F17210); and the SNOMED CT nicotine and tobacco dependence concepts of VSAC "
        "'Psychiatric/Mental Health Diagnosis' (56294008, 89765005, 191887008, 191888003, "
        "191889006).",
        "A bupropion order whose reasonCode or reasonReference is here is for smoking cessation, "
        "not an antidepressant (`on_antidepressant`). Nicotine withdrawal (90755006) and "
        "nicotine-induced organic mental disorder (30310000) are not dependence and are left "
        "out; the F17.2 family includes its in-remission and with-withdrawal codes.",
    )
    nicotine.regex(ICD, NICOTINE_DEPENDENCE_F17_2)
    nicotine.vsac(
        PSYCHIATRIC_MH_DIAGNOSIS,
        SCT,
        codes=["56294008", "89765005", "191887008", "191888003", "191889006"],
    )

    insomnia = new(
        "insomnia",
        "Insomnia",
        "Insomnia: all of ICD-10-CM G47.0 and F51.0 (headers included) and the SNOMED CT adult "
        "insomnia concepts (behavioural insomnia of childhood is not included).",
        "One `neurovegetative` domain (sleep), counted once with the PHQ-9 sleep item.",
    )
    insomnia.icd_groups("Insomnia_organic_G47.0", "Insomnia_nonorganic_F51.0")
    insomnia.vsac(
        PSYCHIATRIC_MH_DIAGNOSIS,
        SCT,
        codes=["193462001", "3972004", "162204000", "191997003", "268652009", "24121004"],
    )
    insomnia.vsac(
        MENTAL_BEHAVIORAL_NEURODEV,
        SCT,
        codes=["425832009", "436001000124105", "135311000119100"],
    )

    appetite = new(
        "appetite-loss",
        "Loss of appetite",
        "Loss of appetite: ICD-10-CM R63.0 Anorexia (inclusion: loss of appetite; not anorexia "
        "nervosa) and SNOMED CT 79890006 Loss of appetite, 192017004 and 405788002.",
        "One `neurovegetative` domain (appetite). 79890006 is third-party corroborated only "
        "(code review s.11, C-3P); it is kept so appetite loss is not under-counted.",
    )
    appetite.icd("R63.0")
    appetite.sct("79890006")
    appetite.vsac(MENTAL_BEHAVIORAL_NEURODEV, SCT, codes=["192017004", "405788002"])

    fatigue = new(
        "fatigue",
        "Fatigue",
        "Fatigue: ICD-10-CM R53.83 Other fatigue and R53.81 Other malaise, and SNOMED CT fatigue "
        "concepts.",
        "One `neurovegetative` domain (energy), counted once with the PHQ-9 energy item.",
    )
    fatigue.icd("R53.81", "R53.83")
    fatigue.sct("84229001", "272060000", "271795006")
    fatigue.vsac(MENTAL_BEHAVIORAL_NEURODEV, SCT, codes=["442099003"])
    fatigue.vsac(HIV, SCT, codes=["420900006"])

    libido = new(
        "decreased-libido",
        "Decreased libido",
        "Decreased libido: ICD-10-CM R68.82 and F52.0 Hypoactive sexual desire disorder, and the "
        "SNOMED CT inhibited/lost sexual desire concepts. No SNOMED 'decreased libido' finding "
        "could be verified (code review s.9).",
        "One `neurovegetative` domain (libido).",
    )
    libido.icd("R68.82")
    libido.vsac(MENTAL_HEALTH_DIAGNOSES, ICD, codes=["F52.0"])
    libido.vsac(MENTAL_HEALTH_DIAGNOSES, SCT, codes=["442243005", "270903007", "5664002"])

    # ---- Observations (LOINC) ------------------------------------------------------------------
    new(
        "phq9-total",
        "PHQ-9 total score",
        "PHQ-9 total score, 0-27: LOINC 44261-6 and 89204-2 (the teen-modified total, which "
        "Synthea uses for adults too).",
        "The `phq9` fact (most recent within 90 days) and from it `severity`. Accepting 89204-2 "
        "handles Synthea data (code review s.6, s.11).",
    ).vsac(PHQ9_TOOLS)

    new(
        "phq9-item9",
        "PHQ-9 item 9 (thoughts of death or self-harm)",
        "PHQ-9 item 9: LOINC 44260-8.",
        "The `suicidal_ideation` fact: answer >= 2 is high, 1 is low.",
    ).add(LOINC, "44260-8")

    new(
        "phq9-items",
        "PHQ-9 item",
        "The nine PHQ-9 items, LOINC 44250-9, 44255-8, 44259-0, 44254-1, 44251-7, 44258-2, "
        "44252-5, 44253-3, 44260-8 (items 1 to 9 of panel 44249-1).",
        "A PHQ-9 panel that answers all nine and records no total reads as their sum: the "
        "`phq9` fact (the spec version 3, s.7.1).",
    ).add(LOINC, *PHQ9_ITEMS)

    for vs_id, title, code, domain in (
        ("phq-item-sleep", "PHQ item: sleep", "44259-0", "sleep"),
        ("phq-item-energy", "PHQ item: energy", "44254-1", "energy"),
        ("phq-item-appetite", "PHQ item: appetite", "44251-7", "appetite"),
    ):
        new(
            vs_id,
            title,
            f"PHQ-9 {domain} item: LOINC {code} '{ref.display[(LOINC, code)]}'.",
            f"One `neurovegetative` domain ({domain}): counts when the most recent answer within "
            "90 days (standalone or a PHQ-9 component) scores >= 2.",
        ).add(LOINC, code)

    answers = new(
        "phq-answers",
        "PHQ item answers with scores",
        "The four PHQ answers (LOINC answer list for PHQ items, as in code review s.6): LA6568-5 "
        "Not at all = 0, LA6569-3 Several days = 1, LA6570-1 More than half the days = 2, LA6571-9 "
        "Nearly every day = 3; the score is in the ordinalValue extension of each concept.",
        "Turns a coded answer of any PHQ item (item 9, sleep, energy, appetite) into the score the "
        "`suicidal_ideation` and `neurovegetative` facts compare with their thresholds.",
    )
    for entry in ref.recommended_list("phq_answer_codes_item9"):
        answers.add(LOINC, entry["code"])
        answers.ordinal[(LOINC, entry["code"])] = int(entry["score"])

    new(
        "phq-answer-1",
        "PHQ item answer: several days (score 1)",
        "PHQ item answer scoring 1: LOINC LA6569-3 'Several days'.",
        "Item 9 answered 1 makes `suicidal_ideation` low (warning).",
    ).add(LOINC, "LA6569-3")

    new(
        "phq-answer-2-or-more",
        "PHQ item answer: more than half the days or more (score >= 2)",
        "PHQ item answers scoring 2 or 3: LOINC LA6570-1 'More than half the days' and LA6571-9 "
        "'Nearly every day'.",
        "Item 9 answered >= 2 makes `suicidal_ideation` high; a sleep, energy or appetite item "
        "answered >= 2 counts a `neurovegetative` domain.",
    ).add(LOINC, "LA6570-1", "LA6571-9")

    new(
        "pregnancy-status",
        "Pregnancy status observation",
        "Pregnancy status: LOINC 82810-3.",
        "A pregnancy-status Observation within 280 days whose value is in "
        "pregnancy-status-pregnant sets the `pregnant` fact.",
    ).add(LOINC, "82810-3")

    pregnant_answer = new(
        "pregnancy-status-pregnant",
        "Pregnancy status answer: pregnant",
        "Values of a pregnancy-status Observation that mean pregnant: LOINC answer LA15173-0 "
        "'Pregnant' and SNOMED CT 77386006 Pregnancy (its equivalent in the HL7 IPS map, used by "
        "systems that answer in SNOMED CT).",
        "The value that makes a pregnancy-status Observation (82810-3) set the `pregnant` fact.",
    )
    pregnant_answer.add(LOINC, "LA15173-0")
    pregnant_answer.vsac(PREGNANCY, SCT, codes=["77386006"])

    # ---- Medications ---------------------------------------------------------------------------
    drugs = new(
        "antidepressant-clinical-drugs",
        "Antidepressant clinical drugs (RxNorm)",
        "RxNorm clinical drugs and packs of antidepressants: the union of the VSAC antidepressant "
        "value sets without lamotrigine, 5-hydroxytryptophan, oral selegiline and the "
        "hypnotic-only doxepin 3 mg/6 mg tablets. Olanzapine/fluoxetine and "
        "bupropion/dextromethorphan stay (antidepressant combinations).",
        "The `on_antidepressant` and `draft_antidepressant` facts (antidepressant_in_plan). Traps "
        "removed: oral selegiline (only the transdermal system is an antidepressant), lamotrigine "
        "and the supplement 5-HTP (in CMS2 'Adult Depression Medications' only).",
    )
    for key in (
        ANTIDEPRESSANT_MEDICATION,
        ADULT_DEPRESSION_MEDICATIONS,
        ANTIDEPRESSANTS,
        HARMFUL_ANTIDEPRESSANTS_OLDER,
    ):
        drugs.vsac(key, RXNORM)
    unmapped = drugs.codes(RXNORM) - set(ref.drugs)
    if unmapped:
        raise ReferenceError_(f"VSAC antidepressant codes missing from the csv: {sorted(unmapped)}")
    drugs.drop(
        RXNORM, *sorted(code for code in drugs.codes(RXNORM) if _not_antidepressant(ref, code))
    )
    for code in LOW_DOSE_DOXEPIN:
        if not re.fullmatch(r"doxepin [36] MG Oral Tablet", ref.display[(RXNORM, code)]):
            raise ReferenceError_(f"{code} is not a doxepin 3/6 mg tablet")
    drugs.drop(RXNORM, *LOW_DOSE_DOXEPIN)

    ingredients = new(
        "antidepressant-ingredients",
        "Antidepressant ingredients (RxNorm)",
        "RxNorm ingredient (IN) codes of every antidepressant in antidepressant-clinical-drugs, "
        "displayed with the RxNorm ingredient name in lower case.",
        "The `on_antidepressant` fact for orders coded at ingredient level and, through the "
        "displays, the text fallback. Selegiline is left out (its name would match oral "
        "selegiline; the Emsam patch is matched by clinical-drug code) and so is lithium (not an "
        "antidepressant).",
    )
    for entry in ref.recommended_list("antidepressant_ingredients"):
        if entry["code"] in INGREDIENTS_LEFT_OUT:
            continue
        # "milnacipran (fibromyalgia-only label)" -> "milnacipran"
        name = re.sub(r"\s*\(.*\)$", "", entry["display"])
        ingredients.concepts[(RXNORM, entry["code"])] = name

    # ---- Medications that are not an antidepressant in some use (spec v2 s.1) ----------
    hypnotic = new(
        "doxepin-hypnotic",
        "Doxepin at hypnotic strengths (3 mg, 6 mg)",
        "RxNorm clinical drugs doxepin 3 MG Oral Tablet and doxepin 6 MG Oral Tablet, found by "
        "name in antidepressant_rxnorm_scd_from_vsac.csv (VSAC 'Adult Depression Medications' and "
        "'Antidepressants'). Branded (SBD) codes are not in the reference and not included.",
        "Not an antidepressant for `on_antidepressant`/`draft_antidepressant`: the 3 and 6 mg "
        "tablets are the insomnia strengths. They are also left out of "
        "antidepressant-clinical-drugs.",
    )
    hypnotic.drugs(
        lambda row: re.fullmatch(r"doxepin [36] MG Oral Tablet", _csv_display(row)) is not None
    )

    for vs_id, ingredient, title, purpose in (
        (
            "trazodone",
            "10737",
            "Trazodone (RxNorm)",
            "`on_antidepressant`: trazodone whose daily dose is known and <= 100 mg is a sleep "
            "dose, not an antidepressant. The engine reads the strength in mg from the display.",
        ),
        (
            "amitriptyline",
            "704",
            "Amitriptyline (RxNorm)",
            "`on_antidepressant`: amitriptyline whose daily dose is known and <= 50 mg (pain, "
            "migraine or sleep doses) is not an antidepressant. The engine reads the strength in "
            "mg from the display (in a combination product the amitriptyline strength comes "
            "first).",
        ),
        (
            "bupropion",
            "42347",
            "Bupropion (RxNorm)",
            "`on_antidepressant`: a bupropion product whose reasonCode or reasonReference is "
            "nicotine dependence (nicotine-dependence), or whose text says smoking cessation, is "
            "not an antidepressant.",
        ),
    ):
        name = ref.concept(RXNORM, ingredient).display
        drug = new(
            vs_id,
            title,
            f"RxNorm ingredient {ingredient} '{name}' and every clinical drug (SCD) of "
            f"antidepressant_rxnorm_scd_from_vsac.csv that contains {name} (VSAC antidepressant "
            "value sets, RxNorm 2024-01), combination products included, each with its RxNorm "
            "name as display (the name carries the strength). Branded (SBD) codes are not in "
            "the reference and not included.",
            purpose,
        )
        drug.concepts[(RXNORM, ingredient)] = name
        drug.drugs(_containing(name))

    new(
        "bupropion-smoking-cessation",
        "Bupropion labelled for smoking cessation",
        "RxNorm clinical drugs of bupropion whose name says smoking cessation (or Zyban): "
        "1801289 'Smoking Cessation 12 HR bupropion hydrochloride 150 MG Extended Release Oral "
        "Tablet' (VSAC 'Antidepressant Medication'), the only one in "
        "antidepressant_rxnorm_scd_from_vsac.csv.",
        "Not an antidepressant for `on_antidepressant`/`draft_antidepressant`: a bupropion "
        "product labelled for smoking cessation.",
    ).drugs(
        lambda row: (
            "bupropion" in row["ingredients"].split(";")
            and re.search(r"smoking cessation|zyban", _csv_display(row), re.IGNORECASE) is not None
        )
    )

    # ---- Procedures and orders -----------------------------------------------------------------
    new(
        "ipt",
        "Interpersonal psychotherapy (IPT)",
        "Interpersonal psychotherapy: SNOMED CT 443730003 only.",
        "The `draft_ipt` fact and the IPT part of `on_psychotherapy`. 304822001 "
        "Psychodynamic-interpersonal psychotherapy (Synthea's 'Psychodynamic Interpersonal "
        "Therapy') is a different therapy and is deliberately not here; it is in psychotherapy.",
    ).vsac(PSYCH_VISIT_PSYCHOTHERAPY, SCT, codes=[IPT])

    therapy = new(
        "psychotherapy",
        "Psychotherapy",
        "Psychotherapy of any kind and referrals for it: SNOMED CT psychotherapy concepts (IPT, "
        "individual, group, family, cognitive-behavioural, dialectical, psychodynamic incl. "
        "304822001, psychoanalysis, ...), referrals to psychotherapy, psychologist, counselling, "
        "family therapy or a mental health team, and CPT 90832-90840, 90845-90853, 90875/90876.",
        "The `on_psychotherapy` and `draft_psychotherapy` facts (psychotherapy_in_plan). Referral "
        "to a psychiatrist/psychiatry service, care management and diagnostic evaluation are not "
        "psychotherapy, so a suggestion to add IPT is not suppressed by them.",
    )
    for key in (
        PSYCH_VISIT_PSYCHOTHERAPY,
        GROUP_PSYCHOTHERAPY,
        FAMILY_PSYCHOTHERAPY,
        PSYCHOANALYSIS,
        PSYCHOTHERAPY_PHARM_MGMT,
    ):
        therapy.vsac(key)
    therapy.vsac(
        FOLLOW_UP_ADULT_DEPRESSION,
        SCT,
        codes=[
            "75516001",
            "18512000",
            "228557008",
            "405780009",
            "76168009",
            "1555005",
            "108313002",
            "28868002",
            "15558000",
            "81294000",
        ],
    )
    therapy.vsac(
        REFERRAL_ADULT_DEPRESSION,
        SCT,
        codes=["306226009", "306227000", "306252003", "308459004", "390866009", "710914003"],
    )
    therapy.add(CPT, "90833", "90836", "90838", "90839", "90840")
    therapy.sct("425680009", "183401008")

    new(
        "psychiatry-referral",
        "Referral to psychiatry",
        "SNOMED CT 308477009 Referral to psychiatrist (procedure) and 183524004 Referral to "
        "psychiatry service (procedure), as in VSAC 'Referral for Adult Depression' (V-VSAC).",
        "`psychiatry_in_plan`: a current or drafted ServiceRequest here means the referral the "
        "`ipt-psychosis`, `ipt-suicide-risk` and `ipt-bipolar` cards would suggest is already in "
        "the plan. Not psychotherapy (not in the psychotherapy value set).",
    ).vsac(REFERRAL_ADULT_DEPRESSION, SCT, codes=["308477009", "183524004"])

    new(
        "psychiatric-care",
        "Psychiatric care received",
        "CPT 90791 and 90792 Psychiatric diagnostic evaluation (VSAC 'Psych Visit Diagnostic "
        "Evaluation') and SNOMED CT 88848003 Psychiatric follow-up (VSAC 'Follow Up for Adult "
        "Depression').",
        "`psychiatric_care`: a psychiatric evaluation or follow-up done within "
        "psychiatric_care_window_days. Only the bipolar chart-open card reads it, as care already "
        "under way; elsewhere earlier care is named on a card, never taken for a referral in the "
        "plan.",
    ).vsac(PSYCH_VISIT_DIAGNOSTIC_EVALUATION, CPT, codes=["90791", "90792"]).vsac(
        FOLLOW_UP_ADULT_DEPRESSION, SCT, codes=["88848003"]
    )

    return specs


def _attribute_specs(specs: dict[str, Spec]) -> list[Spec]:
    return [s for vs_id, s in specs.items() if vs_id.startswith("depression-")]


def _containing(ingredient: str) -> Callable[[dict[str, str]], bool]:
    """A csv row test: the clinical drug contains the ingredient (alone or in combination)."""
    return lambda row: ingredient in row["ingredients"].split(";")


def _csv_display(row: dict[str, str]) -> str:
    return row["display (VSAC, RxNorm 2024-01)"]


def _not_antidepressant(ref: Reference, code: str) -> bool:
    row = ref.drugs[code]
    ingredients = set(row["ingredients"].split(";"))
    return bool(ingredients & NOT_ANTIDEPRESSANT_INGREDIENTS) or row["note"].startswith(
        "oral selegiline"
    )


# ---- Checks ------------------------------------------------------------------------------------

# codes_recommended.json list -> value sets each of its codes must be in (all of them).
COVERAGE: list[tuple[str, tuple[str, ...]]] = [
    ("mdd_icd10cm", ("mdd",)),
    ("mdd_snomed", ("mdd",)),
    ("mdd_snomed_exclude_bipolar_in_vsac_mdd", ("bipolar",)),
    ("dysthymia.icd10cm", ("dysthymia",)),
    ("dysthymia.snomed", ("dysthymia",)),
    ("psychosis.icd10cm_exact", ("psychosis",)),
    ("psychosis.snomed", ("psychosis",)),
    ("bipolar.icd10cm_leaves", ("bipolar",)),
    ("bipolar.optional", ("bipolar",)),
    ("bipolar.snomed_core", ("bipolar",)),
    ("anxiety.icd10cm_leaves", ("anxiety",)),
    ("anxiety.snomed", ("anxiety",)),
    ("personality_disorder.icd10cm_leaves", ("personality-disorder",)),
    ("personality_disorder.snomed_general", ("personality-disorder",)),
    ("personality_disorder.avoidant", ("personality-avoidant", "personality-disorder")),
    (
        "personality_disorder.obsessive_compulsive",
        ("personality-obsessive-compulsive", "personality-disorder"),
    ),
    ("dementia.icd10cm_leaves", ("dementia",)),
    ("dementia.snomed", ("dementia",)),
    ("coronary_heart_disease.icd10cm_leaves", ("coronary-heart-disease",)),
    ("coronary_heart_disease.snomed", ("coronary-heart-disease",)),
    ("hiv.icd10cm", ("hiv",)),
    ("hiv.snomed", ("hiv",)),
    ("pregnancy.icd10cm", ("pregnancy",)),
    ("pregnancy.snomed", ("pregnancy",)),
    ("postpartum.icd10cm", ("postpartum",)),
    ("postpartum.snomed", ("postpartum",)),
    ("bereavement_grief.icd10cm", ("bereavement",)),
    ("role_transition.icd10cm", ("role-transition",)),
    ("role_transition.snomed", ("role-transition",)),
    ("role_dispute.icd10cm", ("role-dispute",)),
    ("interpersonal_deficits.icd10cm", ("interpersonal-deficits",)),
    ("phq_answer_codes_item9", ("phq-answers",)),
    ("antidepressant_ingredients", ("antidepressant-ingredients",)),
    ("psychotherapy.ipt", ("ipt", "psychotherapy")),
    ("psychotherapy.not_ipt_but_similar", ("psychotherapy",)),
    ("psychotherapy.generic_psychotherapy", ("psychotherapy",)),
    ("psychotherapy.cbt", ("psychotherapy",)),
    ("psychotherapy.referral", ("psychotherapy",)),
    ("psychotherapy.cpt", ("psychotherapy",)),
    ("suicidal_ideation.icd10cm", ("suicidal-ideation",)),
    ("suicidal_ideation.snomed", ("suicidal-ideation",)),
    ("neurovegetative.insomnia", ("insomnia",)),
    ("neurovegetative.decreased_appetite", ("appetite-loss",)),
    ("neurovegetative.fatigue", ("fatigue",)),
    ("neurovegetative.decreased_libido", ("decreased-libido",)),
]

# Codes codes_recommended.json lists that are deliberately not in the value set named above.
COVERAGE_EXCEPTIONS: dict[tuple[str, str], str] = {
    ("antidepressant_ingredients", "9639"): INGREDIENTS_LEFT_OUT["9639"],
    ("antidepressant_ingredients", "6448"): INGREDIENTS_LEFT_OUT["6448"],
    ("role_dispute.icd10cm", "Z63.9"): "unspecified primary support group problem: not a dispute",
    ("suicidal_ideation.icd10cm", "Z91.52"): "history of non-suicidal self-harm",
    ("suicidal_ideation.icd10cm", "R45.88"): "non-suicidal self-harm",
}

# Codes codes_recommended.json lists under a concept that version 2 of the spec reads from
# another value set: (list, code) -> (the value set it must be in instead, why). check() makes
# sure it is there and not in the value set COVERAGE names.
_MDD_PSYCHOTIC = "MDD with psychotic features: read apart (current episode or within 365 days)"
COVERAGE_MOVED: dict[tuple[str, str], tuple[str, str]] = {
    ("psychotherapy.referral", "183524004"): ("psychiatry-referral", "not psychotherapy"),
    ("psychotherapy.referral", "308477009"): ("psychiatry-referral", "not psychotherapy"),
    ("suicidal_ideation.icd10cm", "T14.91XA"): ("suicide-attempt", "an attempt, not ideation"),
    ("suicidal_ideation.icd10cm", "T14.91XD"): ("suicide-attempt", "an attempt, not ideation"),
    ("suicidal_ideation.icd10cm", "T14.91XS"): ("suicide-attempt", "an attempt, not ideation"),
    ("suicidal_ideation.icd10cm", "Z91.51"): ("suicide-history", "history, not ideation"),
    ("suicidal_ideation.snomed", SUICIDAL_BEHAVIOUR): ("suicide-attempt", "behaviour"),
    **{
        (path, code): ("depression-psychotic-features", _MDD_PSYCHOTIC)
        for path, codes in (
            ("psychosis.icd10cm_exact", ("F32.3", "F33.3")),
            (
                "psychosis.snomed",
                (
                    "726772006",
                    "73867007",
                    "430852001",
                    "191604000",
                    "20250007",
                    "77911002",
                    "28475009",
                    "191613003",
                    "15193003",
                    "33078009",
                    "33736005",
                    "60099002",
                ),
            ),
        )
        for code in codes
    },
}

# The regex families, tried on these codes besides every reference code (check()): each value
# set's codes that must match and that must not.
FAMILY_CASES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "suicide-attempt": (
        (
            "T43.222A",
            "T43222A",
            "t43.222a",
            "T36.0X2A",
            "T43.92XA",
            "T65.92XS",
            "T50.Z12D",
            "X71.0XXA",
            "X72.XXXA",
            "X83.8XXA",
            "X83.8XXS",
            "T14.91XA",
        ),
        (
            "T43.221A",
            "T43.223A",
            "T43.224A",
            "T43.225A",
            "T43.226A",
            "T43.91XA",
            "T35.0X2A",
            "T66.XXXA",
            "T71.112A",
            "X70.0XXA",
            "X84",
            "X84.XXXA",
            "X52.XXXA",
            "R45.851",
        ),
    ),
    "nicotine-dependence": (
        ("F17.2", "F17.200", "F17.210", "F17.211", "f17.213", "F17.290"),
        ("F17", "F17.1", "F10.20", "Z87.891", "Z72.0", "O99.330"),
    ),
}

# codes_recommended.json entries no value set uses, and why.
NOT_USED = {
    "psychosis.icd10cm_optional_symptoms": "hallucination symptoms R44.x are not a psychotic "
    "disorder (code review: optional)",
    "neurovegetative.anhedonia": "anhedonia is not one of the neurovegetative domains",
    "role_transition.patient_maritalStatus": "Patient.maritalStatus, not a Condition code",
    "loinc": "only the PHQ-9 codes are read by a fact; checked separately",
}


def check(specs: dict[str, Spec], ref: Reference) -> list[str]:
    errors: list[str] = []

    def need(condition: bool, message: str) -> None:
        if not condition:
            errors.append(message)

    for (path, code), (vs_id, _why) in COVERAGE_MOVED.items():
        need(vs_id in specs, f"COVERAGE_MOVED: no value set {vs_id} for {path} {code}")
    for spec in specs.values():
        need(bool(spec.concepts or spec.filters), f"{spec.id}: empty")
        for system, _pattern in spec.filters:
            need(system in CODE_FORMATS, f"{spec.id}: unexpected system {system} of a regex")
        need(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", spec.id) is not None, f"{spec.id}: bad id")
        for (system, code), display in spec.concepts.items():
            need(bool(display.strip()), f"{spec.id}: {code} has no display")
            need(system in CODE_FORMATS, f"{spec.id}: unexpected system {system}")
            if system in CODE_FORMATS:
                need(
                    bool(CODE_FORMATS[system].match(code)), f"{spec.id}: malformed {system}|{code}"
                )

    def keys(vs_id: str) -> set[Key]:
        return specs[vs_id].keys()

    # Trap: bipolar codes never count as depression.
    depression_ids = ["mdd", "depression-nos", "postpartum-depression", "dysthymia"]
    depression_ids += [i for i in specs if i.startswith("depression-")]
    for vs_id in depression_ids:
        both = keys(vs_id) & keys("bipolar")
        need(not both, f"{vs_id}: bipolar codes {sorted(c for _s, c in both)}")
    need((SCT, BIPOLAR_IN_VSAC_MDD) in keys("bipolar"), "bipolar: 67002003 missing")

    # Trap: IPT is 443730003 only; psychodynamic-interpersonal 304822001 is psychotherapy.
    need(keys("ipt") == {(SCT, IPT)}, f"ipt: expected only {IPT}, got {sorted(keys('ipt'))}")
    need((SCT, PSYCHODYNAMIC_INTERPERSONAL) in keys("psychotherapy"), "psychotherapy: no 304822001")
    need(keys("ipt") <= keys("psychotherapy"), "psychotherapy: does not include ipt")

    # Traps: oral selegiline, lamotrigine, 5-HTP, low-dose doxepin are not antidepressants.
    drug_codes = specs["antidepressant-clinical-drugs"].codes(RXNORM)
    for code, row in ref.drugs.items():
        bad = _not_antidepressant(ref, code) or code in LOW_DOSE_DOXEPIN
        if bad:
            need(
                code not in drug_codes, f"antidepressant-clinical-drugs: holds {code} {row['note']}"
            )
        else:
            need(code in drug_codes, f"antidepressant-clinical-drugs: lacks {code}")
    for code in drug_codes:
        display = ref.display[(RXNORM, code)].lower()
        need("5-hydroxytryptophan" not in display, f"5-HTP in antidepressant drugs: {code}")
        need("lamotrigine" not in display, f"lamotrigine in antidepressant drugs: {code}")
        if "selegiline" in display:
            need("transdermal" in display, f"oral selegiline in antidepressant drugs: {code}")
    names = {d for (_s, _c), d in specs["antidepressant-ingredients"].concepts.items()}
    for name in names:
        need(name == name.lower(), f"antidepressant-ingredients: display not lower case: {name}")
    for banned in ("selegiline", "lithium", "lamotrigine", "5-hydroxytryptophan"):
        need(banned not in names, f"antidepressant-ingredients: holds {banned}")
    used = set()
    for code in drug_codes:
        used |= set(ref.drugs[code]["ingredients"].split(";"))
    used -= COMBINATION_PARTNERS | {"selegiline"}
    need(used <= names, f"antidepressant-ingredients: lacks {sorted(used - names)}")

    # Episode attributes: disjoint classes, all within the depression codes.
    depression_all = keys("mdd") | keys("depression-nos") | keys("postpartum-depression")
    attribute_ids = [i for i in specs if i.startswith("depression-")]
    for vs_id in attribute_ids:
        extra = keys(vs_id) - depression_all
        need(not extra, f"{vs_id}: codes outside the depression value sets {sorted(extra)}")
    for classes in (
        ["depression-recurrent", "depression-single-episode"],
        [
            "depression-remission-full",
            "depression-remission-partial",
            "depression-remission-unspecified",
        ],
        [
            "depression-severity-mild",
            "depression-severity-moderate",
            "depression-severity-moderately-severe",
            "depression-severity-severe",
        ],
    ):
        for i, a in enumerate(classes):
            for b in classes[i + 1 :]:
                need(not keys(a) & keys(b), f"{a} and {b} overlap: {sorted(keys(a) & keys(b))}")
    need(
        keys("depression-psychotic-features") <= keys("depression-severity-severe"),
        "psychotic-features not all severe",
    )
    need(
        not keys("depression-psychotic-features") & keys("psychosis"),
        "psychosis holds MDD with psychotic features (version 2 reads them apart)",
    )
    need(
        {(ICD, "F32.3"), (ICD, "F33.3"), (SCT, "726772006"), (SCT, "73867007")}
        <= keys("depression-psychotic-features"),
        "depression-psychotic-features: lacks F32.3/F33.3/726772006/73867007",
    )
    psychotic_depression = keys("mdd") | keys("depression-nos") | keys("postpartum-depression")
    need(
        not keys("psychosis") & psychotic_depression,
        f"psychosis: depression codes {sorted(keys('psychosis') & psychotic_depression)}",
    )
    for key in [(ICD, "F33.40"), (ICD, "F32.5"), (ICD, "F33.42"), (ICD, "F32.4"), (ICD, "F33.41")]:
        in_remission = any(key in keys(i) for i in attribute_ids if "remission" in i)
        need(in_remission, f"{key[1]}: in no remission value set")
    need(
        {(ICD, c) for c in ("F22", "F24", "F53.1", "F30.2", "F31.2", "F31.5", "F31.64")}
        <= keys("psychosis"),
        "psychosis: lacks F22/F24/F53.1/F30.2/F31.2/F31.5/F31.64",
    )
    need(not {(ICD, "F32.3"), (ICD, "F33.3")} & keys("psychosis"), "psychosis: holds F32.3/F33.3")

    # Suicide: ideation, attempt, 'at risk' and history apart (the spec version 2).
    suicide_ids = ["suicidal-ideation", "suicide-attempt", "suicide-risk", "suicide-history"]
    for i, a in enumerate(suicide_ids):
        for b in suicide_ids[i + 1 :]:
            both = {k for k in keys(a) | keys(b) if specs[a].holds(*k) and specs[b].holds(*k)}
            need(not both, f"{a} and {b} overlap: {sorted(both)}")
    need(not specs["suicidal-ideation"].filters, "suicidal-ideation: holds a code family")
    need(
        keys("suicidal-ideation")
        == {(ICD, "R45.851")}
        | {
            (SCT, e["code"])
            for e in ref.recommended_list("suicidal_ideation.snomed")
            if e["code"] != SUICIDAL_BEHAVIOUR
        },
        "suicidal-ideation: not exactly R45.851 and the code review s.9 ideation findings",
    )
    need(keys("suicide-history") == {(ICD, "Z91.51")}, "suicide-history: not exactly Z91.51")
    need(keys("suicide-risk") == {(SCT, "225444004")}, "suicide-risk: not exactly 225444004")
    for code in ("R45.88", "Z91.52", "R45.85", "R45.850"):
        for vs_id in suicide_ids:
            need(not specs[vs_id].holds(ICD, code), f"{vs_id}: holds {code}")
    need(
        keys("psychiatry-referral") == {(SCT, "308477009"), (SCT, "183524004")},
        "psychiatry-referral codes",
    )
    need(not keys("psychiatry-referral") & keys("psychotherapy"), "psychiatry referral in therapy")

    # Regex families: every reference code of their ranges (ICD-10-CM csv and every VSAC
    # expansion) is in the family exactly when its name says so, and the hand-picked cases.
    icd_codes = {code: display for (system, code), display in ref.display.items() if system == ICD}
    attempt, nicotine = specs["suicide-attempt"], specs["nicotine-dependence"]
    seen = {"suicide-attempt": 0, "nicotine-dependence": 0}
    for code, display in sorted(icd_codes.items()):
        normal = normal_code(ICD, code)
        if re.match(r"T(3[6-9]|[45][0-9]|6[0-5])|X(7[1-9]|8[0-3])", normal):
            seen["suicide-attempt"] += 1
            # X82.0-X82.2 say only 'Intentional collision of motor vehicle ...' (category X82
            # is intentional self-harm by crashing of motor vehicle).
            says = ("intentional" if normal[0] == "X" else "intentional self-harm") in (
                display.lower()
            )
            need(attempt.holds(ICD, code) == says, f"suicide-attempt: {code} '{display}'")
        elif attempt.holds(ICD, code) and code not in {c for _s, c in attempt.concepts}:
            errors.append(f"suicide-attempt: a regex takes in {code} '{display}'")
        if normal.startswith("F17"):
            seen["nicotine-dependence"] += 1
            says = display.lower().startswith("nicotine dependence")
            need(nicotine.holds(ICD, code) == says, f"nicotine-dependence: {code} '{display}'")
        else:
            need(not nicotine.holds(ICD, code), f"nicotine-dependence: takes in {code}")
    for vs_id, count in seen.items():
        need(count > 0, f"{vs_id}: no reference code to try its regex on")
    for vs_id, (inside, outside) in FAMILY_CASES.items():
        for code in inside:
            need(specs[vs_id].holds(ICD, code), f"{vs_id}: does not hold {code}")
        for code in outside:
            need(not specs[vs_id].holds(ICD, code), f"{vs_id}: holds {code}")

    # Medications that are not an antidepressant in some use: exact displays from the csv.
    need(
        keys("doxepin-hypnotic") == {(RXNORM, c) for c in LOW_DOSE_DOXEPIN},
        "doxepin-hypnotic: not exactly the 3 mg and 6 mg tablets",
    )
    need(
        (RXNORM, SMOKING_CESSATION_BUPROPION) in keys("bupropion-smoking-cessation"),
        "bupropion-smoking-cessation: lacks 1801289",
    )
    need(
        keys("bupropion-smoking-cessation") <= keys("bupropion"),
        "bupropion-smoking-cessation: not all bupropion",
    )
    for vs_id, ingredient in (
        ("trazodone", "10737"),
        ("amitriptyline", "704"),
        ("bupropion", "42347"),
    ):
        name = ref.display[(RXNORM, ingredient)]
        want = {c for c, row in ref.drugs.items() if name in row["ingredients"].split(";")}
        need(
            specs[vs_id].codes(RXNORM) == want | {ingredient},
            f"{vs_id}: not the ingredient and all its clinical drugs",
        )
    for vs_id in (
        "doxepin-hypnotic",
        "trazodone",
        "amitriptyline",
        "bupropion",
        "bupropion-smoking-cessation",
    ):
        for (_s, code), display in specs[vs_id].concepts.items():
            if code in ref.drugs:
                need(
                    display == _csv_display(ref.drugs[code]),
                    f"{vs_id}: {code} display not as in the csv",
                )

    # The PHQ-9 and pregnancy observation codes the facts read.
    need(keys("phq9-total") == {(LOINC, "44261-6"), (LOINC, "89204-2")}, "phq9-total codes")
    need(keys("phq9-item9") == {(LOINC, "44260-8")}, "phq9-item9 codes")
    need(keys("phq9-items") == {(LOINC, c) for c in PHQ9_ITEMS}, "phq9-items codes")
    need(len(PHQ9_ITEMS) == 9, "nine PHQ-9 items")
    need(
        keys("phq-answer-1") | keys("phq-answer-2-or-more") < keys("phq-answers"),
        "phq answers",
    )
    for (_s, code), score in specs["phq-answers"].ordinal.items():
        in_one = (LOINC, code) in keys("phq-answer-1")
        in_two = (LOINC, code) in keys("phq-answer-2-or-more")
        need(in_one == (score == 1) and in_two == (score >= 2), f"phq answer {code} score {score}")

    # ICD-10-CM 'x' families carry their headers and every leaf of the csv group.
    for vs_id, groups in {
        "mdd": ["MDD_recurrent_F33"],
        "depression-recurrent": ["MDD_recurrent_F33"],
        "bipolar": ["Manic_F30", "Bipolar_F31"],
        "anxiety": ["Phobic_anxiety_F40", "Other_anxiety_F41"],
        "personality-disorder": ["Personality_F60"],
        "dementia": ["Dementia_F01", "Dementia_F02", "Dementia_F03", "Alzheimer_G30"],
        "coronary-heart-disease": ["Ischemic_heart_I20-I25"],
        "pregnancy": ["Supervision_normal_pregnancy_Z34"],
        "postpartum": ["Postpartum_care_Z39", "Puerperal_complications_O90"],
        "role-transition": ["Employment_problems_Z56"],
        "psychosis": ["Schizophrenia_spectrum_F20-F29"],
    }.items():
        for group in groups:
            missing = {(ICD, c) for c in ref.icd_group(group)} - keys(vs_id)
            need(not missing, f"{vs_id}: lacks {group} codes {sorted(missing)}")
    need(not keys("pregnancy") & keys("postpartum"), "pregnancy and postpartum overlap")
    need(not {(ICD, "R75"), (ICD, "Z20.6")} & keys("hiv"), "hiv: holds R75/Z20.6")

    # Every code code review (via codes_recommended.json) lists for a concept is present.
    for path, targets in COVERAGE:
        entries = ref.recommended_list(path)
        need(bool(entries), f"codes_recommended.json: {path} is empty")
        for entry in entries:
            key = (entry["system"], entry["code"])
            excluded = (path, entry["code"]) in COVERAGE_EXCEPTIONS
            moved = COVERAGE_MOVED.get((path, entry["code"]))
            if moved is not None:
                need(key in keys(moved[0]), f"{moved[0]}: lacks {entry['code']} ({path})")
            for target in targets:
                if excluded or moved is not None:
                    need(key not in keys(target), f"{target}: holds excluded {entry['code']}")
                else:
                    need(key in keys(target), f"{target}: lacks {entry['code']} ({path})")
    for path in (
        "psychosis.icd10cm_prefix_rules",
        "bipolar.icd10cm_prefix_rules",
        "anxiety.icd10cm_prefix_rules",
        "personality_disorder.icd10cm_prefix_rules",
        "dementia.icd10cm_prefix_rules",
        "coronary_heart_disease.icd10cm_prefix_rules",
    ):
        vs_id = {
            "psychosis": "psychosis",
            "bipolar": "bipolar",
            "anxiety": "anxiety",
            "personality_disorder": "personality-disorder",
            "dementia": "dementia",
            "coronary_heart_disease": "coronary-heart-disease",
        }[path.split(".")[0]]
        for prefix in ref.recommended_list(path):
            need((ICD, prefix) in keys(vs_id), f"{vs_id}: lacks category {prefix} ({path})")
    for entry in ref.recommended_list("hiv.exclude"):
        need((ICD, entry["code"]) not in keys("hiv"), f"hiv: holds {entry['code']}")
    for entry in ref.recommended_list("psychotherapy.not_ipt_but_similar"):
        need((SCT, entry["code"]) not in keys("ipt"), f"ipt: holds {entry['code']}")
    for entry in ref.recommended_list("psychosis.icd10cm_optional_symptoms"):
        need((ICD, entry["code"]) not in keys("psychosis"), "psychosis: holds R44.x")
    for entry in ref.recommended_list("depression_other_icd10cm"):
        key = (ICD, entry["code"])
        need(
            key in keys("depression-nos") | keys("postpartum-depression"),
            f"depression value sets lack {entry['code']}",
        )
    for entry in ref.recommended_list("loinc"):
        if entry.get("role") in ("phq9_total", "phq9_total_alt"):
            need((LOINC, entry["code"]) in keys("phq9-total"), f"phq9-total lacks {entry['code']}")
        if entry.get("role") == "phq9_item9":
            need((LOINC, entry["code"]) in keys("phq9-item9"), f"phq9-item9 lacks {entry['code']}")
    for path in NOT_USED:
        node: Any = ref.recommended
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        need(node is not None, f"codes_recommended.json: no {path} (NOT_USED is out of date)")
    # A display for a Synthea code must be spelled as the verified Synthea list spells it.
    for key, display in EXTRA_DISPLAYS.items():
        if key in ref.synthea_displays:
            need(
                display == ref.synthea_displays[key],
                f"EXTRA_DISPLAYS {key[1]}: display not as in synthea-displays.tsv",
            )
    return errors


# ---- Output ------------------------------------------------------------------------------------


def render(resource: dict[str, Any]) -> str:
    return json.dumps(resource, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def is_ours(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        isinstance(data, dict)
        and data.get("resourceType") == "ValueSet"
        and data.get("publisher") == PUBLISHER
        and str(data.get("url", "")).startswith(CANONICAL)
    )


def validate_with_fhir_resources(texts: dict[str, str]) -> list[str]:
    try:
        from fhir.resources.R4B.valueset import ValueSet
    except ImportError:
        return ["--validate needs fhir.resources (pip install 'fhir.resources>=8,<9')"]
    errors = []
    for name, text in texts.items():
        try:
            ValueSet.model_validate(json.loads(text))
        except Exception as exc:  # report every file, not just the first failure
            errors.append(f"{name}: {exc}")
    return errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--reference",
        type=Path,
        default=DEFAULT_REFERENCE,
        help="reference terminology folder (default: %(default)s)",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="output folder (default: %(default)s)"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if the output folder is not up to date",
    )
    parser.add_argument(
        "--validate",
        action="store_true",
        help="also parse every ValueSet with fhir.resources (R4B model)",
    )
    args = parser.parse_args(argv)

    try:
        ref = Reference(args.reference.resolve())
        specs = build(ref)
    except ReferenceError_ as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    problems = check(specs, ref)
    if problems:
        print("error: the value sets fail their checks:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1

    texts = {f"{vs_id}.json": render(spec.resource()) for vs_id, spec in sorted(specs.items())}
    if args.validate:
        invalid = validate_with_fhir_resources(texts)
        if invalid:
            print("error: not valid FHIR:", file=sys.stderr)
            for problem in invalid:
                print(f"  - {problem}", file=sys.stderr)
            return 1

    out: Path = args.out
    stale = (
        sorted(p.name for p in out.glob("*.json") if p.name not in texts and is_ours(p))
        if out.is_dir()
        else []
    )
    changed = [
        name
        for name, text in texts.items()
        if not (out / name).is_file() or (out / name).read_text(encoding="utf-8") != text
    ]
    if args.check:
        for name in changed:
            print(f"out of date: {out / name}", file=sys.stderr)
        for name in stale:
            print(f"stale: {out / name}", file=sys.stderr)
        return 1 if changed or stale else 0

    out.mkdir(parents=True, exist_ok=True)
    for name in changed:
        (out / name).write_text(texts[name], encoding="utf-8")
    for name in stale:
        (out / name).unlink()
    total = sum(len(spec.concepts) for spec in specs.values())
    print(
        f"{len(texts)} value sets, {total} concepts in {out} "
        f"({len(changed)} written, {len(stale)} removed)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
