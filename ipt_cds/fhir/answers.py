"""What was asked of the FHIR server, and whether its answer is what was asked.

A read must answer the resource named, a search a Bundle of the type searched, and nothing may
be about another patient: data about the wrong patient must never reach the rules.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote

import orjson

from ipt_cds.fhir.refusals import outcome_code, outcome_instead_of_data
from ipt_cds.protocol.errors import PrefetchUnavailable
from ipt_cds.protocol.models import Resource

log = logging.getLogger("ipt_cds")

# Parsing 8 MiB of small resources takes 0.2-0.4 s; beyond this size it runs in a worker
# thread, so that the event loop keeps serving other calls and the deadline fires on time.
_PARSE_IN_THREAD = 1024 * 1024
_TYPE = re.compile(r"[A-Z][A-Za-z]{1,63}")
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


async def parse_answer(query: Query, body: bytes) -> Resource:
    """The answer as JSON, checked to be the FHIR resource the query asked for."""
    try:
        if len(body) > _PARSE_IN_THREAD:
            parsed: Any = await asyncio.to_thread(orjson.loads, body)
        else:
            parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    finally:
        del body  # see _forget
    if not isinstance(parsed, dict) or not isinstance(parsed.get("resourceType"), str):
        log.warning("fhir %s: answer is not a FHIR resource", query.key)
        raise PrefetchUnavailable(
            f"The FHIR server's answer to the {query.key} query is not FHIR JSON.",
            code="fhir_error",
        )
    if parsed["resourceType"] == "OperationOutcome" and query.kind != "OperationOutcome":
        issue = outcome_code(parsed)
        del parsed  # see _forget
        raise outcome_instead_of_data(query.key, issue)
    wrong = query.wrong_data(parsed)
    if wrong is not None:
        del parsed  # see _forget
        # Types only: an id in the log or the message could name another patient.
        log.warning("fhir %s: wrong data: %s", query.key, wrong)
        raise PrefetchUnavailable(
            f"The FHIR server answered the {query.key} query with {wrong}; nothing of it is used.",
            code="fhir_wrong_data",
        )
    return parsed


# --- what was asked, and whether the answer is it -------------------------------------------


@dataclass(frozen=True)
class Query:
    """A prefetch query as the checks need it: ``Patient/pat-1`` is a read of a Patient,
    ``Condition?patient=pat-1`` a search of Conditions about patient pat-1. Other shapes
    (operations, history) are only checked to be FHIR."""

    key: str
    text: str
    kind: str | None = None
    read_id: str | None = None
    # The patients a search is restricted to (``patient=``, ``subject=``); empty if not known.
    patients: frozenset[str] = frozenset()
    # _include/_revinclude: resources of other types come along, as search.mode "include".
    includes: bool = False

    @classmethod
    def parse(cls, key: str, text: str) -> Query:
        path, _, params = text.strip().lstrip("/").partition("?")
        segments = [unquote(s) for s in path.strip("/").split("/")]
        kind = segments[0] if _TYPE.fullmatch(segments[0]) else None
        if kind is not None and len(segments) == 2 and _ID.fullmatch(segments[1]):
            return cls(key, text, kind, read_id=segments[1])
        if kind is None or len(segments) != 1:
            return cls(key, text)
        pairs = parse_qsl(params, keep_blank_values=True)
        names = {"patient", "patient:Patient", "subject", "subject:Patient"}
        if kind == "Patient":
            names.add("_id")
        values = [v for name, value in pairs if name in names for v in value.split(",")]
        patients = [_patient_id(v) for v in values]
        known = frozenset(p for p in patients if p is not None)
        return cls(
            key,
            text,
            kind,
            patients=known if known and None not in patients else frozenset(),
            includes=any(name.startswith(("_include", "_revinclude")) for name, _ in pairs),
        )

    @property
    def is_read(self) -> bool:
        return self.read_id is not None or (self.kind is None and "?" not in self.text)

    def wrong_data(self, answer: Resource) -> str | None:
        """Why the answer is not what was asked (types only, never ids), or None."""
        got = answer["resourceType"]
        if self.read_id is not None:
            if got != self.kind:
                return f"{_a(_safe(got))} instead of the {self.kind} read"
            if answer.get("id") != self.read_id:
                return f"another {self.kind} than the one read"
            return None
        if self.kind is None:
            return None
        if got != "Bundle":
            return f"{_a(_safe(got))} instead of a Bundle"
        entries = answer.get("entry")
        if entries is None:
            return None
        if not isinstance(entries, list):
            return "a Bundle whose entry is not a list"
        for entry in entries:
            wrong = self._wrong_entry(entry, self.kind)
            if wrong is not None:
                return wrong
        return None

    def _wrong_entry(self, entry: Any, searched: str) -> str | None:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            return "a Bundle entry that is not a resource"
        kind = resource["resourceType"]
        search = entry.get("search")
        mode = search.get("mode") if isinstance(search, dict) else None
        if kind == "OperationOutcome":  # the server's remarks, skipped by ipt_cds/fhir/prefetch
            return None if mode in (None, "outcome") else "an OperationOutcome as a match"
        if kind != searched and not (self.includes and mode in (None, "include")):
            return f"{_a(_safe(kind))} entry in {_a(searched)} search"
        if self.patients and not self._about_the_patient(resource):
            return f"{_a(_safe(kind))} about another patient"
        return None

    def _about_the_patient(self, resource: Resource) -> bool:
        if resource["resourceType"] == "Patient":
            return resource.get("id") in self.patients
        for field in ("subject", "patient"):
            reference = resource.get(field)
            target = reference.get("reference") if isinstance(reference, dict) else None
            # A reference we cannot resolve (contained, urn:uuid, an identifier only) says
            # nothing either way; a resolvable one must be this patient.
            named = parse_reference(target) if isinstance(target, str) else None
            if named is not None and (named[0] != "Patient" or named[1] not in self.patients):
                return False
        return True


def parse_reference(text: str) -> tuple[str, str] | None:
    """``Patient/123``, ``https://server/fhir/Patient/123``, ``.../Patient/123/_history/2``
    -> ``("Patient", "123")``; anything else -> None."""
    parts = [p for p in text.split("#", 1)[0].split("?", 1)[0].split("/") if p]
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) < 2 or not _TYPE.fullmatch(parts[-2]) or not _ID.fullmatch(parts[-1]):
        return None
    return parts[-2], parts[-1]


def _patient_id(value: str) -> str | None:
    """The patient a search parameter names: ``123`` or ``Patient/123``; None for another type."""
    if _ID.fullmatch(value):
        return value
    named = parse_reference(value)
    return named[1] if named is not None and named[0] == "Patient" else None


def _safe(kind: str) -> str:
    """A resourceType as it may be logged: a server could put anything there."""
    return kind if _TYPE.fullmatch(kind) else "resource of an unknown type"


def _a(noun: str) -> str:
    return f"{'an' if noun[:1] in ('A', 'E', 'I', 'O', 'U') else 'a'} {noun}"


# --- the request's own inputs --------------------------------------------------------------
