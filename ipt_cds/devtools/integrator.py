"""What ``ipt-cds fixtures`` and ``ipt-cds invoke`` do for an integrator.

Load the synthetic patients into a sandbox FHIR server, call a hook with a fixture or a request
file, and print the cards the way a clinician would read them. Every failure is one clear line
on stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import httpx

from ipt_cds.devtools import dev_auth, fixture_check
from ipt_cds.devtools.fixtures import SANDBOX_FHIR, Case, authorization, load_cases
from ipt_cds.ops.progress import ProgressBar
from ipt_cds.protocol.vocabulary import HELD_BACK_HEADER

# Exit statuses: the work failed (a patient not loaded, a call not answered 200), or the user
# must fix something (a ToolError).
EXIT_FAILED = 1
EXIT_TOOL_ERROR = 2
# For one patient's transaction, or one hook call, on a developer's sandbox: generous for a
# server writing a whole patient at once, yet finite, so that one that hangs ends the run.
HTTP_TIMEOUT_SECONDS = 30
# A patient's failed entries named in its FAILED line, and the characters of a server's
# diagnostics kept: enough to see what went wrong, not a screenful per patient.
PROBLEMS_SHOWN = 5
DIAGNOSTICS_CHARS = 200


# (url, body, headers) -> the service's answer.
Post = Callable[[str, dict[str, Any], dict[str, str]], httpx.Response]


class ToolError(Exception):
    """A problem the user can fix: printed as one line, exit status ``EXIT_TOOL_ERROR``."""


def list_cases(out: TextIO) -> int:
    cases = load_cases()
    width = max(len(c.name) for c in cases)
    for case in cases:
        expected = ", ".join(f"{r} ({i})" for r, i in case.expect.items()) or "no cards"
        out.write(f"{case.name:<{width}}  {case.hook:<12}  {expected}\n")
    out.write(f"{len(cases)} fixtures\n")
    return 0


def _find(name: str) -> Case:
    for case in load_cases():
        if case.name == name:
            return case
    raise ToolError(f"no fixture named {name!r} (see `ipt-cds fixtures list`)")


def _headers(token: str | None) -> dict[str, str]:
    headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def _select(names: list[str], cases_dir: Path | None) -> list[Case]:
    if cases_dir is not None and not cases_dir.is_dir():
        raise ToolError(f"{cases_dir}: no such folder of fixture cases")
    every = load_cases(cases_dir) if cases_dir is not None else load_cases()
    unknown = sorted(set(names) - {c.name for c in every})
    if unknown:
        raise ToolError(f"no fixture named {unknown[0]!r} (see `ipt-cds fixtures list`)")
    return [c for c in every if c.name in names] if names else every


def load(
    fhir_server: str,
    token: str | None,
    names: list[str],
    out: TextIO,
    now: datetime | None = None,
    quiet: bool = False,
    cases_dir: Path | None = None,
) -> int:
    """PUT every fixture patient into the server, as one transaction per patient, dated
    relative to ``now`` (today by default), then run the services' own searches for a few of
    the patients loaded (``fixture_check``). On a terminal one progress bar, unless ``quiet``;
    failures, the summary and the check's verdict always."""
    cases = _select(names, cases_dir)
    base = fhir_server.rstrip("/")
    now = now or datetime.now(UTC)
    started, created, failed = time.perf_counter(), 0, []
    loaded: list[tuple[Case, list[dict[str, Any]]]] = []
    bar = ProgressBar(out, len(cases), shown=not quiet and out.isatty())
    with httpx.Client(timeout=HTTP_TIMEOUT_SECONDS, headers=_headers(token)) as http:
        for i, case in enumerate(cases, 1):
            bundle = case.transaction(now)
            try:
                written = _write(http, base, bundle)
            except httpx.TransportError as exc:
                raise ToolError(f"cannot reach the FHIR server at {base}: {exc}") from None
            if written.status in (401, 403):
                raise ToolError(f"the FHIR server refused the token (HTTP {written.status})")
            created += written.count
            if not written.ok:
                failed.append(case.name)
                bar.clear()
                out.write(f"{case.name}: FAILED, {written.describe()}\n")
            else:
                loaded.append((case, [e["resource"] for e in bundle["entry"]]))
            bar.show(i)
    bar.clear()
    seconds = time.perf_counter() - started
    out.write(
        f"Loaded {len(cases) - len(failed)} of {len(cases)} patients ({created} resources) "
        f"into {base} in {seconds:.1f} s\n"
    )
    searched = _check(base, token, loaded, out, per_search=False) if loaded else True
    return EXIT_FAILED if failed or not searched else 0


