"""The library of named Python extractors behind the computed facts of ``cards/facts.yaml``.

A fact with real logic (the current episode, severity, suicidal ideation, the plan) is set by a
function of a module of ``ipt_cds/clinical/computed/``, registered under a name with the facts it
sets and their types (``computes``): all the Python says about itself. What those facts read
(value sets by alias, extractions, parameters, other facts) and what they mean is declared in
``cards/facts.yaml`` under ``computed:``, for the clinical reviewer and the glossary.

The two are held together at start-up, not on a call: the function is *bound* once, handed a
``Needs`` that answers only the names its declaration gives. Every name the code reads it
resolves there and then (a parameter's value, a key to a value set, an extraction or a
fact); a name not declared raises ``Undeclared``, and ipt_cds/knowledge/computed.py also refuses
a declared name the code never asked for. The per-call function bound reads through those keys
(``Call``), so it cannot reach a name start-up did not check.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Literal

from ipt_cds.clinical.extractors import Coded, Evidence, Scope
from ipt_cds.clinical.fact_model import Facts
from ipt_cds.clinical.record import PatientRecord
from ipt_cds.clinical.terminology import Match, Terminology
from ipt_cds.protocol.models import Resource

# What a computed fact may read, by kind: the keys of its declaration in cards/facts.yaml.
Kind = Literal["valuesets", "extractions", "parameters", "from_facts"]
KINDS: tuple[Kind, ...] = ("valuesets", "extractions", "parameters", "from_facts")


@dataclass(frozen=True)
class FactType:
    """A fact's type as the Python sets it (a typing form: ``Severity | None``), and whether it
    is set with its evidence (``why.NAME`` in a template). Its meaning is in cards/facts.yaml."""

    declared: object
    explained: bool = False


def typed(declared: object, *, explained: bool = False) -> FactType:
    return FactType(declared, explained)


@dataclass(frozen=True)
class ValueSetKey:
    """The key, got at start-up, to a value set a fact declares: what ``Call.coded`` and
    ``Codes`` take, so that an extractor reads no value set by a URL of its own."""

    url: str


@dataclass(frozen=True)
class Extraction:
    """The key, got at start-up, to an extraction's evidence on a call."""

    name: str


@dataclass(frozen=True)
class FactKey:
    """The key, got at start-up, to the value of a fact set before."""

    name: str


class DuplicateExtractor(ValueError):
    """Two modules register a Python extractor under the same name."""


class Undeclared(LookupError):
    """The code reads a name that its declaration in cards/facts.yaml does not give."""

    def __init__(self, kind: Kind, name: str) -> None:
        super().__init__(kind, name)
        self.kind, self.name = kind, name


class Codes:
    """The terminology as an extractor sees it: membership in the value sets it holds keys to."""

    __slots__ = ("_terms",)

    def __init__(self, terms: Terminology) -> None:
        self._terms = terms

    def match(self, key: ValueSetKey, concept: Any) -> Match | None:
        """The coding of ``concept`` (a CodeableConcept) in the value set, if any."""
        return self._terms.match(key.url, concept)

    def contains(self, key: ValueSetKey, system: str, code: str) -> bool:
        return self._terms.contains(key.url, system, code)


@dataclass
class Needs:
    """What one extractor may read, as its declaration says: answered at start-up only."""

    declared: Mapping[Kind, Collection[str]]
    # Private: the terminology is read through codes, a value set or a parameter through
    # valueset() and parameter(), which hold the read to the declaration.
    _terms: Terminology
    _valuesets: Mapping[str, str]
    _params: Mapping[str, Any]
    # What the code asked for, by kind: start-up refuses a declared name left out of it.
    read: dict[Kind, set[str]] = field(default_factory=lambda: {k: set() for k in KINDS})
    sealed: bool = False

    @property
    def codes(self) -> Codes:
        return Codes(self._terms)

    def valueset(self, alias: str) -> ValueSetKey:
        """A value set of facts.yaml's ``valuesets``, by its alias."""
        self._need("valuesets", alias)
        return ValueSetKey(self._valuesets[alias])

    def extraction(self, name: str) -> Extraction:
        self._need("extractions", name)
        return Extraction(name)

    def parameter(self, name: str) -> Any:
        self._need("parameters", name)
        return self._params[name]

    def days(self, name: str) -> timedelta:
        """A window of parameters.yaml, in days."""
        return timedelta(days=int(self.parameter(name)))

    def fact(self, name: str) -> FactKey:
        self._need("from_facts", name)
        return FactKey(name)

    def _need(self, kind: Kind, name: str) -> None:
        # Asked for on a call, a name would go unchecked until that call: only binding may ask.
        if self.sealed:
            raise RuntimeError(f"{kind} {name!r} asked for after start-up: ask while binding")
        if name not in self.declared[kind]:
            raise Undeclared(kind, name)
        self.read[kind].add(name)


class Call:
    """What a bound extractor reads and sets on one call: the record (through the scope of the
    generic extractors, which indexes it by value set once), the extractions and facts it holds
    keys to, and the facts it registered, which it alone sets."""

    __slots__ = ("_facts", "_raw", "_scope", "_sets", "hook")

    def __init__(
        self,
        scope: Scope,
        raw: Mapping[str, list[Evidence]],
        facts: Facts,
        hook: str,
        sets: Collection[str],
    ) -> None:
        self._scope, self._raw, self._facts, self._sets = scope, raw, facts, sets
        self.hook = hook

    @property
    def record(self) -> PatientRecord:
        return self._scope.record

    @property
    def today(self) -> date:
        return self._scope.today

    def coded(self, kind: str, key: ValueSetKey) -> list[Coded]:
        """The resources of ``kind`` coded in the value set, with the coding that matched."""
        return self._scope.coded(kind, key.url)

    def skip(self, resource: Resource, error: Exception) -> None:
        self._scope.skip(resource, error)

    def evidence(self, key: Extraction) -> list[Evidence]:
        return self._raw[key.name]

    def fact(self, key: FactKey) -> Any:
        return self._facts.values[key.name]

    def set(self, name: str, value: Any, evidence: list[Evidence] | None = None) -> None:
        if name not in self._sets:
            raise KeyError(f"{name!r} is not a fact this extractor registered")
        self._facts.set(name, value, evidence)


Compute = Callable[[Call], None]
Bind = Callable[[Needs], Compute]


@dataclass(frozen=True)
class Computed:
    name: str
    sets: Mapping[str, FactType]
    bind: Bind
    # Where it is written, for the errors that name it.
    module: str


REGISTRY: dict[str, Computed] = {}


def computes(name: str, sets: Mapping[str, FactType]) -> Callable[[Bind], Bind]:
    """Register the decorated function as the Python extractor ``name``, setting ``sets``."""

    def register(bind: Bind) -> Bind:
        known = REGISTRY.get(name)
        if known is not None and known.module != bind.__module__:
            raise DuplicateExtractor(
                f"two Python extractors named {name!r}: {known.module} and {bind.__module__}"
            )
        REGISTRY[name] = Computed(name, dict(sets), bind, bind.__module__)
        return bind

    return register


def registry() -> Mapping[str, Computed]:
    """Every registered extractor. The modules of ipt_cds/clinical/computed/ are imported here,
    each registering its own: a new one is its module and its declaration, nothing else."""
    from ipt_cds.clinical import computed

    for module in pkgutil.iter_modules(computed.__path__):
        # A file no import could name ("episode copy.py", an editor's backup) is not a module
        # of the library: importing it would register its extractors a second time.
        if module.name.isidentifier():
            importlib.import_module(f"{computed.__name__}.{module.name}")
    return REGISTRY
