"""The facts of the clinical spec section 1, computed once per hook call.

Simple facts come from the extractors declared in ``cards/facts.yaml``; the few with real logic
are the functions below. Every fact keeps the FHIR references it came from (``refs``) and a
sentence a clinician can read (``why``), so a card can say why it fired.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date, datetime
from typing import Any

from ipt_cds.clinical.extractors import (
    Declaration,
    Evidence,
    Extractor,
    Scope,
    condition_dates,
    condition_evidence,
    condition_is_active,
    condition_is_true,
)
from ipt_cds.clinical.fact_model import (
    SEVERITIES,
    Domain,
    Episode,
    Facts,
    FocusArea,
    Reading,
    Remission,
    Severity,
    Trait,
)
from ipt_cds.clinical.medications import unidentified
from ipt_cds.clinical.plan import plan_facts
from ipt_cds.clinical.reader import age_on, first_date, markdown_text, reference_of
from ipt_cds.clinical.record import PatientRecord
from ipt_cds.clinical.suicide import suicidal_ideation
from ipt_cds.clinical.terminology import Terminology

# The values each fact may take are declared in fact_model.py; the annotations below let mypy
# hold this module to them.
SEVERITY_RANK: dict[str, int] = {band: rank for rank, band in enumerate(SEVERITIES)}
# A resource type the EHR could not give, as a card names it.
UNREADABLE_WORDS: dict[str, str] = {
    "Observation": "observations (PHQ-9 scores)",
    "MedicationRequest": "medication orders",
    "MedicationStatement": "medication statements",
    "ServiceRequest": "service requests (therapy and referrals)",
    "Procedure": "procedures (therapy sessions)",
}
# The resource types that record one kind of thing: medications, therapy, PHQ-9 scores.
UNKNOWN_TOGETHER: tuple[frozenset[str], ...] = (
    frozenset({"MedicationRequest", "MedicationStatement"}),
    frozenset({"ServiceRequest", "Procedure"}),
    frozenset({"Observation"}),
)
# The value sets (by alias) that give an episode's severity, most severe first: its code, then
# Condition.severity.
CODED_SEVERITY: tuple[tuple[str, Severity], ...] = (
    ("severity_severe", "severe"),
    ("severity_moderately_severe", "moderately-severe"),
    ("severity_moderate", "moderate"),
    ("severity_mild", "mild"),
)
STATED_SEVERITY: tuple[tuple[str, Severity], ...] = (
    ("condition_severity_severe", "severe"),
    ("condition_severity_moderate", "moderate"),
    ("condition_severity_mild", "mild"),
)
ITEM_DOMAINS: dict[str, Domain] = {
    "item_sleep": "sleep",
    "item_energy": "energy",
    "item_appetite": "appetite",
}
CONDITION_DOMAINS: dict[str, Domain] = {
    "insomnia": "sleep",
    "fatigue": "energy",
    "appetite_loss": "appetite",
    "decreased_libido": "libido",
}
# The value sets the functions below read, by their name in facts.yaml's ``valuesets``.
PYTHON_VALUESETS = [
    "mdd",
    "depression_nos",
    "postpartum_depression",
    "dysthymia",
    "bipolar",
    "recurrent",
    "single_episode",
    "remission_full",
    "remission_partial",
    "remission_unspecified",
    "severity_mild",
    "severity_moderate",
    "severity_moderately_severe",
    "severity_severe",
    "condition_severity_mild",
    "condition_severity_moderate",
    "condition_severity_severe",
    "pregnant_answer",
    "phq_answers",
    "psychotic_features",
    "suicidal_ideation",
    "suicide_attempt",
    "suicide_risk",
    "suicide_history",
]


# The raw extractions the functions below read: cards/facts.yaml must declare each.
EXTRACTS = [
    "dysthymia_conditions",
    "psychotic_disorders",
    "bipolar",
    "personality_avoidant",
    "personality_obsessive_compulsive",
    "insomnia",
    "appetite_loss",
    "fatigue",
    "decreased_libido",
    "role_transition_conditions",
    "role_dispute_conditions",
    "interpersonal_deficit_conditions",
    "pregnancy_conditions",
    "new_hiv",
    "new_chd",
    "phq9_total",
    "phq9_item9",
    "item_sleep",
    "item_energy",
    "item_appetite",
    "pregnancy_status",
    "antidepressant_orders",
    "psychotherapy_orders",
    "psychotherapy_procedures",
    "ipt_orders",
    "ipt_procedures",
    "ipt_drafts",
    "psychotherapy_drafts",
    "antidepressant_drafts",
    "ipt_record_drafts",
    "psychiatry_referrals",
    "psychiatry_referral_drafts",
    "psychiatry_referrals_completed",
    "psychiatric_care_procedures",
]


class FactBook:
    """The compiled fact definitions: extractors plus the Python facts."""

    def __init__(
        self,
        extractors: dict[str, Extractor],
        valuesets: dict[str, str],
        terms: Terminology,
        params: dict[str, Any],
        answer_scores: dict[str, int],
        declarations: Mapping[str, Declaration] | None = None,
        derive: Callable[[Facts], None] | None = None,
    ) -> None:
        self.extractors, self.vs, self.terms, self.params = extractors, valuesets, terms, params
        self.answer_scores = answer_scores
        # As cards/facts.yaml declares them: for the glossary of docs/rules.md.
        self.declarations = dict(declarations or {})
        # The extractions that are facts themselves (a meaning in cards/facts.yaml).
        self.declared_facts = tuple(n for n, d in self.declarations.items() if d.meaning)
        # The facts of cards/derived.yaml, computed from these (ipt_cds/knowledge/derived.py).
        self.derive = derive

    def evaluate(self, record: PatientRecord, hook: str, now: datetime) -> Facts:
        scope = Scope(record, self.terms, now.date(), self.params, self.answer_scores)
        facts = self._evaluate(scope, hook)
        if scope.skipped:
            # A resource that could not be read was skipped where it failed, but other facts
            # may have read it before: compute them all again without it (once; the resources
            # that fail fail in the first pass, each loop going on past them).
            again = record.without(scope.skipped)
            retry = Scope(again, self.terms, scope.today, self.params, self.answer_scores)
            retry.skipped.update(scope.skipped)  # warned about once, not twice
            facts = self._evaluate(retry, hook)
        return facts

    def _evaluate(self, scope: Scope, hook: str) -> Facts:
        record = scope.record
        raw = {name: run(scope) for name, run in self.extractors.items()}
        f = Facts(params=self.params)
        for name in self.declared_facts:
            f.set(name, bool(raw[name]), raw[name])
        f.set("hook", hook)
        f.set("patient_id", record.patient_id)
        age = _age(record, scope)
        f.set("age", age)
        current = self._depression(f, scope, raw)
        self._scores(f, raw, current)
        self._recurrence(f)
        self._suicidal_ideation(f, scope, raw["phq9_item9"])
        self._psychosis(f, scope, raw, current)
        traits: list[tuple[Trait, str]] = [
            ("avoidant", "personality_avoidant"),
            ("obsessive-compulsive", "personality_obsessive_compulsive"),
        ]
        f.set("personality_traits", [t for t, key in traits if raw[key]])
        self._life(f, raw)
        self._unreadable(f, record)
        plan_facts(f, raw)
        self._renewal_alert(f)
        if self.derive is not None:
            self.derive(f)
        return f

    # --- depression and the current episode ------------------------------------------------

    def _in(self, alias: str, c: dict[str, Any]) -> bool:
        return self.terms.match(self.vs[alias], c.get("code")) is not None

    def _depression(
        self, f: Facts, scope: Scope, raw: dict[str, list[Evidence]]
    ) -> dict[str, Any] | None:
        """Set the depression facts; answer the current episode's Condition."""
        bipolar = {id(c) for c, _, _ in scope.coded("Condition", self.vs["bipolar"])}
        # Each active episode with what ordering and citing it take, read once, guarded.
        episodes: dict[int, tuple[dict[str, Any], tuple[Any, ...], Evidence]] = {}
        for alias in ("mdd", "depression_nos", "postpartum_depression"):
            for c, _, _ in scope.coded("Condition", self.vs[alias]):
                if id(c) in bipolar or id(c) in episodes:
                    continue
                try:
                    if condition_is_active(c):
                        episodes[id(c)] = (c, self._episode_order(c), self._evidence(c))
                except Exception as exc:
                    scope.skip(c, exc)
        bipolar_refs = {e.ref for e in raw["bipolar"]}
        dysthymia = [e for e in raw["dysthymia_conditions"] if e.ref not in bipolar_refs]
        episode_ev = [ev for _, _, ev in episodes.values()]
        f.set("depression", bool(episodes or dysthymia), episode_ev + dysthymia)
        f.set("dysthymia", bool(dysthymia), dysthymia)
        latest = max(episodes.values(), key=lambda e: e[1], default=None)
        current = latest[0] if latest else None
        f.set("episode", self._episode(current) if current else None)
        f.set("remission", self._remission(current) if current else None)
        f.set("current_episode", self._evidence(current) if current else None)
        return current

    def _evidence(self, c: dict[str, Any]) -> Evidence:
        for alias in ("mdd", "depression_nos", "postpartum_depression", "dysthymia"):
            m = self.terms.match(self.vs[alias], c.get("code"))
            if m:
                dates = condition_dates(c)
                return Evidence(reference_of(c), m.code, m.display, dates[0] if dates else None)
        return Evidence(reference_of(c))

    def _episode_order(self, c: dict[str, Any]) -> tuple[Any, ...]:
        # Most recently recorded first; then not in remission; then the more severe code.
        recorded = first_date(c, "recordedDate", "onsetDateTime", "onsetPeriod.start")
        severity = SEVERITY_RANK.get(self._code_severity(c) or "", -1)
        return (recorded is not None, recorded, self._remission(c) is None, severity)

    def _episode(self, c: dict[str, Any]) -> Episode | None:
        if self._in("recurrent", c):
            return "recurrent"
        return "single" if self._in("single_episode", c) else None

    def _remission(self, c: dict[str, Any]) -> Remission | None:
        kinds: tuple[Remission, ...] = ("full", "partial", "unspecified")
        for kind in kinds:
            if self._in(f"remission_{kind}", c):
                return kind
        return None

    def _code_severity(self, c: dict[str, Any]) -> Severity | None:
        for alias, band in CODED_SEVERITY:
            if self._in(alias, c):
                return band
        for alias, band in STATED_SEVERITY:
            if self.terms.match(self.vs[alias], c.get("severity")):
                return band
        return None

    # --- scores ----------------------------------------------------------------------------

    def _scores(
        self, f: Facts, raw: dict[str, list[Evidence]], current: dict[str, Any] | None
    ) -> None:
        total = _reading(raw["phq9_total"])
        f.set("phq9", total, raw["phq9_total"])
        if total is not None:
            f.set("severity", _band(total.value, self.params["phq9_bands"]))
            f.set("severity_basis", f"PHQ-9 {total.value} on {total.date}")
        else:
            band = self._code_severity(current) if current else None
            f.set("severity", band)
            episode = f["current_episode"]
            f.set("severity_basis", f"diagnosis {episode.describe()}" if band and episode else None)

        high = self.params["item_score_counts"]
        f.set("item9", _reading(raw["phq9_item9"]), raw["phq9_item9"])

        domains: dict[str, list[Evidence]] = {}
        for key, domain in ITEM_DOMAINS.items():
            reading = _reading(raw[key])
            if reading is not None and reading.value >= high:
                domains.setdefault(domain, []).extend(raw[key])
        for key, domain in CONDITION_DOMAINS.items():
            if raw[key]:
                domains.setdefault(domain, []).extend(raw[key])
        order: list[Domain] = ["sleep", "energy", "appetite", "libido"]
        f.set("neurovegetative", len(domains), [e for d in domains.values() for e in d])
        f.set("neurovegetative_domains", [d for d in order if d in domains])

    def _recurrence(self, f: Facts) -> None:
        """A remission code is superseded by a PHQ-9 at or above recurrence_phq9 dated on or
        after the day that Condition was recorded: a probable recurrence, not a remission."""
        phq9, episode = f["phq9"], f["current_episode"]
        later = (
            f["remission"] is not None
            and phq9 is not None
            and episode is not None
            and episode.on is not None
            and phq9.value >= self.params["recurrence_phq9"]
            and date.fromisoformat(phq9.date) >= episode.on
        )
        f.set("probable_recurrence", later)
        f.set(
            "probable_recurrence_basis",
            f"PHQ-9 {phq9.value} on {phq9.date}, after remission recorded "
            f"{episode.on.isoformat()}: probable recurrence"
            if later
            else None,
        )
        if later:
            f.set("remission", None)

    def _suicidal_ideation(self, f: Facts, scope: Scope, item9: list[Evidence]) -> None:
        found = suicidal_ideation(scope, self.vs, f["item9"], item9)
        f.set("suicidal_ideation", found.level, found.evidence)
        f.set("suicidal_ideation_basis", "; ".join(found.basis) or None)
        f.set("suicidal_ideation_sources", found.sources)
        high = found.level == "high" and found.ideation
        f.set("ideation_basis", "; ".join(found.ideation) if high else None)
        f.set("suicidal_ideation_dated", found.dated.isoformat() if found.dated else None)
        f.set("suicide_behaviour", "; ".join(found.behaviour) or None, found.behaviour_evidence)
        f.set("suicide_behaviour_summary", found.behaviour_summary)

    def _psychosis(
        self,
        f: Facts,
        scope: Scope,
        raw: dict[str, list[Evidence]],
        current: dict[str, Any] | None,
    ) -> None:
        """Psychotic disorders while active; a major-depression-with-psychotic-features code
        only as the current episode (not in remission) or when recorded within the window:
        an old code from a past episode does not block IPT for good."""
        since = scope.since("psychotic_features_window_days")
        features = []
        for c, match, _ in scope.coded("Condition", self.vs["psychotic_features"]):
            try:
                if not condition_is_true(c):
                    continue
                recorded = first_date(c, "recordedDate", "onsetDateTime", "onsetPeriod.start")
                ev = condition_evidence(c, match)
            except Exception as exc:
                scope.skip(c, exc)
                continue
            current_episode = c is current and f["remission"] is None
            if current_episode or (recorded is not None and since <= recorded <= scope.today):
                features.append(ev)
        found = raw["psychotic_disorders"] + features
        f.set("psychosis", bool(found), found)
        f.set("psychosis_diagnosis", _short_name(found[0], "Psychotic features") if found else None)

    # --- life context and treatment --------------------------------------------------------

    def _life(self, f: Facts, raw: dict[str, list[Evidence]]) -> None:
        status = raw["pregnancy_status"]
        by_observation = [
            e
            for e in status
            if any(self.terms.contains(self.vs["pregnant_answer"], s, c) for s, c in e.answer_codes)
        ]
        pregnant = raw["pregnancy_conditions"] + by_observation
        f.set("pregnant", bool(pregnant), pregnant)
        areas: list[FocusArea] = []
        if f["bereavement"]:
            areas.append("grief")
        if (
            f["pregnant"]
            or f["postpartum"]
            or raw["role_transition_conditions"]
            or raw["new_hiv"]
            or raw["new_chd"]
        ):
            areas.append("role-transition")
        if raw["role_dispute_conditions"]:
            areas.append("role-dispute")
        if not areas and raw["interpersonal_deficit_conditions"]:
            areas.append("interpersonal-deficits")
        f.set("focus_areas", areas)

    def _renewal_alert(self, f: Facts) -> None:
        """On a renewal, a high level always alerts; a low one only when its basis is dated on or
        after the course of the drug began (an unknown start counts as new)."""
        start, dated = f["course_start"], f["suicidal_ideation_dated"]
        f.set(
            "suicide_basis_in_course",
            f["suicidal_ideation"] == "high"
            or (
                f["suicidal_ideation"] == "low"
                and (start is None or dated is None or dated >= start)
            ),
        )

    def _unreadable(self, f: Facts, record: PatientRecord) -> None:
        """What the EHR could not give, in words, and the facts that are unknown for it. A type
        the server does not offer is unknown only when no type of its kind is offered (US Core
        records every medication as a MedicationRequest, and has no MedicationStatement)."""
        kinds = set(record.unreadable)
        for group in UNKNOWN_TOGETHER:
            if group <= record.not_offered:
                kinds |= group
        drugs = unidentified(record)
        words = [words for kind, words in UNREADABLE_WORDS.items() if kind in kinds]
        if drugs:
            words.append(f"the drug of {drugs} current medication{'s' if drugs > 1 else ''}")
        f.set("unreadable", words)
        medications, therapy, observations = UNKNOWN_TOGETHER
        f.set("medications_unknown", bool(kinds & medications) or drugs > 0)
        f.set("therapy_unknown", bool(kinds & therapy))
        f.set("observations_unknown", bool(kinds & observations))


