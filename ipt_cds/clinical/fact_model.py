"""What a hook call knows about the patient: the facts, by name, with why each holds.

Each fact has a ``FactSpec``: its type and meaning. A computed fact's type is registered with
its Python extractor (ipt_cds/clinical/computed/), its meaning declared in cards/facts.yaml; an
extraction with a meaning is True or False; a derived fact's type comes from its declaration in
cards/derived.yaml. ipt_cds/knowledge/ checks every rule and template against them at start-up
(a misspelt attribute or a word outside a fact's values stops the service), and
tests/test_fact_model.py checks that the computed values honour them.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args, get_origin

from ipt_cds.clinical.extractors import Evidence

# The closed vocabularies of the string-valued facts: mypy holds the extractors to them, and the
# rule compiler refuses a literal outside them (``severity == 'moderat'``).
Severity = Literal["minimal", "mild", "moderate", "moderately-severe", "severe"]
Episode = Literal["single", "recurrent"]
Remission = Literal["full", "partial", "unspecified"]
SuicidalIdeation = Literal["low", "high", "history"]
# What set the suicidal-ideation level: the PHQ-9 item 9 answer, or a diagnosis of ideation, of
# a suicide attempt or self-harm, or an 'at risk for suicide' finding.
SuicideSource = Literal["item9", "ideation", "attempt", "at-risk"]
Domain = Literal["sleep", "energy", "appetite", "libido"]
Trait = Literal["avoidant", "obsessive-compulsive"]
FocusArea = Literal["grief", "role-transition", "role-dispute", "interpersonal-deficits"]

SEVERITIES: tuple[Severity, ...] = get_args(Severity)


@dataclass(frozen=True)
class Reading:
    """An observation value for templates: ``PHQ-9 {{ phq9.value }} on {{ phq9.date }}``."""

    value: int | float
    date: str
    ref: str
    answer: str | None = None


@dataclass(frozen=True, eq=False)
class FactSpec:
    """One fact's declared type (a typing form such as ``int | None``, ``Severity | None``,
    ``list[Domain]`` or ``Reading | None``) and what it means, in a clinician's words.

    ``explained``: the call keeps the evidence of the fact when it holds, so templates may
    name ``why.NAME`` (and actions its references); the other facts never have a why.

    The rest is derived from the type: the Python types a value may have (None aside), whether
    it may be None, the closed set of words a string (or a list's items) is drawn from, and
    the attributes rules may read with ``fact.attribute``.
    """

    declared: object
    meaning: str = ""
    explained: bool = False
    kinds: tuple[type, ...] = field(init=False)
    optional: bool = field(init=False)
    values: tuple[str, ...] | None = field(init=False)
    attributes: Mapping[str, FactSpec] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        members = list(get_args(self.declared)) if _is_union(self.declared) else [self.declared]
        optional = type(None) in members
        members = [m for m in members if m is not type(None)]
        kinds: list[type] = []
        values: tuple[str, ...] | None = None
        for m in members:
            if get_origin(m) is Literal:
                kinds.append(str)
                values = get_args(m)
            elif get_origin(m) is list:
                # Lists of strings only: rules test them with ``'word' in fact``.
                (inner,) = get_args(m)
                if inner is not str and get_origin(inner) is not Literal:
                    raise TypeError(f"fact type {self.declared!r}: lists hold strings")
                kinds.append(list)
                values = get_args(inner) if inner is not str else None
            elif isinstance(m, type):
                kinds.append(m)
            elif isinstance(get_origin(m), type):
                kinds.append(typing.cast(type, get_origin(m)))
            else:
                raise TypeError(f"fact type {self.declared!r}: {m!r} is not supported")
        if len(kinds) > 1 and (values is not None or list in kinds):
            raise TypeError(f"fact type {self.declared!r}: a closed set or a list stands alone")
        attributes: dict[str, FactSpec] = {}
        if len(kinds) == 1 and dataclasses.is_dataclass(kinds[0]):
            hints = typing.get_type_hints(kinds[0])
            for f in dataclasses.fields(kinds[0]):
                attributes[f.name] = FactSpec(hints[f.name])
        # Derived once, at import; the dataclass stays frozen for everyone else.
        put = object.__setattr__
        put(self, "kinds", tuple(kinds))
        put(self, "optional", optional)
        put(self, "values", values)
        put(self, "attributes", attributes)

    def describe(self) -> str:
        """The type in words, for error messages: ``a whole number or None``."""
        words = ", ".join(repr(v) for v in self.values or ())
        if self.kinds == (list,):
            text = f"a list drawn from {words}" if self.values else "a list of strings"
        elif self.values is not None:
            text = f"one of {words}"
        elif self.kinds == (int, float):
            text = "a number"
        else:
            text = " or ".join(_KIND_WORDS.get(k, f"a {k.__name__}") for k in self.kinds)
        return f"{text} or None" if self.optional else text

    def or_none(self) -> FactSpec:
        """This type, or None: ``phq9.value`` is None when there is no ``phq9``."""
        return (
            self
            if self.optional
            else FactSpec(typing.cast(Any, self.declared) | None, self.meaning, self.explained)
        )

    def accepts(self, value: Any) -> bool:
        """Does ``value`` honour the declared type? For tests: a call never pays for this."""
        if value is None:
            return self.optional
        if isinstance(value, list):
            return list in self.kinds and all(
                isinstance(v, str) and (self.values is None or v in self.values) for v in value
            )
        if self.values is not None:
            return isinstance(value, str) and value in self.values
        if isinstance(value, bool):
            return bool in self.kinds
        return any(isinstance(value, k) for k in self.kinds if k is not bool)


_KIND_WORDS = {
    bool: "True or False",
    int: "a whole number",
    float: "a number",
    str: "a string",
    Evidence: "an Evidence",
}


def _is_union(tp: object) -> bool:
    return get_origin(tp) in (typing.Union, types.UnionType)


class Why(Mapping[str, str]):
    """Why each explained fact holds, in a card's words: its evidence described, written out
    when a card or a sentence first reads it (most calls read a few of the dozens kept)."""

    def __init__(self, found: dict[str, list[Evidence]]) -> None:
        self._found = found
        self._said: dict[str, str] = {}

    def __getitem__(self, name: str) -> str:
        said = self._said.get(name)
        if said is None:
            evidence = self._found[name]
            said = self._said[name] = "; ".join(dict.fromkeys(e.describe() for e in evidence))
        return said

    def __iter__(self) -> Iterator[str]:
        return iter(self._found)

    def __len__(self) -> int:
        return len(self._found)

    def __contains__(self, name: object) -> bool:
        return name in self._found

    def forget(self, name: str) -> None:
        """The fact was set again: its words are written anew when next read."""
        self._said.pop(name, None)


@dataclass
class Facts:
    params: dict[str, Any] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    refs: dict[str, list[str]] = field(default_factory=dict)
    # The evidence itself, for what a suggested order cites as its reason.
    found: dict[str, list[Evidence]] = field(default_factory=dict)
    why: Why = field(init=False)

    def __post_init__(self) -> None:
        self.why = Why(self.found)

    def set(self, name: str, value: Any, evidence: list[Evidence] | None = None) -> None:
        self.values[name] = value
        if evidence:
            self.found[name] = evidence
            self.refs[name] = sorted({e.ref for e in evidence})
            self.why.forget(name)

    def __getitem__(self, name: str) -> Any:
        return self.values[name]
