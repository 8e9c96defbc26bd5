"""Turn a hook request's prefetch into resources, fetching from fhirServer what is missing.

CDS Hooks 2.0 distinguishes a *missing* key (the client did not prefetch: we fetch it) from a
*null* key (the client looked and found nothing: no data). An OperationOutcome in place of the
data, or among a Bundle's entries, also means no data for that key.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from service.fhir.client import FhirClient
from service.protocol.errors import PrefetchUnavailable
from service.protocol.models import PREFETCH_TOKEN, HookRequest, Resource, Service

log = logging.getLogger("ipt_cds")

Prefetched = dict[str, list[Resource]]


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
    if value is None:
        return []
    kind = value.get("resourceType") if isinstance(value, dict) else None
    if not isinstance(kind, str):
        log.warning("prefetch %s: not a FHIR resource; treated as no data", key)
        return []
    if kind == "OperationOutcome":
        log.warning("prefetch %s: OperationOutcome instead of data; treated as no data", key)
        return []
    if kind != "Bundle":
        return [value]
    entries = value.get("entry")
    if isinstance(entries, dict):
        entries = [entries]
    elif not isinstance(entries, list):
        if entries is not None:
            log.warning("prefetch %s: Bundle.entry is not an array; treated as no data", key)
        return []
    out: list[Resource] = []
    skipped = outcomes = 0
    for entry in entries:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            skipped += 1
        elif resource["resourceType"] == "OperationOutcome":
            outcomes += 1
        else:
            out.append(resource)
    if outcomes:
        log.warning("prefetch %s: %d OperationOutcome entries skipped", key, outcomes)
    if skipped:
        log.warning("prefetch %s: %d entries without a resource skipped", key, skipped)
    return out


async def gather(
    service: Service,
    request: HookRequest,
    fhir: FhirClient | None,
    allowed: Callable[[str], bool],
) -> Prefetched:
    """Every prefetch key of the service, as resources; only missing keys are fetched (None:
    no FHIR client, as in a population replay, which answers every key)."""
    given = request.prefetch or {}
    data: Prefetched = {}
    missing: dict[str, str] = {}
    for key, template in (service.prefetch or {}).items():
        if key in given:
            data[key] = resources_of(key, given[key])
        else:
            missing[key] = render(template, request)
    if not missing:
        return data
    if not request.fhirServer or fhir is None:
        raise PrefetchUnavailable(
            f"Prefetch {', '.join(sorted(missing))} missing and the request names no fhirServer.",
            code="no_fhir_server",
        )
    if not allowed(request.fhirServer):
        # Never contact a server nobody vouched for: the request names it, so an attacker could.
        log.warning("fhirServer not on the allowlist; %d keys not fetched", len(missing))
        raise PrefetchUnavailable(
            f"The fhirServer {request.fhirServer[:200]!r} is not one this service may contact, "
            f"and prefetch {', '.join(sorted(missing))} is missing. Prefetch the data, or have "
            "the operator allow the server: IPT_CDS_FHIR_ALLOWLIST, or with client "
            "authentication on, the issuer's fhir_servers in the trust file "
            "(docs/configuration.md).",
            code="fhir_server_not_allowed",
        )
    token = request.fhirAuthorization.access_token if request.fhirAuthorization else None
    fetched = await fhir.fetch_all(request.fhirServer, missing, token)
    for key, value in fetched.items():
        data[key] = [r for res in value for r in resources_of(key, res)]
    return data
