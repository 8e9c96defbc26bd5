"""`ipt-cds fixtures load` notices what a server did not write, and what its searches miss;
`ipt-cds fixtures check` runs the services' own searches alone."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import respx

from ipt_cds.cli import main
from ipt_cds.devtools import fixture_check, integrator
from ipt_cds.devtools.fixtures import load_cases
from ipt_cds.replay.search import compile_searches

from .conftest import NOW

BASE = "http://fhir.test/fhir"
# A patient with conditions, an observation, an order and a service request: most searches
# have something to find.
NAME = "in-summary-past-attempt-800-days"
CASE = next(c for c in load_cases() if c.name == NAME)
SENT = [e["resource"] for e in CASE.transaction(NOW)["entry"]]
CONDITIONS = sum(r["resourceType"] == "Condition" for r in SENT)
OBSERVATIONS = sum(r["resourceType"] == "Observation" for r in SENT)
SEARCHES = {s.kind: s for s in compile_searches(fixture_check.services_searched()) if not s.read}

Json = dict[str, Any]


def outcome(text: str) -> Json:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "diagnostics": text}],
    }


@dataclass
class FakeFhir:
    """A FHIR server in memory: it stores what transactions and PUTs send and answers reads and
    the services' searches as a conforming server does, unless told to misbehave."""

    # The transaction-response status of each entry, from its resource.
    status_of: Callable[[Json], str] = lambda resource: "201 Created"
    # How many transaction-response entries to answer (None: one per entry sent).
    entries_kept: int | None = None
    # How the patient parameter must be written to match: "Patient/<id>" ("typed", as the
    # services send it), "<id>" only ("bare"), or never ("never": every searchset is empty).
    patient_form: str = "typed"
    transactions: bool = True
    refused_type: str | None = None  # a resource type every PUT of which answers 422
    refused_patients: frozenset[str] = frozenset()  # patients whose transaction answers 422
    token: str | None = None
    stored: dict[str, Json] = field(default_factory=dict)

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.token and request.headers.get("authorization") != f"Bearer {self.token}":
            return httpx.Response(401, json=outcome("who are you"))
        path = request.url.path.removeprefix("/fhir").strip("/")
        if request.method == "POST" and not path:
            if not self.transactions:
                return httpx.Response(405, json=outcome("no transactions here"))
            return self._transaction(json.loads(request.content))
        if request.method == "PUT":
            resource = json.loads(request.content)
            if resource["resourceType"] == self.refused_type:
                return httpx.Response(422, json=outcome(f"{self.refused_type} not accepted"))
            self.stored[path] = resource
            return httpx.Response(201, json=resource)
        if request.method == "GET" and path in self.stored:
            return httpx.Response(200, json=self.stored[path])
        if request.method == "GET" and path in SEARCHES:
            return httpx.Response(200, json=self._search(path, request.url.params))
        return httpx.Response(404, json=outcome("not found"))

    def _transaction(self, bundle: Json) -> httpx.Response:
        sent = bundle["entry"]
        if sent[0]["resource"]["id"] in self.refused_patients:
            return httpx.Response(422, json=outcome("refused"))
        answers = []
        for entry in sent:
            resource, status = entry["resource"], self.status_of(entry["resource"])
            answer: Json = {"status": status}
            if status.startswith("2"):
                self.stored[entry["request"]["url"]] = resource
            else:
                answer["outcome"] = outcome(f"{resource['resourceType']}.code: unknown system")
            answers.append({"response": answer})
        kept = answers[: self.entries_kept] if self.entries_kept is not None else answers
        body: Json = {"resourceType": "Bundle", "type": "transaction-response"}
        if kept:
            body["entry"] = kept
        return httpx.Response(200, json=body)

    def _search(self, kind: str, params: httpx.QueryParams) -> Json:
        value = params.get("patient", "")
        typed = value.removeprefix("Patient/") if value.startswith("Patient/") else None
        pid = {"typed": typed, "bare": None if "/" in value else value}.get(self.patient_form)
        own: dict[str, list[Json]] = {}
        for resource in self.stored.values():
            if resource.get("subject", {}).get("reference") == f"Patient/{pid}":
                own.setdefault(resource["resourceType"], []).append(resource)
        answer: Json = SEARCHES[kind].answer(pid or "", own, self.stored.get)
        return answer


