"""The fixture patients who take a drug, written the other way FHIR allows: each current order
and statement names its drug by ``medicationReference`` to a Medication resource of its own, as
many EHRs export them, instead of an inline ``medicationCodeableConcept``. The cards must not
change: the fetch path has to bring the referenced Medications along (by ``_include``, or by
reading them where a server ignores ``_include``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ipt_cds.devtools.fixtures import Case, load_cases

DRUG_TYPES = ("MedicationRequest", "MedicationStatement")


def variant(case: Case) -> Case:
    """The same patient under another id, so that both versions can sit in one server."""
    return Case.model_validate({**case.model_dump(exclude={"rule"}), "name": f"{case.name}-mref"})


def cases() -> list[Case]:
    """A variant of every fixture with a current drug order or statement (and whose searches a
    real server answers: see test_fhir_server.ANSWERED)."""
    return [
        variant(c)
        for c in load_cases()
        if (c.medications or c.statements) and not c.unreadable and not _by_reference(c)
    ]


def _by_reference(case: Case) -> bool:
    """The case writes its drugs by reference already."""
    return any(isinstance(m, dict) and m.get("by_reference") for m in case.medications)


def transaction(case: Case, now: datetime) -> dict[str, Any]:
    """``case.transaction``, each drug moved out into a Medication that the order references."""
    bundle = case.transaction(now)
    medications: list[dict[str, Any]] = []
    for entry in bundle["entry"]:
        resource = entry["resource"]
        drug = resource.get("medicationCodeableConcept")
        if resource["resourceType"] not in DRUG_TYPES or drug is None:
            continue
        mid = f"{resource['id']}-med"
        medication = {
            "resourceType": "Medication",
            "id": mid,
            "code": drug,
        }
        del resource["medicationCodeableConcept"]
        resource["medicationReference"] = {"reference": f"Medication/{mid}"}
        medications.append(
            {"resource": medication, "request": {"method": "PUT", "url": f"Medication/{mid}"}}
        )
    assert medications, f"{case.name} has no drug to reference"
    bundle["entry"].extend(medications)
    return bundle
