"""The operator's statistics: a time window, the HTML page with its charts, and the operator's
bearer token, which opens the statistics and the metrics and nothing else."""

from __future__ import annotations

import logging
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ipt_cds.http.app import create_app
from ipt_cds.http.stats_page import day_rows
from ipt_cds.knowledge.errors import KnowledgeError
from ipt_cds.ops.config import Settings

from .conftest import NOW, AppFactory, Json, full_prefetch, hook_request, hypertension
from .rules import CountingRule
from .test_auth import BASE, _trust_file

RULES = (
    CountingRule("counts-conditions", "Condition", "warning"),
    CountingRule("counts-observations", "Observation", "info"),
)
OPERATOR = "op-" + "7f3a9c" * 8
REASON = {"code": "not-indicated", "system": "https://fhir.ipt-cds.org/CodeSystem/override-reason"}


@pytest.fixture
def settings(database_url: str) -> Settings:
    """Every window test runs on SQLite and on PostgreSQL."""
    return Settings(database_url=database_url, fhir_retries=0, fhir_allowlist=[])


def _call(client: TestClient, instance: str, headers: dict[str, str] | None = None) -> Json:
    body = hook_request("order-sign", full_prefetch(hypertension("c1")))
    body["hookInstance"] = instance
    response = client.post("/cds-services/ipt-order-sign", json=body, headers=headers or {})
    assert response.status_code == 200, response.text
    return {c["source"]["topic"]["code"]: c["uuid"] for c in response.json()["cards"]}


def _override(client: TestClient, card: str, at: datetime) -> None:
    item = {
        "card": card,
        "outcome": "overridden",
        "outcomeTimestamp": at.isoformat(),
        "overrideReason": {"reason": REASON},
    }
    answer = client.post("/cds-services/ipt-order-sign/feedback", json={"feedback": [item]})
    assert answer.status_code == 200, answer.text


def _rule(stats: Json, rule: str) -> Json:
    found: Json = next(r for r in stats["services"][0]["rules"] if r["rule"] == rule)
    return found


@pytest.fixture
def two_days(make_client: AppFactory) -> TestClient:
    """A call and an override on 25 November, another call (sent twice) and override on the
    27th."""
    now = [NOW]
    client = make_client(rules=RULES, clock=lambda: now[0])
    _override(client, _call(client, "call-25")["counts-conditions"], NOW + timedelta(minutes=1))
    now[0] = NOW + timedelta(days=2)
    _call(client, "call-27")
    cards = _call(client, "call-27")  # a retry: counts once
    _override(client, cards["counts-conditions"], now[0] + timedelta(minutes=1))
    return client


@pytest.mark.parametrize(
    ("query", "shown", "overridden"),
    [
        ("", 2, 2),
        ("?since=2026-11-26", 1, 1),
        ("?until=2026-11-26", 1, 1),
        ("?since=2026-11-25T12:00:30Z&until=2026-11-27", 0, 1),
        ("?since=2026-11-25T13:00:00%2B01:00&until=2026-11-25T13:00:01%2B01:00", 1, 0),
        ("?since=2026-11-28", None, None),
    ],
)
def test_the_window_counts_cards_issued_and_outcomes_within_it(
    two_days: TestClient, query: str, shown: int | None, overridden: int | None
) -> None:
    stats = two_days.get(f"/stats/cards{query}").json()
    if shown is None:
        assert stats == {"services": []}
        return
    rule = _rule(stats, "counts-conditions")
    assert (rule["shown"], rule["overridden"]) == (shown, overridden)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("?since=last-week", "since"),
        ("?until=2026-13-01", "until"),
        ("?since=2026-11-27&until=2026-11-26", "since"),
    ],
)
def test_a_window_that_is_no_time_is_a_400_naming_it(
    client: TestClient, query: str, field: str
) -> None:
    for path in ("/stats/cards", "/stats"):
        answer = client.get(f"{path}{query}")
        assert answer.status_code == 400, answer.text
        assert answer.json()["field"] == field


def test_the_page_charts_and_tabulates_rules_reasons_and_days(two_days: TestClient) -> None:
    page = two_days.get("/stats")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    html = page.text
    assert html.count("<svg") == 3, "per rule, override reasons, by day"
    assert "<script" not in html
    assert "http://" not in html.replace("http://www.w3.org/2000", "")
    rows = {
        m[0]: [int(n) for n in re.findall(r'<td class="n">(\d+)</td>', m[1])]
        for m in re.findall(r"<tr><td>([^<]+)</td>((?:<td class=\"n\">\d+</td>)+)</tr>", html)
    }
    # shown, accepted, overridden, held back, silent
    assert rows["ipt-order-sign · counts-conditions"] == [2, 0, 2, 0, 0]
    assert rows["2026-11-25"] == [2, 0, 1, 0, 0], "two rules' cards, one override"
    assert rows["2026-11-26"] == [0, 0, 0, 0, 0], "an empty day between is drawn as one"
    assert rows["2026-11-27"] == [2, 0, 1, 0, 0], "the retried call counts once"
    assert "not-indicated" in html
    only = two_days.get("/stats?since=2026-11-27").text
    assert "2026-11-25" not in only
    assert "2026-11-27" in only


