"""Synthetic patients and hook requests from the compact case files in ``fhir_fixtures/cases/``.

A case names a patient in a few lines (age, condition codes, PHQ-9 answers with how many days
ago, current orders, draft orders) and the cards it must produce. This module turns it into
FHIR R4 resources dated relative to ``now``, and into CDS Hooks requests with or without
prefetch. The test suite runs every case; integrators load the same patients into a sandbox.
"""

from __future__ import annotations

import copy
import json
import os
import uuid
from datetime import UTC, date, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ipt_cds.devtools.fixture_labels import label
from ipt_cds.knowledge.datafiles import read_yaml
from ipt_cds.ops.config import Settings
from ipt_cds.protocol.vocabulary import CONDITION_CLINICAL as CLINICAL
from ipt_cds.protocol.vocabulary import CONDITION_VERIFICATION as VERIFICATION
from ipt_cds.protocol.vocabulary import ICD10CM as ICD10
from ipt_cds.protocol.vocabulary import LOINC, RXNORM, SNOMED, Hook, Indicator

FIXTURES = Path(__file__).resolve().parents[2] / "fhir_fixtures"

# When a case does not say how long ago something was recorded: a diagnosis a month old, a
# PHQ-9 last week, a psychotherapy session a fortnight ago; each well inside every look-back
# window of cards/parameters.yaml (the shortest is 90 days), so only cases that say otherwise
# test the windows.
CONDITION_DAYS_AGO = 30
OBSERVATION_DAYS_AGO = 7
PROCEDURE_DAYS_AGO = 14
# A patient's birthday falls this long before the day the case is built, so that the age the
# case states holds for the month after.
BIRTHDAY_MARGIN = timedelta(days=30)
# The lifetime ``fhirAuthorization`` claims for its access token, as in the CDS Hooks examples.
TOKEN_EXPIRES_IN_SECONDS = 300
UCUM = "http://unitsofmeasure.org"


def _drug(code: str, display: str, mg: float | None = None, a_day: int = 1) -> dict[str, Any]:
    order: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "medicationCodeableConcept": {
            "coding": [{"system": RXNORM, "code": code, "display": display}]
        },
    }
    if mg is not None:
        dose = {"doseQuantity": {"value": mg, "unit": "mg", "system": UCUM, "code": "mg"}}
        timing = {"repeat": {"frequency": a_day, "period": 1, "periodUnit": "d"}}
        order["dosageInstruction"] = [{"timing": timing, "doseAndRate": [dose]}]
    return order


# Shorthands for orders used across the cases (drafts, current orders, statements).
DRAFTS: dict[str, dict[str, Any]] = {
    "ipt": {
        "resourceType": "ServiceRequest",
        "code": {
            "coding": [
                {"system": SNOMED, "code": "443730003", "display": "Interpersonal psychotherapy"}
            ]
        },
    },
    "ipt-text": {
        "resourceType": "ServiceRequest",
        "code": {"text": "Interpersonal psychotherapy, weekly"},
    },
    "cbt": {
        "resourceType": "ServiceRequest",
        "code": {
            "coding": [
                {
                    "system": SNOMED,
                    "code": "228557008",
                    "display": "Cognitive and behavioral therapy",
                }
            ]
        },
    },
    "psychodynamic-interpersonal": {
        "resourceType": "ServiceRequest",
        "code": {
            "coding": [
                {
                    "system": SNOMED,
                    "code": "304822001",
                    "display": "Psychodynamic-interpersonal psychotherapy",
                }
            ]
        },
    },
    "sertraline": _drug("312941", "sertraline 50 MG Oral Tablet"),
    "fluoxetine": _drug("310385", "fluoxetine 20 MG Oral Capsule"),
    # Sertraline with its daily dose stated: a renewal at 50 mg, or a dose increase to 100 mg.
    "sertraline-50-a-day": _drug("312941", "sertraline 50 MG Oral Tablet", 50),
    "sertraline-100-a-day": _drug("312941", "sertraline 50 MG Oral Tablet", 50, 2),
    # Trazodone and amitriptyline at the doses that decide whether they count (mg a day).
    "trazodone-50-at-night": _drug("856377", "trazodone hydrochloride 50 MG Oral Tablet", 50),
    "trazodone-100-a-day": _drug("856377", "trazodone hydrochloride 50 MG Oral Tablet", 50, 2),
    "trazodone-150-a-day": _drug("856364", "trazodone hydrochloride 150 MG Oral Tablet", 150),
    "amitriptyline-25-at-night": _drug(
        "856834", "amitriptyline hydrochloride 25 MG Oral Tablet", 25
    ),
    "bupropion-smoking-cessation": _drug(
        "1801289",
        "Smoking Cessation 12 HR bupropion hydrochloride 150 MG Extended Release Oral Tablet",
    ),
    "psychiatry-referral": {
        "resourceType": "ServiceRequest",
        "code": {
            "coding": [
                {"system": SNOMED, "code": "308477009", "display": "Referral to psychiatrist"}
            ]
        },
    },
    "nortriptyline": {
        "resourceType": "MedicationRequest",
        "medicationCodeableConcept": {
            "coding": [{"system": RXNORM, "code": "7531", "display": "nortriptyline"}]
        },
    },
}


