from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from ipt_cds.http.jsonio import check_depth
from ipt_cds.protocol.errors import BadRequest

from .conftest import (
    SERVICE_OF_HOOK,
    AppFactory,
    Json,
    condition,
    full_prefetch,
    hook_request,
    ipt_order,
)


def _without(path: str) -> Callable[[Json], None]:
    def edit(body: Json) -> None:
        *parents, last = path.split(".")
        target = body
        for p in parents:
            target = target[p]
        del target[last]

    return edit


def _set(path: str, value: Any) -> Callable[[Json], None]:
    def edit(body: Json) -> None:
        *parents, last = path.split(".")
        target = body
        for p in parents:
            target = target[p]
        target[last] = value

    return edit


CASES: list[tuple[str, str, Callable[[Json], None], str, str]] = [
    (
        "order-select",
        "missing selections",
        _without("context.selections"),
        "context.selections",
        "invalid_request",
    ),
    (
        "order-select",
        "missing draftOrders",
        _without("context.draftOrders"),
        "context.draftOrders",
        "invalid_request",
    ),
    (
        "order-select",
        "selection not a draft",
        _set("context.selections", ["ServiceRequest/zzz"]),
        "context.selections",
        "invalid_request",
    ),
    (
        "order-select",
        "selection not Type/id",
        _set("context.selections", ["zzz"]),
        "context.selections[0]",
        "invalid_request",
    ),
    (
        "order-select",
        "empty selections",
        _set("context.selections", []),
        "context.selections",
        "invalid_request",
    ),
    (
        "order-sign",
        "missing draftOrders",
        _without("context.draftOrders"),
        "context.draftOrders",
        "invalid_request",
    ),
    (
        "order-sign",
        "draftOrders not a Bundle",
        _set("context.draftOrders", {"resourceType": "List"}),
        "context.draftOrders.resourceType",
        "invalid_request",
    ),
    (
        "order-sign",
        "draft without resourceType",
        _set("context.draftOrders.entry", [{"resource": {"id": "x"}}]),
        "context.draftOrders.entry[0].resource",
        "invalid_request",
    ),
    (
        "patient-view",
        "missing patientId",
        _without("context.patientId"),
        "context.patientId",
        "invalid_request",
    ),
    (
        "patient-view",
        "patientId as a reference",
        _set("context.patientId", "Patient/1"),
        "context.patientId",
        "invalid_request",
    ),
    (
        "patient-view",
        "missing userId",
        _without("context.userId"),
        "context.userId",
        "invalid_request",
    ),
    ("patient-view", "missing context", _without("context"), "context", "invalid_request"),
    (
        "patient-view",
        "context not an object",
        _set("context", "pat-1"),
        "context",
        "invalid_request",
    ),
    (
        "patient-view",
        "missing hookInstance",
        _without("hookInstance"),
        "hookInstance",
        "invalid_request",
    ),
    (
        "patient-view",
        "token without fhirServer",
        _without("fhirServer"),
        "fhirServer",
        "invalid_request",
    ),
    (
        "patient-view",
        "token type not Bearer",
        _set("fhirAuthorization.token_type", "MAC"),
        "fhirAuthorization.token_type",
        "invalid_request",
    ),
    (
        "patient-view",
        "fhirServer not a URL",
        _set("fhirServer", "ftp://x"),
        "fhirServer",
        "invalid_request",
    ),
    (
        "patient-view",
        "prefetch value not a resource",
        _set("prefetch", {"patient": {"id": "x"}}),
        "prefetch.patient",
        "invalid_request",
    ),
    (
        "patient-view",
        "prefetch value a string",
        _set("prefetch", {"patient": "Patient/1"}),
        "prefetch.patient",
        "invalid_request",
    ),
    ("patient-view", "prefetch not an object", _set("prefetch", []), "prefetch", "invalid_request"),
    ("order-sign", "wrong hook", _set("hook", "patient-view"), "hook", "hook_mismatch"),
    ("order-sign", "missing hook", _without("hook"), "hook", "not_a_hook_request"),
]


