"""The hook calls a replay makes for each patient, as an EHR would make them.

``patient-view``: the chart is opened. ``order-sign-ipt``: an IPT referral is signed.
``order-sign-antidepressant``: a new sertraline is signed. Each call carries the prefetch the
service declares, answered from the patient's exported resources (search.py), so no FHIR server
is asked; a read that finds nothing is sent as null, as CDS Hooks says an EHR does.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ipt_cds.protocol.models import Resource, Service
from ipt_cds.protocol.vocabulary import RXNORM, SNOMED
from ipt_cds.replay.search import Search, Shared, compile_searches

_UCUM = "http://unitsofmeasure.org"
_DRAFT_ID = "replay-draft"
# A replay's calls are not stored, so one instance per scenario is enough.
_NAMESPACE = uuid.UUID("0b7f6f0e-3c2a-4d1e-9a55-6f1f4c0d9e21")

IPT_DRAFT: dict[str, Any] = {
    "resourceType": "ServiceRequest",
    "status": "draft",
    "intent": "order",
    # A clinician's draft as an EHR would send it (the scenario's input, not our order).
    "code": {
        "coding": [
            {"system": SNOMED, "code": "443730003", "display": "Interpersonal psychotherapy"}
        ],
        "text": "Interpersonal psychotherapy (IPT)",
    },
}
SERTRALINE_DRAFT: dict[str, Any] = {
    "resourceType": "MedicationRequest",
    "status": "draft",
    "intent": "order",
    "medicationCodeableConcept": {
        "coding": [{"system": RXNORM, "code": "312941", "display": "sertraline 50 MG Oral Tablet"}]
    },
    "dosageInstruction": [
        {
            "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
            "doseAndRate": [
                {"doseQuantity": {"value": 50, "unit": "mg", "system": _UCUM, "code": "mg"}}
            ],
        }
    ],
}


@dataclass(frozen=True)
class Scenario:
    name: str
    hook: str
    draft: dict[str, Any] | None
    meaning: str


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("patient-view", "patient-view", None, "chart opens"),
        Scenario("order-sign-ipt", "order-sign", IPT_DRAFT, "IPT orders signed"),
        Scenario(
            "order-sign-antidepressant",
            "order-sign",
            SERTRALINE_DRAFT,
            "antidepressant (sertraline) orders signed",
        ),
    )
}


class ScenarioError(ValueError):
    """A scenario no service of the knowledge base answers, or one that does not exist."""


@dataclass(frozen=True)
class Call:
    """A scenario bound to the service that answers it, with its prefetch compiled."""

    scenario: Scenario
    service: Service
    searches: tuple[Search, ...]

    def prefetch(
        self, patient_id: str, own: Mapping[str, list[Resource]], shared: Shared
    ) -> dict[str, Any]:
        return {s.key: s.answer(patient_id, own, shared) for s in self.searches}

    def body(self, patient_id: str, prefetch: dict[str, Any]) -> dict[str, Any]:
        """The call for a patient, with ``prefetch`` answered (``prefetch()``)."""
        context: dict[str, Any] = {"userId": "Practitioner/replay", "patientId": patient_id}
        draft = self.scenario.draft
        if draft is not None:
            order = {**draft, "id": _DRAFT_ID, "subject": {"reference": f"Patient/{patient_id}"}}
            context["draftOrders"] = {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"resource": order}],
            }
        return {
            "hook": self.service.hook,
            "hookInstance": str(uuid.uuid5(_NAMESPACE, self.scenario.name)),
            "context": context,
            "prefetch": prefetch,
        }


def bind(names: list[str], services: Mapping[str, Service]) -> list[Call]:
    """Each scenario named with the service of its hook (the first, in services.yaml order)."""
    calls: list[Call] = []
    for name in names:
        scenario = SCENARIOS.get(name)
        if scenario is None:
            raise ScenarioError(
                f"unknown scenario {name!r}; the scenarios are {', '.join(SCENARIOS)}"
            )
        service = next((s for s in services.values() if s.hook == scenario.hook), None)
        if service is None:
            raise ScenarioError(f"no service of the knowledge base answers {scenario.hook}")
        calls.append(Call(scenario, service, compile_searches(service)))
    return calls