# Prefetch key per resource type searched (the Patient is read, not searched).
KEYS = {
    "Condition": "conditions",
    "Observation": "observations",
    "MedicationRequest": "medications",
    "MedicationStatement": "medicationStatements",
    "ServiceRequest": "serviceRequests",
    "Procedure": "procedures",
}
PrefetchKey = Literal[
    "observations", "medications", "medicationStatements", "serviceRequests", "procedures"
]
# How an EHR says it could not prefetch a key (CDS Hooks 2.0).
COULD_NOT_READ = {
    "resourceType": "OperationOutcome",
    "issue": [{"severity": "error", "code": "forbidden"}],
}


class _Case(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    # The name is the patient's id, and its resources' ids extend it: FHIR ids hold 64.
    name: str = Field(pattern=r"^(in|out)-[a-z0-9-]+$", max_length=56)
    describe: str
    hook: Hook
    age: int | None = None
    # The patient turns ``age`` today, or tomorrow (and is a year younger today): the
    # threshold pairs of the age rules.
    birthday: Literal["today", "tomorrow"] | None = None
    gender: Literal["female", "male", "other", "unknown"] = "female"
    conditions: list[str | dict[str, Any]] = Field(default_factory=list)
    observations: list[dict[str, Any]] = Field(default_factory=list)
    medications: list[str | dict[str, Any]] = Field(default_factory=list)
    # Drugs the patient takes as MedicationStatements (status active unless said).
    statements: list[str | dict[str, Any]] = Field(default_factory=list)
    service_requests: list[str | dict[str, Any]] = Field(default_factory=list)
    procedures: list[dict[str, Any]] = Field(default_factory=list)
    drafts: list[str | dict[str, Any]] = Field(default_factory=list)
    selected: list[int] | None = None
    # Prefetch keys the EHR cannot give (an OperationOutcome in the prefetch; through the fetch
    # path, the server refuses the search): what they hold is unknown.
    unreadable: list[PrefetchKey] = Field(default_factory=list)
    expect: dict[str, Indicator] = Field(default_factory=dict)


class Case(_Case):
    rule: str = ""

    @property
    def patient_id(self) -> str:
        return self.name

    def resources(self, now: datetime) -> list[dict[str, Any]]:
        """The patient's record (not the drafts), dated relative to ``now``."""
        today = now.date()
        pid = self.patient_id
        out: list[dict[str, Any]] = []
        patient: dict[str, Any] = {"resourceType": "Patient", "id": pid, "gender": self.gender}
        if self.age is not None:
            patient["birthDate"] = _born(today, self.age, self.birthday).isoformat()
        out.append(patient)
        for i, c in enumerate(self.conditions):
            out.append(_condition(pid, f"{pid}-c{i}", c, today))
        for i, o in enumerate(self.observations):
            out.extend(_observation(pid, f"{pid}-o{i}", o, today))
        for i, m in enumerate(self.medications):
            out.extend(_by_reference(_order(pid, f"{pid}-m{i}", m, "active", today), m))
        for i, m in enumerate(self.statements):
            out.append(_statement(pid, f"{pid}-ms{i}", m, today))
        for i, s in enumerate(self.service_requests):
            out.append(_order(pid, f"{pid}-s{i}", s, "active", today))
        for i, p in enumerate(self.procedures):
            out.append(_procedure(pid, f"{pid}-p{i}", p, today))
        knowledge = _knowledge_dir()
        # Labelling writes into the resources, which share parts with the case's own specs:
        # the case is cached for the whole process (load_cases) and must not change.
        return [label(copy.deepcopy(r), knowledge) for r in out]

    def transaction(self, now: datetime) -> dict[str, Any]:
        """The patient as a transaction Bundle of PUTs: loadable into any FHIR server, and
        loading it twice leaves one copy."""
        return {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "resource": r,
                    "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"},
                }
                for r in self.resources(now)
            ],
        }

    def draft_orders(self) -> list[dict[str, Any]]:
        knowledge = _knowledge_dir()
        return [
            label(
                copy.deepcopy(_order(self.patient_id, f"{self.patient_id}-d{i}", d, "draft")),
                knowledge,
            )
            for i, d in enumerate(self.drafts)
        ]

    def request(self, now: datetime, fhir_server: str, prefetch: bool = True) -> dict[str, Any]:
        context: dict[str, Any] = {"userId": "Practitioner/example", "patientId": self.patient_id}
        drafts = self.draft_orders()
        if self.hook != "patient-view":
            context["draftOrders"] = {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"fullUrl": f"urn:uuid:{d['id']}", "resource": d} for d in drafts],
            }
        if self.hook == "order-select":
            chosen = self.selected if self.selected is not None else [0]
            context["selections"] = [
                f"{drafts[i]['resourceType']}/{drafts[i]['id']}" for i in chosen
            ]
        body: dict[str, Any] = {
            "hook": self.hook,
            # A uuid, as an EHR sends, that names no patient (the store keeps hookInstance).
            "hookInstance": str(uuid.uuid5(uuid.NAMESPACE_URL, f"ipt-cds:{self.patient_id}")),
            "fhirServer": fhir_server,
            "context": context,
        }
        if prefetch:
            body["prefetch"] = prefetch_of(self.resources(now))
            for key in self.unreadable:
                body["prefetch"][key] = COULD_NOT_READ
        return body

    @property
    def refused_types(self) -> set[str]:
        """The resource types a FHIR server refuses to this case (its ``unreadable`` keys)."""
        return {kind for kind, key in KEYS.items() if key in self.unreadable}


