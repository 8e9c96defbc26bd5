"""Turn a hook request's prefetch into resources, fetching from fhirServer what is missing.

CDS Hooks 2.0 distinguishes a *missing* key (the client did not prefetch: we fetch it) from a
*null* key (the client looked and found nothing: no data). A client reports that it could not
prefetch a key with an OperationOutcome: in place of the data, or as a Bundle entry with an
error or fatal issue. What that key's template reads (its resource type) is then *unreadable*:
unknown, never absent (the clinical spec version 3, s.7.1). A searchset that links to a next
page is one page of the answer: the key is fetched whole when the service may read the
fhirServer, else it is unreadable too. For the types no fact can do without (the Patient, the
Conditions) the key is fetched as a missing one is, or the call is a 412.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ipt_cds.fhir import references
from ipt_cds.fhir.client import FhirClient
from ipt_cds.protocol.errors import PrefetchUnavailable
from ipt_cds.protocol.models import PREFETCH_TOKEN, HookRequest, Resource, Service

log = logging.getLogger("ipt_cds")

# Resource types without which the facts would be wrong rather than unknown (no Condition read
# reads as no depression, no bipolar disorder, no psychosis): never answered as unreadable.
ESSENTIAL = frozenset({"Patient", "Condition"})
_FAILED = frozenset({"error", "fatal"})
# Why a prefetch key is not whole, for the log line.
_GAPS = {"one-page": "one page of the search", "client": "the client could not prefetch it"}


@dataclass
class Prefetched:
    """Each prefetch key's resources, and the resource types the EHR could not give."""

    resources: dict[str, list[Resource]] = field(default_factory=dict)
    unreadable: set[str] = field(default_factory=set)
    # The resource types the FHIR server does not offer at all (its CapabilityStatement):
    # nothing of them is recorded there, which is not the same as unknown.
    not_offered: set[str] = field(default_factory=set)
    # Per prefetch key not read, why in a few words (``403/forbidden``, ``client``): for the
    # hook's log line.
    reasons: dict[str, str] = field(default_factory=dict)

    def could_not_read(self, key: str, template: str, why: str) -> None:
        """The resource type the template reads is unknown (an OperationOutcome for its key, a
        refused optional read)."""
        self.unreadable.add(kind_of(template))
        self.reasons[key] = why


def kind_of(template: str) -> str:
    """The resource type a prefetch template reads: ``MedicationRequest?patient=…`` and
    ``Patient/{{context.patientId}}`` read MedicationRequest and Patient."""
    return template.strip().lstrip("/").partition("?")[0].partition("/")[0]


def could_not_prefetch(value: Any) -> bool:
    """The client's way to say it could not prefetch a key: an OperationOutcome in place of the
    data, or a Bundle with an OperationOutcome entry whose issue is an error or fatal (other
    entries then are at best part of the answer). Warnings and information in a searchset are
    notes on an answer, not a failure."""
    return _scan(value)[1]


def one_page(value: Any) -> bool:
    """A searchset Bundle with a ``next`` link: the first page of the search, not all of it (the
    CDS Hooks sandbox prefetches 20 resources a key this way). What the other pages hold is not
    absent."""
    if not isinstance(value, dict) or value.get("resourceType") != "Bundle":
        return False
    links = value.get("link")
    return isinstance(links, list) and any(
        isinstance(link, dict) and link.get("relation") == "next" for link in links
    )


def render(template: str, request: HookRequest) -> str:
    """Fill a prefetch template's tokens from the request context and the user id."""
    context = request.context.model_dump()
    user_type, _, user_id = str(context.get("userId", "")).partition("/")

    def value(match: Any) -> str:
        token: str = match.group(1)
        if token.startswith("context."):
            found = context.get(token.removeprefix("context."))
        else:
            found = user_id if token == f"user{user_type}Id" else None
        if found is None or isinstance(found, dict | list):
            raise PrefetchUnavailable(
                f"Prefetch template token {token} has no value in this request.",
                code="prefetch_token_unresolved",
            )
        return str(found)

    return PREFETCH_TOKEN.sub(value, template)


