"""The actions a rule's suggestion can name, built as valid FHIR R4 resources an EHR can apply.

the clinical spec section 3 fixes them: an IPT order (a draft ServiceRequest, intent order, SNOMED
443730003 "Interpersonal psychotherapy", category SNOMED 409063005 "Counselling", for the
patient, the depression Condition as its reason, the format as a note and the schedule in
``occurrenceTiming``); a referral to a psychiatrist (SNOMED 308477009), urgent where the rule
says; a PHQ-9 (LOINC 44249-1; for adolescents the teen version, 89206-7); and for adolescents
the IPT-A order that replaces an adult IPT draft.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ipt_cds.clinical.fact_model import Facts
from ipt_cds.protocol.models import Action
from ipt_cds.protocol.vocabulary import LOINC, SNOMED

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
# and is reviewed (the clinical spec v3 section 7.3) rather than running open-ended.
WEEKLY_16 = {"repeat": {"frequency": 1, "period": 1, "periodUnit": "wk", "count": 16}}
MONTHLY = {"repeat": {"frequency": 1, "period": 1, "periodUnit": "mo", "count": 12}}
IPT_A_TEXT = "Interpersonal psychotherapy for adolescents (IPT-A)"
# Under 18 a psychiatric referral goes to child and adolescent psychiatry: SNOMED CT has no
# verified code for that referral in the shipped value sets, so the psychiatry-service referral
# carries it in its text (version 3, section 7.1).
PSYCHIATRY_SERVICE_REFERRAL = {
    "system": SNOMED,
    "code": "183524004",
    "display": "Referral to psychiatry service",
}
CAMHS_TEXT = "Child and adolescent psychiatry"

# (label, note, facts, the fact whose evidence is the order's reason, or None: the depression)
Build = Callable[[str, str | None, Facts, str | None], list[Action]]


def _order(
    facts: Facts, code: dict[str, Any], text: str, note: str | None, reason: str | None = None
) -> dict[str, Any]:
    order: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": "order",
        "code": {"coding": [code], "text": text},
        "subject": {"reference": f"Patient/{facts['patient_id']}"},
    }
    order.update(_reasons(facts, reason))
    if note:
        order["note"] = [{"text": note}]
    return order


def _reasons(facts: Facts, reason: str | None) -> dict[str, Any]:
    """What the order is for: the Conditions that triggered it as ``reasonReference`` (named),
    an observation that did as ``reasonCode`` text; by default the depression episode."""
    if reason is None:
        episode = facts["current_episode"]
        refs = [episode.ref] if episode else facts.refs.get("depression", [])[:1]
        return {"reasonReference": [{"reference": ref} for ref in refs]} if refs else {}
    out: dict[str, Any] = {}
    for ev in facts.found.get(reason, []):
        name = ev.display or ev.code or ev.ref
        if ev.ref.startswith("Condition/"):
            named = f"{name} ({ev.code})" if ev.code and ev.display else name
            out.setdefault("reasonReference", []).append({"reference": ev.ref, "display": named})
        else:
            value = f" = {ev.value:g}" if ev.value is not None else ""
            when = f" on {ev.on.isoformat()}" if ev.on else ""
            out.setdefault("reasonCode", []).append({"text": f"{name}{value}{when}"})
    return out


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
    def build(label: str, note: str | None, facts: Facts, reason: str | None) -> list[Action]:
        resource = ipt_service_request(facts, note, timing)
        return [Action(type="create", description=label, resource=resource)]

    return build


def _delete_ipt_drafts(
    label: str, note: str | None, facts: Facts, reason: str | None = None
) -> list[Action]:
    return [
        Action(type="delete", description=f"{label}: {ref}", resourceId=ref)
        for ref in facts["ipt_draft_refs"]
    ]


def _replace_with_ipt_a(
    label: str, note: str | None, facts: Facts, reason: str | None
) -> list[Action]:
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


def _create_ipt_a(label: str, note: str | None, facts: Facts, reason: str | None) -> list[Action]:
    resource = ipt_service_request(facts, note, WEEKLY_16, IPT_A_TEXT)
    return [Action(type="create", description=label, resource=resource)]


def _refer(priority: str, code: dict[str, Any] = PSYCHIATRY_REFERRAL, text: str = "") -> Build:
    def build(label: str, note: str | None, facts: Facts, reason: str | None) -> list[Action]:
        resource = _order(facts, code, text or "Referral to psychiatrist", note, reason)
        resource["priority"] = priority
        return [Action(type="create", description=label, resource=resource)]

    return build


def _phq9(code: dict[str, Any]) -> Build:
    def build(label: str, note: str | None, facts: Facts, reason: str | None) -> list[Action]:
        resource = _order(facts, code, str(code["display"]), note)
        return [Action(type="create", description=label, resource=resource)]

    return build


ACTIONS: dict[str, Build] = {
    "delete-ipt-drafts": _delete_ipt_drafts,
    "create-ipt": _create_ipt(WEEKLY_16),
    "create-maintenance-ipt": _create_ipt(MONTHLY),
    "replace-with-ipt-a": _replace_with_ipt_a,
    "create-ipt-a": _create_ipt_a,
    "refer-to-psychiatry": _refer("routine"),
    "refer-to-psychiatry-urgently": _refer("urgent"),
    "refer-to-child-psychiatry-urgently": _refer("urgent", PSYCHIATRY_SERVICE_REFERRAL, CAMHS_TEXT),
    "order-phq9": _phq9(PHQ9),
    "order-phq9-teen": _phq9(PHQ9_TEEN),
}


# The order each action creates, by the name a site profile gives it local codes under.
ORDERABLE_OF = {
    "create-ipt": "ipt",
    "create-maintenance-ipt": "ipt",
    "replace-with-ipt-a": "ipt",
    "create-ipt-a": "ipt",
    "refer-to-psychiatry": "psychiatry_referral",
    "refer-to-psychiatry-urgently": "psychiatry_referral",
    "refer-to-child-psychiatry-urgently": "psychiatry_referral",
    "order-phq9": "phq9",
    "order-phq9-teen": "phq9",
}


def build_actions(
    action: str,
    label: str,
    note: str | None,
    facts: Facts,
    local_codes: dict[str, list[dict[str, Any]]] | None = None,
    reason: str | None = None,
) -> list[Action]:
    """The actions, each created resource with the site's own codes after ours; ``reason``
    names the fact whose evidence the order is for (default: the depression)."""
    actions = ACTIONS[action](label, note, facts, reason)
    extra = (local_codes or {}).get(ORDERABLE_OF.get(action, ""), [])
    for a in actions if extra else ():
        if a.resource is not None:
            a.resource["code"]["coding"] = [*a.resource["code"]["coding"], *extra]
    return actions
