"""The prefetch an EHR would send, answered from one patient's exported resources.

Replay asks of an export what the services' prefetch templates ask of a FHIR server: the
Patient read, and each search with its filters (``status=active,on-hold``, ``code=`` LOINC
codes, ``_include`` of the medications). A search parameter replay cannot answer as a server
would is refused when the replay starts, so that its figures never rest on a guess.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from ipt_cds.fhir.filters import CODED, PLAIN, SearchFilter
from ipt_cds.protocol.models import Resource, Service

# Parameters that change only how a server pages or sorts its answer, not what it holds.
_IGNORED = frozenset({"_count", "_sort", "_total"})
# _include targets: the reference element, and the (shared) type it points to.
_INCLUDES = {"medication": ("medicationReference", "Medication")}
_PATIENT = "{{context.patientId}}"

Shared = Callable[[str], Resource | None]


class ReplayQueryError(ValueError):
    """A prefetch template replay cannot answer from an export."""


@dataclass(frozen=True)
class Search:
    key: str
    kind: str
    read: bool
    # What the search's status, intent and code parameters select, as a server applies them.
    filter: SearchFilter
    includes: tuple[tuple[str, str], ...]

    def answer(self, patient_id: str, own: Mapping[str, list[Resource]], shared: Shared) -> Any:
        """What the EHR's query would return: the resource read (None if absent), or a
        searchset Bundle."""
        if self.read:
            return next((r for r in own.get(self.kind, []) if r.get("id") == patient_id), None)
        found = [r for r in own.get(self.kind, []) if self.filter.matches(r)]
        entries: list[dict[str, Any]] = [
            {"resource": r, "search": {"mode": "match"}} for r in found
        ]
        seen: set[str] = set()
        for element, _ in self.includes:
            for resource in found:
                ref = resource.get(element)
                text = ref.get("reference") if isinstance(ref, dict) else None
                if isinstance(text, str) and text not in seen:
                    seen.add(text)
                    target = shared(text)
                    if target is not None:
                        entries.append({"resource": target, "search": {"mode": "include"}})
        bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
        bundle["total"] = len(found)
        if entries:
            bundle["entry"] = entries
        return bundle


def compile_searches(service: Service) -> tuple[Search, ...]:
    return tuple(_compile(key, text) for key, text in (service.prefetch or {}).items())


def types_read(searches: Iterable[Search]) -> tuple[frozenset[str], frozenset[str]]:
    """The resource types about a patient the searches read, and the shared ones they include
    (Medication)."""
    searches = list(searches)
    own = frozenset(s.kind for s in searches) | {"Patient"}
    shared = frozenset(target for s in searches for _, target in s.includes)
    return own, shared


def _compile(key: str, template: str) -> Search:
    path, _, query = template.strip().lstrip("/").partition("?")
    where = f"prefetch {key} ({template})"
    if path == f"Patient/{_PATIENT}" and not query:
        return Search(key, "Patient", True, SearchFilter(), ())
    if "/" in path or not path[:1].isupper():
        raise ReplayQueryError(f"{where}: replay answers the patient's read and searches only")
    includes: list[tuple[str, str]] = []
    about_patient = False
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name in ("patient", "subject", "patient:Patient", "subject:Patient"):
            if value not in (_PATIENT, f"Patient/{_PATIENT}"):
                raise ReplayQueryError(f"{where}: replay searches the context patient only")
            about_patient = True
        elif name in PLAIN or name in CODED:
            pass  # SearchFilter.of reads them
        elif name == "_include":
            source, _, param = value.partition(":")
            if source != path or param not in _INCLUDES:
                raise ReplayQueryError(f"{where}: replay cannot follow _include={value}")
            includes.append(_INCLUDES[param])
        elif name not in _IGNORED:
            raise ReplayQueryError(f"{where}: replay cannot answer the parameter {name!r}")
    if not about_patient:
        raise ReplayQueryError(f"{where}: a search must be restricted to the context patient")
    return Search(key, path, False, SearchFilter.of(query), tuple(includes))