def check(
    fhir_server: str, token: str | None, names: list[str], out: TextIO, cases_dir: Path | None
) -> int:
    """The searches of ``load``'s check alone, for patients loaded before: the named ones, or
    the few ``load`` would pick. One line per search, exit 0 when each found what it should."""
    cases = _select(names, cases_dir)
    now = datetime.now(UTC)
    chosen = [(case, case.resources(now)) for case in cases]
    ok = _check(fhir_server.rstrip("/"), token, chosen, out, per_search=True, every=bool(names))
    return 0 if ok else EXIT_FAILED


def _check(
    base: str,
    token: str | None,
    loaded: list[tuple[Case, list[dict[str, Any]]]],
    out: TextIO,
    per_search: bool,
    every: bool = False,
) -> bool:
    try:
        service = fixture_check.services_searched()
        searches = fixture_check.searches_of(service)
        chosen = loaded if every else fixture_check.representatives(loaded, searches)
        checked = []
        for case, resources in chosen:
            checked.append(fixture_check.check_case(case, resources, base, token, service))
            if checked[-1].failure is not None:
                break  # the next patients' fetches would fail the same way: no news
    except fixture_check.CheckError as exc:
        raise ToolError(str(exc)) from None
    ok = fixture_check.write(checked, out, per_search)
    if ok:
        patients = ", ".join(c.patient for c in checked)
        out.write(f"The services' searches found every resource loaded for {patients}\n")
    return ok


@dataclass(frozen=True)
class Written:
    """What the server made of one patient's transaction: its HTTP status (the last PUT's,
    without transactions), how many resources it wrote, and why others were not."""

    status: int
    count: int
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300 and not self.problems

    def describe(self) -> str:
        shown = "; ".join(self.problems[:PROBLEMS_SHOWN])
        more = len(self.problems) - PROBLEMS_SHOWN
        return (
            f"HTTP {self.status}"
            + (f": {shown}" if shown else "")
            + (f"; and {more} more" if more > 0 else "")
        )


def _write(http: httpx.Client, base: str, bundle: dict[str, Any]) -> Written:
    response = http.post(base, json=bundle)
    if response.status_code in (400, 404, 405, 501):
        # Servers without transactions: one PUT per resource does the same.
        return _put_each(http, base, bundle)
    if not response.is_success:
        said = _outcome(response).removeprefix(": ")
        return Written(response.status_code, 0, (said,) if said else ())
    return _transaction_response(response, bundle["entry"])


def _transaction_response(response: httpx.Response, sent: list[dict[str, Any]]) -> Written:
    """A 2xx says the server took the Bundle, not that it wrote each resource: each entry of
    the transaction-response says that, in the order the requests were sent."""
    try:
        body = response.json()
    except ValueError:
        body = None
    entries = body.get("entry") if isinstance(body, dict) else None
    status = response.status_code
    if not isinstance(entries, list) or not entries:
        return Written(status, 0, ("the answer is not a transaction-response with entries",))
    count, problems = 0, []
    for request, entry in zip(sent, entries, strict=False):
        found = entry.get("response") if isinstance(entry, dict) else None
        answer: dict[str, Any] = found if isinstance(found, dict) else {}
        code = _status_code(answer.get("status"))
        if code is not None and 200 <= code < 300:
            count += 1
        else:
            what = request["request"]["url"]
            said = str(answer.get("status") or "no status")[:40]
            problems.append(f"{what} {said}{_diagnostics(answer.get('outcome'))}")
    if len(entries) < len(sent):
        problems.append(f"{len(entries)} entries answer the {len(sent)} sent")
    return Written(status, count, tuple(problems))


