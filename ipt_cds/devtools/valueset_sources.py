"""The vendored terminology sources of the value sets (``cards/valuesets/sources/``, whose
README gives each file's origin), indexed for ipt_cds/devtools/valueset_expander.py.

Build time only: the service never reads these files, and the wheel does not ship them.

What a value set definition can name here:

* a VSAC expansion ``vsac/ValueSet-<OID>.json`` by its canonical URL
  (``http://cts.nlm.nih.gov/fhir/ValueSet/<OID>``, or ``<url>|<version>`` for an older
  expansion of the same value set);
* ICD-10-CM codes by ``group`` of ``icd10cm_codes_by_group.csv``;
* RxNorm clinical drugs of ``antidepressant_rxnorm_scd_from_vsac.csv`` by ``ingredient``.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"

Key = tuple[str, str]  # (system, code)


class DefinitionError(Exception):
    """A value set definition, or a source it names, is wrong; the message says where."""


@dataclass(frozen=True)
class SourceSet:
    """A VSAC expansion: its OID (for provenance) and its codes in order."""

    oid: str
    codes: tuple[Key, ...]


class Sources:
    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise DefinitionError(f"{root}: no sources folder")
        self.root = root
        self.vsac: dict[str, SourceSet] = {}
        stamped: list[tuple[str, str, list[dict[str, Any]]]] = []
        for path in sorted((root / "vsac").glob("ValueSet-*.json")):
            data = json.loads(path.read_text(encoding="utf-8"))
            contains = data.get("expansion", {}).get("contains", [])
            found = SourceSet(data["id"], tuple((c["system"], c["code"]) for c in contains))
            # Two expansions of one value set share a url; the older one is named with its
            # version (FHIR canonical ``url|version``), the newest file by the bare url.
            name = data["url"]
            if path.stem.removeprefix("ValueSet-") != data["id"]:
                name = f"{name}|{data['version']}"
            if name in self.vsac:
                raise DefinitionError(f"{path}: a second expansion named {name}")
            self.vsac[name] = found
            stamped.append((data.get("expansion", {}).get("timestamp", ""), path.stem, contains))

        self.groups: dict[str, list[str]] = {}
        icd_names: dict[str, str] = {}
        with (root / "icd10cm_codes_by_group.csv").open(encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                if "-" in row["code"]:  # block titles such as F20-F29 are not codes
                    continue
                self.groups.setdefault(row["group"], []).append(row["code"])
                icd_names[row["code"]] = row["description_ICD10CM_Apr2026"]

        self.drugs: dict[str, dict[str, str]] = {}
        with (root / "antidepressant_rxnorm_scd_from_vsac.csv").open(
            encoding="utf-8", newline=""
        ) as f:
            for row in csv.DictReader(f):
                self.drugs[row["rxnorm_code"]] = row

        # The preferred display. SNOMED CT, RxNorm, LOINC, CPT: the most recent VSAC expansion,
        # else codes_recommended.json. ICD-10-CM: the NCHS April 2026 description (csv), else
        # codes_recommended.json (also NCHS), else VSAC (ICD-10-CM 2024, older wording).
        self.display: dict[Key, str] = {}
        for _stamp, _stem, contains in sorted(stamped, key=lambda s: (s[0], s[1])):
            for c in contains:
                self.display[(c["system"], c["code"])] = c["display"]
        recommended = json.loads((root / "codes_recommended.json").read_text(encoding="utf-8"))
        for system, code, display in _recommended(recommended):
            if system == ICD10CM or (system, code) not in self.display:
                self.display[(system, code)] = display
        for code, description in icd_names.items():
            self.display[(ICD10CM, code)] = description
        with (root / "synthea-displays.tsv").open(encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f, delimiter="\t"):
                self.display.setdefault((row["system"], row["code"]), row["display"])

    def expansion(self, url: str) -> SourceSet:
        try:
            return self.vsac[url]
        except KeyError:
            raise DefinitionError(f"unknown source value set {url}") from None

    def group(self, name: str) -> list[Key]:
        if name not in self.groups:
            raise DefinitionError(f"icd10cm_codes_by_group.csv: no group {name!r}")
        return [(ICD10CM, code) for code in self.groups[name]]

    def ingredient(self, name: str) -> list[Key]:
        found = [
            (RXNORM, code)
            for code, row in self.drugs.items()
            if name in row["ingredients"].split(";")
        ]
        if not found:
            raise DefinitionError(f"antidepressant csv: no clinical drug with ingredient {name!r}")
        return found

    def drug_sources(self, code: str) -> set[str]:
        """OIDs of the VSAC expansions the csv says a clinical drug comes from."""
        return set(re.findall(r"\(([0-9.]+)\)", self.drugs[code]["vsac_value_sets"]))


def _recommended(node: Any) -> Iterator[tuple[str, str, str]]:
    if isinstance(node, dict):
        if isinstance(node.get("code"), str) and "system" in node and "display" in node:
            yield node["system"], node["code"], node["display"]
        for value in node.values():
            yield from _recommended(value)
    elif isinstance(node, list):
        for value in node:
            yield from _recommended(value)
