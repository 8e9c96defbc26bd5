"""The synthetic patients of ``ipt-cds population synth`` (ipt_cds/devtools/population.py).

Each patient is either one without any depressive condition, or a copy of a fixture case (an
archetype: the cases cover every rule) varied under one seeded generator: age, PHQ-9 answers,
dates, comorbidities, current treatment. The archetypes' resources are serialised once; each copy
is a fresh ``orjson.loads`` of those bytes, then varied, so a patient costs microseconds. The
shares and ranges below are invented to exercise the rules, not estimates of any population
(docs/population.md repeats them).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from typing import Any

import orjson

from ipt_cds.devtools.fixture_labels import FAMILY, GIVEN
from ipt_cds.devtools.fixtures import FIXTURES, UCUM, load_cases
from ipt_cds.knowledge.valuesets import load_terminology
from ipt_cds.ops.config import Settings
from ipt_cds.protocol.vocabulary import CONDITION_CLINICAL, ICD10CM, LOINC

PHQ9_TOTAL, PHQ9_ITEM9 = "44261-6", "44260-8"
_VS = "https://fhir.ipt-cds.org/ValueSet/"
_DEPRESSIVE = [_VS + v for v in ("mdd", "dysthymia", "depression-nos", "postpartum-depression")]
_COMORBID = [_VS + v for v in ("anxiety", "coronary-heart-disease", "personality-disorder")]
_ANTIDEPRESSANT = [_VS + v for v in ("antidepressant-clinical-drugs", "antidepressant-ingredients")]
_DATES = ("recordedDate", "effectiveDateTime", "performedDateTime", "dateAsserted")
# Elements referencing the patient's other resources: their targets get new ids too.
_LINKS = ("reasonReference", "basedOn", "partOf", "hasMember", "derivedFrom")
_PREFIX = {"Condition": "c", "Observation": "o", "MedicationRequest": "m"}
_PREFIX |= {"MedicationStatement": "ms", "ServiceRequest": "s", "Procedure": "p"}

# The population's shape: invented to exercise the rules (docs/population.md repeats them).
WELL_SHARE = 0.60  # patients drawn without any depressive condition
AGE_JITTER, ADOLESCENT, OLDER = 6, 0.03, 0.06  # adult archetypes: +-years, else 13-17 or 70-90
DATE_SHIFT = (-7, 21)  # days added to every "days ago" of an archetype's record
PHQ9_JITTER, ITEM9_REDRAW, ITEM9_WEIGHTS = 3, 0.25, (0.60, 0.20, 0.12, 0.08)
P_ADD_PHQ9 = 0.35  # a depressed archetype without a PHQ-9 total gets one (5-24)
P_COMORBID, P_ANTIDEPRESSANT, P_THERAPY, P_IPT_DONE = 0.12, 0.15, 0.10, 0.06
P_REASON, P_MEDICATION_REFERENCE = 0.5, 0.3
P_WELL_COMORBID, P_WELL_PHQ9, P_WELL_WEIGHT = 0.06, 0.25, 0.40
WELL_CONDITIONS = (0.50, 0.30, 0.15, 0.05)  # chances of 0..3 unrelated conditions
GENDERS, GENDER_WEIGHTS = ("female", "male", "other", "unknown"), (0.52, 0.46, 0.01, 0.01)
UNRELATED = (
    ("I10", "Essential (primary) hypertension"),
    ("E11.9", "Type 2 diabetes mellitus without complications"),
    ("E78.5", "Hyperlipidemia, unspecified"),
    ("J45.909", "Unspecified asthma, uncomplicated"),
    ("M54.50", "Low back pain, unspecified"),
    ("K21.9", "Gastro-esophageal reflux disease without esophagitis"),
)
_ACTIVE = {"system": CONDITION_CLINICAL, "code": "active", "display": "Active"}
_WEIGHT = {"system": LOINC, "code": "29463-7", "display": "Body weight"}


@dataclass(frozen=True, slots=True)
class _Template:
    """One resource of an archetype: its JSON with id, subject and date left blank."""

    kind: str
    ref: str  # how the archetype's other resources reference it
    body: bytes
    date_key: str | None
    days_ago: int
    time_suffix: str
    loinc: str | None = None
    depressive: bool = False
    score: int | None = None  # for an added PHQ-9 total or item 9: the value to give it


@dataclass(frozen=True)
class _Archetype:
    gender: str
    age: int | None
    templates: tuple[_Template, ...]
    depressed: bool


@dataclass(frozen=True)
class _Pools:
    archetypes: tuple[_Archetype, ...]
    comorbid: tuple[_Template, ...]
    antidepressant: tuple[_Template, ...]
    therapy: tuple[_Template, ...]
    ipt_done: tuple[_Template, ...]
    phq9: _Template
    item9: _Template
    answers: tuple[dict[str, Any], ...]  # PHQ item answer codings by score 0..3


class Synthesizer:
    """Patients one after the other from one generator seeded with ``seed``, dated as of
    ``today``; the shared Medications they reference are kept (a handful) for the end."""

    def __init__(self, seed: int, today: date) -> None:
        self.seed, self.today, self.pools = seed, today, _pools(today)
        self.rng = random.Random(seed)  # noqa: S311 - reproducible on purpose, nothing secret
        self._medications: dict[str, bytes] = {}

    def medications(self) -> list[bytes]:
        """The Medications referenced so far, in the order of their ids."""
        return [self._medications[k] for k in sorted(self._medications)]

    def patient(self, pid: str) -> Iterator[dict[str, Any]]:
        """One patient's record: the Patient, then the rest."""
        rng, pools, today = self.rng, self.pools, self.today
        arch = None if rng.random() < WELL_SHARE else rng.choice(pools.archetypes)
        gender = arch.gender if arch else rng.choices(GENDERS, GENDER_WEIGHTS)[0]
        age = _age(rng, arch.age) if arch else _well_age(rng)
        given, family = rng.choice(GIVEN.get(gender, GIVEN["other"])), rng.choice(FAMILY)
        patient: dict[str, Any] = {"resourceType": "Patient", "id": pid, "gender": gender}
        if age is not None:
            patient["birthDate"] = _born(today, age, rng.randint(0, 364)).isoformat()
        patient["name"] = [
            {"use": "official", "family": family, "given": [given], "text": f"{given} {family}"}
        ]
        yield patient
        shift = 0 if arch is None else rng.randint(*DATE_SHIFT)
        chosen = _well(rng, pools) if arch is None else _varied(rng, pools, arch)
        refs: dict[str, str] = {}
        numbers: dict[str, int] = {}
        built: list[dict[str, Any]] = []
        for t in chosen:
            r = orjson.loads(t.body)  # a fresh copy to vary
            numbers[t.kind] = number = numbers.get(t.kind, -1) + 1
            r["id"] = f"{pid}-{_PREFIX[t.kind]}{number}"
            r["subject"]["reference"] = f"Patient/{pid}"
            if t.date_key is not None:
                day = today - timedelta(days=max(0, t.days_ago + shift))
                r[t.date_key] = day.isoformat() + t.time_suffix
            if t.score is not None and "valueQuantity" in r:
                r["valueQuantity"]["value"] = t.score
            elif t.score is not None:
                r["valueCodeableConcept"] = {"coding": [pools.answers[t.score]]}
            refs[t.ref] = f"{t.kind}/{r['id']}"
            built.append(r)
        if arch is None:
            built += _unrelated(rng, pid, today)
        else:
            _vary_phq9(rng, built, pools.answers)
            _treatment_links(rng, chosen, built, self.seed, self._medications)
        for r in built:
            for key in _LINKS:
                if key in r:  # a link to a resource not copied is dropped, not left dangling
                    r[key] = [
                        {**x, "reference": refs[x["reference"]]}
                        for x in r[key]
                        if x.get("reference") in refs
                    ]
            yield r


