"""The actions a rule's suggestion can name, built as valid FHIR R4 resources.

KNOWLEDGE.md fixes the IPT order: a draft ServiceRequest, intent order, SNOMED 443730003
"Interpersonal psychotherapy", category SNOMED 409063005 "Counselling", for the patient, with
the depression Condition as its reason and the format as a note.
"""

from __future__ import annotations

from typing import Any

from service.clinical.fact_model import Facts
from service.protocol.models import Action
from service.protocol.vocabulary import SNOMED

IPT_CODE = {"system": SNOMED, "code": "443730003", "display": "Interpersonal psychotherapy"}
COUNSELLING = {"system": SNOMED, "code": "409063005", "display": "Counselling"}
MONTHLY = {"repeat": {"frequency": 1, "period": 1, "periodUnit": "mo"}}


def ipt_service_request(facts: Facts, note: str | None, maintenance: bool) -> dict[str, Any]:
    order: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": "order",
        "category": [{"coding": [COUNSELLING]}],
        "code": {"coding": [IPT_CODE], "text": "Interpersonal psychotherapy (IPT)"},
        "subject": {"reference": f"Patient/{facts['patient_id']}"},
    }
    if maintenance:
        order["occurrenceTiming"] = MONTHLY
    episode = facts["current_episode"]
    reasons = [episode.ref] if episode else facts.refs.get("depression", [])[:1]
    if reasons:
        order["reasonReference"] = [{"reference": ref} for ref in reasons]
    if note:
        order["note"] = [{"text": note}]
    return order


def _delete_ipt_drafts(label: str, note: str | None, facts: Facts) -> list[Action]:
    return [
        Action(type="delete", description=f"{label}: {ref}", resourceId=ref)
        for ref in facts["ipt_draft_refs"]
    ]


def _create(maintenance: bool) -> Any:
    def build(label: str, note: str | None, facts: Facts) -> list[Action]:
        resource = ipt_service_request(facts, note, maintenance)
        return [Action(type="create", description=label, resource=resource)]

    return build


ACTIONS = {
    "delete-ipt-drafts": _delete_ipt_drafts,
    "create-ipt": _create(maintenance=False),
    "create-maintenance-ipt": _create(maintenance=True),
}


def build_actions(action: str, label: str, note: str | None, facts: Facts) -> list[Action]:
    built: list[Action] = ACTIONS[action](label, note, facts)
    return built
