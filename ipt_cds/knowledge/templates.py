"""Card templates (Jinja2): compiled once at start-up, and checked against the fact model.

StrictUndefined would find ``{{ phq9.valeu }}`` only when a card renders, and that card would
be lost; here the same mistakes stop start-up instead.
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Collection, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ipt_cds.knowledge.expressions import (
    ExpressionError,
    FactTypes,
    attribute_of,
    check_comparison,
)


class NamedTemplate(Template):
    """A template that knows the names it reads (``named``), so that a render's context holds
    those few instead of every fact: Jinja copies the context on every render."""

    named: frozenset[str] = frozenset()

    def render_from(self, values: Mapping[str, Any], extra: Mapping[str, Any]) -> str:
        """Rendered with the facts in ``values`` and the context names in ``extra``."""
        context = {n: values[n] for n in self.named if n in values}
        context.update((n, v) for n, v in extra.items() if n in self.named)
        return self.render(context)


_jinja = ImmutableSandboxedEnvironment(
    undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, autoescape=False
)
# Templates may name facts only (checked at start-up), so Jinja's globals (range, lipsum, …)
# are never used; without them each render builds its context ~5 µs faster.
_jinja.globals.clear()
_jinja.template_class = NamedTemplate

# What a template may name besides the facts: the facts' evidence sentences, the other reasons
# of a rule family, the parameters, and the rule ids of the cards in the response.
_CONTEXT = ("why", "also", "params", "shown")
_LIST_ITEM = re.compile(r"^(?:[-*+] |\d+[.)] |#|>|\|)")


def tidy_markdown(text: str) -> str:
    """Rendered card text as short paragraphs: lines of one paragraph joined (a template wraps
    its source lines; a card must not break a sentence), list items and headings kept on their
    own lines, and the blank runs that omitted sections leave collapsed."""
    paragraphs = []
    for block in re.split(r"\n\s*\n", text.strip()):
        lines: list[str] = []
        for raw in block.splitlines():
            line = " ".join(raw.split())
            if not line:
                continue
            if lines and not _LIST_ITEM.match(line):
                lines[-1] += " " + line  # a wrapped sentence, or a wrapped list item
            else:
                lines.append(line)
        if lines:
            paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs)


def compile_template(
    text: str, facts: FactTypes, params: Mapping[str, Any], context: Collection[str] = _CONTEXT
) -> NamedTemplate:
    """The compiled template; ExpressionError when it names something that does not exist.
    ``context``: what its renders give besides the facts (a rule's card gets all of _CONTEXT)."""
    shape, template = _compiled(text)
    unknown = template.named - {*facts, *context}
    if unknown:
        raise ExpressionError(f"unknown template field {sorted(unknown)[0]!r}")
    _check_template(shape, facts, params)
    return template


@dataclass(frozen=True)
class _Shape:
    """What the checks read of a template's tree: it depends on the text alone."""

    # Names the template binds itself ({% for r in ... %}): not the facts of those names.
    local: frozenset[str]
    # ``name.attr`` and ``name['attr']`` of a name the template does not bind.
    attributes: tuple[tuple[str, str], ...]
    # ``why`` read other than one fact at a time.
    why_whole: bool
    comparisons: tuple[tuple[ast.expr, ast.cmpop, ast.expr], ...]


@functools.lru_cache(maxsize=1024)
def _compiled(text: str) -> tuple[_Shape, NamedTemplate]:
    """Parsed, compiled and walked once per process, whatever the facts: that is nearly all of
    what loading the knowledge costs, and tests and site checks load it many times. A Template
    does not change once made."""
    try:
        tree = _jinja.parse(text)
    except TemplateSyntaxError as exc:
        raise ExpressionError(f"template error: {exc.message}") from None
    template = _jinja.from_string(text)
    assert isinstance(template, NamedTemplate)
    template.named = frozenset(meta.find_undeclared_variables(tree))
    return _shape(tree), template


def _shape(tree: nodes.Template) -> _Shape:
    local = frozenset(n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param"))
    named: list[tuple[nodes.Node, str]] = [(n.node, n.attr) for n in tree.find_all(nodes.Getattr)]
    for item in tree.find_all(nodes.Getitem):
        if isinstance(item.arg, nodes.Const) and isinstance(item.arg.value, str):
            named.append((item.node, item.arg.value))
    fact_by_fact = {id(target) for target, _ in named}
    comparisons = []
    for compare in tree.find_all(nodes.Compare):
        left = compare.expr
        for operand in compare.ops:
            op = _JINJA_OPS.get(operand.op)
            if op is not None:
                right = _as_python(operand.expr, local)
                comparisons.append((_as_python(left, local), op(), right))
            left = operand.expr
    return _Shape(
        local=local,
        attributes=tuple(
            (target.name, attr)
            for target, attr in named
            if isinstance(target, nodes.Name) and target.name not in local
        ),
        why_whole=any(
            n.name == "why" and id(n) not in fact_by_fact for n in tree.find_all(nodes.Name)
        ),
        comparisons=tuple(comparisons),
    )


# Jinja's comparison operators, as the expression checker knows them.
_JINJA_OPS: dict[str, type[ast.cmpop]] = {
    "eq": ast.Eq,
    "ne": ast.NotEq,
    "lt": ast.Lt,
    "lteq": ast.LtE,
    "gt": ast.Gt,
    "gteq": ast.GtE,
    "in": ast.In,
    "notin": ast.NotIn,
}


def _check_template(shape: _Shape, facts: FactTypes, params: Mapping[str, Any]) -> None:
    """What StrictUndefined would only find when a card renders (and the card is lost):
    ``{{ phq9.valeu }}``, ``why.NAME`` of a fact that keeps no evidence, ``why`` as a whole,
    ``params.NAME`` that does not exist, and comparisons that can never hold
    (``verdict == 'suitabel'``)."""
    for own in ("why", "params"):
        if own in shape.local:
            # Rebound, it would turn off the checks below for the whole template.
            raise ExpressionError(f"{own} names the service's own; bind another name")
    # why is a lazy view of one fact's evidence at a time: as a whole ({{ why }}, why|tojson,
    # why[name_of_a_variable]) it would print an object's name or fail as the card renders.
    if shape.why_whole:
        raise ExpressionError("why is read one fact at a time: why.NAME, why['NAME']")
    for name, attr in shape.attributes:
        if name == "why":
            if attr not in facts:
                raise ExpressionError(f"unknown fact {attr!r} in why.{attr}")
            if not facts[attr].explained:
                raise ExpressionError(f"why.{attr}: the fact {attr!r} never has a why")
        elif name == "params":
            if attr not in params:
                raise ExpressionError(f"unknown parameter params.{attr}")
        elif name in facts:
            attribute_of(name, attr, facts)
    for left, op, right in shape.comparisons:
        check_comparison(left, op, right, facts, params)


def _as_python(node: nodes.Node, local: AbstractSet[str]) -> ast.expr:
    """The expression checker's view of a Jinja operand: facts, their attributes, parameters
    and literals; anything else becomes a name no fact has, which the checker passes over."""
    match node:
        case nodes.Name(name=name) if name not in local:
            return ast.Name(id=name)
        case nodes.Getattr(node=nodes.Name(name=name), attr=attr) if name not in local:
            return ast.Attribute(value=ast.Name(id=name), attr=attr)
        case nodes.Const(value=tuple() | list() as values):
            # Jinja folds a literal tuple into one constant.
            return ast.Tuple(elts=[ast.Constant(value=v) for v in values])
        case nodes.Const(value=value):
            return ast.Constant(value=value)
        case nodes.Tuple(items=items) | nodes.List(items=items):
            consts = [i.value for i in items if isinstance(i, nodes.Const)]
            if len(consts) == len(items):
                return ast.Tuple(elts=[ast.Constant(value=v) for v in consts])
    return ast.Name(id="<template expression>")


def template_names(text: str, facts: set[str], params: set[str]) -> None:
    """Add the facts (``why.NAME`` reads that fact too) and the parameters a template names."""
    read, parameters = _names(text)
    facts.update(read)
    params.update(parameters)


@functools.lru_cache(maxsize=1024)
def _names(text: str) -> tuple[frozenset[str], frozenset[str]]:
    """The facts and the parameters a template names, found once per process: every app made
    writes its evidence pages from them (a test suite makes hundreds)."""
    try:
        tree = _jinja.parse(text)
    except TemplateSyntaxError:  # start-up refuses such a template
        return frozenset(), frozenset()
    local = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    facts = {n.name for n in tree.find_all(nodes.Name) if n.name not in local}
    params: set[str] = set()
    named: list[tuple[nodes.Node, str]] = [(n.node, n.attr) for n in tree.find_all(nodes.Getattr)]
    for item in tree.find_all(nodes.Getitem):
        if isinstance(item.arg, nodes.Const) and isinstance(item.arg.value, str):
            named.append((item.node, item.arg.value))
    for target, attr in named:
        if isinstance(target, nodes.Name) and target.name not in local:
            if target.name == "params":
                params.add(attr)
            elif target.name == "why":
                facts.add(attr)
    return frozenset(facts), frozenset(params)