def authorization(token: str, subject: str = "ipt-cds") -> dict[str, Any]:
    """A CDS Hooks ``fhirAuthorization`` carrying a bearer token for the FHIR server."""
    return {
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": TOKEN_EXPIRES_IN_SECONDS,
        "scope": "user/*.read",
        "subject": subject,
    }


def prefetch_of(resources: list[dict[str, Any]]) -> dict[str, Any]:
    """The prefetch our services declare, answered from a list of resources (others ignored);
    Medications go with the orders that reference them, as ``_include`` brings them."""
    out: dict[str, Any] = {
        k: {"resourceType": "Bundle", "type": "searchset", "entry": []} for k in KEYS.values()
    }
    out["patient"] = None
    for r in resources:
        if r["resourceType"] == "Patient":
            out["patient"] = r
        elif r["resourceType"] in KEYS:
            out[KEYS[r["resourceType"]]]["entry"].append({"resource": r})
        elif r["resourceType"] == "Medication":
            out["medications"]["entry"].append({"resource": r, "search": {"mode": "include"}})
    return out


def load_cases(folder: Path = FIXTURES / "cases") -> list[Case]:
    # A dozen test modules ask at import: read once while the files stay as they are. Cases
    # are frozen, and what they build is a copy, so sharing them is safe.
    files = tuple(
        (path, path.stat().st_mtime_ns, path.stat().st_size)
        for path in sorted(folder.glob("*.yaml"))
    )
    return list(_cases_of(files))


@cache
def _cases_of(files: tuple[tuple[Path, int, int], ...]) -> tuple[Case, ...]:
    cases: list[Case] = []
    for path, _, _ in files:
        data = read_yaml(path) or {}
        for raw in data.get("cases", []):
            cases.append(Case.model_validate({**raw, "rule": path.stem}))
    return tuple(cases)


def _knowledge_dir() -> Path:
    # Asked for every resource of every case: building Settings each time cost seconds.
    return _knowledge_dir_named(os.environ.get("IPT_CDS_KNOWLEDGE_DIR"))


@cache
def _knowledge_dir_named(_setting: str | None) -> Path:
    return Settings().knowledge_dir


def _born(today: date, years: int, birthday: str | None) -> date:
    margin = {"today": timedelta(0), "tomorrow": timedelta(days=-1)}.get(
        birthday or "", BIRTHDAY_MARGIN
    )
    born = today - margin
    try:
        return born.replace(year=born.year - years)
    except ValueError:  # 29 February
        return born.replace(year=born.year - years, day=28)


def _days_ago(today: date, spec: dict[str, Any], default: int) -> date:
    return today - timedelta(days=int(spec.get("days_ago", default)))


def _coding(code: str, system: str | None = None) -> dict[str, Any]:
    if system is None:
        system = ICD10 if code[:1].isalpha() else SNOMED
    return {"system": system, "code": code}


