"""What a suggestion's order says about this patient: the orders themselves (codes, texts,
schedules, priorities) are data, cards/orders.yaml, read by ipt_cds/knowledge/orders.py; here
a template becomes a ServiceRequest for the patient, with its reason, and the call's drafts
an order replaces become deletions."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from ipt_cds.clinical.fact_model import Facts
from ipt_cds.protocol.models import Action


def service_request(
    template: dict[str, Any],
    facts: Facts,
    note: str | None,
    reason: str | None,
    extra_codes: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """A draft order from ``template`` (its code first, then its other elements in order) for
    the patient, for ``reason`` (the fact whose evidence it is for; None: the depression), with
    the suggestion's note; ``extra_codes``, a site's own, follow ours."""
    code = copy.deepcopy(template["code"])
    code["coding"] = [*code["coding"], *extra_codes]
    order: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": "order",
        "code": code,
        "subject": {"reference": f"Patient/{facts['patient_id']}"},
    }
    order.update(_reasons(facts, reason))
    if note:
        order["note"] = [{"text": note}]
    order.update({k: copy.deepcopy(v) for k, v in template.items() if k != "code"})
    return order


def removals(facts: Facts, fact: str, label: str) -> list[Action]:
    """A deletion of each draft of the call that ``fact`` holds references to."""
    return [
        Action(type="delete", description=f"{label}: {ref}", resourceId=ref) for ref in facts[fact]
    ]


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
