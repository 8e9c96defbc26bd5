from __future__ import annotations

import logging
from typing import Any

import pytest

from ipt_cds.fhir.prefetch import resources_of

from .conftest import (
    SERVICE_OF_HOOK,
    TOKEN,
    AppFactory,
    FakeFhir,
    bundle,
    full_prefetch,
    hook_request,
    hypertension,
    neutral_order,
)
from .rules import CountingRule

HOOKS = list(SERVICE_OF_HOOK)
RULES = (
    CountingRule("counts-conditions", "Condition", "info"),
    CountingRule("counts-observations", "Observation", "critical"),
)


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_with_full_prefetch_answers_without_fetching(
    hook: str, make_client: AppFactory
) -> None:
    fhir = FakeFhir()
    client = make_client(fhir, rules=RULES)
    body = hook_request(hook, full_prefetch(hypertension("c1"), hypertension("c2")))
    response = client.post(f"/cds-services/{SERVICE_OF_HOOK[hook]}", json=body)
    assert response.status_code == 200, response.text
    cards = response.json()["cards"]
    if hook == "patient-view":
        assert [(c["summary"], c["indicator"]) for c in cards] == [
            ("2 Condition, 0 selected drafts", "info")
        ]
    else:
        assert [(c["summary"], c["indicator"]) for c in cards] == [
            ("0 Observation, 1 selected drafts", "critical"),
            ("2 Condition, 1 selected drafts", "info"),
        ]
    assert fhir.requests == []


def test_cards_carry_uuid_and_rule_topic(make_client: AppFactory) -> None:
    client = make_client(rules=RULES)
    body = hook_request("order-sign", full_prefetch(hypertension("c1")))
    cards = client.post("/cds-services/ipt-order-sign", json=body).json()["cards"]
    assert len({c["uuid"] for c in cards}) == 2
    assert {c["source"]["topic"]["code"] for c in cards} == {
        "counts-conditions",
        "counts-observations",
    }


def test_no_rule_applies_gives_empty_cards(make_client: AppFactory) -> None:
    client = make_client(rules=RULES)
    body = hook_request("patient-view", full_prefetch())
    response = client.post("/cds-services/ipt-patient-view", json=body)
    assert response.status_code == 200
    assert response.content == b'{"cards":[]}'


def test_null_prefetch_means_no_data_and_no_fetch(make_client: AppFactory) -> None:
    fhir = FakeFhir(resources=[hypertension("c-on-server")])
    client = make_client(fhir, rules=RULES)
    prefetch = dict.fromkeys(full_prefetch())
    response = client.post(
        "/cds-services/ipt-patient-view", json=hook_request("patient-view", prefetch)
    )
    assert response.status_code == 200
    assert response.json() == {"cards": []}
    assert fhir.requests == []


