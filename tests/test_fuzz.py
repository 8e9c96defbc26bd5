"""Property-based fuzzing over openapi.yaml: no input may produce a 5xx or break the schema, data
the schema calls valid is accepted, and data it calls invalid is refused.

The document names the service ids as an enum and the constraints on a context and on prefetch,
so generated calls reach the hook code rather than a 404; a last test checks they did. Three
constraints the schema states only in words are met here, for data generated as valid: a hook
call goes to the service of its body's hook, an order-select's selections are among its
draftOrders, and a statistics window is made of real dates, since before until. A 412 (the
data cannot be had: no FHIR server is allowed here) is an answer to valid data, as CDS Hooks
defines it.

A fixed, derandomised example budget keeps CI fast and repeatable; docs/security.md shows how
to run a larger one (IPT_CDS_FUZZ_EXAMPLES).
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.config import PositiveDataAcceptanceConfig

from ipt_cds.http.app import create_app
from ipt_cds.ops.config import Settings

from .conftest import SERVICE_OF_HOOK

# Left out of scripts/test --quick (fuzzing), and run in a process of its own beside the workers:
# schemathesis's tests of one function share a node id, which pytest-xdist cannot tell apart.
pytestmark = [pytest.mark.slow, pytest.mark.serial]

# Only this module generates tests from a schema: the plugin loads here, not in every worker.
pytest_plugins = ["schemathesis.pytest.plugin"]

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = int(os.environ.get("IPT_CDS_FUZZ_EXAMPLES", "60"))
DB = Path(tempfile.mkdtemp(prefix="ipt-fuzz-")) / "store.sqlite3"
# No FHIR server is allowed: a generated request can never make the service call out.
APP = create_app(Settings(database_url=f"sqlite:///{DB}", fhir_allowlist=[]))
HOOK_CALL = "POST /cds-services/{service_id}"
FEEDBACK = "POST /cds-services/{service_id}/feedback"
STATS = "GET /stats/cards"
# (operation, generation mode, status, code) of every generated call.
ANSWERS: Counter[tuple[str, str, int, str]] = Counter()

schema = schemathesis.openapi.from_path(ROOT / "openapi.yaml")
schema.app = APP
schema.config.update(base_url="http://testserver")
schema.config.checks.positive_data_acceptance = PositiveDataAcceptanceConfig(
    expected_statuses=[*PositiveDataAcceptanceConfig().expected_statuses, "412"]
)


def _a_real_window(case: schemathesis.Case) -> None:  # type: ignore[type-arg]
    """The statistics' window in words: each bound a real date or time (the pattern allows
    2026-99-99), since before until."""
    query = dict(case.query or {})
    bounds = {}
    for name in ("since", "until"):
        try:
            bounds[name] = _instant(str(query[name]))
        except (KeyError, ValueError):
            query.pop(name, None)
    if len(bounds) == 2 and bounds["since"] >= bounds["until"]:
        query.pop("until")
    case.query = query


def _instant(text: str) -> datetime:
    if len(text) == len("2026-12-01"):
        day = date.fromisoformat(text)
        return datetime(day.year, day.month, day.day, tzinfo=UTC)
    at = datetime.fromisoformat(text)
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


def _positive(case: schemathesis.Case) -> bool:  # type: ignore[type-arg]
    return case.meta is None or case.meta.generation.mode.is_positive


def _meet_what_the_schema_says_in_words(case: schemathesis.Case) -> None:  # type: ignore[type-arg]
    if case.operation.label == STATS and _positive(case):
        _a_real_window(case)
    body = case.body
    if case.operation.label != HOOK_CALL or not _positive(case) or not isinstance(body, dict):
        return
    hook = body.get("hook")
    if isinstance(hook, str) and hook in SERVICE_OF_HOOK:
        case.path_parameters = {**(case.path_parameters or {}), "service_id": SERVICE_OF_HOOK[hook]}
    context = body.get("context")
    if hook == "order-select" and isinstance(context, dict):
        drafts = context.get("draftOrders")
        if not isinstance(drafts, dict):
            drafts = context["draftOrders"] = {"resourceType": "Bundle"}
        entries = drafts.get("entry")
        entry: dict[str, Any] = {"resource": {"resourceType": "ServiceRequest", "id": "fuzz-draft"}}
        drafts["entry"] = [*(entries if isinstance(entries, list) else []), entry]
        context["selections"] = ["ServiceRequest/fuzz-draft"]


@pytest.fixture(scope="module")
def started() -> Iterator[None]:
    # The lifespan opens the store; the fuzzer's own client then shares the started app.
    with TestClient(APP):
        yield


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_no_input_gives_a_5xx_or_breaks_the_schema(
    case: schemathesis.Case,  # type: ignore[type-arg]
    started: None,
) -> None:
    _meet_what_the_schema_says_in_words(case)
    response = case.call()
    try:
        code = str(response.json().get("code", "-"))
    except (ValueError, AttributeError):
        code = "-"
    mode = "positive" if _positive(case) else "negative"
    ANSWERS[(case.operation.label, mode, response.status_code, code)] += 1
    case.validate_response(response)
    assert response.status_code < 500


def _answers(operation: str, mode: str) -> Counter[tuple[int, str]]:
    return Counter(
        {
            (status, code): n
            for (op, m, status, code), n in ANSWERS.items()
            if (op, m) == (operation, mode)
        }
    )


def test_the_fuzzer_reached_the_hook_code() -> None:
    """With any service id a 404: the generated calls must get past the routing, validation
    and hook checks to the engine (a 200) or to prefetch (a 412)."""
    if not ANSWERS:
        pytest.skip("counts the answers of the fuzz test above, in the same run")
    hooks = _answers(HOOK_CALL, "positive")
    assert hooks, "valid hook calls were generated"
    assert not [key for key in hooks if key[0] == 404], (
        f"a pinned service id was not found: {hooks}"
    )
    assert not [key for key in hooks if key[1] == "hook_mismatch"], hooks
    reached = sum(n for (status, _), n in hooks.items() if status in (200, 412))
    assert reached >= sum(hooks.values()) // 2, f"most valid calls reach the pipeline: {hooks}"
    assert hooks[(200, "-")], f"some reach the engine and answer cards: {hooks}"
    feedback = _answers(FEEDBACK, "positive")
    assert feedback[(200, "-")], f"some feedback is stored: {feedback}"