def test_feedback_stamped_years_away_adds_a_row_not_every_day_between(
    two_days: TestClient,
) -> None:
    """Found by the schema fuzzer: feedback carries the EHR's outcomeTimestamp, and the page
    drew every day from the oldest to the newest (700,000 rows, 2 s a page, for year 1)."""
    card = _call(two_days, "call-odd")["counts-conditions"]
    _override(two_days, card, datetime(1, 1, 1, tzinfo=UTC))
    html = two_days.get("/stats").text
    days = re.findall(r"<tr><td>(\d{4}-\d{2}-\d{2})</td>", html)
    assert sorted(days) == ["0001-01-01", "2026-11-25", "2026-11-26", "2026-11-27"]


@pytest.mark.parametrize(
    ("days", "rows"),
    [
        # A day at the end of the calendar neither breaks the page nor moves the chart away
        # from the recent days, whose empty days between are still drawn.
        (
            [
                ("2026-11-23", "shown", 1),
                ("2026-11-25", "shown", 1),
                ("9999-12-31", "overridden", 1),
            ],
            ["2026-11-23", "2026-11-24", "2026-11-25", "9999-12-31"],
        ),
        # Days in the first weeks of year 1: no step before the calendar's first day.
        (
            [("0001-01-01", "shown", 1), ("0001-01-03", "shown", 1)],
            ["0001-01-01", "0001-01-02", "0001-01-03"],
        ),
    ],
)
def test_the_days_at_the_ends_of_the_calendar_are_drawn(
    days: list[tuple[str, str, int]], rows: list[str]
) -> None:
    assert [day for day, _ in day_rows(days, today=date(2026, 11, 27))] == rows


# --- the operator's token -------------------------------------------------------------------


@pytest.fixture
def operated(make_client: AppFactory, tmp_path: Path) -> TestClient:
    secret = tmp_path / "operator-token"
    secret.write_text(OPERATOR + "\n")
    return make_client(
        rules=RULES,
        auth_mode="required",
        trust_file=_trust_file(tmp_path),
        public_base_url=BASE,
        operator_token_file=secret,
    )


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_the_operator_token_opens_statistics_and_metrics_and_nothing_else(
    operated: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for path in ("/stats/cards", "/stats", "/metrics"):
        assert operated.get(path, headers=_bearer(OPERATOR)).status_code == 200, path
        refused = operated.get(path, headers=_bearer(OPERATOR[:-1] + "x"))
        assert refused.status_code == 401, path
        assert "Bearer" in refused.headers["www-authenticate"]
    bare = operated.get("/metrics")
    assert bare.status_code == 401, "once a token is set, the metrics need it"
    assert 'realm="ipt-cds-operator"' in bare.headers["www-authenticate"]
    body = hook_request("order-sign", full_prefetch(hypertension("c1")))
    call = operated.post("/cds-services/ipt-order-sign", json=body, headers=_bearer(OPERATOR))
    assert call.status_code == 401, "a hook call still needs a client JWT"
    feedback = operated.post(
        "/cds-services/ipt-order-sign/feedback", json={"feedback": []}, headers=_bearer(OPERATOR)
    )
    assert feedback.status_code == 401
    assert OPERATOR not in caplog.text
    assert OPERATOR[:-1] not in caplog.text


def test_without_an_operator_token_the_metrics_stay_open(client: TestClient) -> None:
    assert client.get("/metrics").status_code == 200


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("short-token", "at least 32 characters"),
        ("two words " + "x" * 40, "one word"),
        (None, "operator token file not found"),
    ],
)
def test_an_unusable_operator_token_file_stops_the_start(
    tmp_path: Path, content: str | None, problem: str
) -> None:
    path = tmp_path / "operator-token"
    if content is not None:
        path.write_text(content)
    settings: Any = Settings(database_url="sqlite://", operator_token_file=path)
    with pytest.raises(KnowledgeError, match=problem):
        create_app(settings)


def test_the_page_takes_its_form_sent_empty_and_the_json_refuses_a_blank(
    two_days: TestClient,
) -> None:
    assert two_days.get("/stats?since=&until=").status_code == 200, "both dates left empty"
    blank = two_days.get("/stats/cards?until=")
    assert blank.status_code == 400
    assert blank.json()["field"] == "until"
    assert two_days.get("/stats/cards?since=2026-11-25T12").status_code == 400, "hour alone"
