"""The patient's record for one hook call: the prefetched or fetched resources, and the drafts.

A tolerant reader: resources stay plain JSON, so a non-conformant field in one resource cannot
fail the call. The same resource reached through two prefetch keys counts once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from service.protocol.models import HookRequest, Resource


@dataclass(frozen=True)
class PatientRecord:
    patient_id: str
    patient: Resource | None
    by_type: dict[str, list[Resource]]
    # Every draft order is "in the plan"; ``selected`` are the drafts this call is about
    # (order-select: the selections; order-sign: all drafts).
    drafts: list[Resource] = field(default_factory=list)
    selected: list[Resource] = field(default_factory=list)

    @classmethod
    def build(cls, resources: Iterable[Resource], request: HookRequest) -> PatientRecord:
        by_type: dict[str, list[Resource]] = {}
        seen: set[tuple[str, str]] = set()
        for resource in resources:
            kind = resource["resourceType"]
            rid = resource.get("id")
            if isinstance(rid, str):
                if (kind, rid) in seen:
                    continue
                seen.add((kind, rid))
            by_type.setdefault(kind, []).append(resource)
        patients = by_type.get("Patient", [])
        wanted = request.context.patientId
        patient = next((p for p in patients if p.get("id") == wanted), None)
        if patient is None and patients:
            patient = patients[0]
        drafts = request.draft_orders
        chosen = set(request.selections)
        selected = (
            [d for d in drafts if f"{d['resourceType']}/{d.get('id')}" in chosen]
            if chosen
            else drafts
        )
        return cls(wanted, patient, by_type, drafts, selected)

    def of_type(self, kind: str) -> list[Resource]:
        return self.by_type.get(kind, [])

    @property
    def size(self) -> int:
        return sum(len(v) for v in self.by_type.values())
