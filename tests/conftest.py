"""Shared test helpers: an app factory, a fake FHIR server, and request builders."""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
import sqlalchemy
import sqlalchemy.exc
import yaml
from fastapi.testclient import TestClient

from ipt_cds.devtools.fixtures import KEYS, authorization
from ipt_cds.http.app import create_app
from ipt_cds.knowledge.base import Knowledge
from ipt_cds.ops.config import Settings
from ipt_cds.pipeline import Rule

from .tcp_proxy import TcpProxy, proxy_to

# Vendored reference data (tests/data/README.md says where each part comes from).
DATA = Path(__file__).resolve().parent / "data"
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
FHIR_BASE = "https://ehr.example.org/fhir"
# The fhirServer of the fhir-test-cases vectors: a loopback test server, so it may be allowed.
VECTOR_FHIR_BASE = "http://localhost:8080/fhir"
TOKEN = "secret-access-token-xyz"
HOOK_INSTANCE = "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea"
PATIENT_ID = "pat-1"
# The service offered for each hook, read from cards/services.yaml so that a new hook's service
# is tested without an edit here (the shipped file offers one service per hook).
SERVICE_OF_HOOK: dict[str, str] = {
    s["hook"]: s["id"]
    for s in yaml.safe_load((Settings().knowledge_dir / "services.yaml").read_text())["services"]
}

Json = dict[str, Any]


@dataclass
class FakeFhir:
    """A FHIR server behind ``httpx.MockTransport``: reads, searches with paging, recorded calls."""

    resources: list[Json] = field(default_factory=list)
    page_size: int = 20
    # Overrides by resource type (the part of the path before ``?``): a status code or an
    # exception class to raise, for failure tests.
    fail: dict[str, int | type[Exception]] = field(default_factory=dict)
    outcomes: dict[str, Json] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)
    # Answers made by hand, by resource type: each search of the type gets the next one, then
    # the server answers as usual (an odd answer for one call, and the next call served).
    answers: dict[str, list[Callable[[], httpx.Response]]] = field(default_factory=dict)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def answering(self, kind: str, *answers: Callable[[], httpx.Response]) -> FakeFhir:
        """This server, with ``answers`` for the next searches of ``kind``."""
        self.answers.setdefault(kind, []).extend(answers)
        return self

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path.strip("/").removeprefix("fhir/")
        kind, _, rid = path.partition("/")
        if not rid and self.answers.get(kind):
            return self.answers[kind].pop(0)()
        failure = self.fail.get(kind)
        if isinstance(failure, type):
            raise failure("simulated", request=request)  # type: ignore[call-arg]
        if isinstance(failure, int):
            return httpx.Response(failure, json={"resourceType": "OperationOutcome"})
        if rid:
            found = [r for r in self.resources if r["resourceType"] == kind and r.get("id") == rid]
            return httpx.Response(200, json=found[0]) if found else httpx.Response(404)
        matches = [r for r in self.resources if r["resourceType"] == kind]
        offset = int(request.url.params.get("_offset", "0"))
        page = matches[offset : offset + self.page_size]
        bundle: Json = {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(matches),
            "entry": [{"resource": r, "search": {"mode": "match"}} for r in page],
        }
        if kind in self.outcomes:
            bundle["entry"].append({"resource": self.outcomes[kind], "search": {"mode": "outcome"}})
        if offset + self.page_size < len(matches):
            next_url = request.url.copy_set_param("_offset", str(offset + self.page_size))
            bundle["link"] = [{"relation": "next", "url": str(next_url)}]
        return httpx.Response(200, json=bundle)

    def paths(self) -> list[str]:
        return [r.url.path.strip("/").removeprefix("fhir/").split("/")[0] for r in self.requests]


@pytest.fixture(scope="session")
def knowledge() -> Knowledge:
    """Loaded once: the knowledge base is read-only, and loading it takes a while."""
    return Knowledge.load(Settings().knowledge_dir)


