"""The actions a rule's suggestion can name, built as valid FHIR R4 resources an EHR can apply.

KNOWLEDGE.md section 3 fixes them: an IPT order (a draft ServiceRequest, intent order, SNOMED
443730003 "Interpersonal psychotherapy", category SNOMED 409063005 "Counselling", for the
patient, the depression Condition as its reason, the format as a note and the schedule in
``occurrenceTiming``); a referral to a psychiatrist (SNOMED 308477009), urgent where the rule
says; a PHQ-9 (LOINC 44249-1; for adolescents the teen version, 89206-7); and for adolescents
the IPT-A order that replaces an adult IPT draft.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from service.clinical.fact_model import Facts
from service.protocol.models import Action
from service.protocol.vocabulary import LOINC, SNOMED

IPT_CODE = {"system": SNOMED, "code": "443730003", "display": "Interpersonal psychotherapy"}
COUNSELLING = {"system": SNOMED, "code": "409063005", "display": "Counselling"}
PSYCHIATRY_REFERRAL = {
    "system": SNOMED,
    "code": "308477009",
    "display": "Referral to psychiatrist",
}
PHQ9 = {"system": LOINC, "code": "44249-1", "display": "PHQ-9 quick depression assessment panel"}
PHQ9_TEEN = {
    "system": LOINC,
    "code": "89206-7",
    "display": "Patient Health Questionnaire-9: Modified for Teens",
}
# Acute IPT: weekly, 16 sessions (the topic's trials ran 6-20, most often 12-16 weekly);
# maintenance IPT: monthly for a year, then renewed if it should go on, so that the order ends
# and is reviewed (KNOWLEDGE.md v3 section 7.3) rather than running open-ended.
WEEKLY_16 = {"repeat": {"frequency": 1, "period": 1, "periodUnit": "wk", "count": 16}}
MONTHLY = {"repeat": {"frequency": 1, "period": 1, "periodUnit": "mo", "count": 12}}
IPT_A_TEXT = "Interpersonal psychotherapy for adolescents (IPT-A)"

Build = Callable[[str, str | None, Facts], list[Action]]


def _order(facts: Facts, code: dict[str, Any], text: str, note: str | None) -> dict[str, Any]:
    order: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": "order",
        "code": {"coding": [code], "text": text},
        "subject": {"reference": f"Patient/{facts['patient_id']}"},
    }
    episode = facts["current_episode"]
    reasons = [episode.ref] if episode else facts.refs.get("depression", [])[:1]
    if reasons:
        order["reasonReference"] = [{"reference": ref} for ref in reasons]
    if note:
        order["note"] = [{"text": note}]
    return order


def ipt_service_request(
    facts: Facts,
    note: str | None,
    timing: dict[str, Any],
    text: str = "Interpersonal psychotherapy (IPT)",
) -> dict[str, Any]:
    order = _order(facts, IPT_CODE, text, note)
    order["category"] = [{"coding": [COUNSELLING]}]
    order["occurrenceTiming"] = timing
    return order


def _create_ipt(timing: dict[str, Any]) -> Build:
    def build(label: str, note: str | None, facts: Facts) -> list[Action]:
        resource = ipt_service_request(facts, note, timing)
        return [Action(type="create", description=label, resource=resource)]

    return build


def _delete_ipt_drafts(label: str, note: str | None, facts: Facts) -> list[Action]:
    return [
        Action(type="delete", description=f"{label}: {ref}", resourceId=ref)
        for ref in facts["ipt_draft_refs"]
    ]


def _replace_with_ipt_a(label: str, note: str | None, facts: Facts) -> list[Action]:
    """Delete the adult IPT draft(s) and create the adolescent version in their place."""
    deletes = _delete_ipt_drafts("Remove the adult IPT order", None, facts)
    if not deletes:
        return []
    resource = ipt_service_request(facts, note, WEEKLY_16, IPT_A_TEXT)
    # Its own description, not the suggestion's label: an EHR that splits the actions (Epic)
    # shows this create alone, where "replace" would promise a removal it does not make.
    create = Action(
        type="create", description=f"Order {IPT_A_TEXT}, weekly for 16 sessions", resource=resource
    )
    return [*deletes, create]


def _refer(priority: str) -> Build:
    def build(label: str, note: str | None, facts: Facts) -> list[Action]:
        resource = _order(facts, PSYCHIATRY_REFERRAL, "Referral to psychiatrist", note)
        resource["priority"] = priority
        return [Action(type="create", description=label, resource=resource)]

    return build


def _phq9(code: dict[str, Any]) -> Build:
    def build(label: str, note: str | None, facts: Facts) -> list[Action]:
        resource = _order(facts, code, str(code["display"]), note)
        return [Action(type="create", description=label, resource=resource)]

    return build


ACTIONS: dict[str, Build] = {
    "delete-ipt-drafts": _delete_ipt_drafts,
    "create-ipt": _create_ipt(WEEKLY_16),
    "create-maintenance-ipt": _create_ipt(MONTHLY),
    "replace-with-ipt-a": _replace_with_ipt_a,
    "refer-to-psychiatry": _refer("routine"),
    "refer-to-psychiatry-urgently": _refer("urgent"),
    "order-phq9": _phq9(PHQ9),
    "order-phq9-teen": _phq9(PHQ9_TEEN),
}


# The order each action creates, by the name a site profile gives it local codes under.
ORDERABLE_OF = {
    "create-ipt": "ipt",
    "create-maintenance-ipt": "ipt",
    "replace-with-ipt-a": "ipt",
    "refer-to-psychiatry": "psychiatry_referral",
    "refer-to-psychiatry-urgently": "psychiatry_referral",
    "order-phq9": "phq9",
    "order-phq9-teen": "phq9",
}


def build_actions(
    action: str,
    label: str,
    note: str | None,
    facts: Facts,
    local_codes: dict[str, list[dict[str, Any]]] | None = None,
) -> list[Action]:
    """The actions, each created resource with the site's own codes after ours."""
    actions = ACTIONS[action](label, note, facts)
    extra = (local_codes or {}).get(ORDERABLE_OF.get(action, ""), [])
    for a in actions if extra else ():
        if a.resource is not None:
            a.resource["code"]["coding"] = [*a.resource["code"]["coding"], *extra]
    return actions
