"""The small language of ``applies`` and indicator conditions in ``cards/rules/``.

Python's expression syntax, restricted to: ``and or not``, comparisons (``== != < <= > >= in
not in is is not``), fact names, ``params.NAME``, ``fact.attribute`` (``phq9.value``), literals
(strings, numbers, ``True False None``, tuples and lists of them), ``fires('rule-id')`` (a rule
earlier in the order fired), ``any_card()`` (any earlier rule fired) and ``any_alert()`` (any
earlier rule fired with a warning or critical card). A rule that must see every other card
("the all-clear, never a companion") comes last in the order.
Expressions are parsed and checked once at start-up and compiled to closures; evaluating one is
a handful of dict lookups. Ordering comparisons with an unknown (``None``) side are false, so
"age >= 70" is simply not true when the age is unknown.

The check reads the facts' types (ipt_cds/clinical/fact_model.py): a misspelt attribute, ``is``
with anything but None, True or False, or a comparison that can never hold (``severity ==
'moderat'``, ``age == '70'``, ``depression is None``) is an error, because in a rule it would
not fail loudly, it would silently never (or always) fire.
"""

from __future__ import annotations

import ast
import functools
import operator
from collections.abc import Callable, Collection, Mapping
from datetime import date
from typing import Any

from ipt_cds.clinical.fact_model import FactSpec

Env = Mapping[str, Any]
Compiled = Callable[[Env, Collection[str]], Any]
FactTypes = Mapping[str, FactSpec]


class ExpressionError(ValueError):
    pass


class Fired(set[str]):
    """The rules fired so far in one evaluation, and which of them alert (warning, critical)."""

    def __init__(self) -> None:
        super().__init__()
        self.alerting: set[str] = set()


_ORDER = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge}
_EQUAL = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
}
_SYMBOL = {
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.Is: "is",
    ast.IsNot: "is not",
    ast.In: "in",
    ast.NotIn: "not in",
}


def compile_expression(
    text: str, facts: FactTypes, params: Mapping[str, Any], earlier_rules: Collection[str]
) -> tuple[Compiled, set[str]]:
    """Compile ``text``; answer the function and the rule ids it refers to with ``fires``."""
    try:
        tree = ast.parse(str(text).strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"not a valid expression: {exc.msg}: {text!r}") from None
    fired: set[str] = set()

    def build(node: ast.AST) -> Compiled:
        match node:
            case ast.BoolOp(op=ast.And(), values=values):
                return functools.reduce(_both, [build(v) for v in values])
            case ast.BoolOp(op=ast.Or(), values=values):
                return functools.reduce(_either, [build(v) for v in values])
            case ast.UnaryOp(op=ast.Not(), operand=operand):
                inner = build(operand)
                return lambda env, f: not inner(env, f)
            case ast.Compare(left=left, ops=[op], comparators=[right]):
                a, b = build(left), build(right)
                if isinstance(op, ast.Eq | ast.NotEq) and (_is_list(left) or _is_list(right)):
                    # A list fact against a literal list: literals are tuples, so compare
                    # the fact as one (``combination_reasons != []``).
                    a, b = _as_tuple(a), _as_tuple(b)
                built = _compare(a, op, b)
                check_comparison(left, op, right, facts, params)
                return built
            case ast.Compare():
                raise ExpressionError("chain comparisons with 'and', one at a time")
            case ast.Constant(value=value) if (
                isinstance(value, str | int | float | bool) or value is None
            ):
                return lambda env, f: value
            case ast.Tuple(elts=items) | ast.List(elts=items):
                literals = tuple(_literal(i) for i in items)
                return lambda env, f: literals
            case ast.Name(id=name):
                if name not in facts:
                    raise ExpressionError(f"unknown fact {name!r}")
                return lambda env, f: env[name]
            case ast.Attribute(value=ast.Name(id="params"), attr=attr):
                if attr not in params:
                    raise ExpressionError(f"unknown parameter params.{attr}")
                value = params[attr]
                return lambda env, f: value
            case ast.Attribute(value=ast.Name(id=name), attr=attr):
                if name not in facts:
                    raise ExpressionError(f"unknown fact {name!r}")
                attribute_of(name, attr, facts)
                return lambda env, f: getattr(env[name], attr, None)
            case ast.Call(func=ast.Name(id="any_card"), args=[], keywords=[]):
                return lambda env, f: len(f) > 0
            case ast.Call(func=ast.Name(id="any_alert"), args=[], keywords=[]):
                return lambda env, f: bool(getattr(f, "alerting", ()))
            case ast.Call(
                func=ast.Name(id="fires"), args=[ast.Constant(value=str() as rule)], keywords=[]
            ):
                if rule not in earlier_rules:
                    raise ExpressionError(f"fires({rule!r}) must name a rule earlier in the order")
                fired.add(rule)
                return lambda env, f: rule in f
        raise ExpressionError(f"not allowed here: {ast.unparse(node)!r}")

    return build(tree.body), fired


