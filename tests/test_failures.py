"""Failures inside the service: a broken rule loses only its own card, an unexpected error is a
JSON 500 whose log line carries no exception text, and a client that leaves is not an error."""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.types import Message

from ipt_cds.clinical.fact_model import Facts
from ipt_cds.http.app import create_app
from ipt_cds.ops.config import Settings
from ipt_cds.pipeline import HookCall
from ipt_cds.protocol.models import Card

from .asgi import http_scope
from .conftest import AppFactory, FakeFhir, condition, copy_knowledge, hook_request, ipt_order

FIXTURES = Path(__file__).resolve().parent.parent / "fhir_fixtures"
SECRET = "Jane Q Patient"


class BrokenRule:
    id = "broken-python-rule"
    hooks = frozenset({"order-sign"})

    def evaluate(self, call: HookCall, facts: Facts) -> Card | None:
        raise RuntimeError(f"cannot handle {SECRET}")


def _rules(response: Any) -> dict[str, str]:
    return {c["source"]["topic"]["code"]: c["indicator"] for c in response.json()["cards"]}


def _no_secret(caplog: pytest.LogCaptureFixture) -> None:
    assert all(SECRET not in r.getMessage() and r.exc_info is None for r in caplog.records)


def test_a_failing_python_rule_drops_only_its_own_card(
    make_client: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(FakeFhir(resources=[condition("c1", "F33.1")]), rules=(BrokenRule(),))
    with caplog.at_level(logging.INFO, logger="ipt_cds"):
        response = client.post(
            "/cds-services/ipt-order-sign", json=hook_request("order-sign", drafts=[ipt_order()])
        )
    assert response.status_code == 200
    # No PHQ-9 on record: the shipped rules ask for one before IPT alone (the spec v2).
    assert _rules(response) == {"ipt-measure-severity": "info"}
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == ["rule broken-python-rule failed: RuntimeError"]
    _no_secret(caplog)


def _broken_template(tmp_path: Path, settings: Settings, rule: str) -> Settings:
    """A copy of the knowledge whose ``rule`` detail is valid at start-up (every name is known)
    but fails when rendered."""
    cards = copy_knowledge(tmp_path / "cards")
    path = cards / "rules" / f"{rule}.yaml"
    path.write_text(path.read_text().replace("  detail: |\n", "  detail: |\n    {{ 1 // 0 }}\n", 1))
    return settings.model_copy(update={"knowledge_dir": cards})


def _call(settings: Settings, fixture: str) -> tuple[dict[str, str], str]:
    body = json.loads((FIXTURES / "requests" / f"{fixture}.json").read_text())
    # A database of its own: the same patient twice in one would be held back as a repeat.
    fresh = f"sqlite:///{tempfile.mkdtemp(prefix='ipt-failures-')}/store.sqlite3"
    with TestClient(create_app(settings.model_copy(update={"database_url": fresh}))) as client:
        response = client.post("/cds-services/ipt-order-sign", json=body)
    assert response.status_code == 200
    details = " ".join(c["detail"] for c in response.json()["cards"])
    return _rules(response), details


def test_a_card_template_failing_at_run_time_drops_only_that_card(
    tmp_path: Path, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    broken = _broken_template(tmp_path, settings, "ipt-add-pharmacotherapy")
    with caplog.at_level(logging.INFO, logger="ipt_cds"):
        rules, _ = _call(broken, "in-suicide-item9-two-ipt")
    # The critical suicide-risk card survives its neighbour's failure.
    assert rules == {"ipt-suicide-risk": "critical"}
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == ["rule ipt-add-pharmacotherapy failed: ZeroDivisionError"]


def test_when_a_family_card_fails_the_next_member_stands_and_names_it(
    tmp_path: Path, settings: Settings
) -> None:
    fixture = "in-bereave-stands-over-older-and-severity"
    assert _call(settings, fixture)[0] == {"ipt-bereavement-combination": "warning"}
    rules, details = _call(
        _broken_template(tmp_path, settings, "ipt-bereavement-combination"), fixture
    )
    standing = set(rules)
    assert len(standing) == 1
    assert standing < {
        "ipt-dysthymia-prefer-antidepressant",
        "ipt-older-adult-acute",
        "ipt-add-pharmacotherapy",
    }
    assert "bereave" in details.lower()  # the failed member's reason is still listed


def test_an_unexpected_error_is_a_json_500_logged_without_its_text(
    client: TestClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def explode(*_: object) -> list[Card]:
        raise ValueError(f"bad record of {SECRET}")

    body = hook_request("order-sign", drafts=[ipt_order()], prefetch={})
    monkeypatch.setattr(client.app.state.ipt.pipeline.engine, "run", explode)  # type: ignore[attr-defined]
    with caplog.at_level(logging.INFO, logger="ipt_cds"):
        response = client.post(
            "/cds-services/ipt-order-sign", json=body, headers={"X-Request-ID": "req-500"}
        )
    assert response.status_code == 500
    assert response.json() == {
        "code": "internal_error",
        "message": "The service failed; the error was logged.",
    }
    assert response.headers["x-request-id"] == "req-500"
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in errors] == [
        f"unhandled ValueError at test_failures.py:{explode.__code__.co_firstlineno + 1} "
        "in explode on POST /cds-services/ipt-order-sign"
    ]
    assert getattr(errors[0], "requestId", None) == "req-500"
    _no_secret(caplog)
    assert SECRET not in capsys.readouterr().err  # and no traceback printed by the server
    counted = 'ipt_cds_request_seconds_count{endpoint="hook",service="ipt-order-sign",status="500"}'
    assert f"{counted} 1.0" in client.get("/metrics").text

    monkeypatch.undo()
    assert client.post("/cds-services/ipt-order-sign", json=body).status_code == 200


def test_a_client_that_leaves_mid_body_is_not_an_error(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    sent: list[Message] = []
    messages: list[Message] = [
        {"type": "http.request", "body": b'{"hook": "order-sign", ', "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> Message:
        return messages.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    scope = http_scope("POST", "/cds-services/ipt-order-sign")
    assert client.portal is not None
    with caplog.at_level(logging.INFO, logger="ipt_cds"):
        client.portal.call(client.app, scope, receive, send)
    assert sent[0]["status"] == 499
    assert [r.getMessage() for r in caplog.records] == [
        "client disconnected before POST /cds-services/ipt-order-sign was read"
    ]
