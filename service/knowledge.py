"""Load and validate the knowledge base in ``cards/`` once, at start-up.

Anything wrong stops the service with the file's name: a CDS service that starts with half its
knowledge would give advice that looks complete and is not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from .errors import location
from .models import REQUEST_MODELS, Service

# Prefetch tokens of CDS Hooks 2.0: context fields and the four user-derived ids.
TOKEN = re.compile(r"\{\{\s*([A-Za-z.]+)\s*\}\}")
USER_TOKENS = {
    "userPractitionerId",
    "userPractitionerRoleId",
    "userPatientId",
    "userRelatedPersonId",
}


class KnowledgeError(Exception):
    """A knowledge file is missing or wrong; the message starts with the file's path."""


class _ServicesFile(BaseModel):
    services: list[Service]
    prefetch: dict[str, str] | None = None


@dataclass(frozen=True)
class Knowledge:
    services: dict[str, Service]

    @classmethod
    def load(cls, root: Path) -> Knowledge:
        return cls(services=_load_services(root / "services.yaml"))


def read_yaml(path: Path) -> Any:
    try:
        with path.open(encoding="utf-8") as f:
            return yaml.safe_load(f)
    except FileNotFoundError:
        raise KnowledgeError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise KnowledgeError(f"{path}: not valid YAML: {exc}") from None


def _load_services(path: Path) -> dict[str, Service]:
    try:
        parsed = _ServicesFile.model_validate(read_yaml(path))
    except ValidationError as exc:
        err = exc.errors()[0]
        raise KnowledgeError(f"{path}: {location(tuple(err['loc']))}: {err['msg']}") from None
    services: dict[str, Service] = {}
    for svc in parsed.services:
        if svc.id in services:
            raise KnowledgeError(f"{path}: duplicate service id {svc.id!r}")
        if svc.hook not in REQUEST_MODELS:
            raise KnowledgeError(f"{path}: service {svc.id!r}: unsupported hook {svc.hook!r}")
        for key, template in (svc.prefetch or {}).items():
            for token in TOKEN.findall(template):
                if not (token.startswith("context.") or token in USER_TOKENS):
                    raise KnowledgeError(
                        f"{path}: service {svc.id!r}: prefetch {key!r}: unknown token {token!r}"
                    )
        services[svc.id] = svc
    return dict(sorted(services.items()))
