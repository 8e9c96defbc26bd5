"""Mutation fuzzing of hook calls and feedback: the fixture requests, broken as a buggy EHR or an
attacker would break them, never make the service answer a 5xx.

Each example takes a real request of ``fhir_fixtures/requests/`` and applies one to six
mutations (tests/ehr_mutations.py). Most land inside one FHIR resource (prefetched, drafted,
or, for a request without prefetch, answered by the fake FHIR server): an element the reader
looks at set to another JSON type or shape (``component: 5``, ``coding`` as an object,
``contained`` a string), a coding without its system, an impossible date, a key dropped, a list
item duplicated, a huge string, a resource of another type. The others change the request's
shape at a random JSON path: a key dropped or written twice, a value replaced by null, another
JSON type, a huge string or a list nested past the depth limit, NaN, Infinity or a big integer,
invalid UTF-8, a Bundle whose ``entry`` is not a list or that holds (or passes) the entry
limit. Feedback bodies get both.

The property: never a 5xx, and no rule broken by the data (no ERROR logged); an error is JSON
with a ``code``; a 200 is a valid CDS Hooks response. The examples are derandomised, so every
CI run tries the same ones (300 calls and 150 feedback bodies, a few seconds); set
IPT_CDS_MUTATION_EXAMPLES for a longer hunt. Every 5xx found becomes a plain test with the
smallest body in tests/test_bad_input.py (``ONCE_500``), tests/test_facts.py or
tests/test_facts_wrong_types.py.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from ipt_cds.protocol.models import CdsResponse, FeedbackAck

from .conftest import NOW, AppFactory, FakeFhir
from .ehr_mutations import (
    BUNDLE_LIMIT,
    CASES,
    EXPECTED,
    FIXTURE_SERVER,
    REQUESTS,
    Mutant,
    case_name,
    feedback_bodies,
    hook_calls,
)

EXAMPLES = int(os.environ.get("IPT_CDS_MUTATION_EXAMPLES", "300"))
FEEDBACK_EXAMPLES = max(1, EXAMPLES // 2)
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture
def fuzzed(make_client: AppFactory, tmp_path: Path) -> tuple[TestClient, FakeFhir]:
    """One app for all the examples of a test; the fake server's data is set per example. The
    same fixture patients come again and again: once per visit is off, or their cards would be
    held back as repeats."""
    fhir = FakeFhir()
    site = tmp_path / "site.yaml"
    site.write_text("repeat_window_hours: 0\n")
    client = make_client(
        fhir, fhir_allowlist=[FIXTURE_SERVER], max_bundle_entries=BUNDLE_LIMIT, site_file=site
    )
    return client, fhir


def _answers_sanely(response: Any, caplog: pytest.LogCaptureFixture, ok: type[Any]) -> None:
    assert response.status_code < 500, response.text[:500]
    broken = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert broken == []
    answer = response.json()
    if response.status_code == 200:
        ok.model_validate(answer)
    else:
        assert isinstance(answer, dict), answer
        assert isinstance(answer.get("code"), str), answer


@given(mutant=hook_calls())
@FUZZ
def test_a_mutated_hook_call_never_answers_5xx(
    fuzzed: tuple[TestClient, FakeFhir], caplog: pytest.LogCaptureFixture, mutant: Mutant
) -> None:
    client, fhir = fuzzed
    fhir.resources = mutant.served
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ipt_cds"):
        response = client.post(
            f"/cds-services/{EXPECTED[case_name(mutant.name)]['service']}",
            content=mutant.body(),
            headers={"content-type": "application/json"},
        )
    _answers_sanely(response, caplog, CdsResponse)


@given(mutant=feedback_bodies())
@settings(FUZZ, max_examples=FEEDBACK_EXAMPLES)
def test_a_mutated_feedback_body_never_answers_5xx(
    fuzzed: tuple[TestClient, FakeFhir], caplog: pytest.LogCaptureFixture, mutant: Mutant
) -> None:
    client, _ = fuzzed
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ipt_cds"):
        response = client.post(
            "/cds-services/ipt-order-sign/feedback",
            content=mutant.body(),
            headers={"content-type": "application/json"},
        )
    _answers_sanely(response, caplog, FeedbackAck)


def test_every_fixture_request_still_answers_its_cards(
    fuzzed: tuple[TestClient, FakeFhir],
) -> None:
    """After the fuzzing, in the same kind of app: the unmutated requests, exactly as expected."""
    client, fhir = fuzzed
    wrong = {}
    for name, body in REQUESTS.items():
        expected = EXPECTED[case_name(name)]
        case = CASES[case_name(name)]
        fhir.resources = case.resources(NOW) if "prefetch" not in body else []
        # The not-readable cases: a server that refuses what their EHR cannot give.
        fhir.fail = dict.fromkeys(case.refused_types, 403)
        response = client.post(f"/cds-services/{expected['service']}", json=body)
        assert response.status_code == 200, (name, response.text)
        cards = {c["source"]["topic"]["code"]: c["indicator"] for c in response.json()["cards"]}
        if cards != expected["cards"]:
            wrong[name] = (cards, expected["cards"])
    assert wrong == {}
    assert len(REQUESTS) == 2 * len(EXPECTED)