def _well(rng: random.Random, pools: _Pools) -> list[_Template]:
    chosen = []
    if rng.random() < P_WELL_COMORBID:
        chosen.append(rng.choice(pools.comorbid))
    if rng.random() < P_WELL_PHQ9:  # a screening, mostly minimal, item 9 "not at all"
        days, total = rng.randint(0, 365), min(rng.randint(0, 9), rng.randint(0, 9))
        chosen.append(replace(pools.phq9, days_ago=days, score=total))
        chosen.append(replace(pools.item9, days_ago=days, score=0))
    return chosen


def _varied(rng: random.Random, pools: _Pools, arch: _Archetype) -> list[_Template]:
    """The archetype's record, with sometimes a PHQ-9, a comorbidity or treatment added."""
    chosen = list(arch.templates)
    measured = any(t.loinc == PHQ9_TOTAL for t in chosen)
    if arch.depressed and not measured and rng.random() < P_ADD_PHQ9:
        days = rng.randint(0, 60)
        chosen.append(replace(pools.phq9, days_ago=days, score=rng.randint(5, 24)))
        if rng.random() < 0.5:
            score = rng.choices(range(4), ITEM9_WEIGHTS)[0]
            chosen.append(replace(pools.item9, days_ago=days, score=score))
    extras = (
        (P_COMORBID, pools.comorbid),
        (P_ANTIDEPRESSANT, pools.antidepressant),
        (P_THERAPY, pools.therapy),
    )
    for chance, pool in extras:
        if rng.random() < chance:
            chosen.append(rng.choice(pool))
    if rng.random() < P_IPT_DONE:
        chosen.append(replace(rng.choice(pools.ipt_done), days_ago=rng.randint(3, 200)))
    return chosen


