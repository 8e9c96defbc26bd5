"""Once per visit and snooze after override, black-box through HTTP, on SQLite and PostgreSQL.

The same patient and draft order go through order-select, then order-sign: an info or warning
card shows once, a critical card every time. An overridden card stays away for that patient
(and only that patient) for its rule's snooze days. What the database keeps is a pseudonym,
never the patient id.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
import yaml
from fastapi.testclient import TestClient

from ipt_cds.devtools.fixtures import Case, load_cases

from .conftest import FHIR_BASE, NOW, AppFactory, Json

# Moderate MDD, PHQ-9 12, item 9 answered 2, an IPT draft: a critical suicide-risk card and an
# add-antidepressant warning.
CASE = next(c for c in load_cases() if c.name == "in-suicide-item9-two-ipt")
SERVICE = {"order-select": "ipt-order-select", "order-sign": "ipt-order-sign"}
OVERRIDDEN_AT = "2026-11-25T12:00:00Z"


def _request(hook: str, patient: str = CASE.name) -> Json:
    case: Case = CASE.model_copy(update={"hook": hook, "name": patient, "selected": [0]})
    return case.request(NOW, FHIR_BASE)


def _call(client: TestClient, hook: str, patient: str = CASE.name) -> dict[str, Json]:
    response = client.post(f"/cds-services/{SERVICE[hook]}", json=_request(hook, patient))
    assert response.status_code == 200, response.text
    return {c["source"]["topic"]["code"]: c for c in response.json()["cards"]}


@pytest.fixture
def make(make_client: AppFactory, database_url: str, tmp_path: Path) -> Any:
    def client(**profile: Any) -> TestClient:
        site = tmp_path / f"site-{len(list(tmp_path.glob('site-*')))}.yaml"
        site.write_text(yaml.safe_dump(profile))
        return make_client(database_url=database_url, site_file=site)

    return client


def _flush(client: TestClient) -> None:
    """What the recorder holds reaches the database (as it does within a fraction of a second)."""
    client.__exit__(None, None, None)
    client.__enter__()


def _held(client: TestClient, rule: str, why: str) -> int:
    """Cards of the rule held back, over every service: why is "Repeat" or "Snooze"."""
    services = client.get("/stats/cards").json()["services"]
    return sum(
        r[f"suppressedAs{why}" if why == "Repeat" else f"suppressedBy{why}"]
        for s in services
        for r in s["rules"]
        if r["rule"] == rule
    )


def test_order_sign_does_not_repeat_what_order_select_showed_but_critical_shows(
    make: Any,
) -> None:
    client = make()
    first = _call(client, "order-select")
    assert {k: c["indicator"] for k, c in first.items()} == {
        "ipt-suicide-risk": "critical",
        "ipt-add-pharmacotherapy": "warning",
    }
    second = _call(client, "order-sign")
    assert list(second) == ["ipt-suicide-risk"], "the warning was shown this visit"
    assert _held(client, "ipt-add-pharmacotherapy", "Repeat") == 1
    # Another patient with the same record is another visit.
    assert "ipt-add-pharmacotherapy" in _call(client, "order-sign", patient="in-memory-other")


def test_a_second_replica_on_the_same_database_does_not_repeat_it(make: Any) -> None:
    one, two = make(), make()
    assert "ipt-add-pharmacotherapy" in _call(one, "order-select")
    _flush(one)
    assert list(_call(two, "order-sign")) == ["ipt-suicide-risk"]


def test_with_the_repeat_window_off_every_call_shows_every_card(make: Any) -> None:
    client = make(repeat_window_hours=0)
    for hook in ("order-select", "order-sign", "order-sign"):
        assert len(_call(client, hook)) == 2


def test_an_overridden_card_stays_away_for_that_patient_only(make: Any) -> None:
    client = make(repeat_window_hours=0, rules={"ipt-add-pharmacotherapy": {"snooze_days": 30}})
    cards = _call(client, "order-sign")
    feedback = [
        {
            "card": cards[rule]["uuid"],
            "outcome": "overridden",
            "outcomeTimestamp": OVERRIDDEN_AT,
        }
        for rule in ("ipt-add-pharmacotherapy", "ipt-suicide-risk")
    ]
    answer = client.post("/cds-services/ipt-order-sign/feedback", json={"feedback": feedback})
    assert answer.status_code == 200, answer.text
    assert list(_call(client, "order-sign")) == ["ipt-suicide-risk"], "critical never snoozes"
    assert len(_call(client, "order-sign", patient="in-memory-other")) == 2
    _flush(client)
    assert list(_call(client, "order-select")) == ["ipt-suicide-risk"]
    assert _held(client, "ipt-add-pharmacotherapy", "Snooze") == 2


def test_a_snooze_of_zero_days_snoozes_nothing(make: Any) -> None:
    client = make(repeat_window_hours=0, rules={"ipt-add-pharmacotherapy": {"snooze_days": 0}})
    card = _call(client, "order-sign")["ipt-add-pharmacotherapy"]
    item = {
        "card": card["uuid"],
        "outcome": "overridden",
        "outcomeTimestamp": "2026-11-25T12:00:00Z",
    }
    client.post("/cds-services/ipt-order-sign/feedback", json={"feedback": [item]})
    assert "ipt-add-pharmacotherapy" in _call(client, "order-sign")


def test_the_database_holds_no_patient_id(make: Any, database_url: str) -> None:
    client = make()
    _call(client, "order-select")
    _call(client, "order-sign")
    _flush(client)
    engine = sqlalchemy.create_engine(
        database_url.replace("postgresql://", "postgresql+psycopg://")
    )
    with engine.connect() as conn:
        rows = conn.execute(sqlalchemy.text("SELECT * FROM card_memory")).all()
    engine.dispose()
    assert rows, "the memory was written"
    text = repr(rows)
    assert CASE.name not in text
    assert FHIR_BASE not in text
    if database_url.startswith("sqlite:///"):
        raw = Path(database_url.removeprefix("sqlite:///")).read_bytes()
        assert CASE.name.encode() not in raw


def test_a_retried_call_gets_the_same_cards_and_a_new_call_does_not(make: Any) -> None:
    """An EHR that retries a call (same hookInstance) after a lost answer gets the cards again;
    a new call of the same hook (a new hookInstance) is a repeat."""
    client = make()
    body = _request("order-sign")
    first = client.post("/cds-services/ipt-order-sign", json=body).json()["cards"]
    retried = client.post("/cds-services/ipt-order-sign", json=body).json()["cards"]
    assert len(first) == len(retried) == 2
    again = {**body, "hookInstance": "0b9f3f0e-8d1c-4f6e-9a57-3c2d1e0f4a5b"}
    cards = client.post("/cds-services/ipt-order-sign", json=again).json()["cards"]
    assert [c["source"]["topic"]["code"] for c in cards] == ["ipt-suicide-risk"]


def test_with_the_memory_store_failing_cards_still_show_and_feedback_is_acknowledged(
    make: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A CDS service must answer while its database is down: the call shows every card (as if
    nothing had been seen), the override is stored and acknowledged, the snooze only logged."""
    client = make()
    memory = client.app.state.ipt.memory

    def down(*_: object) -> None:
        raise sqlalchemy.exc.OperationalError("SELECT …", {}, Exception("server closed"))

    async def down_async(*_: object) -> None:
        down()

    # The lookup has a connection of its own (ipt_cds/storage/recall.py).
    if memory._postgres is not None:
        monkeypatch.setattr(memory._postgres, "recall", down_async)
    else:
        monkeypatch.setattr(memory._sqlite or memory.store, "recall", down)
    monkeypatch.setattr(memory.store, "remember", down)
    cards = _call(client, "order-sign")
    assert len(cards) == 2
    item = {
        "card": cards["ipt-add-pharmacotherapy"]["uuid"],
        "outcome": "overridden",
        "outcomeTimestamp": OVERRIDDEN_AT,
    }
    answer = client.post("/cds-services/ipt-order-sign/feedback", json={"feedback": [item]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["stored"] == 1
    assert "card memory unavailable: OperationalError" in caplog.text
    assert "snooze not recorded: OperationalError" in caplog.text


def test_a_card_held_back_is_named_in_the_log_the_answer_and_invoke(
    make_client: AppFactory,
    database_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import io
    import json
    import uuid
    from datetime import timedelta

    from ipt_cds.devtools import integrator

    now = [NOW]
    client = make_client(database_url=database_url, clock=lambda: now[0])
    assert "ipt-add-pharmacotherapy" in _call(client, "order-select")
    _flush(client)  # 12 minutes on, the database holds what was shown
    now[0] = NOW + timedelta(minutes=12)
    caplog.set_level("INFO", logger="ipt_cds")
    answer = client.post("/cds-services/ipt-order-sign", json=_request("order-sign"))
    assert answer.headers["IPT-CDS-Held-Back"] == (
        "ipt-add-pharmacotherapy; why=repeat; minutes=12"
    )
    line = [r for r in caplog.records if getattr(r, "event", "") == "hook"][-1]
    assert "rules=ipt-suicide-risk held=ipt-add-pharmacotherapy:repeat:12m" in line.getMessage()
    assert line.held == [  # type: ignore[attr-defined]
        {"rule": "ipt-add-pharmacotherapy", "why": "repeat", "minutes": 12}
    ]
    request = tmp_path / "sign.json"
    request.write_text(json.dumps({**_request("order-sign"), "hookInstance": str(uuid.uuid4())}))
    out = io.StringIO()
    integrator.invoke(
        "ipt-order-sign",
        fixture=None,
        request_file=request,
        service_url="http://testserver",
        fhir_server=None,
        token=None,
        prefetch=True,
        as_json=False,
        out=out,
        post=lambda url, body, headers: client.post(url, json=body, headers=headers),
    )
    printed = out.getvalue()
    assert "ipt-suicide-risk" in printed
    assert (
        "held back: ipt-add-pharmacotherapy, shown 12 min ago; within the repeat window" in printed
    )


def test_a_call_that_holds_nothing_back_says_so_nowhere(make: Any) -> None:
    client = make()
    answer = client.post("/cds-services/ipt-order-select", json=_request("order-select"))
    assert "IPT-CDS-Held-Back" not in answer.headers


def test_invoke_words_each_reason_for_holding_a_card() -> None:
    from ipt_cds.devtools.integrator import held_back_lines

    header = "a; why=repeat; minutes=0, b; why=snooze; minutes=90, c; why=assessed; minutes=5"
    assert held_back_lines(header) == [
        "held back: a, shown just now; within the repeat window",
        "held back: b, overridden 90 min ago; snoozed",
        "held back: c, suicide risk assessed by this clinician 5 min ago",
    ]
    assert held_back_lines("") == []
