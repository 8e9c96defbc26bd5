"""Value sets, indexed once at start-up: membership is one dict lookup per coding.

Each file in ``cards/valuesets/`` is a FHIR R4 ValueSet that enumerates its concepts in
``compose.include``. Value sets are referred to by canonical URL everywhere else in ``cards/``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import KnowledgeError, location
from .reader import SYSTEM_ALIASES, codings, texts

ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
ORDINAL_VALUE = "http://hl7.org/fhir/StructureDefinition/ordinalValue"


class _Extension(BaseModel):
    model_config = ConfigDict(extra="ignore")
    url: str
    valueDecimal: float | None = None


class _Concept(BaseModel):
    model_config = ConfigDict(extra="ignore")
    code: str = Field(min_length=1)
    display: str | None = None
    extension: list[_Extension] = []

    @property
    def ordinal(self) -> float | None:
        return next((e.valueDecimal for e in self.extension if e.url == ORDINAL_VALUE), None)


class _Include(BaseModel):
    model_config = ConfigDict(extra="ignore")
    system: str = Field(min_length=1)
    concept: list[_Concept] = Field(min_length=1)


class _Compose(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include: list[_Include] = Field(min_length=1)


class _ValueSetFile(BaseModel):
    model_config = ConfigDict(extra="ignore")
    resourceType: str = Field(pattern="^ValueSet$")
    id: str
    url: str = Field(pattern="^https?://")
    version: str
    title: str
    compose: _Compose


@dataclass(frozen=True)
class Match:
    system: str
    code: str
    display: str | None


def normal_code(system: str, code: str) -> str:
    """ICD-10-CM arrives as F33.1, F331 or f33.1; index and look up one form."""
    code = code.strip()
    return code.upper().replace(".", "") if system == ICD10CM else code


class Terminology:
    def __init__(self, valuesets: dict[str, _ValueSetFile]) -> None:
        self.titles = {url: vs.title for url, vs in valuesets.items()}
        self._index: dict[tuple[str, str], set[str]] = {}
        self._displays: dict[str, list[str]] = {}
        self._names: dict[tuple[str, str], str] = {}
        self._ordinals: dict[str, dict[str, float | None]] = {}
        for url, vs in valuesets.items():
            for inc in vs.compose.include:
                for concept in inc.concept:
                    key = (inc.system, normal_code(inc.system, concept.code))
                    self._index.setdefault(key, set()).add(url)
                    if concept.display:
                        self._displays.setdefault(url, []).append(concept.display)
                        self._names.setdefault(key, concept.display)
                    self._ordinals.setdefault(url, {})[concept.code] = concept.ordinal

    @classmethod
    def load(cls, folder: Path) -> Terminology:
        found: dict[str, _ValueSetFile] = {}
        files = sorted(folder.glob("*.json"))
        if not files:
            raise KnowledgeError(f"{folder}: no value set files")
        for path in files:
            try:
                vs = _ValueSetFile.model_validate(json.loads(path.read_text(encoding="utf-8")))
            except json.JSONDecodeError as exc:
                raise KnowledgeError(f"{path}: not valid JSON: {exc}") from None
            except ValidationError as exc:
                err = exc.errors()[0]
                raise KnowledgeError(
                    f"{path}: {location(tuple(err['loc']))}: {err['msg']}"
                ) from None
            if vs.url in found:
                raise KnowledgeError(f"{path}: duplicate value set url {vs.url}")
            found[vs.url] = vs
        return cls(found)

    def __contains__(self, url: object) -> bool:
        return url in self.titles

    def ordinals(self, url: str) -> dict[str, float | None]:
        """Each code of the value set with its ordinalValue (a score), None where it has none."""
        return dict(self._ordinals.get(url, {}))

    def contains(self, url: str, system: str, code: str) -> bool:
        return url in self._index.get((system, normal_code(system, code)), ())

    def match(self, url: str, concept: Any) -> Match | None:
        """The first coding of a CodeableConcept (or list of them) that is in the value set."""
        for system, code, display in codings(concept):
            if self.contains(url, system, code):
                # Many EHR codings carry no display; the value set's name for the code reads better.
                return Match(
                    system, code, display or self._names.get((system, normal_code(system, code)))
                )
        return None

    def memberships(self, concept: Any) -> dict[str, Match]:
        """Every value set any coding of the concept is in, with the first coding that is."""
        # The hot loop of every call (each coded resource passes here once): written out
        # rather than through reader.codings, which costs twice as much.
        found: dict[str, Match] = {}
        for cc in concept if isinstance(concept, list) else (concept,):
            if not isinstance(cc, dict):
                continue
            coding_list = cc.get("coding")
            if isinstance(coding_list, dict):
                coding_list = [coding_list]
            elif not isinstance(coding_list, list):
                continue
            for coding in coding_list:
                if not isinstance(coding, dict):
                    continue
                system, code = coding.get("system"), coding.get("code")
                if not isinstance(system, str) or not isinstance(code, str | int):
                    continue
                system = SYSTEM_ALIASES.get(system, system)
                code = str(code).strip()
                key = (system, normal_code(system, code))
                urls = self._index.get(key)
                if not urls:
                    continue
                display = coding.get("display")
                name = display if isinstance(display, str) else self._names.get(key)
                for url in urls:
                    if url not in found:
                        found[url] = Match(system, code, name)
        return found

    def displays(self, url: str) -> list[str]:
        return self._displays.get(url, [])


class NameMatcher:
    """Finds value-set display names as whole words in free text (drug names, therapy names)."""

    def __init__(self, names: Iterable[str]) -> None:
        words = sorted({n.strip().lower() for n in names if n.strip()}, key=len, reverse=True)
        self._pattern = (
            re.compile(r"\b(" + "|".join(re.escape(w) for w in words) + r")\b") if words else None
        )

    def find(self, concept: Any) -> str | None:
        if self._pattern is None:
            return None
        for text in texts(concept):
            found = self._pattern.search(text.lower())
            if found:
                return found.group(1)
        return None
