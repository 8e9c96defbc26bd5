"""Every fixture through the fetch path, from the real FHIR server behind a proxy over real TCP
that gives it the habits of the servers health systems run (tests/personality_fhir.py): a strict
US Core server, one that ignores ``_include`` and has no CapabilityStatement, tokens whose
scopes leave types out. The fakes of tests/test_fhir_servers.py test one patient each way; here
the real connection pool, real paging and a case of every rule and outcome meet them."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from ipt_cds.devtools.fixtures import Case, authorization, load_cases, service_of_hook
from ipt_cds.http.app import create_app
from ipt_cds.knowledge.base import Knowledge
from ipt_cds.ops.config import Settings

from ..conftest import NOW
from ..personality_fhir import PERSONALITIES, REFUSED, PersonalityFhir
from ..replaying import one_per_rule_and_outcome
from .conftest import FhirServer, Loaded

CASES = load_cases()
ANSWERED = [c for c in CASES if not c.unreadable]
UNREADABLE = [c for c in CASES if c.unreadable]
# One case of each rule and outcome, and every case with a drug recorded only as a
# MedicationStatement (which a US Core server does not have): the fixtures are built alike, so
# what a personality changes (the searches, _include, scopes) meets every kind of resource and
# every rule either way. Every case's cards from the server itself are checked in
# test_fhir_server.py.
SHOWN = one_per_rule_and_outcome(ANSWERED)
PERSONAL = SHOWN + [c for c in ANSWERED if c.statements and c not in SHOWN]
SAFETY = frozenset({"ipt-suicide-risk", "ipt-psychosis", "ipt-bipolar"})

Cards = dict[str, str]


@pytest.fixture(scope="module")
def proxy(fixtures_loaded: Loaded) -> Iterator[PersonalityFhir]:
    assert fixtures_loaded.status == 0, fixtures_loaded.report
    with PersonalityFhir(fixtures_loaded.server.base).running() as proxy:
        yield proxy


def _client(
    knowledge: Knowledge, proxy: PersonalityFhir, tmp_path_factory: pytest.TempPathFactory
) -> TestClient:
    db = tmp_path_factory.mktemp("store") / "store.sqlite3"
    allowed = [proxy.base(name) for name in PERSONALITIES]
    settings = Settings(database_url=f"sqlite:///{db}", fhir_allowlist=allowed)
    return TestClient(create_app(settings, clock=lambda: NOW, knowledge=knowledge))


@pytest.fixture(scope="module")
def client(
    knowledge: Knowledge, proxy: PersonalityFhir, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    """One app for the module, as a service runs: each server's statement is read once."""
    with _client(knowledge, proxy, tmp_path_factory) as client:
        yield client


def _call(client: TestClient, case: Case, base: str, token: str) -> tuple[int, Cards]:
    body = case.request(NOW, base, prefetch=False)
    body["fhirAuthorization"] = authorization(token)
    response = client.post(f"/cds-services/{service_of_hook()[case.hook]}", json=body)
    if response.status_code != 200:
        return response.status_code, {"code": response.json()["code"]}
    return 200, {c["source"]["topic"]["code"]: c["indicator"] for c in response.json()["cards"]}


def _prefetched(client: TestClient, case: Case, base: str) -> Cards:
    """The cards when the EHR prefetches the case (its ``unreadable`` keys as an
    OperationOutcome): nothing is searched."""
    body = case.request(NOW, base, prefetch=True)
    response = client.post(f"/cds-services/{service_of_hook()[case.hook]}", json=body)
    assert response.status_code == 200, response.text
    return {c["source"]["topic"]["code"]: c["indicator"] for c in response.json()["cards"]}


@pytest.mark.parametrize("personality", ["strict-us-core", "no-include"])
@pytest.mark.parametrize("case", PERSONAL, ids=lambda c: c.name)
def test_each_kind_of_fixture_gives_its_cards(
    client: TestClient,
    proxy: PersonalityFhir,
    fhir_server: FhirServer,
    personality: str,
    case: Case,
) -> None:
    base = proxy.base(personality)
    expected: Cards = dict(case.expect)
    if personality == "strict-us-core" and case.statements:
        # US Core has no MedicationStatement: a drug recorded only as one is not on such a
        # server at all, and the patient is the same one without it (not-offered is not
        # unknown, docs/fhir-servers.md).
        expected = _prefetched(client, case.model_copy(update={"statements": []}), base)
    assert _call(client, case, base, fhir_server.token) == (200, expected)


