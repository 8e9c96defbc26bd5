"""The derived facts of ``cards/derived.yaml``: each an expression over the facts before it,
compiled and checked once at start-up into steps the fact book runs after the facts read from
the record (``ipt_cds/clinical/facts.py``).

Three kinds (the file's header says it for a clinician): ``is`` (True or False), ``says`` (the
sentences whose conditions hold) and ``first_of`` (an ordered case table that also gives the
fact ``NAME_reasons``). The types they give the fact model come from the declaration, so a
rule that compares ``verdict == 'suitabel'`` stops start-up like any other misspelt word.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, model_validator

from ipt_cds.clinical.fact_model import Facts, FactSpec
from ipt_cds.knowledge.datafiles import parse
from ipt_cds.knowledge.errors import KnowledgeError
from ipt_cds.knowledge.expressions import (
    Compiled,
    ExpressionError,
    compile_expression,
    expression_names,
)
from ipt_cds.knowledge.templates import NamedTemplate, compile_template, template_names

Step = Callable[[Facts], None]
Text = Callable[[Facts], str]
NO_RULES: frozenset[str] = frozenset()


class Sentence(BaseModel):
    model_config = ConfigDict(extra="forbid")
    when: str | None = None
    says: str | None = None
    each: str | None = None

    @model_validator(mode="after")
    def _one_text(self) -> Sentence:
        if (self.says is None) == (self.each is None):
            raise ValueError("give either says (a sentence) or each (a list fact)")
        return self


class Case(BaseModel):
    model_config = ConfigDict(extra="forbid")
    when: str
    then: str
    reasons: list[Sentence] = []


class Derivation(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    meaning: str = Field(min_length=1)
    is_: str | None = Field(None, alias="is")
    says: list[Sentence] | None = None
    first_of: list[Case] | None = Field(None, min_length=1)
    reasons_meaning: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Derivation:
        kinds = [k for k in (self.is_, self.says, self.first_of) if k is not None]
        if len(kinds) != 1:
            raise ValueError("give exactly one of is, says, first_of")
        if self.reasons_meaning is not None and self.first_of is None:
            raise ValueError("reasons_meaning goes with first_of")
        return self


class _DerivedFile(RootModel[dict[str, Derivation]]):
    pass


@dataclass(frozen=True)
class DerivedFacts:
    """The compiled derivations, in file order, and what each reads (for the evidence pages)."""

    declarations: Mapping[str, Derivation]
    # The type and meaning of each fact they give, NAME_reasons included.
    types: Mapping[str, FactSpec]
    steps: tuple[Step, ...]
    facts_read: Mapping[str, tuple[str, ...]]
    params_read: Mapping[str, tuple[str, ...]]

    def apply(self, f: Facts) -> None:
        for step in self.steps:
            step(f)


def load_derived(
    path: Path, read: Mapping[str, FactSpec], params: Mapping[str, Any]
) -> DerivedFacts:
    """Compile ``path`` over the facts read from the record (``read``) and the parameters."""
    declarations = parse(path, _DerivedFile).root
    known = dict(read)
    types: dict[str, FactSpec] = {}
    steps: list[Step] = []
    facts_read: dict[str, tuple[str, ...]] = {}
    params_read: dict[str, tuple[str, ...]] = {}
    for name, d in declarations.items():
        given = [name, f"{name}_reasons"] if d.first_of is not None else [name]
        for fact in given:
            if fact in known:
                raise KnowledgeError(f"{path}: {name}: {fact!r} is already a fact")
        facts, named = _names(d)
        later = sorted(f for f in facts if f in declarations and f not in known)
        if later:
            raise KnowledgeError(
                f"{path}: {name}: names {later[0]!r}, which is declared below it (a derived "
                "fact names only facts read from the record and those above it)"
            )
        try:
            step, kind = _compile(name, d, known, params)
        except ExpressionError as exc:
            raise KnowledgeError(f"{path}: {name}: {exc}") from None
        steps.append(step)
        types[name] = known[name] = FactSpec(kind, d.meaning)
        if d.first_of is not None:
            reasons = d.reasons_meaning or f"why the {name}, in words"
            types[given[1]] = known[given[1]] = FactSpec(list[str], reasons)
        for fact in given:
            facts_read[fact] = tuple(sorted(facts & known.keys()))
            params_read[fact] = tuple(sorted(named))
    return DerivedFacts(declarations, types, tuple(steps), facts_read, params_read)


def _compile(
    name: str, d: Derivation, known: Mapping[str, FactSpec], params: Mapping[str, Any]
) -> tuple[Step, object]:
    def when(text: str | None, where: str) -> Compiled | None:
        if text is None:
            return None
        try:
            return compile_expression(text, known, params, [])[0]
        except ExpressionError as exc:
            raise ExpressionError(f"{where}: {exc}") from None

    if d.is_ is not None:
        test = when(d.is_, "is")
        assert test is not None
        return _boolean(name, test), bool
    if d.says is not None:
        sentences = _sentences(d.says, "says", known, params, when)
        return _listing(name, sentences), list[str]
    assert d.first_of is not None
    if d.first_of[-1].when.strip() != "True":
        raise ExpressionError("first_of: the last case needs when: 'True', so one always holds")
    for i, case in enumerate(d.first_of[:-1]):
        if case.when.strip() == "True":
            raise ExpressionError(f"first_of[{i}]: 'True' always holds: the cases after it never")
    cases = []
    for i, case in enumerate(d.first_of):
        test = when(case.when, f"first_of[{i}].when")
        assert test is not None
        sentences = _sentences(case.reasons, f"first_of[{i}].reasons", known, params, when)
        cases.append((test, case.then, sentences))
    values = tuple(dict.fromkeys(case.then for case in d.first_of))
    return _first_of(name, cases), Literal[values]


Sentences = list[tuple[Compiled | None, Text | None, str | None]]


def _sentences(
    given: list[Sentence],
    where: str,
    known: Mapping[str, FactSpec],
    params: Mapping[str, Any],
    when: Callable[[str | None, str], Compiled | None],
) -> Sentences:
    out: Sentences = []
    for i, s in enumerate(given):
        at = f"{where}[{i}]"
        test = when(s.when, f"{at}.when")
        if s.each is not None:
            spec = known.get(s.each)
            if spec is None or spec.kinds != (list,) or spec.values is not None:
                raise ExpressionError(f"{at}.each: {s.each!r} is not a fact that lists sentences")
            out.append((test, None, s.each))
            continue
        assert s.says is not None
        try:
            template = compile_template(s.says, known, params, SENTENCE_CONTEXT)
            out.append((test, _text(template), None))
        except ExpressionError as exc:
            raise ExpressionError(f"{at}.says: {exc}") from None
    return out


# What a sentence's render gives besides the facts.
SENTENCE_CONTEXT = ("why", "params")


def _text(template: NamedTemplate) -> Text:
    if not template.named:
        # Names nothing: the same every call, rendered once. (A test such as ``is none`` never
        # raises on a missing name, so rendering without the facts cannot tell.)
        fixed = template.render({})
        return lambda f: fixed
    # The context holds only what the sentence reads, as Jinja finds it: Jinja copies it on
    # every render.
    return lambda f: template.render_from(f.values, {"why": f.why, "params": f.params})


def _applying(sentences: Sentences, f: Facts) -> list[str]:
    out: list[str] = []
    for test, text, each in sentences:
        if test is not None and not test(f.values, NO_RULES):
            continue
        if each is not None:
            out.extend(f.values[each])
        elif text is not None:
            out.append(text(f))
    return out


def _boolean(name: str, test: Compiled) -> Step:
    return lambda f: f.set(name, bool(test(f.values, NO_RULES)))


def _listing(name: str, sentences: Sentences) -> Step:
    return lambda f: f.set(name, _applying(sentences, f))


def _first_of(name: str, cases: list[tuple[Compiled, str, Sentences]]) -> Step:
    reasons = f"{name}_reasons"

    def step(f: Facts) -> None:
        for test, then, sentences in cases:
            if test(f.values, NO_RULES):
                f.set(name, then)
                f.set(reasons, _applying(sentences, f))
                return

    return step


def _names(d: Derivation) -> tuple[set[str], set[str]]:
    """The facts and parameters a declaration names, in its conditions and sentences."""
    expressions = [d.is_] if d.is_ is not None else []
    sentences = list(d.says or [])
    for case in d.first_of or []:
        expressions.append(case.when)
        sentences += case.reasons
    facts: set[str] = set()
    params: set[str] = set()
    for s in sentences:
        if s.when is not None:
            expressions.append(s.when)
        if s.each is not None:
            facts.add(s.each)
        if s.says is not None:
            template_names(s.says, facts, params)
    for text in expressions:
        expression_names(text, facts, params)
    return facts, params