@pytest.mark.parametrize(
    ("hook", "field", "edit", "code"),
    [pytest.param(h, f, e, c, id=f"{h}: {name}") for h, name, e, f, c in CASES],
)
def test_spec_violations_answer_400_naming_the_field(
    client: TestClient, hook: str, field: str, edit: Callable[[Json], None], code: str
) -> None:
    body = hook_request(hook, full_prefetch(), drafts=[ipt_order("a"), ipt_order("b")])
    edit(body)
    service = {"patient-view": "ipt-patient-view", "order-sign": "ipt-order-sign"}.get(
        hook, "ipt-order-select"
    )
    response = client.post(f"/cds-services/{service}", json=body)
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["code"] == code
    assert error["message"]
    if field:
        assert error["field"] == field


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"{nope", "not valid JSON"),
        (b"", "empty"),
        (b"[1, 2]", "must be a JSON object"),
        (b'"order-sign"', "must be a JSON object"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_malformed_json_answers_400(client: TestClient, content: bytes, problem: str) -> None:
    response = client.post(
        "/cds-services/ipt-order-sign",
        content=content,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["code"] == "malformed_json"
    assert problem in response.json()["message"]


def test_unknown_service_answers_404(client: TestClient) -> None:
    response = client.post("/cds-services/nope", json=hook_request("order-sign", full_prefetch()))
    assert response.status_code == 404
    assert response.json() == {
        "code": "unknown_service",
        "message": "No CDS Service 'nope'; the services are "
        f"{', '.join(sorted(SERVICE_OF_HOOK.values()))} (GET /cds-services lists them).",
    }
    assert client.post("/cds-services/nope/feedback", json={}).status_code == 404


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ({"resourceType": "Bundle", "type": "collection", "entry": []}, "it is a FHIR Bundle"),
        ({"resourceType": "Patient", "id": "p1"}, "it is a FHIR Patient"),
        ({"context": {}, "prefetch": {}}, 'it has no "hook"; its keys: context, prefetch'),
        ({"hook": None, "context": {}}, 'its "hook" is null'),
        ({"hook": ["order-sign"]}, 'its "hook" is an array'),
        ({}, 'it has no "hook" (an empty object)'),
    ],
)
def test_a_body_that_is_not_a_hook_request_says_what_was_received(
    client: TestClient, body: dict[str, object], said: str
) -> None:
    response = client.post("/cds-services/ipt-order-sign", json=body)
    assert response.status_code == 400
    error = response.json()
    assert error["code"] == "not_a_hook_request"
    assert said in error["message"]
    assert "None" not in error["message"]
    assert "order-sign" in error["message"], "it names the hook the service answers"


@pytest.mark.parametrize(
    ("body", "kind"), [(b"[1]", "an array"), (b"null", "null"), (b'"x"', "a string")]
)
def test_a_body_that_is_not_an_object_says_so_in_json_words(
    client: TestClient, body: bytes, kind: str
) -> None:
    response = client.post(
        "/cds-services/ipt-order-sign", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["message"] == f"The request body must be a JSON object, not {kind}."


def test_unknown_path_and_method_answer_json_errors(client: TestClient) -> None:
    assert client.get("/nothing-here").json()["code"] == "not_found"
    response = client.get("/cds-services/ipt-order-sign")
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"


def test_deeply_nested_body_answers_400(client: TestClient) -> None:
    body = b'{"hook": "order-sign", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    response = client.post("/cds-services/ipt-order-sign", content=body)
    assert response.status_code == 400
    assert response.json()["code"] == "malformed_json"


def test_a_body_over_the_limit_answers_413(make_client: AppFactory) -> None:
    client = make_client(max_body_bytes=64 * 1024)
    body = hook_request("order-sign", full_prefetch())
    body["extension"] = {"padding": "x" * 70_000}
    response = client.post("/cds-services/ipt-order-sign", json=body)
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"


def test_a_streamed_body_over_the_limit_answers_413(make_client: AppFactory) -> None:
    client = make_client(max_body_bytes=64 * 1024)

    def chunks() -> Iterator[bytes]:
        yield b'{"hook": "order-sign", "x": "'
        for _ in range(100):
            yield b"y" * 1024
        yield b'"}'

    response = client.post("/cds-services/ipt-order-sign", content=chunks())
    assert response.status_code == 413


def test_default_limit_takes_a_realistic_two_megabyte_prefetch(client: TestClient) -> None:
    notes = [{**condition(f"c{i}", "I10"), "note": [{"text": "n" * 1000}]} for i in range(2000)]
    body = hook_request("order-sign", full_prefetch(*notes))
    response = client.post("/cds-services/ipt-order-sign", json=body)
    assert len(response.request.content) > 2_000_000
    assert response.status_code == 200


def test_json_nested_past_the_limit_answers_400(make_client: AppFactory) -> None:
    client = make_client(max_json_depth=16)
    body = hook_request("order-sign", full_prefetch())
    nested: Json = {}
    for _ in range(20):
        nested = {"a": [nested]}
    body["extension"] = {"deep": nested}
    response = client.post("/cds-services/ipt-order-sign", json=body)
    assert response.status_code == 400
    assert response.json()["code"] == "too_deep"
    assert "16 levels" in response.json()["message"]


def test_a_bundle_with_too_many_entries_answers_413(make_client: AppFactory) -> None:
    client = make_client(max_bundle_entries=100)
    body = hook_request("order-sign", full_prefetch(*[condition(f"c{i}") for i in range(101)]))
    response = client.post("/cds-services/ipt-order-sign", json=body)
    assert response.status_code == 413
    assert response.json()["code"] == "too_many_entries"


def test_feedback_is_limited_too(make_client: AppFactory) -> None:
    client = make_client(max_body_bytes=2048)
    items = [
        {"card": "c", "outcome": "overridden", "outcomeTimestamp": "2026-11-25T12:00:00Z"}
    ] * 50
    response = client.post("/cds-services/ipt-order-sign/feedback", json={"feedback": items})
    assert response.status_code == 413


# Bodies that once answered 500, each the smallest that did: three from a mutation fuzzing of
# 20,000 requests, the others from tests/test_mutations.py (on SQLite and on PostgreSQL) and an
# audit of the reader. Each now answers 200, reading what it can, or a 400 naming the field.
def _observation(**odd: Any) -> Json:
    return {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "44261-6"}]},
        "effectiveDateTime": "2026-11-20",
        "valueInteger": 16,
        **odd,
    }