POSTGRES = os.environ.get(
    "IPT_CDS_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The store on both databases: SQLite in a temporary file, PostgreSQL (the CI machine's
    server) in a schema of its own that is dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.sqlite3'}"
        return
    with postgres_schema() as url:
        yield url


@contextmanager
def postgres_schema(via: int | None = None) -> Iterator[str]:
    """A URL of the test PostgreSQL, in a schema of its own dropped afterwards; ``via`` another
    port on this machine (tests/tcp_proxy.py) that leads to it."""
    schema = f"ipt_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = sqlalchemy.create_engine(POSTGRES, connect_args={"connect_timeout": 3})
        with admin.begin() as conn:
            conn.execute(sqlalchemy.text(f'CREATE SCHEMA "{schema}"'))
    except sqlalchemy.exc.OperationalError as exc:
        message = f"no PostgreSQL reachable at {POSTGRES}: {type(exc.orig).__name__}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    url = sqlalchemy.make_url(POSTGRES)
    if via is not None:
        url = url.set(host="127.0.0.1", port=via)
    try:
        yield f"{url.render_as_string(hide_password=False)}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sqlalchemy.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(autouse=True)
def _log_level_restored() -> Iterator[None]:
    """The ipt_cds logger as each test found it: a command run in-process (``ipt-cds invoke``,
    ``openapi``, a replay) sets it to ERROR, and a later test of the same worker (which tests
    share one depends on how the files are spread) would never see the warning it asserts."""
    logger = logging.getLogger("ipt_cds")
    level = logger.level
    yield
    logger.setLevel(level)


