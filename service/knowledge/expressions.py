"""The small language of ``applies`` and indicator conditions in ``cards/rules/``.

Python's expression syntax, restricted to: ``and or not``, comparisons (``== != < <= > >= in
not in is is not``), fact names, ``params.NAME``, ``fact.attribute`` (``phq9.value``), literals
(strings, numbers, ``True False None``, tuples and lists of them) and ``fires('rule-id')``.
Expressions are parsed and checked once at start-up and compiled to closures; evaluating one is
a handful of dict lookups. Ordering comparisons with an unknown (``None``) side are false, so
"age >= 70" is simply not true when the age is unknown.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Collection, Mapping
from typing import Any

Env = Mapping[str, Any]
Compiled = Callable[[Env, Collection[str]], Any]


class ExpressionError(ValueError):
    pass


_ORDER = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge}
_EQUAL = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
}


def compile_expression(
    text: str, facts: Collection[str], params: Mapping[str, Any], earlier_rules: Collection[str]
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
                parts = [build(v) for v in values]
                return lambda env, f: all(p(env, f) for p in parts)
            case ast.BoolOp(op=ast.Or(), values=values):
                parts = [build(v) for v in values]
                return lambda env, f: any(p(env, f) for p in parts)
            case ast.UnaryOp(op=ast.Not(), operand=operand):
                inner = build(operand)
                return lambda env, f: not inner(env, f)
            case ast.Compare(left=left, ops=[op], comparators=[right]):
                return _compare(build(left), op, build(right))
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
                return lambda env, f: getattr(env[name], attr, None)
            case ast.Call(
                func=ast.Name(id="fires"), args=[ast.Constant(value=str() as rule)], keywords=[]
            ):
                if rule not in earlier_rules:
                    raise ExpressionError(f"fires({rule!r}) must name a rule earlier in the order")
                fired.add(rule)
                return lambda env, f: rule in f
        raise ExpressionError(f"not allowed here: {ast.unparse(node)!r}")

    return build(tree.body), fired


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