# Ages outside this range come from placeholder or mistyped birth dates (0001-01-01, a year in
# the future), not from patients: the age is unknown.
PLAUSIBLE_AGE = range(0, 131)


def _age(record: PatientRecord, scope: Scope) -> int | None:
    birth = first_date(record.patient, "birthDate") if record.patient else None
    age = age_on(birth, scope.today) if birth else None
    return age if age in PLAUSIBLE_AGE else None


# A diagnosis named in a summary line (under 140 characters with the rest of the line): its
# display when short enough, else what it is with its code.
SHORT_NAME_CHARS = 40


def _short_name(ev: Evidence, kind: str) -> str:
    if ev.display and len(ev.display) <= SHORT_NAME_CHARS:
        return ev.name()
    return f"{kind} ({markdown_text(ev.code)})" if ev.code else kind


def _reading(found: list[Evidence]) -> Reading | None:
    e = found[0] if found else None
    if e is None or e.on is None or e.value is None:
        return None
    value: int | float = int(e.value) if e.value.is_integer() else e.value
    return Reading(value, e.on.isoformat(), e.ref, e.answer)


def _band(score: float, bands: dict[str, int]) -> str:
    found = "minimal"
    for name, floor in sorted(bands.items(), key=lambda kv: kv[1]):
        if score >= floor:
            found = name
    return found
