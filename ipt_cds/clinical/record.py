"""The patient's record for one hook call: the prefetched or fetched resources, and the drafts.

A tolerant reader: resources stay plain JSON, so a non-conformant field in one resource cannot
fail the call. The same resource reached through two prefetch keys counts once. Building the
record reads only ``resourceType`` and ``id``; the fields are read by the extractors, which skip
a resource they cannot read (``extractors.Scope.skip``) and have the facts computed again from
``without`` it.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field, replace

from ipt_cds.clinical.reader import loggable
from ipt_cds.protocol.models import HookRequest, Resource

log = logging.getLogger("ipt_cds")


@dataclass(frozen=True)
class PatientRecord:
    patient_id: str
    patient: Resource | None
    by_type: dict[str, list[Resource]]
    # Every draft order is "in the plan"; ``selected`` are the drafts this call is about
    # (order-select: the selections; order-sign: all drafts).
    drafts: list[Resource] = field(default_factory=list)
    selected: list[Resource] = field(default_factory=list)
    # Resource types the EHR could not give (a prefetch key answered with an OperationOutcome, a
    # refused optional read): what they would say is unknown, never absent.
    unreadable: frozenset[str] = frozenset()
    # Resource types the FHIR server does not offer at all (its CapabilityStatement): none of
    # them is recorded there. Unknown only where no type of the same kind is offered.
    not_offered: frozenset[str] = frozenset()

    @classmethod
    def build(
        cls,
        resources: Iterable[Resource],
        request: HookRequest,
        unreadable: frozenset[str] = frozenset(),
        not_offered: frozenset[str] = frozenset(),
    ) -> PatientRecord:
        by_type: dict[str, list[Resource]] = {}
        seen: set[tuple[str, str]] = set()
        for resource in resources:
            # The prefetch and the FHIR client pass only objects with a resourceType; anything
            # else that reaches here is skipped, not read.
            kind = resource.get("resourceType") if isinstance(resource, dict) else None
            if not isinstance(kind, str):
                log.warning("%s skipped: not a FHIR resource", loggable(resource))
                continue
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
        return cls(wanted, patient, by_type, drafts, selected, unreadable, not_offered)

    def without(self, gone: Collection[int]) -> PatientRecord:
        """The record less the resources whose ``id()`` is in ``gone`` (those that could not be
        read), wherever they are: a type's list, the patient, the drafts."""

        def keep(resources: list[Resource]) -> list[Resource]:
            return [r for r in resources if id(r) not in gone]

        by_type = {kind: kept for kind, rs in self.by_type.items() if (kept := keep(rs))}
        patient = self.patient if id(self.patient) not in gone else None
        return replace(
            self,
            patient=patient,
            by_type=by_type,
            drafts=keep(self.drafts),
            selected=keep(self.selected),
        )

    def of_type(self, kind: str) -> list[Resource]:
        return self.by_type.get(kind, [])

    @property
    def size(self) -> int:
        return sum(len(v) for v in self.by_type.values())
