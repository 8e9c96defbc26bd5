"""``ipt-cds valuesets expand``: compute the ``expansion`` of every value set of
``cards/valuesets/`` from its ``compose`` (the readable definition) and the vendored sources of
``cards/valuesets/sources/`` (ipt_cds/devtools/valueset_sources.py).

``compose.include`` entries are of three kinds:

* a source value set by canonical URL (``valueSet``: a VSAC expansion, or one of ours, expanded
  first), narrowed by ``system``, ``concept`` (only these codes; each must be in the source)
  and ``filter`` (``display`` ``regex``: searched case-insensitively in the display; ``code``
  ``regex``: matched in full against the normalised code);
* a code system with filters: ICD-10-CM ``group`` ``=`` (a group of the ICD-10-CM csv), RxNorm
  ``ingredient`` ``=`` (the clinical drugs of the antidepressant csv that contain it), and the
  code families, only ``code`` ``regex`` filters, which are not expanded: the service matches
  them at run time (ipt_cds/clinical/terminology.py);
* explicit concepts (``system`` and ``concept``, each with its display).

``compose.exclude`` takes the same forms, and one more: a code system with display filters
alone (``system`` and ``filter``), tried on the codes the includes took in. Each exclusion
carries its reason in the extension ``EXCLUSION_REASON``. The result is the union of the
includes less the excludes (FHIR). Each value set's ``source-valueset`` extensions name the VSAC
expansions its codes came from.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ipt_cds.clinical.terminology import normal_code
from ipt_cds.devtools.valueset_sources import ICD10CM, DefinitionError, Key, Sources

FOLDER = Path(__file__).resolve().parents[2] / "cards" / "valuesets"
OURS = "https://fhir.ipt-cds.org/ValueSet/"
SOURCE_EXTENSION = "https://fhir.ipt-cds.org/StructureDefinition/source-valueset"
EXCLUSION_REASON = "https://fhir.ipt-cds.org/StructureDefinition/exclusion-reason"
ORDINAL = "http://hl7.org/fhir/StructureDefinition/ordinalValue"


@dataclass
class Member:
    display: str
    ordinal: Any = None
    sources: set[str] = field(default_factory=set)  # OIDs of the VSAC expansions it came from


Members = dict[Key, Member]


def is_family(part: dict[str, Any]) -> bool:
    """An include the service matches at run time: a code system with only code regexes."""
    filters = part.get("filter", [])
    return (
        "valueSet" not in part
        and bool(filters)
        and all((f.get("property"), f.get("op")) == ("code", "regex") for f in filters)
    )


class Expander:
    def __init__(self, sources: Sources, definitions: dict[str, dict[str, Any]]) -> None:
        self.sources = sources
        self.definitions = definitions  # by canonical URL
        self.done: dict[str, Members] = {}

    def expand_all(self) -> dict[str, Members]:
        for url in sorted(self.definitions):
            self._expand(url, ())
        return self.done

    def _expand(self, url: str, path: tuple[str, ...]) -> Members:
        if url in self.done:
            return self.done[url]
        if url in path:
            cycle = " -> ".join((*path[path.index(url) :], url))
            raise DefinitionError(f"value sets include each other: {cycle}")
        compose = self.definitions[url].get("compose", {})
        where = f"{url}: compose"
        found: Members = {}
        includes = compose.get("include", [])
        families = [i for i, part in enumerate(includes) if is_family(part)]
        if families and compose.get("exclude"):
            # The service matches a family at run time and applies no exclusion to it.
            raise DefinitionError(
                f"{where}.include[{families[0]}]: a code family in a value set with exclusions"
            )
        for i, part in enumerate(includes):
            mixed = "valueSet" not in part and any(
                (f.get("property"), f.get("op")) == ("code", "regex")
                for f in part.get("filter", [])
            )
            if mixed and not is_family(part):
                # The service reads any code regex of its own as a family: alone, or not at all.
                raise DefinitionError(f"{where}.include[{i}]: a code regex with other filters")
            if is_family(part):
                _check_family(part, f"{where}.include[{i}]")
                continue
            # Explicit displays win over a source's display: they are the definition's choice.
            for key, member in self._members(part, (*path, url), f"{where}.include[{i}]").items():
                held = found.get(key)
                if held is None or ("valueSet" not in part and "filter" not in part):
                    found[key] = member if held is None else _merged(member, held)
                else:
                    held.sources |= member.sources
        for i, part in enumerate(compose.get("exclude", [])):
            here = f"{where}.exclude[{i}]"
            if not any(e.get("url") == EXCLUSION_REASON for e in part.get("extension", [])):
                raise DefinitionError(f"{here}: no {EXCLUSION_REASON} extension")
            if _within_system(part):
                # 'Codes of this system whose display says ...': tried on what was taken in.
                system = part["system"]
                gone = [
                    k for k, m in found.items() if k[0] == system and _all_pass(part, k, m, here)
                ]
            else:
                gone = list(self._members(part, (*path, url), here))
            for key in gone:
                found.pop(key, None)
        self.done[url] = found
        return found

    def _members(self, part: dict[str, Any], path: tuple[str, ...], where: str) -> Members:
        system = part.get("system")
        filters = part.get("filter", [])
        listed = {c["code"]: c for c in part.get("concept", [])}
        if "valueSet" in part:
            urls: list[str] = part["valueSet"]
            candidates = self._source(urls[0], path, where)
            for other in urls[1:]:  # several value sets: their intersection (FHIR)
                keep = self._source(other, path, where)
                candidates = {k: m for k, m in candidates.items() if k in keep}
        elif system is None:
            raise DefinitionError(f"{where}: needs valueSet or system")
        elif listed:
            candidates = {}
            for code, c in listed.items():
                display = c.get("display") or self.sources.display.get((system, code))
                if not display:
                    raise DefinitionError(f"{where}: no display for {system}|{code}")
                candidates[(system, code)] = Member(display, _ordinal(c))
            return candidates
        else:
            candidates = self._code_system(system, filters, where)
            filters = [f for f in filters if f["property"] not in ("group", "ingredient")]
        if system is not None:
            candidates = {k: m for k, m in candidates.items() if k[0] == system}
        if listed:
            missing = sorted(set(listed) - {code for _s, code in candidates})
            if missing:
                raise DefinitionError(f"{where}: {missing} not in {part.get('valueSet')}")
            candidates = {k: m for k, m in candidates.items() if k[1] in listed}
        for f in filters:
            candidates = {k: m for k, m in candidates.items() if _passes(f, k, m, where)}
        # A VSAC set or csv filter that yields nothing is a mistake; a filter on one of our own
        # sets may rightly find nothing there (no psychotic depression NOS, say).
        if not candidates and not any(u.startswith(OURS) for u in part.get("valueSet", [])):
            raise DefinitionError(f"{where}: takes in no code")
        return candidates

    def _source(self, url: str, path: tuple[str, ...], where: str) -> Members:
        if url.startswith(OURS):
            if url not in self.definitions:
                raise DefinitionError(f"{where}: unknown value set {url}")
            own = self._expand(url, path)
            return {k: Member(m.display, m.ordinal, set(m.sources)) for k, m in own.items()}
        try:
            expansion = self.sources.expansion(url)
        except DefinitionError as exc:
            raise DefinitionError(f"{where}: {exc}") from None
        return {k: Member(self.sources.display[k], None, {expansion.oid}) for k in expansion.codes}

    def _code_system(self, system: str, filters: list[dict[str, Any]], where: str) -> Members:
        """The codes a ``group`` or ``ingredient`` filter picks out of the csv sources."""
        picked: list[Key] | None = None
        for f in filters:
            if (f["property"], f["op"]) == ("group", "=") and system == ICD10CM:
                codes = self.sources.group(f["value"])
            elif (f["property"], f["op"]) == ("ingredient", "="):
                codes = self.sources.ingredient(f["value"])
            else:
                continue
            picked = codes if picked is None else [k for k in picked if k in codes]
        if picked is None:
            raise DefinitionError(f"{where}: a code system include needs a group or ingredient")
        found = {}
        for key in picked:
            origin = self.sources.drug_sources(key[1]) if key[1] in self.sources.drugs else set()
            found[key] = Member(self.sources.display[key], None, origin)
        return found


def _within_system(part: dict[str, Any]) -> bool:
    return (
        "valueSet" not in part
        and "concept" not in part
        and "system" in part
        and bool(part.get("filter"))
        and all(f.get("property") == "display" for f in part["filter"])
    )


def _all_pass(part: dict[str, Any], key: Key, member: Member, where: str) -> bool:
    return all(_passes(f, key, member, where) for f in part["filter"])


def _merged(first: Member, second: Member) -> Member:
    return Member(first.display, first.ordinal, first.sources | second.sources)


def _ordinal(concept: dict[str, Any]) -> Any:
    return next(
        (e["valueDecimal"] for e in concept.get("extension", []) if e["url"] == ORDINAL), None
    )


def _passes(f: dict[str, Any], key: Key, member: Member, where: str) -> bool:
    rule = (f.get("property"), f.get("op"))
    if rule == ("display", "regex"):
        return re.search(f["value"], member.display, re.IGNORECASE) is not None
    if rule == ("code", "regex"):
        return re.fullmatch(f["value"], normal_code(*key)) is not None
    raise DefinitionError(f"{where}: filter {f.get('property')} {f.get('op')} not supported here")


def _check_family(part: dict[str, Any], where: str) -> None:
    for f in part["filter"]:
        try:
            re.compile(f["value"])
        except re.error as exc:
            raise DefinitionError(f"{where}: not a valid regex ({exc})") from None
        if part.get("system") == ICD10CM and "\\." in f["value"]:
            raise DefinitionError(f"{where}: ICD-10-CM codes are matched without dots")


def _code_order(key: Key) -> tuple[str, int, int, str]:
    system, code = key
    return (system, 0, int(code), code) if code.isdigit() else (system, 1, 0, code)


def expanded(resource: dict[str, Any], members: Members) -> dict[str, Any]:
    """The resource with its expansion and source-valueset extensions (re)computed."""
    contains = []
    for key in sorted(members, key=_code_order):
        member = members[key]
        entry: dict[str, Any] = {"system": key[0], "code": key[1], "display": member.display}
        if member.ordinal is not None:
            entry["extension"] = [{"url": ORDINAL, "valueDecimal": member.ordinal}]
        contains.append(entry)
    out = dict(resource)
    used = sorted({oid for m in members.values() for oid in m.sources})
    others = [e for e in resource.get("extension", []) if e.get("url") != SOURCE_EXTENSION]
    provenance = [{"url": SOURCE_EXTENSION, "valueUri": f"urn:oid:{oid}"} for oid in used]
    out.pop("extension", None)
    if others or provenance:
        out["extension"] = others + provenance
    out["expansion"] = {
        "identifier": f"{resource['url']}/expansion/{resource['version']}",
        "timestamp": resource["date"],
        "total": len(contains),
        "contains": contains,
    }
    return out


def render(resource: dict[str, Any]) -> str:
    return json.dumps(resource, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def expand_folder(folder: Path, sources: Path) -> dict[Path, str]:
    """Every value set file of the folder, as it should read with its expansion."""
    resources: dict[Path, dict[str, Any]] = {}
    for path in sorted(folder.glob("*.json")):
        try:
            resources[path] = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DefinitionError(f"{path}: not valid JSON: {exc}") from None
    by_url = {r["url"]: r for r in resources.values()}
    expander = Expander(Sources(sources), by_url)
    members = expander.expand_all()
    return {path: render(expanded(r, members[r["url"]])) for path, r in resources.items()}


def run(folder: Path, sources: Path, out: TextIO, *, check: bool = False) -> int:
    """Write the expansions (or, with ``check``, say which are stale and return 1)."""
    try:
        texts = expand_folder(folder, sources)
    except DefinitionError as exc:
        out.write(f"error: {exc}\n")
        return 2
    stale = [p for p, text in texts.items() if p.read_text(encoding="utf-8") != text]
    if check:
        for path in stale:
            out.write(f"stale expansion: {path}\n")
        return 1 if stale else 0
    for path in stale:
        path.write_text(texts[path], encoding="utf-8")
    out.write(f"{len(texts)} value sets expanded, {len(stale)} written\n")
    return 0
