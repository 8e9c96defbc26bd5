"""Reading the knowledge files, with errors that name the file and the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from ipt_cds.knowledge.errors import KnowledgeError
from ipt_cds.protocol.errors import location

M = TypeVar("M", bound=BaseModel)
# libyaml's safe loader where PyYAML was built with it (the wheels are): the same documents,
# about ten times faster than the pure-Python one, which start-up and the fixture cases felt.
_SAFE_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(path: Path) -> Any:
    try:
        with path.open(encoding="utf-8") as f:
            return yaml.load(f, Loader=_SAFE_LOADER)  # noqa: S506 - a safe loader
    except FileNotFoundError:
        raise KnowledgeError(f"{path}: file not found") from None
    except UnicodeDecodeError as exc:
        raise KnowledgeError(not_utf8(path, exc)) from None
    except yaml.YAMLError as exc:
        raise KnowledgeError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None


def not_utf8(path: Path, exc: UnicodeDecodeError) -> str:
    """The message for a knowledge file that is not UTF-8 text (saved as Latin-1, say)."""
    return f"{path}: not UTF-8 text (byte {exc.start})"


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """Where and what, on one line: PyYAML's own text spans several, quoting the file."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or type(exc).__name__
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return where + " ".join(str(problem).split())


def parse(path: Path, model: type[M], data: Any = None) -> M:
    """Validate a file (or data already read from it) against a model."""
    try:
        return model.model_validate(read_yaml(path) if data is None else data)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise KnowledgeError(f"{path}: {location(tuple(err['loc']))}: {err['msg']}") from None
