"""Replay answers what the HTTP service answers: for every fixture patient and every scenario,
the cards of a replay over fhir_fixtures/patients/ equal the service's cards for the same call,
sent with the prefetch the fixture requests carry (every resource of the patient, unfiltered:
replay's own searches filter by status and code, and must not lose a card by it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ipt_cds.devtools.fixtures import Case, load_cases, prefetch_of
from ipt_cds.http.app import create_app
from ipt_cds.knowledge.base import Knowledge
from ipt_cds.ops.config import Settings
from ipt_cds.replay.scenarios import SCENARIOS

from .conftest import NOW, SERVICE_OF_HOOK
from .replaying import FIXTURE_BUNDLES, CardsByCall, cards_by_call, run_replay, scenario_request

CASES = load_cases()


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> CardsByCall:
    out = tmp_path_factory.mktemp("replay")
    finished = run_replay(FIXTURE_BUNDLES, out)
    assert finished.summary["patients"] == len(CASES)
    return cards_by_call(out)


@pytest.fixture(scope="module")
def client(knowledge: Knowledge, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    store = tmp_path_factory.mktemp("store") / "store.sqlite3"
    app = create_app(
        Settings(database_url=f"sqlite:///{store}"), clock=lambda: NOW, knowledge=knowledge
    )
    with TestClient(app) as client:
        yield client


def _served(client: TestClient, case: Case, scenario: str) -> dict[str, str]:
    hook = SCENARIOS[scenario].hook
    body = scenario_request(scenario, case.patient_id, hook)
    body["prefetch"] = prefetch_of(case.resources(NOW))
    response = client.post(f"/cds-services/{SERVICE_OF_HOOK[hook]}", json=body)
    assert response.status_code == 200, response.text
    return {c["source"]["topic"]["code"]: c["indicator"] for c in response.json()["cards"]}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_replay_gives_the_services_cards_for_every_fixture_patient(
    case: Case, replayed: CardsByCall, client: TestClient
) -> None:
    for scenario in SCENARIOS:
        served = _served(client, case, scenario)
        assert replayed.get((case.patient_id, scenario), {}) == served, scenario


def test_the_comparison_is_not_vacuous(replayed: CardsByCall) -> None:
    for scenario in SCENARIOS:
        fired = {rule for (_, s), cards in replayed.items() if s == scenario for rule in cards}
        assert len(fired) >= 3, f"{scenario}: too few rules fire to compare anything"


def test_fixture_cases_are_the_replayed_patients() -> None:
    names = {p.stem for p in Path(FIXTURE_BUNDLES).glob("*.json")}
    assert names == {c.patient_id for c in CASES}