def _condition(pid: str, cid: str, spec: str | dict[str, Any], today: date) -> dict[str, Any]:
    spec = {"code": spec} if isinstance(spec, str) else dict(spec)
    status = spec.get("status", "active")
    c: dict[str, Any] = {
        "resourceType": "Condition",
        "id": cid,
        "code": {"coding": [_coding(str(spec["code"]), spec.get("system"))]},
        "subject": {"reference": f"Patient/{pid}"},
        "recordedDate": _days_ago(today, spec, CONDITION_DAYS_AGO).isoformat(),
    }
    if status is not None:
        c["clinicalStatus"] = {"coding": [{"system": CLINICAL, "code": status}]}
    if spec.get("verification"):
        c["verificationStatus"] = {
            "coding": [{"system": VERIFICATION, "code": spec["verification"]}]
        }
    if spec.get("severity"):
        c["severity"] = {"coding": [_coding(str(spec["severity"]), SNOMED)]}
    return c


def _observation(pid: str, oid: str, spec: dict[str, Any], today: date) -> list[dict[str, Any]]:
    """The observation, and the observations a panel names in ``hasMember`` after it.

    ``value`` (a score) or ``answer`` (a LOINC answer code); a panel (e.g. PHQ-9 44249-1) has
    ``components`` and/or ``members``, each ``{loinc, value or answer}``: components inside it,
    members as Observations of their own on the panel's day (ids ``<panel id>-m<n>``).
    """
    o: dict[str, Any] = {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": str(spec["loinc"])}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": _days_ago(today, spec, OBSERVATION_DAYS_AGO).isoformat()
        + "T10:00:00Z",
        **_observation_value(spec),
    }
    if "components" in spec:
        o["component"] = [
            {
                "code": {"coding": [{"system": LOINC, "code": str(c["loinc"])}]},
                **_observation_value(c),
            }
            for c in spec["components"]
        ]
    members = [
        _observation(pid, f"{oid}-m{j}", {**m, "days_ago": _days_ago_of(spec)}, today)[0]
        for j, m in enumerate(spec.get("members", []))
    ]
    if members:
        o["hasMember"] = [{"reference": f"Observation/{m['id']}"} for m in members]
    return [o, *members]


def _days_ago_of(spec: dict[str, Any]) -> int:
    return int(spec.get("days_ago", OBSERVATION_DAYS_AGO))


def _observation_value(spec: dict[str, Any]) -> dict[str, Any]:
    """``value``: a score, as a Quantity; ``answer``: a LOINC answer code."""
    if "value" in spec:
        return {
            "valueQuantity": {
                "value": spec["value"],
                "unit": "{score}",
                "system": "http://unitsofmeasure.org",
                "code": "{score}",
            }
        }
    if "answer" in spec:
        return {"valueCodeableConcept": {"coding": [{"system": LOINC, "code": spec["answer"]}]}}
    return {}


def _order(
    pid: str, oid: str, spec: str | dict[str, Any], status: str, today: date | None = None
) -> dict[str, Any]:
    """An order of a shorthand (``sertraline``), of a shorthand dated (``{order: sertraline,
    days_ago: 120}``: authored that long ago), or of a resource written out."""
    authored = None
    if isinstance(spec, dict) and "order" in spec:
        if today is not None and "days_ago" in spec:
            authored = _days_ago(today, spec, 0).isoformat()
        spec = str(spec["order"])
    base = dict(DRAFTS[spec]) if isinstance(spec, str) else dict(spec)
    if authored:
        base["authoredOn"] = authored
    order = {
        "id": oid,
        **base,
        "status": base.get("status", status),
        "intent": "order",
        "subject": {"reference": f"Patient/{pid}"},
    }
    return order


def _by_reference(order: dict[str, Any], spec: str | dict[str, Any]) -> list[dict[str, Any]]:
    """The order as it is (``by_reference`` not set), or its drug as a Medication of its own
    that the order references, as many EHRs record it."""
    if not (isinstance(spec, dict) and spec.get("by_reference")):
        return [order]
    medication = {
        "resourceType": "Medication",
        "id": f"{order['id']}-drug",
        "code": order.pop("medicationCodeableConcept"),
    }
    order["medicationReference"] = {"reference": f"Medication/{medication['id']}"}
    return [medication, order]


def _statement(pid: str, sid: str, spec: str | dict[str, Any], today: date) -> dict[str, Any]:
    """A MedicationStatement of the drug: what the patient reports taking."""
    base = dict(DRAFTS[spec]) if isinstance(spec, str) else dict(spec)
    base.pop("resourceType", None)
    dosage = base.pop("dosageInstruction", None)
    statement = {
        "resourceType": "MedicationStatement",
        "id": sid,
        **base,
        "status": base.get("status", "active"),
        "subject": {"reference": f"Patient/{pid}"},
        "dateAsserted": _days_ago(today, {}, CONDITION_DAYS_AGO).isoformat(),
    }
    if dosage:
        statement["dosage"] = dosage
    return statement


