"""Do the services' own searches find, on a FHIR server, the fixture patients loaded into it?

A server that stores the patients but does not match a search's form (``patient=Patient/<id>``
against ``patient=<id>``, a status or code list, ``system|code`` tokens) answers empty
searchsets, and the service then reads an empty chart and shows wrong cards without a word.
This check sends exactly what the service sends: a patient-view request without prefetch goes
through ``ipt_cds.fhir.prefetch.gather`` with the service's own FHIR client, and what comes back
is compared, by type and id, with what a conforming server would answer from the resources
loaded (replay's ``Search.answer``: the same status, intent and code filters).
"""

from __future__ import annotations

import asyncio
import textwrap
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TextIO

from pydantic import ValidationError

from ipt_cds.devtools.fixtures import Case, authorization
from ipt_cds.fhir.client import FhirClient
from ipt_cds.fhir.prefetch import Prefetched, gather, render
from ipt_cds.knowledge.base import Knowledge
from ipt_cds.knowledge.errors import KnowledgeError
from ipt_cds.ops.config import Settings
from ipt_cds.protocol.errors import PrefetchUnavailable
from ipt_cds.protocol.models import HookRequest, Resource, Service
from ipt_cds.replay.search import ReplayQueryError, Search, compile_searches

# The hook whose request carries nothing but the patient: every template of every service is
# filled from patientId (the fetch renders them all, whichever hook declared them).
_HOOK = "patient-view"
_WIDTH = 100


class CheckError(Exception):
    """The check could not run (the services' templates, or the server's URL): a tool error."""


@dataclass(frozen=True)
class Found:
    """One search for one patient: the ids a conforming server returns, and those returned."""

    key: str
    kind: str
    query: str
    expected: frozenset[str]
    found: frozenset[str]
    unreadable: bool

    @property
    def ok(self) -> bool:
        return self.found >= self.expected

    def line(self, patient: str, width: int) -> str:
        if not self.expected:
            verdict = "nothing loaded to find" + (", unreadable" if self.unreadable else "")
        elif self.ok:
            verdict = "ok"
        else:
            verdict = "FAILED" + (": the server could not give it" if self.unreadable else "")
        count = f"{len(self.found):>3} / {len(self.expected):<3}"
        return f"{patient:<{width}}  {self.key:<22} {count} {self.kind:<20} {verdict}"


@dataclass(frozen=True)
class Checked:
    """One patient's searches, or why the fetch failed as a whole (a 412's code and message)."""

    patient: str
    searches: tuple[Found, ...] = ()
    failure: tuple[str, str] | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None and all(s.ok for s in self.searches)


def services_searched() -> Service:
    """The patient-view service, asking every distinct prefetch template of every service."""
    try:
        services = Knowledge.load(Settings().knowledge_dir).services
    except KnowledgeError as exc:
        raise CheckError(str(exc)) from None
    base = next((s for s in services.values() if s.hook == _HOOK), None)
    if base is None:
        raise CheckError(f"no service of the knowledge base answers {_HOOK}")
    prefetch = dict(base.prefetch or {})
    for service in services.values():
        for key, template in (service.prefetch or {}).items():
            if prefetch.get(key, template) != template:
                key = f"{service.id}.{key}"
            prefetch.setdefault(key, template)
    return base.model_copy(update={"prefetch": prefetch})


def searches_of(service: Service) -> tuple[Search, ...]:
    try:
        return compile_searches(service)
    except ReplayQueryError as exc:
        raise CheckError(f"cannot tell what the search should find: {exc}") from None


def by_type(resources: Iterable[Resource]) -> dict[str, list[Resource]]:
    own: dict[str, list[Resource]] = {}
    for resource in resources:
        own.setdefault(resource["resourceType"], []).append(resource)
    return own


def expected(search: Search, patient_id: str, own: dict[str, list[Resource]]) -> frozenset[str]:
    """The ids of ``search.kind`` a conforming server answers from the patient's resources."""
    answer = search.answer(patient_id, own, lambda reference: None)
    if search.read:
        return frozenset({answer["id"]}) if answer else frozenset()
    matched = (e["resource"] for e in answer.get("entry", []))
    return frozenset(r["id"] for r in matched if r["resourceType"] == search.kind)


