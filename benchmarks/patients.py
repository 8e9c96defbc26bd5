"""Synthetic patients of a chosen size for the benchmarks: a depressed adult with a PHQ-9 and
an IPT draft, padded with the everyday records a real chart holds (vitals, labs, other
problems, past prescriptions, procedures)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

from ipt_cds.devtools.fixtures import Case, prefetch_of

VITALS = ["8867-4", "8480-6", "8462-4", "29463-7", "8302-2", "39156-5", "2339-0", "4548-4"]
PROBLEMS = ["I10", "E11.9", "E78.5", "J45.909", "M54.5", "K21.9", "N39.0", "G43.909"]
DRUGS = ["197361", "314076", "860975", "617314", "197884", "310965"]


def patient(
    size: int, now: datetime, seed: int = 7, name: str = ""
) -> tuple[Case, list[dict[str, Any]]]:
    """A case (for its drafts and request) and about ``size`` resources of record."""
    case = Case.model_validate(
        {
            "name": name or f"in-bench-{size}",
            "describe": "benchmark patient",
            "hook": "order-sign",
            "age": 46,
            "conditions": ["F33.1", "F41.1"],
            "observations": [
                {"loinc": "44261-6", "value": 16, "days_ago": 5},
                {"loinc": "44260-8", "answer": "LA6569-3", "days_ago": 5},
            ],
            "drafts": ["ipt"],
        }
    )
    rng = random.Random(seed)
    resources = case.resources(now)
    pid = case.patient_id
    i = 0
    while len(resources) < size:
        i += 1
        kind = rng.random()
        day = (now - timedelta(days=rng.randint(0, 3000))).date().isoformat()
        ref = {"reference": f"Patient/{pid}"}
        if kind < 0.6:
            resources.append(
                {
                    "resourceType": "Observation",
                    "id": f"{pid}-x{i}",
                    "status": "final",
                    "category": [{"coding": [{"code": "vital-signs"}]}],
                    "code": {
                        "coding": [{"system": "http://loinc.org", "code": rng.choice(VITALS)}]
                    },
                    "subject": ref,
                    "effectiveDateTime": f"{day}T08:00:00Z",
                    "valueQuantity": {"value": rng.randint(40, 180), "unit": "mm[Hg]"},
                }
            )
        elif kind < 0.75:
            resources.append(
                {
                    "resourceType": "Condition",
                    "id": f"{pid}-x{i}",
                    "clinicalStatus": {"coding": [{"code": rng.choice(["active", "resolved"])}]},
                    "code": {
                        "coding": [
                            {
                                "system": "http://hl7.org/fhir/sid/icd-10-cm",
                                "code": rng.choice(PROBLEMS),
                            }
                        ]
                    },
                    "subject": ref,
                    "recordedDate": day,
                }
            )
        elif kind < 0.9:
            resources.append(
                {
                    "resourceType": "MedicationRequest",
                    "id": f"{pid}-x{i}",
                    "status": rng.choice(["stopped", "completed", "active"]),
                    "intent": "order",
                    "medicationCodeableConcept": {
                        "coding": [
                            {
                                "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                "code": rng.choice(DRUGS),
                            }
                        ]
                    },
                    "subject": ref,
                    "authoredOn": day,
                }
            )
        else:
            resources.append(
                {
                    "resourceType": "Procedure",
                    "id": f"{pid}-x{i}",
                    "status": "completed",
                    "code": {"coding": [{"system": "http://snomed.info/sct", "code": "710824005"}]},
                    "subject": ref,
                    "performedDateTime": day,
                }
            )
    return case, resources


def request(
    size: int, now: datetime, hook: str, server: str, seed: int = 7, name: str = ""
) -> dict[str, Any]:
    case, resources = patient(size, now, seed, name)
    case = case.model_copy(update={"hook": hook})
    body = case.request(now, server, prefetch=False)
    body["prefetch"] = prefetch_of(resources)
    return body


def many(count: int, size: int, now: datetime, hook: str, server: str) -> list[dict[str, Any]]:
    """``count`` different patients of about ``size`` resources each (own ids, own records)."""
    return [
        request(size, now, hook, server, seed=n, name=f"in-bench-{size}-{n}") for n in range(count)
    ]