def _status_code(status: Any) -> int | None:
    """``"201 Created"`` -> 201; None for anything that is not a status."""
    head = status.strip().partition(" ")[0] if isinstance(status, str) else ""
    return int(head) if head.isdigit() else None


def _put_each(http: httpx.Client, base: str, bundle: dict[str, Any]) -> Written:
    status, count, problems = 200, 0, []
    for entry in bundle["entry"]:
        what = entry["request"]["url"]
        response = http.put(f"{base}/{what}", json=entry["resource"])
        status = response.status_code
        if status in (401, 403):
            return Written(status, count, (f"{what} HTTP {status}",))
        if response.is_success:
            count += 1
        else:
            problems.append(f"{what} HTTP {status}{_outcome(response)}")
    return Written(status, count, tuple(problems))


def _outcome(response: httpx.Response) -> str:
    try:
        return _diagnostics(response.json())
    except ValueError:
        return ""


def _diagnostics(outcome: Any) -> str:
    """An OperationOutcome's first issue's text, as ``: text`` (cut short), or nothing."""
    issues = outcome.get("issue") if isinstance(outcome, dict) else None
    issue = issues[0] if isinstance(issues, list) and issues else None
    if not isinstance(issue, dict):
        return ""
    details = issue.get("details")
    text = issue.get("diagnostics") or (details.get("text") if isinstance(details, dict) else None)
    return f": {str(text)[:DIAGNOSTICS_CHARS]}" if text else ""


def invoke(
    service_id: str,
    *,
    fixture: str | None,
    request_file: Path | None,
    service_url: str,
    fhir_server: str | None,
    token: str | None,
    prefetch: bool,
    as_json: bool,
    out: TextIO,
    signing_key: Path | None = None,
    detail: bool = False,
    post: Post | None = None,
    same_instance: bool = False,
) -> int:
    """``post``: how the request reaches the service (default: over HTTP to ``service_url``;
    the CLI's ``--in-process`` passes one that calls the app in this process).

    A fixture is sent as a new hook call each time, with a hookInstance of its own, as an EHR
    fires the hook again: the fixture's fixed one would make every invoke a retry of the first,
    answered and counted as that call. ``same_instance`` sends the fixture's, to try a retry."""
    if fixture:
        server = fhir_server or SANDBOX_FHIR
        body = _find(fixture).request(datetime.now(UTC), server, prefetch=prefetch)
        if not same_instance:
            body["hookInstance"] = str(uuid.uuid4())
        if token:
            body["fhirAuthorization"] = authorization(token, "ipt-cds-cli")
    elif request_file:
        body = _read_request(request_file)
    else:
        raise ToolError("give --fixture NAME or --request FILE")
    url = f"{service_url.rstrip('/')}/cds-services/{service_id}"
    headers = {}
    if signing_key is not None:
        try:
            headers["Authorization"] = f"Bearer {dev_auth.token(signing_key, url)}"
        except dev_auth.DevAuthError as exc:
            raise ToolError(str(exc)) from None
    send = post or _post_over_http
    try:
        response = send(url, body, headers)
    except httpx.TransportError as exc:
        raise ToolError(f"cannot reach the service at {service_url}: {exc}") from None
    if response.status_code != 200:
        out.write(f"HTTP {response.status_code}: {response.text}\n")
        return EXIT_FAILED
    answer = response.json()
    if as_json:
        out.write(json.dumps(answer, indent=2) + "\n")
    else:
        print_cards(answer.get("cards", []), out, detail)
        for line in held_back_lines(response.headers.get(HELD_BACK_HEADER, "")):
            out.write(line + "\n")
    return 0


