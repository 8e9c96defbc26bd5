"""Read ``cards/valuesets/``: one FHIR R4 ValueSet per file, its concepts in
``expansion.contains`` (written by ``ipt-cds valuesets expand`` from the definition in
``compose``) and its code families in ``compose.include`` (a code system whose ``filter``s are
``property: code``, ``op: regex``; see ipt_cds/clinical/terminology.py). The rest of
``compose`` is how the expansion was made and is not read here. Anything wrong stops start-up
naming the file and the field."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ipt_cds.clinical.terminology import CodeFilter, Concept, Terminology
from ipt_cds.knowledge.datafiles import not_utf8
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
    # A tuple: a list default is deep-copied for each of the thousands of codes loaded.
    extension: tuple[_Extension, ...] = ()

    @property
    def ordinal(self) -> float | None:
        return next((e.valueDecimal for e in self.extension if e.url == ORDINAL_VALUE), None)


class _Filter(BaseModel):
    """One FHIR ``compose.include.filter``. The service matches only the regex on the code, in
    full against the normalised code (ICD-10-CM: upper case, no dots); the other kinds
    (an ICD-10-CM group, an RxNorm ingredient, a display regex) were used by the expander."""

    model_config = ConfigDict(extra="ignore")
    property: Literal["code", "display", "group", "ingredient"]
    op: Literal["regex", "="]
    value: str = Field(min_length=1)

    @field_validator("value")
    @classmethod
    def _compiles(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("op") == "regex":
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regex ({exc}): {value!r}") from None
        return value

    # A method, not a property: the field ``property`` shadows the builtin in this class.
    def is_code_regex(self) -> bool:
        return (self.property, self.op) == ("code", "regex")


class _Include(BaseModel):
    """One ``compose.include``. The service reads only the code families: a code system with
    code regexes alone. The other includes say how the expansion was made, which is the
    expander's business (ipt_cds/devtools/valueset_expander.py)."""

    model_config = ConfigDict(extra="ignore")
    system: str | None = None
    valueSet: list[str] = []
    concept: list[_Concept] = []
    filter: list[_Filter] = []

    @property
    def is_family(self) -> bool:
        return not self.valueSet and any(f.is_code_regex() for f in self.filter)

    @model_validator(mode="after")
    def _one_kind(self) -> _Include:
        if self.valueSet:
            return self
        if self.system is None:
            raise ValueError("needs a system or a valueSet")
        if not self.is_family:
            if bool(self.concept) == bool(self.filter):
                raise ValueError("needs either concept or filter (exactly one of them, not empty)")
            if self.filter and not any(f.property in ("group", "ingredient") for f in self.filter):
                raise ValueError("a filter on a code system needs a group or an ingredient")
            return self
        # A family mixed with another filter or with concepts would not mean what the service
        # matches (FHIR vsd-3: concepts or filters, not both).
        if self.concept or not all(f.is_code_regex() for f in self.filter):
            raise ValueError("a code family is code regex filters alone, without concept")
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


class _Contains(_Concept):
    system: str = Field(min_length=1)


class _Expansion(BaseModel):
    model_config = ConfigDict(extra="ignore")
    contains: list[_Contains] = []


class _ValueSetFile(BaseModel):
    model_config = ConfigDict(extra="ignore")
    resourceType: str = Field(pattern="^ValueSet$")
    id: str
    url: str = Field(pattern="^https?://")
    version: str
    title: str
    compose: _Compose
    expansion: _Expansion

    @model_validator(mode="after")
    def _not_empty(self) -> _ValueSetFile:
        if not self.expansion.contains and not any(i.is_family for i in self.compose.include):
            raise ValueError("holds no code: neither expansion.contains nor a code family")
        return self


def load_terminology(folder: Path) -> Terminology:
    found: dict[str, _Read] = {}
    files = sorted(folder.glob("*.json"))
    if not files:
        raise KnowledgeError(f"{folder}: no value set files")
    for path in files:
        try:
            read = _read(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise KnowledgeError(not_utf8(path, exc)) from None
        except json.JSONDecodeError as exc:
            raise KnowledgeError(f"{path}: not valid JSON: {exc}") from None
        except ValidationError as exc:
            err = exc.errors()[0]
            message = err["msg"].removeprefix("Value error, ")
            raise KnowledgeError(f"{path}: {location(tuple(err['loc']))}: {message}") from None
        if read.url in found:
            raise KnowledgeError(f"{path}: duplicate value set url {read.url}")
        found[read.url] = read
    return Terminology(
        {url: read.title for url, read in found.items()},
        {url: list(read.concepts) for url, read in found.items()},
        {url: list(read.families) for url, read in found.items()},
    )


@dataclass(frozen=True)
class _Read:
    url: str
    title: str
    concepts: tuple[Concept, ...]
    families: tuple[CodeFilter, ...]


# Each file's codes by a digest of its text (not the text: a megabyte a process would keep).
_READ: dict[bytes, _Read] = {}
_READ_MOST = 256


def _read(text: str) -> _Read:
    """A value set file's codes, read once per process: tests and site checks load the
    knowledge hundreds of times, and its thousands of codes were a third of each load. An edited
    file is another text, so nothing goes stale."""
    key = hashlib.blake2b(text.encode(), digest_size=16).digest()
    read = _READ.get(key)
    if read is None:
        if len(_READ) >= _READ_MOST:
            _READ.clear()
        read = _READ[key] = _parse(text)
    return read


def _parse(text: str) -> _Read:
    vs = _ValueSetFile.model_validate(json.loads(text))
    return _Read(
        vs.url,
        vs.title,
        tuple(Concept(c.system, c.code, c.display, c.ordinal) for c in vs.expansion.contains),
        tuple(
            # Compiled once here; fullmatch in Terminology anchors it at both ends.
            CodeFilter(inc.system, re.compile(f.value))
            for inc in vs.compose.include
            if inc.system is not None
            if inc.is_family
            for f in inc.filter
        ),
    )