def _procedure(pid: str, prid: str, spec: dict[str, Any], today: date) -> dict[str, Any]:
    return {
        "resourceType": "Procedure",
        "id": prid,
        "status": spec.get("status", "completed"),
        "code": {"coding": [_coding(str(spec["code"]), spec.get("system"))]},
        "subject": {"reference": f"Patient/{pid}"},
        "performedDateTime": _days_ago(today, spec, PROCEDURE_DAYS_AGO).isoformat(),
    }


# The committed fixture files are dated as of this day; `ipt-cds fixtures load` re-dates the
# patients to the day they are loaded, so that look-back windows still hold.
REFERENCE_TIME = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
SANDBOX_FHIR = "http://127.0.0.1:8090/fhir"


@cache
def service_of_hook() -> dict[str, str]:
    """The service offered for each hook, from the knowledge base's own services.yaml."""
    services = read_yaml(Settings().knowledge_dir / "services.yaml")["services"]
    return {s["hook"]: s["id"] for s in services}


def generated_files(cases: list[Case], now: datetime = REFERENCE_TIME) -> dict[str, str]:
    """Every file of fhir_fixtures/ that is built from the cases: relative path -> text."""
    files: dict[str, str] = {}
    expected: dict[str, Any] = {}
    for case in cases:
        files[f"patients/{case.name}.json"] = _dump(case.transaction(now))
        files[f"requests/{case.name}.json"] = _dump(case.request(now, SANDBOX_FHIR))
        files[f"requests/{case.name}.no-prefetch.json"] = _dump(
            case.request(now, SANDBOX_FHIR, prefetch=False)
        )
        expected[case.name] = {
            "rule": case.rule,
            "service": service_of_hook()[case.hook],
            "cards": case.expect,
        }
    files["expected.json"] = _dump(expected)
    files["README.md"] = _readme(cases)
    return files


def _dump(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def _readme(cases: list[Case]) -> str:
    lines = [
        "# FHIR fixtures",
        "",
        "Synthetic patients for every rule, built from the case files in `cases/` (one per rule;",
        "`in-` cases fire the rule, `out-` cases stay just outside it). Generated by",
        "`ipt-cds fixtures build`; do not edit the generated files by hand.",
        "",
        "- `patients/NAME.json`: the patient as a FHIR R4 transaction Bundle of PUTs, loadable",
        "  into any FHIR server (`ipt-cds fixtures load --fhir-server URL` re-dates it to today).",
        "- `requests/NAME.json`: the CDS Hooks request with full prefetch;",
        "  `requests/NAME.no-prefetch.json`: the same without prefetch, so the service fetches",
        f"  from `{SANDBOX_FHIR}`.",
        "- `expected.json`: for each case, the service to call and the cards (rule id and",
        "  indicator) it must answer.",
        "",
        "The `...-not-readable` cases are patients whose EHR cannot give some prefetch keys: their",
        "request sends an OperationOutcome for each (CDS Hooks' way to say so), and their",
        "expected cards are what the service answers then. Through the fetch path they need a",
        "server that refuses those searches (403, as for scopes not granted); a sandbox server",
        "that answers them gives the cards of the full record instead.",
        "",
        f"Dates in the files are relative to {REFERENCE_TIME.date().isoformat()}.",
        "",
        "| case | service | expected cards | what it shows |",
        "|---|---|---|---|",
    ]
    for c in cases:
        cards = ", ".join(f"`{r}` ({i})" for r, i in c.expect.items()) or "none"
        lines.append(f"| `{c.name}` | `{service_of_hook()[c.hook]}` | {cards} | {c.describe} |")
    return "\n".join(lines) + "\n"


def build(folder: Path = FIXTURES, cards: Path | None = None) -> int:
    """Rewrite the generated files, and the evidence pages' example cards in ``cards``
    (the repository's knowledge base unless given); answer how many were written."""
    # Imported here: the examples module reads this one's cases and reference time.
    from ipt_cds.devtools import examples

    cases = load_cases(folder / "cases")
    files = generated_files(cases)
    for sub in ("patients", "requests"):
        for old in (folder / sub).glob("*.json"):
            old.unlink()
    for rel, text in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return len(files) + examples.build(cases, cards or examples.CARDS)