@pytest.mark.parametrize("case", PERSONAL, ids=lambda c: c.name)
def test_scopes_without_therapy_keep_the_safety_cards(
    client: TestClient, proxy: PersonalityFhir, fhir_server: FhirServer, case: Case
) -> None:
    """Therapy unknown may change the advice; it never blanks the answer nor silences a safety
    card, and a search the server refuses gives the cards a prefetch that could not read it
    gives (an OperationOutcome for the key)."""
    base = proxy.base("narrow-scopes")
    status, cards = _call(client, case, base, fhir_server.token)
    assert status == 200, cards
    for rule in SAFETY & case.expect.keys():
        assert cards.get(rule) == case.expect[rule], rule
    unknown_therapy = case.model_copy(update={"unreadable": ["serviceRequests", "procedures"]})
    assert cards == _prefetched(client, unknown_therapy, base)


def _personality_refusing(case: Case) -> str:
    """The personality refusing exactly the types the case cannot read: the case's cards hold
    only if the rest is read."""
    found = [name for name, kinds in REFUSED.items() if kinds == case.refused_types]
    assert found, f"no personality refuses exactly {sorted(case.refused_types)}"
    return found[0]


@pytest.mark.parametrize("case", UNREADABLE, ids=lambda c: c.name)
def test_a_case_whose_reads_the_token_refuses_gives_its_cards(
    client: TestClient, proxy: PersonalityFhir, fhir_server: FhirServer, case: Case
) -> None:
    personality = _personality_refusing(case)
    assert _call(client, case, proxy.base(personality), fhir_server.token) == (200, case.expect)
    patient = f"Patient/{case.patient_id}"
    refused = [
        s
        for s in proxy.seen_by(personality)
        if s.kind in REFUSED[personality] and ("patient", patient) in s.params
    ]
    # Each refused once, on the wire, and not asked again: a scope refused stays refused.
    assert sorted((s.kind, s.status) for s in refused) == sorted(
        (kind, 403) for kind in REFUSED[personality]
    )


def test_searches_are_shaped_to_the_strict_server(
    knowledge: Knowledge,
    proxy: PersonalityFhir,
    fhir_server: FhirServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # Patients with current orders, one of them referencing its drug (which _include brings).
    by_reference = next(c for c in ANSWERED if c.name == "in-suicide-sertraline-by-reference")
    cases = [c for c in ANSWERED if c.medications and not c.statements and c != by_reference]
    cases = [*cases[:4], by_reference]
    base = proxy.base("strict-us-core")
    before = len(proxy.seen)
    with _client(knowledge, proxy, tmp_path_factory) as client:
        for case in cases:
            assert _call(client, case, base, fhir_server.token) == (200, case.expect)
    seen = [s for s in proxy.seen[before:] if s.personality == "strict-us-core"]
    assert [s.path for s in seen].count("metadata") == 1
    assert all("_include" not in s.names() for s in seen)
    assert not [s for s in seen if s.kind == "MedicationStatement"]
    orders = [s for s in seen if s.path == "MedicationRequest"]
    assert len(orders) == len(cases) > 1
    assert all("intent" in s.names() for s in orders)
    # Nothing refused: every search was one the server takes.
    assert {s.status for s in seen} == {200}
    # The drugs orders reference, which _include would have brought, were read by id.
    assert any(s.kind == "Medication" for s in seen)


def test_a_server_without_a_statement_is_asked_as_written(
    knowledge: Knowledge,
    proxy: PersonalityFhir,
    fhir_server: FhirServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    case = next(c for c in ANSWERED if c.name == "in-suicide-sertraline-by-reference")
    before = len(proxy.seen)
    with _client(knowledge, proxy, tmp_path_factory) as client:
        assert _call(client, case, proxy.base("no-include"), fhir_server.token) == (
            200,
            case.expect,
        )
    seen = [s for s in proxy.seen[before:] if s.personality == "no-include"]
    assert [s.path for s in seen].count("metadata") == 1
    # Sent with _include (nothing says the server lacks it), which the server ignored: the
    # drug was read by id.
    (orders,) = [s for s in seen if s.path == "MedicationRequest"]
    assert "_include" in orders.names()
    assert [s.status for s in seen if s.kind == "Medication"] == [200]


def test_next_links_are_rewritten_to_the_personality(
    proxy: PersonalityFhir, fhir_server: FhirServer
) -> None:
    """A harness check: the service follows only next links on the server it asked."""
    case = next(c for c in ANSWERED if len(c.conditions) >= 3)
    base = proxy.base("everything")
    headers = {"Authorization": f"Bearer {fhir_server.token}"}
    url: str | None = f"{base}/Condition?patient=Patient/{case.patient_id}&_count=1"
    ids: list[str] = []
    with httpx.Client(headers=headers) as http:
        while url is not None:
            assert url.startswith(base + "/"), url
            page = http.get(url).raise_for_status().json()
            ids += [e["resource"]["id"] for e in page.get("entry", [])]
            url = next((x["url"] for x in page.get("link", []) if x["relation"] == "next"), None)
    assert len(set(ids)) == len(case.conditions)