# How a held card came to be held, for the line ``invoke`` prints.
_HELD_WHY = {
    "repeat": "shown {ago}; within the repeat window",
    "snooze": "overridden {ago}; snoozed",
    "assessed": "suicide risk assessed by this clinician {ago}",
}


def held_back_lines(header: str) -> list[str]:
    """``held back: rule, shown 12 min ago; ...`` for each card the service held back (the
    IPT-CDS-Held-Back header)."""
    lines = []
    for item in filter(None, (part.strip() for part in header.split(","))):
        rule, *params = (p.strip() for p in item.split(";"))
        values = dict(p.partition("=")[::2] for p in params)
        minutes = values.get("minutes", "?")
        ago = "just now" if minutes == "0" else f"{minutes} min ago"
        why = _HELD_WHY.get(values.get("why", ""), values.get("why", "") + " {ago}")
        lines.append(f"held back: {rule}, {why.format(ago=ago)}")
    return lines


def _post_over_http(url: str, body: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
    return httpx.post(url, json=body, headers=headers, timeout=HTTP_TIMEOUT_SECONDS)


def _read_request(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ToolError(f"{path}: no such file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ToolError(f"{path}: not a JSON file: {exc}") from None
    if not isinstance(data, dict):
        raise ToolError(f"{path}: a CDS Hooks request is a JSON object")
    return data


def print_cards(cards: list[dict[str, Any]], out: TextIO, detail: bool = False) -> None:
    """Each card's indicator, summary, rule and suggestions; with ``detail`` also its text,
    links, override reasons and source, wrapped for the terminal."""
    if not cards:
        out.write("No cards.\n")
    width = max(40, min(100, shutil.get_terminal_size((100, 24)).columns))
    for card in cards:
        topic = card.get("source", {}).get("topic", {})
        out.write(f"{card['indicator'].upper():<9} {card['summary']}\n")
        out.write(f"{'':<9} rule: {topic.get('code')} ({topic.get('display')})\n")
        for suggestion in card.get("suggestions", []):
            actions = ", ".join(
                f"{a['type']} {a.get('resourceId') or a.get('resource', {}).get('resourceType')}"
                for a in suggestion.get("actions", [])
            )
            out.write(f"{'':<9} suggestion: {suggestion['label']} [{actions}]\n")
        if detail:
            _write_detail(card, out, width)
        out.write("\n")


def _write_detail(card: dict[str, Any], out: TextIO, width: int) -> None:
    indent = " " * 10
    out.write("\n")
    for paragraph in str(card.get("detail", "")).split("\n"):
        bullet = paragraph.lstrip().startswith(("- ", "* "))
        lines = textwrap.wrap(
            paragraph.strip(),
            width,
            initial_indent=indent,
            subsequent_indent=indent + ("  " if bullet else ""),
        )
        out.write("\n".join(lines or [""]) + "\n")
    for link in card.get("links", []):
        out.write(f"{indent}link: {link['label']} <{link['url']}>\n")
    reasons = [r.get("display", r.get("code")) for r in card.get("overrideReasons", [])]
    if reasons:
        text = f"override reasons: {'; '.join(reasons)}"
        wrapped = textwrap.wrap(text, width, initial_indent=indent, subsequent_indent=indent + "  ")
        out.write("\n".join(wrapped) + "\n")
    source = card.get("source", {})
    where = f" <{source['url']}>" if source.get("url") else ""
    out.write(f"{indent}source: {source.get('label')}{where}\n")


def run(fn: Any, *args: Any, **kwargs: Any) -> int:
    try:
        code: int = fn(*args, **kwargs)
    except ToolError as exc:
        sys.stderr.write(f"ipt-cds: {exc}\n")
        return EXIT_TOOL_ERROR
    return code