def resources_of(key: str, value: Any) -> list[Resource]:
    """The resources a prefetch value holds, skipping (with a warning) what is not usable.

    Total over JSON: a value that is not a resource, a Bundle whose ``entry`` is not an array
    (one entry object is read as an array of one), entries without a resource object.
    """
    resources, _, problems = _scan(value)
    for problem in problems:
        log.warning("prefetch %s: %s", key, problem)
    return resources


def _scan(value: Any) -> tuple[list[Resource], bool, list[str]]:
    """One pass over a prefetch value: its resources, whether the client said it could not
    prefetch it (``could_not_prefetch``), and what was skipped, in words for the log."""
    if value is None:
        return [], False, []
    kind = value.get("resourceType") if isinstance(value, dict) else None
    if not isinstance(kind, str):
        return [], False, ["not a FHIR resource; treated as no data"]
    if kind == "OperationOutcome":
        return [], True, ["OperationOutcome instead of data; treated as no data"]
    if kind != "Bundle":
        return [value], False, []
    entries = value.get("entry")
    if isinstance(entries, dict):
        entries = [entries]
    elif not isinstance(entries, list):
        problem = [] if entries is None else ["Bundle.entry is not an array; treated as no data"]
        return [], False, problem
    out: list[Resource] = []
    skipped = outcomes = 0
    failed = False
    for entry in entries:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            skipped += 1
        elif resource["resourceType"] == "OperationOutcome":
            outcomes += 1
            failed = failed or _an_error(resource)
        else:
            out.append(resource)
    problems = [f"{outcomes} OperationOutcome entries skipped"] if outcomes else []
    if skipped:
        problems.append(f"{skipped} entries without a resource skipped")
    return out, failed, problems


def _an_error(outcome: Resource) -> bool:
    issues = outcome.get("issue")
    return any(
        isinstance(issue, dict) and issue.get("severity") in _FAILED
        for issue in (issues if isinstance(issues, list) else [issues])
    )


async def gather(
    service: Service,
    request: HookRequest,
    fhir: FhirClient | None,
    allowed: Callable[[str], bool],
) -> Prefetched:
    """Every prefetch key of the service, as resources; only missing keys are fetched (None:
    no FHIR client, as in a population replay, which answers every key), and the keys the
    client could not prefetch whose type is essential."""
    given = request.prefetch or {}
    data = Prefetched()
    missing: dict[str, str] = {}
    failed: list[str] = []
    # Essential keys sent as one page of their search: to be fetched whole, like failed ones.
    partial: list[str] = []
    for key, template in (service.prefetch or {}).items():
        if key not in given:
            missing[key] = render(template, request)
            continue
        resources, failed_here, problems = _scan(given[key])
        for problem in problems:
            log.warning("prefetch %s: %s", key, problem)
        # A key not prefetched whole: one page of its search, or the client's word that it
        # could not (an OperationOutcome). What it holds is part of the answer, never all of it.
        gap = "one-page" if one_page(given[key]) else "client" if failed_here else None
        if gap is None:
            data.resources[key] = resources
        elif gap == "one-page" and _may_fetch(request, fhir, allowed):
            log.warning("prefetch %s: %s; fetching it", key, _GAPS[gap])
            missing[key] = render(template, request)
        elif kind_of(template) in ESSENTIAL:
            log.warning("prefetch %s: %s; fetching it", key, _GAPS[gap])
            failed.append(key)
            if gap == "one-page":
                partial.append(key)
            missing[key] = render(template, request)
        else:
            log.warning("prefetch %s: %s; unknown", key, _GAPS[gap])
            data.could_not_read(key, template, gap)
            data.resources[key] = resources
    # One deadline for the fetch and the references read after it (taken when first needed:
    # most calls come with their prefetch whole).
    deadline: float | None = None
    if missing:
        fhir, server = _check_server(request, fhir, allowed, missing, failed, partial)
        deadline = fhir.deadline()
        token = request.fhirAuthorization.access_token if request.fhirAuthorization else None
        templates = service.prefetch or {}
        optional = frozenset(k for k in missing if kind_of(templates[k]) not in ESSENTIAL)
        fetched = await fhir.fetch_all(server, missing, token, optional, deadline)
        for key, value in fetched.resources.items():
            data.resources[key] = [r for res in value for r in resources_of(key, res)]
        for key, why in fetched.unreadable.items():
            data.could_not_read(key, templates[key], why)
        for key in fetched.not_offered:
            data.not_offered.add(kind_of(templates[key]))
            data.reasons[key] = "not-offered"
    await _read_references(service, request, fhir, allowed, data, deadline)
    return data


