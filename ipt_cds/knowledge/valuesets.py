"""Read ``cards/valuesets/``: one FHIR R4 ValueSet per file, its concepts enumerated in
``compose.include``, or a family of codes given by a ``filter`` (``property: code``,
``op: regex``; see ipt_cds/clinical/terminology.py); anything wrong stops start-up naming the
file and the field."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ipt_cds.clinical.terminology import CodeFilter, Concept, Terminology
from ipt_cds.knowledge.errors import KnowledgeError
from ipt_cds.protocol.errors import location
from ipt_cds.protocol.vocabulary import ICD10CM

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


class _Filter(BaseModel):
    """One FHIR ``compose.include.filter``. Only the regex on the code is supported; the
    regex is matched in full against the normalised code (ICD-10-CM: upper case, no dots)."""

    model_config = ConfigDict(extra="ignore")
    property: Literal["code"]
    op: Literal["regex"]
    value: str = Field(min_length=1)

    @field_validator("value")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regex ({exc}): {value!r}") from None
        return value


class _Include(BaseModel):
    model_config = ConfigDict(extra="ignore")
    system: str = Field(min_length=1)
    concept: list[_Concept] = []
    filter: list[_Filter] = []

    @model_validator(mode="after")
    def _concepts_or_filters(self) -> _Include:
        # FHIR vsd-3: an include enumerates concepts or filters, not both; we need one.
        if bool(self.concept) == bool(self.filter):
            raise ValueError("needs either concept or filter (exactly one of them, not empty)")
        if self.system == ICD10CM:
            for f in self.filter:
                if "\\." in f.value:
                    raise ValueError(
                        f"regex {f.value!r} matches a dot, but ICD-10-CM codes are matched "
                        "without dots (T43.222A as T43222A)"
                    )
        return self


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


def load_terminology(folder: Path) -> Terminology:
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
            message = err["msg"].removeprefix("Value error, ")
            raise KnowledgeError(f"{path}: {location(tuple(err['loc']))}: {message}") from None
        if vs.url in found:
            raise KnowledgeError(f"{path}: duplicate value set url {vs.url}")
        found[vs.url] = vs
    return Terminology(
        {url: vs.title for url, vs in found.items()},
        {
            url: [
                Concept(inc.system, c.code, c.display, c.ordinal)
                for inc in vs.compose.include
                for c in inc.concept
            ]
            for url, vs in found.items()
        },
        {
            url: [
                # Compiled once here; fullmatch in Terminology anchors it at both ends.
                CodeFilter(inc.system, re.compile(f.value))
                for inc in vs.compose.include
                for f in inc.filter
            ]
            for url, vs in found.items()
        },
    )