def test_operation_outcome_in_place_of_data_means_unknown_not_fetched(
    make_client: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Version 3: the client could not prefetch the key; its data is unknown (the facts:
    tests/test_unreadable.py), and an optional key is not fetched."""
    fhir = FakeFhir()
    client = make_client(fhir, rules=RULES)
    prefetch = full_prefetch(hypertension("c1"))
    prefetch["observations"] = {"resourceType": "OperationOutcome", "issue": []}
    with caplog.at_level(logging.WARNING, logger="ipt_cds"):
        response = client.post(
            "/cds-services/ipt-patient-view", json=hook_request("patient-view", prefetch)
        )
    assert response.status_code == 200
    assert [c["summary"][:11] for c in response.json()["cards"]] == ["1 Condition"]
    assert "prefetch observations: the client could not prefetch it; unknown" in caplog.text
    assert fhir.requests == []


def test_odd_bundle_entries_are_skipped_with_a_warning(
    make_client: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(rules=RULES)
    prefetch = full_prefetch(hypertension("c1"))
    assert prefetch["conditions"] is not None
    prefetch["conditions"]["entry"] += [{"resource": "oops"}, {"fullUrl": "x"}, 7]
    with caplog.at_level(logging.WARNING, logger="ipt_cds"):
        response = client.post(
            "/cds-services/ipt-patient-view", json=hook_request("patient-view", prefetch)
        )
    assert response.status_code == 200
    assert response.json()["cards"][0]["summary"].startswith("1 Condition")
    assert "3 entries without a resource skipped" in caplog.text


@pytest.mark.parametrize("entry", [-1, True, "Condition/c1", 1.5])
def test_a_bundle_whose_entry_is_not_an_array_is_no_data(
    make_client: AppFactory, caplog: pytest.LogCaptureFixture, entry: Any
) -> None:
    """``entry: -1`` was a TypeError in prefetch.resources_of, and a 500."""
    client = make_client(rules=RULES)
    prefetch = full_prefetch(hypertension("c1"))
    prefetch["observations"] = bundle(hypertension("c2"))  # a Condition under another key
    assert prefetch["conditions"] is not None
    prefetch["conditions"]["entry"] = entry
    with caplog.at_level(logging.WARNING, logger="ipt_cds"):
        response = client.post(
            "/cds-services/ipt-patient-view", json=hook_request("patient-view", prefetch)
        )
    assert response.status_code == 200
    assert response.json()["cards"][0]["summary"].startswith("1 Condition")
    assert "prefetch conditions: Bundle.entry is not an array; treated as no data" in caplog.text


def test_a_bundle_entry_sent_as_one_object_is_read_as_an_array_of_one(
    make_client: AppFactory,
) -> None:
    client = make_client(rules=RULES)
    prefetch = full_prefetch()
    assert prefetch["conditions"] is not None
    prefetch["conditions"]["entry"] = {"resource": hypertension("c1")}
    body = hook_request("patient-view", prefetch)
    cards = client.post("/cds-services/ipt-patient-view", json=body).json()["cards"]
    assert cards[0]["summary"].startswith("1 Condition")


@pytest.mark.parametrize("value", ["Patient/1", 5, [], {"id": "x"}, {"resourceType": 5}])
def test_a_fetched_value_that_is_not_a_resource_is_no_data(
    value: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The prefetch validation refuses these; the fetch path hands them on as they came."""
    with caplog.at_level(logging.WARNING, logger="ipt_cds"):
        assert resources_of("conditions", value) == []
    assert caplog.messages == ["prefetch conditions: not a FHIR resource; treated as no data"]


def test_a_draft_without_resource_type_in_patient_view_is_ignored(make_client: AppFactory) -> None:
    """patient-view has no draftOrders: an unknown context key of that name is accepted and
    never read (it was an AttributeError in models.draft_orders, and a 500)."""
    client = make_client(rules=RULES)
    body = hook_request("patient-view", full_prefetch(hypertension("c1")))
    body["context"]["draftOrders"] = {"resourceType": "Bundle", "entry": [{"resource": {}}]}
    body["context"]["selections"] = 5
    response = client.post("/cds-services/ipt-patient-view", json=body)
    assert response.status_code == 200
    assert [c["summary"] for c in response.json()["cards"]] == ["1 Condition, 0 selected drafts"]


def test_same_resource_under_two_keys_counts_once(make_client: AppFactory) -> None:
    client = make_client(rules=RULES)
    prefetch = full_prefetch(hypertension("c1"))
    prefetch["procedures"] = prefetch["conditions"]
    body = hook_request("patient-view", prefetch)
    cards = client.post("/cds-services/ipt-patient-view", json=body).json()["cards"]
    assert cards[0]["summary"].startswith("1 Condition")


def test_order_select_rules_see_only_the_selected_drafts(make_client: AppFactory) -> None:
    client = make_client(rules=RULES)
    drafts = [neutral_order("a"), neutral_order("b"), neutral_order("c")]
    body = hook_request(
        "order-select", full_prefetch(hypertension("c1")), drafts, ["ServiceRequest/b"]
    )
    cards = client.post("/cds-services/ipt-order-select", json=body).json()["cards"]
    assert [c["summary"] for c in cards] == [
        "0 Observation, 1 selected drafts",
        "1 Condition, 1 selected drafts",
    ]


def test_extensions_and_unknown_context_keys_are_accepted(make_client: AppFactory) -> None:
    client = make_client(rules=RULES)
    body = hook_request("order-sign", full_prefetch(hypertension("c1")))
    body["extension"] = {"com.example.flag": {"on": True}}
    body["context"]["com.epic.department"] = "psychiatry"
    body["context"]["encounterId"] = "enc-1"
    response = client.post("/cds-services/ipt-order-sign", json=body)
    assert response.status_code == 200
    assert len(response.json()["cards"]) == 2


def test_call_log_line_has_ids_and_counts_but_no_token_or_data(
    make_client: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(FakeFhir(resources=[hypertension("c1")]), rules=RULES)
    caplog.clear()  # the start-up lines (site profile) aside
    with caplog.at_level(logging.DEBUG, logger="ipt_cds"):
        client.post("/cds-services/ipt-order-sign", json=hook_request("order-sign"))
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert len(lines) == 1
    assert "service=ipt-order-sign" in lines[0]
    assert "hookInstance=d1577c69-dfbe-44ad-ba6d-3e05e953b2ea" in lines[0]
    assert "rules=counts-observations,counts-conditions" in lines[0]
    assert TOKEN not in caplog.text
    assert "F33.1" not in caplog.text
    assert "1980-05-01" not in caplog.text