# Nested two-operand closures: a rule's conditions run on every call, and a generator over the
# operands costs more than the tests themselves.
def _both(a: Compiled, b: Compiled) -> Compiled:
    return lambda env, f: bool(a(env, f)) and bool(b(env, f))


def _either(a: Compiled, b: Compiled) -> Compiled:
    return lambda env, f: bool(a(env, f)) or bool(b(env, f))


def _is_list(node: ast.AST) -> bool:
    return isinstance(node, ast.Tuple | ast.List)


def _as_tuple(value: Compiled) -> Compiled:
    def tupled(env: Env, f: Collection[str]) -> Any:
        found = value(env, f)
        return tuple(found) if isinstance(found, list) else found

    return tupled


def _literal(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    raise ExpressionError(f"lists hold literals only, not {ast.unparse(node)!r}")


def _compare(left: Compiled, op: ast.cmpop, right: Compiled) -> Compiled:
    if type(op) in _ORDER:
        fn = _ORDER[type(op)]

        def ordered(env: Env, f: Collection[str]) -> bool:
            a, b = left(env, f), right(env, f)
            return a is not None and b is not None and bool(fn(a, b))

        return ordered
    if type(op) in _EQUAL:
        eq = _EQUAL[type(op)]
        return lambda env, f: bool(eq(left(env, f), right(env, f)))
    if isinstance(op, ast.In | ast.NotIn):
        negate = isinstance(op, ast.NotIn)

        def member(env: Env, f: Collection[str]) -> bool:
            container = right(env, f) or ()
            return (left(env, f) in container) != negate

        return member
    raise ExpressionError(f"operator {type(op).__name__} is not allowed")


# --- the checks against the facts' types ---------------------------------------------------


def attribute_of(name: str, attr: str, facts: FactTypes) -> FactSpec:
    """The type of ``name.attr``; an ExpressionError naming the valid attributes if none."""
    spec = facts[name]
    found = spec.attributes.get(attr)
    if found is None:
        valid = ", ".join(spec.attributes) if spec.attributes else "no attributes"
        raise ExpressionError(
            f"unknown attribute {name}.{attr}: {name} is {spec.describe()}, with {valid}"
        )
    # Reading ``phq9.value`` when there is no ``phq9`` gives None.
    return found.or_none() if spec.optional else found


def check_comparison(
    left: ast.expr, op: ast.cmpop, right: ast.expr, facts: FactTypes, params: Mapping[str, Any]
) -> None:
    """Refuse a comparison that can never hold, or holds by accident (``age is 70`` is true
    or false depending on how CPython caches small ints). ``left`` and ``right`` are already
    known to name real facts, attributes and parameters."""
    symbol = _SYMBOL.get(type(op), type(op).__name__)
    if isinstance(op, ast.Is | ast.IsNot) and not any(
        isinstance(n, ast.Constant) and any(n.value is c for c in (None, True, False))
        for n in (left, right)
    ):
        raise ExpressionError(
            f"'{symbol}' compares with None, True or False only: "
            f"{ast.unparse(ast.Compare(left, [op], [right]))!r} (use == or != for values)"
        )
    if isinstance(op, ast.In | ast.NotIn):
        _check_membership(left, symbol, right, facts, params)
        return
    ordering = type(op) in _ORDER
    for side, other in ((left, right), (right, left)):
        spec, name = _spec(side, facts), ast.unparse(side)
        if spec is None:
            continue
        if ordering and not _orderable(spec):
            raise ExpressionError(
                f"'{symbol}' orders numbers and dates only: {name} is {spec.describe()}"
            )
        found, value = _scalar(other, params)
        if found:
            if ordering and value is None:
                raise ExpressionError(f"'{symbol}' with None is never true")
            if not _fits(spec, value):
                raise ExpressionError(f"{name} is {spec.describe()}, never {_word(spec, value)}")
        items = _items(other, params)
        if items is not None and list not in spec.kinds:
            raise ExpressionError(f"{name} is {spec.describe()}, never a list")
        for item in items or ():
            if not _fits_item(spec, item):
                raise ExpressionError(f"{name} is {spec.describe()}, never holding {item!r}")


def _check_membership(
    left: ast.expr, symbol: str, right: ast.expr, facts: FactTypes, params: Mapping[str, Any]
) -> None:
    lspec, rspec = _spec(left, facts), _spec(right, facts)
    found, value = _scalar(left, params)
    if rspec is not None:
        rname = ast.unparse(right)
        if list in rspec.kinds:
            if found and not _fits_item(rspec, value):
                raise ExpressionError(f"{rname} is {rspec.describe()}, never holding {value!r}")
        elif not (rspec.kinds == (str,) and rspec.values is None):
            # 'moderate' in severity would search the word 'moderately-severe' for a substring.
            raise ExpressionError(
                f"'{symbol}' needs a list on its right: {rname} is {rspec.describe()}"
            )
        return
    items = _items(right, params)
    if items is None:
        if _scalar(right, params)[0]:
            raise ExpressionError(f"'{symbol}' needs a list on its right, not {ast.unparse(right)}")
        return
    if lspec is not None:
        for item in items:
            if not _fits(lspec, item):
                raise ExpressionError(
                    f"{ast.unparse(left)} is {lspec.describe()}, never {_word(lspec, item)}"
                )


def _spec(node: ast.AST, facts: FactTypes) -> FactSpec | None:
    match node:
        case ast.Name(id=name) if name in facts:
            return facts[name]
        case ast.Attribute(value=ast.Name(id=name), attr=attr) if name in facts:
            return attribute_of(name, attr, facts)
    return None


def _scalar(node: ast.AST, params: Mapping[str, Any]) -> tuple[bool, Any]:
    """(True, the value) when ``node`` is a single value known at start-up."""
    match node:
        case ast.Constant(value=value):
            return True, value
        case ast.Attribute(value=ast.Name(id="params"), attr=attr) if not isinstance(
            params.get(attr), list | tuple | dict
        ):
            return True, params.get(attr)
    return False, None


def _items(node: ast.AST, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """The items when ``node`` is a list known at start-up (a literal, or a parameter)."""
    match node:
        case ast.Tuple(elts=elts) | ast.List(elts=elts):
            return tuple(_literal(e) for e in elts)
        case ast.Attribute(value=ast.Name(id="params"), attr=attr) if isinstance(
            params.get(attr), list | tuple | dict
        ):
            return tuple(params[attr])
    return None


def _fits(spec: FactSpec, value: Any) -> bool:
    """Can a fact of type ``spec`` ever equal ``value``?"""
    if value is None:
        return spec.optional
    if isinstance(value, bool):
        return bool in spec.kinds
    if isinstance(value, int | float):
        return int in spec.kinds or float in spec.kinds
    if isinstance(value, str):
        return str in spec.kinds and (spec.values is None or value in spec.values)
    return False


def _word(spec: FactSpec, value: Any) -> str:
    """``value`` as the message names it: a word outside the closed set as it stands, a value
    of the wrong kind with its kind (``never the string '70'``)."""
    if isinstance(value, str) and str not in spec.kinds:
        return f"the string {value!r}"
    if isinstance(value, int | float) and not isinstance(value, bool) and not _fits(spec, 0):
        return f"the number {value!r}"
    return repr(value)


def _fits_item(spec: FactSpec, value: Any) -> bool:
    return isinstance(value, str) and (spec.values is None or value in spec.values)


def _orderable(spec: FactSpec) -> bool:
    # Free strings order as ISO dates do (phq9.date); a word from a closed set has no order
    # that means anything (``'severe' < 'mild'``).
    return spec.values is None and all(k in (int, float, str, date) for k in spec.kinds)


def expression_names(text: str, facts: set[str], params: set[str]) -> None:
    """Add the facts and the parameters (``params.NAME``) that ``text`` names."""
    for node in ast.walk(ast.parse(text.strip(), mode="eval")):
        match node:
            case ast.Attribute(value=ast.Name(id="params"), attr=attr):
                params.add(attr)
            case ast.Name(id=name):
                facts.add(name)
