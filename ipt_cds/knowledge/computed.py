"""The computed facts of ``cards/facts.yaml`` (``computed:``), bound at start-up to the Python
extractors of ipt_cds/clinical/computed/ that set them.

Each entry names a registered extractor and declares, for each fact it sets, what that fact
means and what it reads by kind: ``valuesets`` (aliases under ``valuesets:``), ``extractions``
(names under ``facts:``), ``parameters`` (of parameters.yaml) and ``from_facts``. Start-up holds
the declaration to the data and to the code, and stops with the file's name on any gap: an
extractor that is not registered (or registered and not declared), a fact the code does not set
(or sets undeclared), a name that does not exist, a name the code reads that is not declared,
one declared that it never reads, or a value set alias that no fact reads. The groups run in
the order they are declared, so a fact may be built only from facts read before it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ipt_cds.clinical.fact_library import (
    KINDS,
    Compute,
    Computed,
    DuplicateExtractor,
    Kind,
    Needs,
    Undeclared,
    registry,
)
from ipt_cds.clinical.fact_model import FactSpec
from ipt_cds.clinical.fact_sources import FactSources
from ipt_cds.clinical.facts import Step
from ipt_cds.clinical.terminology import Terminology
from ipt_cds.knowledge.errors import KnowledgeError


class ComputedFact(BaseModel):
    """One fact a Python extractor sets: its meaning, and what it reads."""

    model_config = ConfigDict(extra="forbid")
    meaning: str = Field(min_length=1)
    valuesets: list[str] = []
    extractions: list[str] = []
    parameters: list[str] = []
    from_facts: list[str] = []


class ComputedGroup(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sets: dict[str, ComputedFact] = Field(min_length=1)


@dataclass(frozen=True)
class ComputedFacts:
    """The bound extractors, in declaration order, the types of the facts they set, and what
    each fact reads (the glossary, the evidence pages)."""

    declarations: Mapping[str, ComputedGroup]
    types: Mapping[str, FactSpec]
    steps: tuple[Step, ...]
    sources: FactSources


# The words of the errors, by kind.
_NAMED = {
    "valuesets": "value set alias",
    "extractions": "extraction",
    "parameters": "parameter",
    "from_facts": "fact",
}
_WHERE = {
    "valuesets": " under valuesets",
    "extractions": " under facts",
    "parameters": " in parameters.yaml",
    "from_facts": " set before it",
}


@dataclass(frozen=True)
class _Data:
    """What the names of a declaration may refer to."""

    valuesets: Mapping[str, str]
    extractions: Collection[str]
    params: Mapping[str, Any]
    terms: Terminology


def load_computed(
    path: Path,
    declared: Mapping[str, ComputedGroup],
    read: Collection[str],
    valuesets: Mapping[str, str],
    extractions: Collection[str],
    params: Mapping[str, Any],
    terms: Terminology,
) -> ComputedFacts:
    """Bind each declared group of ``path`` (facts.yaml) to its registered extractor. ``read``:
    the facts set before any group (the extractions with a meaning)."""
    try:
        library = registry()
    except DuplicateExtractor as exc:
        raise KnowledgeError(f"{path}: computed: {exc}") from None
    for name in declared:
        if name not in library:
            raise KnowledgeError(
                f"{path}: computed.{name}: no Python extractor {name!r} "
                f"(there are: {', '.join(sorted(library))})"
            )
    for name, registered in library.items():
        if name not in declared:
            raise KnowledgeError(
                f"{path}: computed: the Python extractor {name!r} ({registered.module}) is not "
                "declared: declare the facts it sets"
            )
    data = _Data(valuesets, extractions, params, terms)
    known = set(read)
    types: dict[str, FactSpec] = {}
    steps: list[Step] = []
    for name, group in declared.items():
        where = f"{path}: computed.{name}"
        extractor = library[name]
        _check_sets(where, group, extractor, known)
        before = set(known)
        known.update(group.sets)
        _check_names(where, group, data, known)
        steps.append((frozenset(group.sets), _bind(where, group, extractor, data, before)))
        for fact, spec in group.sets.items():
            kind = extractor.sets[fact]
            types[fact] = FactSpec(kind.declared, spec.meaning, kind.explained)
    facts = [(fact, spec) for group in declared.values() for fact, spec in group.sets.items()]
    # An alias no fact reads is a code list that decides nothing, which a reviewer would
    # take for one that does.
    read_sets = {alias for _, spec in facts for alias in spec.valuesets}
    for alias in valuesets:
        if alias not in read_sets:
            raise KnowledgeError(f"{path}: valuesets.{alias}: no computed fact reads it")
    sources = FactSources(
        valuesets={f: tuple(s.valuesets) for f, s in facts if s.valuesets},
        extractions={f: tuple(s.extractions) for f, s in facts if s.extractions},
        params={f: tuple(s.parameters) for f, s in facts if s.parameters},
        built_from={f: tuple(s.from_facts) for f, s in facts if s.from_facts},
        aliases=dict(valuesets),
    )
    return ComputedFacts(dict(declared), types, tuple(steps), sources)


def _check_sets(where: str, group: ComputedGroup, extractor: Computed, known: set[str]) -> None:
    for fact in group.sets:
        if fact in known:
            raise KnowledgeError(f"{where}.sets: {fact!r} is already a fact")
        if fact not in extractor.sets:
            raise KnowledgeError(
                f"{where}.sets: {fact!r} is not a fact the extractor sets "
                f"({extractor.module} sets {', '.join(extractor.sets)})"
            )
    for fact in extractor.sets:
        if fact not in group.sets:
            raise KnowledgeError(
                f"{where}.sets: {fact!r}, which the extractor sets ({extractor.module}), "
                "is not declared"
            )


def _check_names(where: str, group: ComputedGroup, data: _Data, known: set[str]) -> None:
    """Every name a fact declares exists: a fact it is built from is read before it, or set by
    the same extractor."""
    exists: dict[Kind, Collection[str]] = {
        "valuesets": data.valuesets,
        "extractions": data.extractions,
        "parameters": data.params,
        "from_facts": known,
    }
    for fact, spec in group.sets.items():
        for kind in KINDS:
            for name in getattr(spec, kind):
                if name not in exists[kind]:
                    raise KnowledgeError(
                        f"{where}.sets.{fact}.{kind}: no {_NAMED[kind]} {name!r}{_WHERE[kind]}"
                    )


def _bind(
    where: str, group: ComputedGroup, extractor: Computed, data: _Data, before: set[str]
) -> Compute:
    """The extractor bound to what its facts declare; what it reads must be what they say."""
    declared: dict[Kind, set[str]] = {kind: set() for kind in KINDS}
    for spec in group.sets.values():
        for kind in KINDS:
            declared[kind].update(getattr(spec, kind))
    # A fact built from another of the same extractor reads it as its own variable: said for the
    # glossary, not asked of the library.
    declared["from_facts"] &= before
    needs = Needs(declared, data.terms, data.valuesets, data.params)
    try:
        compute = extractor.bind(needs)
    except Undeclared as exc:
        raise KnowledgeError(
            f"{where}: {extractor.module} reads the {_NAMED[exc.kind]} {exc.name!r}, which no "
            f"fact of it declares (add it under {exc.kind} of the fact that reads it)"
        ) from None
    needs.sealed = True
    for kind in KINDS:
        unread = sorted(declared[kind] - needs.read[kind])
        if unread:
            raise KnowledgeError(
                f"{where}: {kind}: {extractor.module} does not read the {_NAMED[kind]} "
                f"{unread[0]!r}"
            )
    return compute