def _may_fetch(
    request: HookRequest, fhir: FhirClient | None, allowed: Callable[[str], bool]
) -> bool:
    return bool(request.fhirServer) and fhir is not None and allowed(request.fhirServer or "")


def _check_server(
    request: HookRequest,
    fhir: FhirClient | None,
    allowed: Callable[[str], bool],
    missing: dict[str, str],
    failed: list[str],
    partial: list[str],
) -> tuple[FhirClient, str]:
    """The client and the request's FHIR server, if this service may read the keys from it;
    else a 412."""
    if not request.fhirServer or fhir is None:
        if failed:
            raise PrefetchUnavailable(
                f"The client could not prefetch {', '.join(sorted(failed))} whole (an "
                "OperationOutcome in place of the data, or one page of a search whose Bundle "
                "links to the next), which the service cannot do without, and the request "
                "names no fhirServer to read it from.",
                code="prefetch_failed",
            )
        raise PrefetchUnavailable(
            f"Prefetch {', '.join(sorted(missing))} missing and the request names no fhirServer.",
            code="no_fhir_server",
        )
    if not allowed(request.fhirServer):
        # Never contact a server nobody vouched for: the request names it, so an attacker could.
        log.warning("fhirServer not on the allowlist; %d keys not fetched", len(missing))
        absent = sorted(set(missing) - set(partial))
        said = [f"{', '.join(absent)} is missing"] if absent else []
        if partial:
            said.append(f"{', '.join(sorted(partial))} came as one page of its search")
        raise PrefetchUnavailable(
            f"The fhirServer {request.fhirServer[:200]!r} is not one this service may contact, "
            f"and prefetch {'; '.join(said)}. Prefetch the data whole, or have "
            "the operator allow the server: IPT_CDS_FHIR_ALLOWLIST, or with client "
            "authentication on, the issuer's fhir_servers in the trust file "
            "(docs/configuration.md).",
            code="fhir_server_not_allowed",
        )
    return fhir, request.fhirServer


async def _read_references(
    service: Service,
    request: HookRequest,
    fhir: FhirClient | None,
    allowed: Callable[[str], bool],
    data: Prefetched,
    deadline: float | None,
) -> None:
    """Read by id what the templates ``_include`` and the answers left out (ipt_cds/fhir/
    references.py), within the fetch's deadline; what is still missing stays unknown."""
    base = request.fhirServer
    templates = service.prefetch or {}
    wanted = {
        key: found
        for key, template in templates.items()
        if (found := references.missing(template, data.resources.get(key, []), base))
    }
    if not wanted:
        return
    reads = {
        f"{key}.references#{n}": reference
        for key, found in wanted.items()
        for n, reference in enumerate(found[: references.MAX_READS])
    }
    if base and fhir is not None and allowed(base):
        token = request.fhirAuthorization.access_token if request.fhirAuthorization else None
        try:
            when = deadline if deadline is not None else fhir.deadline()
            got = await fhir.fetch_all(base, reads, token, frozenset(reads), when)
        except PrefetchUnavailable as failure:  # the answer was about another resource
            log.warning("fhir references: %s; left unknown", failure.code)
        else:
            for read, pages in got.resources.items():
                data.resources[read.partition(".references#")[0]].extend(
                    r for page in pages for r in resources_of(read, page)
                )
    for key, found in wanted.items():
        left = references.missing(templates[key], data.resources[key], base)
        if left:
            log.warning(
                "prefetch %s: %d of %d referenced resources not read; unknown",
                key,
                len(left),
                len(found),
            )