@pytest.fixture
def mocked() -> Iterator[Callable[[FakeFhir], FakeFhir]]:
    """Routes every request to fhir.test, the loader's and the service's FHIR client's, to a
    fake server."""
    with respx.mock:

        def serve(fake: FakeFhir) -> FakeFhir:
            respx.route(host="fhir.test").mock(side_effect=fake.handle)
            return fake

        yield serve


def _load(names: list[str], out: io.StringIO | None = None) -> tuple[int, str]:
    out = out or io.StringIO()
    status = integrator.load(BASE, None, names, out, now=NOW, quiet=True)
    return status, out.getvalue()


def test_a_transaction_answered_200_whose_entries_say_400_fails_that_patient(
    mocked: Callable[[FakeFhir], FakeFhir],
) -> None:
    mocked(
        FakeFhir(
            status_of=lambda r: (
                "400 Bad Request" if r["resourceType"] == "Condition" else "201 Created"
            )
        )
    )
    status, text = _load([NAME])
    assert status == integrator.EXIT_FAILED
    first, summary = text.splitlines()
    assert first.startswith(f"{NAME}: FAILED, HTTP 200: Condition/{NAME}-c0 400 Bad Request: ")
    assert "Condition.code: unknown system" in first
    assert first.count("400 Bad Request") == CONDITIONS
    # Only the entries written count; no patient was whole, so none is searched.
    assert summary.startswith(f"Loaded 0 of 1 patients ({len(SENT) - CONDITIONS} resources)")


@pytest.mark.parametrize(
    ("kept", "said"),
    [
        (2, f"2 entries answer the {len(SENT)} sent"),
        (0, "the answer is not a transaction-response with entries"),
    ],
)
def test_a_transaction_response_short_of_entries_fails_that_patient(
    mocked: Callable[[FakeFhir], FakeFhir], kept: int, said: str
) -> None:
    mocked(FakeFhir(entries_kept=kept))
    status, text = _load([NAME])
    assert status == integrator.EXIT_FAILED
    assert text.splitlines()[0] == f"{NAME}: FAILED, HTTP 200: {said}"
    assert f"Loaded 0 of 1 patients ({kept} resources)" in text


def test_without_transactions_each_put_is_checked(mocked: Callable[[FakeFhir], FakeFhir]) -> None:
    mocked(FakeFhir(transactions=False, refused_type="Observation"))
    status, text = _load([NAME])
    assert status == integrator.EXIT_FAILED
    assert text.startswith(
        f"{NAME}: FAILED, HTTP 201: Observation/{NAME}-o0 HTTP 422: Observation not accepted"
    )
    assert f"({len(SENT) - OBSERVATIONS} resources)" in text


def test_a_server_matching_only_bare_patient_ids_fails_the_load(
    mocked: Callable[[FakeFhir], FakeFhir],
) -> None:
    mocked(FakeFhir(patient_form="bare"))
    status, text = _load([NAME])
    assert status == integrator.EXIT_FAILED
    assert f"Loaded 1 of 1 patients ({len(SENT)} resources)" in text
    paragraph = " ".join(text.splitlines()[1:])
    assert paragraph.startswith(
        f"FAILED: the services' searches missed resources loaded for {NAME}:"
    )
    assert f"conditions found 0 of the {CONDITIONS} Condition loaded" in paragraph
    assert "does not match the search's form" in paragraph
    assert f"  GET Condition?patient=Patient/{NAME}" in text.splitlines()
    assert "patient found" not in paragraph, "the read by id worked"


def test_a_server_whose_searches_answer_empty_bundles_fails_the_check(
    mocked: Callable[[FakeFhir], FakeFhir], capsys: pytest.CaptureFixture[str]
) -> None:
    fake = mocked(FakeFhir())
    assert _load([NAME])[0] == 0
    fake.patient_form = "never"
    assert main(["fixtures", "check", "--fhir-server", BASE, NAME]) == integrator.EXIT_FAILED
    lines = capsys.readouterr().out.splitlines()
    by_key = {line.split()[1]: line for line in lines if line.startswith(NAME)}
    assert by_key["patient"].split()[2:] == ["1", "/", "1", "Patient", "ok"]
    assert by_key["conditions"].split()[2:] == ["0", "/", str(CONDITIONS), "Condition", "FAILED"]
    assert by_key["procedures"].endswith("nothing loaded to find")
    paragraph = " ".join(line for line in lines if not line.startswith(NAME))
    assert f"conditions found 0 of the {CONDITIONS} Condition loaded" in paragraph
    assert f"observations found 0 of the {OBSERVATIONS} Observation loaded" in paragraph
    assert any(line.startswith("  GET Observation?patient=Patient/") for line in lines)


