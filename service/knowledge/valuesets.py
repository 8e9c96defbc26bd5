"""Read ``cards/valuesets/``: one FHIR R4 ValueSet per file, its concepts enumerated in
``compose.include``; anything wrong stops start-up naming the file and the field."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service.clinical.terminology import Concept, Terminology
from service.knowledge.errors import KnowledgeError
from service.protocol.errors import location

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
            raise KnowledgeError(f"{path}: {location(tuple(err['loc']))}: {err['msg']}") from None
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
    )
