from __future__ import annotations

import pytest
from pydantic import ValidationError

from ipt_cds.protocol.models import (
    REQUEST_MODELS,
    Action,
    Card,
    CdsResponse,
    Coding,
    FeedbackItem,
    Source,
    Suggestion,
)
from ipt_cds.protocol.vocabulary import HOOKS


def _card(**kw: object) -> Card:
    return Card.model_validate(
        {"summary": "IPT suits", "indicator": "info", "source": {"label": "IPT CDS"}, **kw}
    )


def test_response_drops_empty_optional_fields_but_keeps_required_cards() -> None:
    card = _card(detail="", links=[], suggestions=None)
    assert CdsResponse(cards=[card]).model_dump(mode="json") == {
        "cards": [{"summary": "IPT suits", "indicator": "info", "source": {"label": "IPT CDS"}}]
    }
    assert CdsResponse(cards=[]).model_dump(mode="json") == {"cards": []}


def test_summary_must_be_shorter_than_140_characters() -> None:
    assert _card(summary="x" * 139).summary
    with pytest.raises(ValidationError, match="139"):
        _card(summary="x" * 140)


def test_suggestions_require_selection_behavior() -> None:
    create = Action(type="create", description="Order IPT", resource={"resourceType": "X"})
    suggestion = Suggestion(label="Order IPT", actions=[create])
    with pytest.raises(ValidationError, match="selectionBehavior"):
        _card(suggestions=[suggestion])
    assert _card(suggestions=[suggestion], selectionBehavior="at-most-one").selectionBehavior


def test_delete_action_names_its_resource() -> None:
    with pytest.raises(ValidationError, match="resourceId"):
        Action(type="delete", description="Remove the IPT order")
    action = Action(type="delete", description="x", resourceId="ServiceRequest/1")
    assert action.model_dump() == {
        "type": "delete",
        "description": "x",
        "resourceId": "ServiceRequest/1",
    }


def test_source_topic_serialises_as_coding() -> None:
    source = Source(label="IPT CDS", topic=Coding(code="ipt-chd", system="urn:x", display=None))
    assert source.model_dump() == {
        "label": "IPT CDS",
        "topic": {"code": "ipt-chd", "system": "urn:x"},
    }


def test_feedback_reasons_from_spec_singular_and_epic_plural() -> None:
    item = FeedbackItem.model_validate(
        {
            "card": "c1",
            "outcome": "overridden",
            "overrideReason": {"reason": {"code": "a", "system": "s"}, "userComment": "no"},
            "overrideReasons": [{"reason": {"code": "b", "system": "s"}}, {"code": "c"}],
            "outcomeTimestamp": "2026-11-25T10:00:00Z",
        }
    )
    assert [r.code for r in item.reasons()] == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("item", "problem"),
    [
        ({"outcome": "accepted"}, "acceptedSuggestions"),
        ({"outcome": "overridden", "acceptedSuggestions": [{"id": "s"}]}, "acceptedSuggestions"),
        (
            {"outcome": "accepted", "acceptedSuggestions": [{"id": "s"}], "overrideReason": {}},
            "overrideReason",
        ),
        ({"outcome": "ignored"}, "outcome"),
    ],
)
def test_feedback_outcome_fields_are_checked(item: dict[str, object], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        FeedbackItem.model_validate(
            {"card": "c", "outcomeTimestamp": "2026-11-25T10:00:00Z", **item}
        )


def test_the_hook_literal_names_exactly_the_hooks_with_a_request_model() -> None:
    # Rule and fixture files are checked against vocabulary.Hook, requests against
    # REQUEST_MODELS: a hook added to one only would be offered but unusable, or the reverse.
    assert sorted(HOOKS) == sorted(REQUEST_MODELS)


def test_drafts_and_selections_in_a_context_that_does_not_declare_them_are_ignored() -> None:
    request = REQUEST_MODELS["patient-view"].model_validate(
        {
            "hook": "patient-view",
            "hookInstance": "i",
            "context": {
                "userId": "Practitioner/1",
                "patientId": "p",
                "draftOrders": {"resourceType": "Bundle", "entry": "not checked"},
                "selections": "ServiceRequest/1",
            },
        }
    )
    assert request.draft_orders == []
    assert request.selections == []