def test_a_well_behaved_server_passes_the_load_and_the_check(
    mocked: Callable[[FakeFhir], FakeFhir], capsys: pytest.CaptureFixture[str]
) -> None:
    mocked(FakeFhir())
    assert main(["fixtures", "load", "--fhir-server", BASE, "--quiet"]) == 0
    loaded = capsys.readouterr().out
    assert main(["fixtures", "check", "--fhir-server", BASE]) == 0
    lines = capsys.readouterr().out.splitlines()
    # The patients checked together give every search something to find.
    verdict = lines[-1]
    assert verdict.startswith("The services' searches found every resource loaded for ")
    assert verdict in loaded, "load checks the same patients"
    patients = verdict.rpartition(" for ")[2].split(", ")
    assert len(lines) - 1 == len(patients) * len(SEARCHES | {"Patient": None})
    searched = {line.split()[1] for line in lines[:-1] if line.endswith(" ok")}
    assert searched == {"patient", *(s.key for s in SEARCHES.values())}


def test_checking_a_patient_never_loaded_says_so(
    mocked: Callable[[FakeFhir], FakeFhir], capsys: pytest.CaptureFixture[str]
) -> None:
    mocked(FakeFhir())
    assert main(["fixtures", "check", "--fhir-server", BASE, NAME]) == integrator.EXIT_FAILED
    text = capsys.readouterr().out
    assert f"FAILED: the server has no Patient/{NAME}" in text
    assert "ipt-cds fixtures load" in text


def test_a_fetch_the_service_could_not_make_is_reported_once_with_its_code(
    mocked: Callable[[FakeFhir], FakeFhir], capsys: pytest.CaptureFixture[str]
) -> None:
    mocked(FakeFhir(token="right"))
    argv = ["fixtures", "check", "--fhir-server", BASE, "--token", "wrong"]
    assert main(argv) == integrator.EXIT_FAILED
    text = capsys.readouterr().out
    assert text.startswith("FAILED: the services' searches for ")
    assert "(fhir_unauthorized)" in text
    assert text.count("FAILED") == 1, "the other patients would fail the same way"


def test_a_type_the_server_could_not_give_is_named() -> None:
    found = fixture_check.Found(
        "procedures",
        "Procedure",
        "Procedure?patient=Patient/x",
        frozenset({"x-p0"}),
        frozenset(),
        True,
    )
    checked = fixture_check.Checked("x", (found,))
    assert not checked.ok
    text = " ".join(fixture_check.explain(checked).splitlines())
    assert "procedures found 0 of the 1 Procedure loaded (a type the server could not give)" in text
    assert text.endswith("  GET Procedure?patient=Patient/x")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("quiet", [True, False])
def test_fixtures_load_shows_one_progress_bar_or_nothing(
    mocked: Callable[[FakeFhir], FakeFhir], quiet: bool
) -> None:
    mocked(FakeFhir())
    names = [case.name for case in load_cases()[:3]]
    out = _Terminal()
    assert integrator.load(BASE, None, names, out, quiet=quiet) == 0
    text = out.getvalue()
    assert text.count("\n") == 2, "the summary and the check's verdict are the only lines"
    summary, verdict = text.split("\r")[-1].splitlines()
    assert summary.startswith("Loaded 3 of 3 patients ("), text
    assert verdict.startswith("The services' searches found every resource loaded for ")
    assert ("3/3 patients" in text) is not quiet


def test_fixtures_load_names_a_failure_on_its_own_line(
    mocked: Callable[[FakeFhir], FakeFhir],
) -> None:
    names = [case.name for case in load_cases()[:2]]
    mocked(FakeFhir(refused_patients=frozenset({names[1]})))
    out = _Terminal()
    assert integrator.load(BASE, None, names, out, quiet=True) == integrator.EXIT_FAILED
    lines = out.getvalue().splitlines()
    assert lines[0] == f"{names[1]}: FAILED, HTTP 422: refused"
    assert lines[1].startswith("Loaded 1 of 2 patients")
    assert lines[2] == f"The services' searches found every resource loaded for {names[0]}"