def _unrelated(rng: random.Random, pid: str, today: date) -> Iterator[dict[str, Any]]:
    """What a patient without depression has on record besides: a few common conditions, and
    a body weight no service asks for (replay's code filter must leave it out)."""
    howmany = rng.choices(range(len(WELL_CONDITIONS)), WELL_CONDITIONS)[0]
    for i, (code, display) in enumerate(rng.sample(UNRELATED, howmany)):
        yield {
            "resourceType": "Condition",
            "id": f"{pid}-u{i}",
            "code": {"coding": [{"system": ICD10CM, "code": code, "display": display}]},
            "subject": {"reference": f"Patient/{pid}"},
            "recordedDate": (today - timedelta(days=rng.randint(30, 3000))).isoformat(),
            "clinicalStatus": {"coding": [_ACTIVE]},
        }
    if rng.random() < P_WELL_WEIGHT:
        kg = {"value": rng.randint(45, 120), "unit": "kg", "system": UCUM, "code": "kg"}
        yield {
            "resourceType": "Observation",
            "id": f"{pid}-w0",
            "status": "final",
            "code": {"coding": [_WEIGHT]},
            "subject": {"reference": f"Patient/{pid}"},
            "effectiveDateTime": f"{today - timedelta(days=rng.randint(0, 700))}T09:00:00Z",
            "valueQuantity": kg,
        }


def _vary_phq9(rng: random.Random, built: list[dict[str, Any]], answers: tuple[Any, ...]) -> None:
    """Jitter the totals and redraw some item-9 answers; then no total is below the highest
    item-9 score, since the total counts item 9."""
    scores = {a["code"]: i for i, a in enumerate(answers)}
    totals: list[dict[str, Any]] = []
    highest = 0
    for r in built:
        if r["resourceType"] != "Observation":
            continue
        for holder in [r, *r.get("component", ())]:
            code = holder["code"]["coding"][0]["code"]
            if code == PHQ9_TOTAL and "valueQuantity" in holder:
                value = holder["valueQuantity"]["value"] + rng.randint(-PHQ9_JITTER, PHQ9_JITTER)
                holder["valueQuantity"]["value"] = min(27, max(0, value))
                totals.append(holder["valueQuantity"])
            elif code == PHQ9_ITEM9 and "valueCodeableConcept" in holder:
                if rng.random() < ITEM9_REDRAW:
                    score = rng.choices(range(4), ITEM9_WEIGHTS)[0]
                    holder["valueCodeableConcept"] = {"coding": [answers[score]]}
                answer = holder["valueCodeableConcept"]["coding"][0]["code"]
                highest = max(highest, scores.get(answer, 0))
    for quantity in totals:
        quantity["value"] = max(quantity["value"], highest)


def _treatment_links(
    rng: random.Random,
    chosen: list[_Template],
    built: list[dict[str, Any]],
    seed: int,
    medications: dict[str, bytes],
) -> None:
    """Some drug orders name their reason (the depressive condition), some reference a shared
    Medication instead of coding the drug inline: replay must follow both."""
    reason = next((t.ref for t in chosen if t.depressive), None)
    for r in built:
        if r["resourceType"] not in ("MedicationRequest", "MedicationStatement"):
            continue
        if reason is not None and "reasonReference" not in r and rng.random() < P_REASON:
            r["reasonReference"] = [{"reference": reason}]
        concept = r.get("medicationCodeableConcept")
        if concept and concept.get("coding") and rng.random() < P_MEDICATION_REFERENCE:
            mid = f"syn-{seed}-med-{concept['coding'][0]['code']}"
            if mid not in medications:
                medication = {"resourceType": "Medication", "id": mid, "code": concept}
                medications[mid] = orjson.dumps(medication)
            del r["medicationCodeableConcept"]
            r["medicationReference"] = {"reference": f"Medication/{mid}"}


