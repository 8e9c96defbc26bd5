"""What makes a fixture patient readable in an EHR or the CDS Hooks sandbox: a name, a
display on every coding (the sandbox shows "Unknown" and blank choices without them), and a
Condition's ``code.text`` (the sandbox's Rx View lists the conditions an order may treat by
that text alone: without it the list is blank).

Displays come from the value sets the service ships (cards/valuesets/, each concept with its
VSAC display, read by the knowledge base's own loader) and, for the few codes no value set
holds, from the table below.
tests/test_fixture_files.py checks that every shipped fixture got them: a case with a new code
needs its display written here.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path
from typing import Any

from ipt_cds.clinical.terminology import Terminology
from ipt_cds.knowledge.datafiles import parse
from ipt_cds.knowledge.orders import OrdersFile
from ipt_cds.knowledge.valuesets import load_terminology
from ipt_cds.protocol.vocabulary import CONDITION_CLINICAL, CONDITION_VERIFICATION, ICD10CM

UCUM = "http://unitsofmeasure.org"  # a Quantity's unit code: it has a unit, not a display

# HL7 terminology displays and the one ICD-10-CM code of a case that no value set holds (the
# PHQ-9 panels' come from cards/orders.yaml).
EXTRA_DISPLAYS = {
    (CONDITION_CLINICAL, "active"): "Active",
    (CONDITION_CLINICAL, "recurrence"): "Recurrence",
    (CONDITION_CLINICAL, "relapse"): "Relapse",
    (CONDITION_CLINICAL, "inactive"): "Inactive",
    (CONDITION_CLINICAL, "remission"): "Remission",
    (CONDITION_CLINICAL, "resolved"): "Resolved",
    (CONDITION_VERIFICATION, "confirmed"): "Confirmed",
    (CONDITION_VERIFICATION, "unconfirmed"): "Unconfirmed",
    (CONDITION_VERIFICATION, "provisional"): "Provisional",
    (CONDITION_VERIFICATION, "differential"): "Differential",
    (CONDITION_VERIFICATION, "refuted"): "Refuted",
    (CONDITION_VERIFICATION, "entered-in-error"): "Entered in Error",
    (ICD10CM, "T43.222A"): "Poisoning by selective serotonin reuptake inhibitors, intentional "
    "self-harm, initial encounter",
}

# Invented names, picked by the patient id: the same patient keeps the same name.
GIVEN = {
    "female": ("Ada", "Bea", "Cora", "Dana", "Elin", "Faye", "Gwen", "Hana", "Iris", "June"),
    "male": ("Abe", "Ben", "Carl", "Dev", "Eli", "Finn", "Gus", "Hal", "Ivo", "Joel"),
    "other": ("Alex", "Blair", "Casey", "Drew", "Emery", "Frankie", "Gray", "Harper", "Indy"),
}
FAMILY = (
    "Avery",
    "Brook",
    "Castell",
    "Dunmore",
    "Elwood",
    "Fairley",
    "Garrow",
    "Hollins",
    "Ingram",
    "Jessop",
    "Kettering",
    "Lowell",
    "Marsh",
    "Norcott",
    "Orwin",
    "Pell",
)


def label(resource: dict[str, Any], knowledge_dir: Path) -> dict[str, Any]:
    """The resource with a name if it is a Patient, a display on every coding, and a text
    for a Condition's code."""
    if resource.get("resourceType") == "Patient" and "name" not in resource:
        resource["name"] = [_name(str(resource["id"]), str(resource.get("gender", "other")))]
    _display(resource, _terminology(knowledge_dir), _ordered(knowledge_dir))
    code = resource.get("code")
    if resource.get("resourceType") == "Condition" and isinstance(code, dict):
        shown = next((c["display"] for c in code.get("coding", []) if c.get("display")), None)
        if shown is not None:
            code.setdefault("text", shown)
    return resource


def _name(patient_id: str, gender: str) -> dict[str, Any]:
    digest = hashlib.sha256(patient_id.encode()).digest()
    given = GIVEN.get(gender, GIVEN["other"])
    first, family = given[digest[0] % len(given)], FAMILY[digest[1] % len(FAMILY)]
    return {"use": "official", "family": family, "given": [first], "text": f"{first} {family}"}


def _display(value: Any, terms: Terminology, ordered: dict[tuple[str, str], str]) -> None:
    if isinstance(value, list):
        for item in value:
            _display(item, terms, ordered)
        return
    if not isinstance(value, dict):
        return
    system, code = value.get("system"), value.get("code")
    if isinstance(system, str) and isinstance(code, str) and system != UCUM:
        display = (
            EXTRA_DISPLAYS.get((system, code))
            or terms.display(system, code)
            or ordered.get((system, code))
        )
        if display is not None:
            value.setdefault("display", display)
    for item in value.values():
        _display(item, terms, ordered)


@cache
def _ordered(knowledge_dir: Path) -> dict[tuple[str, str], str]:
    """The displays of what our suggestions order (cards/orders.yaml): the PHQ-9 panels, which
    a case's panel Observation is coded as."""
    spec = parse(knowledge_dir / "orders.yaml", OrdersFile)
    return {
        (coding["system"], coding["code"]): coding["display"]
        for order in spec.orders.values()
        if order.create is not None
        for coding in order.create["code"]["coding"]
    }


@cache
def _terminology(knowledge_dir: Path) -> Terminology:
    return load_terminology(knowledge_dir / "valuesets")