def _medication_request(**odd: Any) -> Json:
    return {
        "resourceType": "MedicationRequest",
        "id": "m1",
        "status": "active",
        "intent": "order",
        "medicationReference": {"reference": "#med"},
        **odd,
    }


def _prefetched(*resources: Json) -> Json:
    return hook_request("patient-view", full_prefetch(*resources))


def _feedback(**odd: Any) -> Json:
    item = {"card": "c1", "outcome": "overridden", "outcomeTimestamp": "2026-11-25T12:00:00Z"}
    return {"feedback": [{**item, **odd}]}


ONCE_500: list[tuple[str, str, Json, int, str | None]] = [
    (
        "prefetch Bundle.entry -1: TypeError in prefetch.resources_of",
        "ipt-patient-view",
        hook_request("patient-view", {"conditions": {"resourceType": "Bundle", "entry": -1}}),
        200,
        None,
    ),
    (
        "patient-view draft without resourceType: AttributeError in models.draft_orders",
        "ipt-patient-view",
        {
            **hook_request("patient-view", {"patient": None}),
            "context": {
                "userId": "Practitioner/1",
                "patientId": "p1",
                "draftOrders": {"resourceType": "Bundle", "entry": [{"resource": {}}]},
            },
        },
        200,
        None,
    ),
    (
        "Observation.component 5: TypeError in extractors._observation_items",
        "ipt-patient-view",
        _prefetched(_observation(component=5)),
        200,
        None,
    ),
    (
        "MedicationRequest.contained 5: TypeError in extractors.medication_concepts",
        "ipt-patient-view",
        _prefetched(_medication_request(contained=5)),
        200,
        None,
    ),
    (
        "Medication.ingredient 5: TypeError in extractors.medication_concepts",
        "ipt-patient-view",
        _prefetched(
            _medication_request(
                contained=[{"resourceType": "Medication", "id": "med", "ingredient": 5}]
            )
        ),
        200,
        None,
    ),
    (
        "outcomeTimestamp with no UTC form: OverflowError in store._feedback_row",
        "ipt-order-sign/feedback",
        _feedback(outcomeTimestamp="9999-12-31T23:59:59-14:00"),
        400,
        "feedback[0].outcomeTimestamp",
    ),
    (
        "outcomeTimestamp before year 1 in UTC: OverflowError in store._feedback_row",
        "ipt-order-sign/feedback",
        _feedback(outcomeTimestamp="0001-01-01T00:00:00+14:00"),
        400,
        "feedback[0].outcomeTimestamp",
    ),
    (
        "card id with NUL: DataError on PostgreSQL",
        "ipt-order-sign/feedback",
        _feedback(card="c\u00001"),
        400,
        "feedback[0].card",
    ),
    (
        "hookInstance with NUL: DataError on PostgreSQL, the batch of card rows lost",
        "ipt-patient-view",
        {
            **hook_request("patient-view", full_prefetch(condition("c1"))),
            "hookInstance": "h\u00001",
        },
        400,
        "hookInstance",
    ),
]


@pytest.mark.parametrize(
    ("path", "body", "status", "field"),
    [
        pytest.param(path, body, status, field, id=name)
        for name, path, body, status, field in ONCE_500
    ],
)
def test_bodies_that_once_answered_500(
    client: TestClient,
    caplog: pytest.LogCaptureFixture,
    path: str,
    body: Json,
    status: int,
    field: str | None,
) -> None:
    with caplog.at_level(logging.WARNING, logger="ipt_cds"):
        response = client.post(f"/cds-services/{path}", json=body)
    assert response.status_code == status, response.text
    if status == 200:
        assert isinstance(response.json()["cards"], list)
    else:
        assert (response.json()["code"], response.json()["field"]) == ("invalid_request", field)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def _depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


# Strings full of what the byte-level check must see through.
_SHAPE_BYTES = '[]{}",:\\ '
_TEXT = st.text(alphabet=_SHAPE_BYTES + "ab\n", max_size=8)
_LEAVES = st.none() | st.booleans() | st.integers() | _TEXT
_JSON = st.recursive(
    _LEAVES,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(alphabet=_SHAPE_BYTES + "k", max_size=4), inner, max_size=3)
    ),
    max_leaves=30,
)


@given(document=_JSON, limit=st.integers(min_value=1, max_value=12), compact=st.booleans())
@settings(max_examples=500, deadline=None, derandomize=True)
def test_depth_check_on_bytes_agrees_with_the_parsed_depth(
    document: object, limit: int, compact: bool
) -> None:
    raw = json.dumps({"d": document}, separators=(",", ":") if compact else None).encode()
    deep = _depth({"d": document}) > limit
    try:
        check_depth(raw, limit)
    except BadRequest:
        assert deep
    else:
        assert not deep