def _age(rng: random.Random, age: int | None) -> int | None:
    if age is None:  # an archetype without a birth date keeps none
        return None
    if age < 18:  # the under-age rules' children and adolescents stay under age
        return min(17, max(6, age + rng.randint(-2, 2)))
    roll = rng.random()
    if roll < ADOLESCENT + OLDER:
        return rng.randint(13, 17) if roll < ADOLESCENT else rng.randint(70, 90)
    return max(18, age + rng.randint(-AGE_JITTER, AGE_JITTER))


def _well_age(rng: random.Random) -> int:
    roll = rng.random()
    if roll < 0.15:
        return rng.randint(12, 17) if roll < 0.05 else rng.randint(70, 95)
    return rng.randint(18, 69)


def _born(today: date, age: int, days_past_birthday: int) -> date:
    try:
        birthday = today.replace(year=today.year - age)
    except ValueError:  # 29 February
        birthday = today.replace(year=today.year - age, day=28)
    return birthday - timedelta(days=days_past_birthday)


@cache
def _pools(today: date) -> _Pools:
    """The archetypes' resources as of ``today``, serialised once, and the pools that extra
    comorbidities and treatment are drawn from."""
    terms = load_terminology(Settings().knowledge_dir / "valuesets")
    now = datetime.combine(today, time(12), tzinfo=UTC)
    archetypes: list[_Archetype] = []
    pools: dict[str, dict[bytes, _Template]] = {}
    cases = load_cases()
    if not cases:
        raise ValueError(f"no fixture cases in {FIXTURES / 'cases'}: synth needs the checkout")
    for case in cases:
        resources = case.resources(now)[1:]  # [0] is the Patient, made anew for each copy
        if case.unreadable or any(r["resourceType"] not in _PREFIX for r in resources):
            # A record the EHR gives only in part, or whose drug is a shared Medication: the
            # same patients come whole and inline among the other cases.
            continue
        templates = []
        for r in resources:
            t = _template(r, today, terms.match)
            templates.append(t)
            for name in _pool_names(t, r, terms.match):
                pools.setdefault(name, {}).setdefault(t.body, t)
        depressed = any(t.depressive for t in templates)
        archetypes.append(_Archetype(case.gender, case.age, tuple(templates), depressed))
    ordinals = terms.ordinals(_VS + "phq-answers")
    answers = tuple(
        {"system": LOINC, "code": code, "display": terms.display(LOINC, code)}
        for code in sorted(ordinals, key=lambda code: ordinals[code] or 0.0)
    )
    pool = {name: tuple(found.values()) for name, found in pools.items()}
    return _Pools(
        tuple(archetypes),
        pool["comorbid"],
        pool["antidepressant"],
        pool["therapy"],
        pool["ipt-done"],
        pool["phq9"][0],
        pool["item9"][0],
        answers,
    )


_Match = Callable[[str, Any], object]


def _template(r: dict[str, Any], today: date, match: _Match) -> _Template:
    kind = r["resourceType"]
    ref = f"{kind}/{r['id']}"
    r["id"], r["subject"] = "", {"reference": ""}
    date_key = next((k for k in _DATES if k in r), None)
    days_ago, suffix = 0, ""
    if date_key is not None:
        days_ago = (today - date.fromisoformat(r[date_key][:10])).days
        suffix, r[date_key] = r[date_key][10:], ""
    loinc = r["code"]["coding"][0].get("code") if kind == "Observation" else None
    status = r.get("clinicalStatus", {}).get("coding", [{}])[0].get("code")
    depressive = (
        kind == "Condition"
        and status not in ("resolved", "inactive", "remission")
        and any(match(url, r["code"]) for url in _DEPRESSIVE)
    )
    return _Template(kind, ref, orjson.dumps(r), date_key, days_ago, suffix, loinc, depressive)


def _pool_names(t: _Template, r: dict[str, Any], match: _Match) -> Iterator[str]:
    code, active = r.get("code") or r.get("medicationCodeableConcept"), r.get("status") == "active"
    clinical = r.get("clinicalStatus", {}).get("coding", [{}])[0].get("code")
    if t.kind == "Condition" and clinical == "active" and any(match(u, code) for u in _COMORBID):
        yield "comorbid"
    if t.kind == "MedicationRequest" and active and any(match(u, code) for u in _ANTIDEPRESSANT):
        yield "antidepressant"
    if t.kind == "ServiceRequest" and active and match(_VS + "psychotherapy", code):
        yield "therapy"
    if t.kind == "Procedure" and r.get("status") == "completed" and match(_VS + "ipt", code):
        yield "ipt-done"
    if t.loinc == PHQ9_TOTAL and "valueQuantity" in r:
        yield "phq9"
    if t.loinc == PHQ9_ITEM9 and "valueCodeableConcept" in r:
        yield "item9"
