"""What a FHIR server's status says, as a 412 the service can answer or a read it goes without.

A server that answers a search with 400, 403, 404, 405, 422 or 501, or with an OperationOutcome
in place of a Bundle, declines it: the search is one it does not support, or one the access
token's scopes do not cover. For an optional read that is *not readable* (ipt_cds/fhir/client.py
goes on without it); for an essential one it stays a 412.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import httpx
import orjson

from ipt_cds.protocol.errors import PrefetchUnavailable

log = logging.getLogger("ipt_cds")

# Answers a simpler search (fewer parameters, no _include) may get past; a scope refusal
# (401, 403) would only be refused again.
SIMPLER_MAY_HELP = frozenset({400, 404, 405, 422, 501})
# What an OperationOutcome's issue.code may be (FHIR R4 IssueType): anything else a server puts
# there is not repeated in a log line or a metric label.
_ISSUE_TYPES = frozenset(
    [
        "invalid",
        "structure",
        "required",
        "value",
        "invariant",
        "security",
        "login",
        "unknown",
        "expired",
        "forbidden",
        "suppressed",
        "processing",
        "not-supported",
        "duplicate",
        "multiple-matches",
        "not-found",
        "deleted",
        "too-long",
        "code-invalid",
        "extension",
        "too-costly",
        "business-rule",
        "conflict",
        "transient",
        "lock-error",
        "no-store",
        "exception",
        "timeout",
        "incomplete",
        "throttled",
        "informational",
    ]
)
_SMALL = 64 * 1024


class Declined(PrefetchUnavailable):
    """The server answered the query, and said no. ``why`` is short and says nothing about the
    patient: the status and the OperationOutcome's issue code (``403/forbidden``)."""

    def __init__(self, message: str, *, code: str, why: str, simpler_may_help: bool) -> None:
        super().__init__(message, code=code)
        self.why = why
        self.simpler_may_help = simpler_may_help

    def fresh(self) -> Declined:
        return Declined(
            self.message, code=self.code, why=self.why, simpler_may_help=self.simpler_may_help
        )


def fresh(failure: PrefetchUnavailable) -> PrefetchUnavailable:
    """The same 412 without the traceback and the context of the original (see client._forget)."""
    if isinstance(failure, Declined):
        return failure.fresh()
    return PrefetchUnavailable(failure.message, code=failure.code)


def why_of(failure: PrefetchUnavailable) -> str:
    """A failure in a few words, for the log line and the metrics."""
    if isinstance(failure, Declined):
        return failure.why
    return failure.code.removeprefix("fhir_").replace("_", "-")


def issue_code(body: bytes) -> str | None:
    """The first issue's code of an OperationOutcome body, if it is one FHIR defines."""
    try:
        parsed: Any = orjson.loads(body[:_SMALL]) if len(body) <= _SMALL else None
    except orjson.JSONDecodeError:
        return None
    return outcome_code(parsed)


def outcome_code(resource: Any) -> str | None:
    if not isinstance(resource, dict) or resource.get("resourceType") != "OperationOutcome":
        return None
    issues = resource.get("issue")
    first = issues[0] if isinstance(issues, list) and issues else None
    code = first.get("code") if isinstance(first, dict) else None
    return code if isinstance(code, str) and code in _ISSUE_TYPES else None


def declined(key: str, status: int, issue: str | None) -> Declined:
    why = f"{status}/{issue}" if issue else str(status)
    if status in (401, 403):
        log.warning("fhir %s: HTTP %d%s", key, status, f" {issue}" if issue else "")
        return Declined(
            f"The FHIR server refused the {key} query (HTTP {status}): check fhirAuthorization.",
            code="fhir_unauthorized",
            why=why,
            simpler_may_help=False,
        )
    log.warning("fhir %s: HTTP %d%s", key, status, f" {issue}" if issue else "")
    return Declined(
        f"The FHIR server answered the {key} query with HTTP {status}.",
        code="fhir_error",
        why=why,
        simpler_may_help=status in SIMPLER_MAY_HELP,
    )


def outcome_instead_of_data(key: str, issue: str | None) -> Declined:
    """A 200 whose body is an OperationOutcome, not the Bundle or resource asked for."""
    log.warning(
        "fhir %s: an OperationOutcome instead of data%s", key, f" ({issue})" if issue else ""
    )
    return Declined(
        f"The FHIR server answered the {key} query with an OperationOutcome"
        f"{f' ({issue})' if issue else ''} instead of data.",
        code="fhir_error",
        why=f"outcome/{issue}" if issue else "outcome",
        simpler_may_help=True,
    )


def unavailable(key: str, status: int) -> PrefetchUnavailable:
    log.warning("fhir %s: HTTP %d", key, status)
    return PrefetchUnavailable(
        f"The FHIR server failed on the {key} query (HTTP {status}).", code="fhir_unavailable"
    )


def is_small_error(response: httpx.Response) -> bool:
    """An error answer worth reading for its OperationOutcome: not one that says it is large."""
    length = response.headers.get("content-length", "")
    return not (length.isdigit() and int(length) > _SMALL)


def first_meaningful(group: BaseExceptionGroup[Any]) -> PrefetchUnavailable:
    """The first failure that says what went wrong: the tasks' own 412s first."""
    leaves = list(_leaves(group))
    for exc in leaves:
        if isinstance(exc, PrefetchUnavailable):
            return exc
    if any(isinstance(exc, TimeoutError | httpx.TimeoutException) for exc in leaves):
        return PrefetchUnavailable("The FHIR server did not answer in time.", code="fhir_timeout")
    log.error("fhir fetch failed: %s", ", ".join(type(exc).__name__ for exc in leaves))
    return PrefetchUnavailable("The FHIR server's answer could not be used.", code="fhir_error")


def _leaves(group: BaseExceptionGroup[Any]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc
