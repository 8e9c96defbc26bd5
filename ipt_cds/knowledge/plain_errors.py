"""Validation errors of a file an operator writes, in words a non-programmer reads.

Pydantic says "Extra inputs are not permitted" for a misspelt key and "Input should be
'generic' or 'epic'" for a wrong value; the person fixing a site profile is often not the one
who wrote the code. Here each error becomes ``where: what is wrong`` with the choices and,
for a near miss, "did you mean …?", found by walking the model to the place of the error.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Iterable
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from ipt_cds.protocol.errors import location

# A misspelling is close to one name; a different word is not. difflib's default (0.6) also
# suggests e.g. "silent" for "sile".
_CLOSE = 0.6


def did_you_mean(word: object, choices: Iterable[str]) -> str:
    """``; did you mean X?`` for the choice nearest ``word``, or nothing."""
    found = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=_CLOSE)
    return f"; did you mean {found[0]}?" if found else ""


def plain(error: ErrorDetails, model: type[BaseModel]) -> str:
    """One line for one validation error of a file checked against ``model``."""
    loc = tuple(error["loc"])
    kind, given = error["type"], error.get("input")
    if loc and loc[-1] == "[key]":  # a key of a mapping whose keys are a fixed list, or text
        loc = loc[:-1]
        choices = _key_choices(model, loc[:-1])
        if not choices:
            return f"{location(loc)}: a name here must be text"
        return (
            f"{location(loc)}: {str(loc[-1])!r} is not a name allowed here"
            f"{did_you_mean(loc[-1], choices)} (the names allowed: {', '.join(choices)})"
        )
    where = location(loc) if loc else "the file"
    if kind == "extra_forbidden":
        names = _field_names(model, loc[:-1])
        return (
            f"{where}: no such setting{did_you_mean(loc[-1], names)} "
            f"(the settings here: {', '.join(names)})"
        )
    if kind == "literal_error":
        choices = [str(c) for c in _literal_choices(model, loc)]
        return (
            f"{where}: {given!r} is not allowed{did_you_mean(given, choices)} "
            f"(write one of: {', '.join(choices)})"
        )
    context = {k: _number(v) for k, v in error.get("ctx", {}).items()}
    return f"{where}: {_WORDS.get(kind, error['msg']).format(**context)}"


def _number(value: object) -> object:
    """``0`` rather than ``0.0`` for a bound of a float field."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


_WORDS = {
    "bool_parsing": "write true or false",
    "bool_type": "write true or false",
    "int_parsing": "write a whole number",
    "int_type": "write a whole number",
    "int_from_float": "write a whole number",
    "float_parsing": "write a number",
    "float_type": "write a number",
    "greater_than_equal": "must be {ge} or more",
    "less_than_equal": "must be {le} or less",
    "string_type": "write some text",
    "string_too_short": "must not be empty",
    "string_too_long": "is too long (at most {max_length} characters)",
    "missing": "is required but missing",
    "dict_type": "write settings here as `name: value` lines, indented under it",
    "model_type": "write settings here as `name: value` lines, indented under it",
    "model_attributes_type": "write settings here as `name: value` lines, indented under it",
    "list_type": "write a list here (lines starting with `- `, or [a, b])",
    "url_parsing": "write a whole web address starting with https:// (or http://)",
    "url_scheme": "write a whole web address starting with https:// (or http://)",
}


def _type_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> Any:
    """The annotation at ``loc`` in ``model``: fields by name, mapping values, list items."""
    here: Any = model
    for part in loc:
        here = _unoptional(here)
        if isinstance(here, type) and issubclass(here, BaseModel):
            field = here.model_fields.get(str(part))
            if field is None:
                return None
            here = field.annotation
        elif get_origin(here) is dict:
            here = get_args(here)[1]
        elif get_origin(here) is list:
            here = get_args(here)[0]
        else:
            return None
    return _unoptional(here)


def _unoptional(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, types.UnionType):
        kept = [a for a in get_args(annotation) if a is not type(None)]
        return kept[0] if len(kept) == 1 else annotation
    return annotation


def _field_names(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    here = _type_at(model, loc)
    if isinstance(here, type) and issubclass(here, BaseModel):
        return list(here.model_fields)
    return []


def _key_choices(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    here = _type_at(model, loc)
    if get_origin(here) is dict:
        return [str(c) for c in _literal_args(get_args(here)[0])]
    return []


def _literal_choices(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[object]:
    return _literal_args(_type_at(model, loc))


def _literal_args(annotation: Any) -> list[object]:
    return list(get_args(annotation)) if get_origin(annotation) is Literal else []
