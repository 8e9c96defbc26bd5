"""Against a real FHIR server: load the fixtures, call every hook without prefetch, compare."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from service.devtools import integrator
from service.devtools.fixtures import Case, authorization, load_cases, service_of_hook
from service.http.app import create_app
from service.knowledge.base import Knowledge
from service.ops.config import Settings
from service.replay.scenarios import SCENARIOS

from ..conftest import NOW
from ..replaying import FIXTURE_BUNDLES, CardsByCall, cards_by_call, run_replay, scenario_request
from .conftest import FhirServer

CASES = load_cases()
# A real server answers every search: the cases whose searches a server refuses run through
# tests/test_rule_cases.py (a fake that refuses them) and tests/test_fhir_servers.py.
ANSWERED = [c for c in CASES if not c.unreadable]


@pytest.fixture(scope="module")
def loaded(fhir_server: FhirServer) -> FhirServer:
    out = io.StringIO()
    assert integrator.load(fhir_server.base, fhir_server.token, [], out, now=NOW) == 0, (
        out.getvalue()
    )
    assert f"Loaded {len(CASES)} of {len(CASES)} patients" in out.getvalue()
    return fhir_server


@pytest.fixture
def client(
    knowledge: Knowledge, fhir_server: FhirServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    db = tmp_path_factory.mktemp("store") / "store.sqlite3"
    settings = Settings(database_url=f"sqlite:///{db}", fhir_allowlist=[fhir_server.base])
    app = create_app(settings, clock=lambda: NOW, knowledge=knowledge)
    with TestClient(app) as client:
        yield client


def _call(
    client: TestClient, case: Case, server: FhirServer, token: str
) -> tuple[int, dict[str, str]]:
    body = case.request(NOW, server.base, prefetch=False)
    body["fhirAuthorization"] = authorization(token)
    response = client.post(f"/cds-services/{service_of_hook()[case.hook]}", json=body)
    if response.status_code != 200:
        return response.status_code, {"code": response.json()["code"]}
    return 200, {c["source"]["topic"]["code"]: c["indicator"] for c in response.json()["cards"]}


@pytest.mark.parametrize("case", ANSWERED, ids=lambda c: c.name)
def test_every_fixture_fetched_from_the_fhir_server(
    client: TestClient, loaded: FhirServer, case: Case
) -> None:
    assert _call(client, case, loaded, loaded.token) == (200, case.expect)


def test_a_wrong_token_answers_412(client: TestClient, loaded: FhirServer) -> None:
    status, body = _call(client, CASES[0], loaded, "not-the-token")
    assert (status, body) == (412, {"code": "fhir_unauthorized"})


def test_a_patient_whose_searches_page_is_fetched_whole(
    client: TestClient, loaded: FhirServer, caplog: pytest.LogCaptureFixture
) -> None:
    # 45 conditions page at 20 on this server: the call must read all three pages.
    many = Case.model_validate(
        {
            "name": "in-paging-45-conditions",
            "describe": "Depression among 44 other conditions; the searches page.",
            "hook": "order-sign",
            "age": 40,
            "conditions": [f"I{10 + i % 5}" for i in range(44)] + ["F33.1"],
            "drafts": ["ipt"],
        }
    )
    headers = {"Authorization": f"Bearer {loaded.token}", "Content-Type": "application/fhir+json"}
    response = httpx.post(loaded.base, json=many.transaction(NOW), headers=headers)
    assert response.is_success, response.text
    with caplog.at_level(logging.INFO, logger="ipt_cds"):
        status, cards = _call(client, many, loaded, loaded.token)
    assert status == 200
    # The depression (F33.1) is the last condition, on the third page: a card about it shows all
    # pages were read. Knowledge v2: with no PHQ-9 in 90 days (`phq9_due`) and no antidepressant
    # in the plan, the IPT draft gets ipt-measure-severity in place of ipt-suitable.
    assert cards == {"ipt-measure-severity": "info"}
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("hook "))
    assert " resources=46 " in line


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> CardsByCall:
    out = tmp_path_factory.mktemp("replay")
    assert run_replay(FIXTURE_BUNDLES, out).summary["patients"] == len(CASES)
    return cards_by_call(out)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_replay_agrees_with_the_service_fetching_from_the_fhir_server(
    client: TestClient, loaded: FhirServer, replayed: CardsByCall, case: Case
) -> None:
    """Replay answers the prefetch searches from the export itself; a real server answers the
    same searches (status and code filters, _include) so the cards must be the same."""
    for scenario, meant in SCENARIOS.items():
        body = scenario_request(scenario, case.patient_id, meant.hook)
        body["fhirServer"] = loaded.base
        body["fhirAuthorization"] = authorization(loaded.token)
        response = client.post(f"/cds-services/{service_of_hook()[meant.hook]}", json=body)
        assert response.status_code == 200, response.text
        served = {c["source"]["topic"]["code"]: c["indicator"] for c in response.json()["cards"]}
        assert replayed.get((case.patient_id, scenario), {}) == served, scenario