def representatives(
    loaded: Iterable[tuple[Case, list[Resource]]], searches: tuple[Search, ...]
) -> list[tuple[Case, list[Resource]]]:
    """A few of the patients loaded (each with its resources) that together give every search
    something to find: the first with the most searches to answer, then the first that adds
    most. Of a type none of them has, nothing can be checked."""
    coverage = []
    for case, resources in loaded:
        own = by_type(resources)
        keys = {s.key for s in searches if expected(s, case.patient_id, own)}
        coverage.append(((case, resources), keys))
    chosen: list[tuple[Case, list[Resource]]] = []
    uncovered = {s.key for s in searches}
    while coverage:
        patient, keys = max(coverage, key=lambda pair: len(pair[1] & uncovered))
        if chosen and not keys & uncovered:
            break
        chosen.append(patient)
        uncovered -= keys
    return chosen


def check_case(
    case: Case,
    resources: list[Resource],
    base: str,
    token: str | None,
    service: Service,
    settings: Settings | None = None,
) -> Checked:
    """Fetch the patient as the service does, and compare with the ``resources`` loaded."""
    settings = settings or Settings()
    body: dict[str, Any] = {
        "hook": _HOOK,
        "hookInstance": str(uuid.uuid4()),
        "fhirServer": base,
        "context": {"userId": "Practitioner/example", "patientId": case.patient_id},
    }
    if token:
        body["fhirAuthorization"] = authorization(token, "ipt-cds-cli")
    try:
        request = HookRequest.model_validate(body)
    except ValidationError:
        raise CheckError(f"{base}: not a FHIR base URL the service could be given") from None
    try:
        prefetched = asyncio.run(_fetch(service, request, settings))
    except PrefetchUnavailable as exc:
        return Checked(case.patient_id, failure=(exc.code, exc.message))
    own = by_type(resources)
    found = []
    for search in searches_of(service):
        wanted = expected(search, case.patient_id, own)
        returned = prefetched.resources.get(search.key, [])
        ids = {str(r.get("id")) for r in returned if r.get("resourceType") == search.kind}
        query = render((service.prefetch or {})[search.key], request)
        unreadable = search.kind in prefetched.unreadable
        found.append(Found(search.key, search.kind, query, wanted, wanted & ids, unreadable))
    return Checked(case.patient_id, tuple(found))


async def _fetch(service: Service, request: HookRequest, settings: Settings) -> Prefetched:
    async with FhirClient.make_http(settings) as http:
        client = FhirClient(http, settings)
        return await gather(service, request, client, allowed=lambda url: True)


def explain(checked: Checked) -> str:
    """One paragraph: which searches missed what was loaded, and what that likely means."""
    if checked.failure is not None:
        code, message = checked.failure
        text = (
            f"FAILED: the services' searches for {checked.patient} failed ({code}): {message} The "
            "service would answer a call about any patient of this server with a 412 and no cards."
        )
        return _fill(text)
    absent = any(s.kind == "Patient" and not s.found for s in checked.searches)
    if absent:
        return _fill(
            f"FAILED: the server has no Patient/{checked.patient}, so no search can find its "
            "records. Were the fixtures loaded into this server (`ipt-cds fixtures load`)? If "
            "they were, the server does not answer a read by id."
        )
    missed = [s for s in checked.searches if not s.ok]
    counts = ", ".join(
        f"{s.key} found {len(s.found)} of the {len(s.expected)} {s.kind} loaded"
        + (" (a type the server could not give)" if s.unreadable else "")
        for s in missed
    )
    text = (
        f"FAILED: the services' searches missed resources loaded for {checked.patient}: "
        f"{counts}. The service reads a chart with these searches, so on this server it would "
        "take those records for absent and show wrong cards, silently. "
        "The server most likely does not match the search's form: check that it supports "
        "patient=Patient/<id> (a reference with its type, not only a bare id), each status or "
        "intent of a comma-separated list, and code=system|code tokens; or it does not index "
        "what it stores. The searches, as sent:"
    )
    return "\n".join([_fill(text), *(f"  GET {s.query}" for s in missed)])


def _fill(text: str) -> str:
    # Ids and URLs stay whole on a line of their own, to be read and copied.
    return textwrap.fill(text, _WIDTH, break_long_words=False, break_on_hyphens=False)


def write(checked: list[Checked], out: TextIO, per_search: bool) -> bool:
    """Each search's line (with ``per_search``), then one line or one paragraph per patient
    that failed; True when every search found what it should."""
    width = max((len(one.patient) for one in checked), default=0)
    for one in checked:
        if per_search:
            for s in one.searches:
                out.write(s.line(one.patient, width) + "\n")
        if not one.ok:
            out.write(explain(one) + "\n")
    return all(one.ok for one in checked)