@pytest.fixture(autouse=True)
def _own_spool(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's apps (and the servers it starts) spool in a folder of their own: apps of
    earlier tests on the same database would otherwise take over each other's spooled entries,
    and a checkout would collect ``ipt-cds-spool/``."""
    monkeypatch.setenv("IPT_CDS_SPOOL_DIR", str(tmp_path_factory.mktemp("spool")))


@pytest.fixture
def postgres_via_proxy() -> Iterator[tuple[str, TcpProxy]]:
    """The test PostgreSQL through a TCP proxy the test can cut and restore: an outage."""
    target = sqlalchemy.make_url(POSTGRES)
    with (
        proxy_to(target.host or "127.0.0.1", target.port or 5432) as proxy,
        postgres_schema(via=proxy.port) as url,
    ):
        yield url, proxy


def copy_knowledge(to: Path, *left_out: str) -> Path:
    """A copy of cards/ for a test to edit or break, without the value sets' vendored sources
    (two thirds of its bytes, which the service never reads) and without ``left_out``."""
    shutil.copytree(
        Settings().knowledge_dir,
        to,
        ignore=shutil.ignore_patterns("sources", "__pycache__", *left_out),
    )
    return to


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        database_url=f"sqlite:///{tmp_path / 'store.sqlite3'}",
        fhir_retries=0,
        fhir_allowlist=[FHIR_BASE, VECTOR_FHIR_BASE],
    )


AppFactory = Callable[..., TestClient]


@pytest.fixture
def make_client(settings: Settings, knowledge: Knowledge) -> Iterator[AppFactory]:
    clients: list[TestClient] = []

    def make(
        fhir: FakeFhir | None = None,
        rules: tuple[Rule, ...] = (),
        clock: Callable[[], datetime] = lambda: NOW,
        site_file: Path | None = None,
        **overrides: Any,
    ) -> TestClient:
        # The shared knowledge unless a site profile asks for its own.
        own = Knowledge.load(settings.knowledge_dir, site_file) if site_file else knowledge
        app = create_app(
            settings.model_copy(update=overrides),
            fhir_transport=(fhir or FakeFhir()).transport(),
            clock=clock,
            rules=rules,
            knowledge=own,
        )
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: AppFactory) -> TestClient:
    return make_client()


@pytest.fixture
def fhir() -> Iterator[respx.MockRouter]:
    """The EHR's FHIR server faked with respx, for the FHIR client on its own; a request no
    route matches fails the test."""
    with respx.mock(base_url=FHIR_BASE, assert_all_called=False) as router:
        # A server without a CapabilityStatement: every search is sent as written.
        router.get("/metadata").respond(404)
        yield router


# --- FHIR and CDS Hooks builders -----------------------------------------------------------


def patient(pid: str = PATIENT_ID, birth: str = "1980-05-01") -> Json:
    return {"resourceType": "Patient", "id": pid, "birthDate": birth, "gender": "female"}


def condition(
    cid: str, code: str = "F33.1", system: str = "http://hl7.org/fhir/sid/icd-10-cm"
) -> Json:
    return {
        "resourceType": "Condition",
        "id": cid,
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": "active",
                }
            ]
        },
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
    }


def draft_service_request(oid: str, coding: Json) -> Json:
    return {
        "resourceType": "ServiceRequest",
        "id": oid,
        "status": "draft",
        "intent": "order",
        "code": {"coding": [{"system": "http://snomed.info/sct", **coding}]},
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
    }


def ipt_order(oid: str = "ipt-draft-1") -> Json:
    return draft_service_request(
        oid, {"code": "443730003", "display": "Interpersonal psychotherapy"}
    )


def neutral_order(oid: str = "pt-draft-1") -> Json:
    """A draft order no clinical rule looks at (physical therapy)."""
    return draft_service_request(oid, {"code": "91251008"})


def hypertension(cid: str) -> Json:
    """A condition no clinical rule looks at."""
    return condition(cid, "I10")


def bundle(*resources: Json, kind: str = "searchset") -> Json:
    return {"resourceType": "Bundle", "type": kind, "entry": [{"resource": r} for r in resources]}


def full_prefetch(*extra: Json) -> dict[str, Json | None]:
    """Every prefetch key the services declare, answered."""
    by_key: dict[str, list[Json]] = {
        "conditions": [],
        "observations": [],
        "medications": [],
        "medicationStatements": [],
        "serviceRequests": [],
        "procedures": [],
    }
    for r in extra:
        by_key[KEYS[r["resourceType"]]].append(r)
    out: dict[str, Json | None] = {"patient": patient()}
    out.update({k: bundle(*v) for k, v in by_key.items()})
    return out


def hook_request(
    hook: str,
    prefetch: dict[str, Json | None] | None = None,
    drafts: list[Json] | None = None,
    selections: list[str] | None = None,
    with_auth: bool = True,
) -> Json:
    context: Json = {"userId": "Practitioner/example", "patientId": PATIENT_ID}
    if hook != "patient-view":
        orders = drafts if drafts is not None else [neutral_order()]
        context["draftOrders"] = bundle(*orders, kind="collection")
    if hook == "order-select":
        context["selections"] = selections or [
            f"{d['resourceType']}/{d['id']}" for d in (drafts or [neutral_order()])[:1]
        ]
    body: Json = {
        "hook": hook,
        "hookInstance": HOOK_INSTANCE,
        "fhirServer": FHIR_BASE,
        "context": context,
    }
    if with_auth:
        body["fhirAuthorization"] = authorization(TOKEN)
    if prefetch is not None:
        body["prefetch"] = copy.deepcopy(prefetch)
    return body


def load_json(path: Path) -> Json:
    data: Json = json.loads(path.read_text())
    return data


class StreamedBody(httpx.AsyncByteStream):
    """A body sent as it is generated, counting what the client took: a 50 MB Bundle or a
    gzip bomb is never built in memory, and a client that stops early is seen to."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            self.sent += len(chunk)
            yield chunk


# The fixtures that serve a whole app: a test that uses one (even through another fixture) is
# an HTTP test, which scripts/test --quick leaves to CI.
APP_FIXTURES = frozenset({"make_client", "client"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if APP_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.app)
    # The files of slow tests first: a test file is one worker's (--dist loadfile), handed out
    # in this order, and Spark's half a minute, collected near the end, kept one worker busy
    # for 20 s after the others had finished.
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
