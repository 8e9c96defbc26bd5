"""Depression and its current episode (the clinical spec section 1): the episode's course,
remission and severity, a remission a later PHQ-9 supersedes, and psychotic features, which
count as the current episode or when recent. The episode's Condition is read once, here, by all
of them."""

from __future__ import annotations

from datetime import date
from typing import Any

from ipt_cds.clinical.extractors import (
    Evidence,
    condition_dates,
    condition_evidence,
    condition_is_active,
    condition_is_true,
)
from ipt_cds.clinical.fact_library import Call, Compute, Needs, ValueSetKey, computes, typed
from ipt_cds.clinical.fact_model import SEVERITIES, Episode, Reading, Remission, Severity
from ipt_cds.clinical.reader import first_date, markdown_text, reference_of
from ipt_cds.protocol.models import Resource

SEVERITY_RANK: dict[str, int] = {band: rank for rank, band in enumerate(SEVERITIES)}
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
REMISSIONS: tuple[Remission, ...] = ("full", "partial", "unspecified")
# A diagnosis named in a summary line (under 140 characters with the rest of the line): its
# display when short enough, else what it is with its code.
SHORT_NAME_CHARS = 40


@computes(
    "episode",
    {
        "depression": typed(bool, explained=True),
        "dysthymia": typed(bool, explained=True),
        "episode": typed(Episode | None),
        "remission": typed(Remission | None),
        "probable_recurrence": typed(bool),
        "probable_recurrence_basis": typed(str | None),
        "current_episode": typed(Evidence | None),
        "severity": typed(Severity | None),
        "severity_basis": typed(str | None),
        "psychosis": typed(bool, explained=True),
        "psychosis_diagnosis": typed(str | None),
    },
)
def episode(needs: Needs) -> Compute:
    codes = _Codes(needs)
    bipolar_codes = needs.valueset("bipolar")
    bipolar, dysthymia = needs.extraction("bipolar"), needs.extraction("dysthymia_conditions")
    phq9 = needs.fact("phq9")
    bands = needs.parameter("phq9_bands")
    recurrence_phq9 = needs.parameter("recurrence_phq9")
    features = needs.valueset("psychotic_features")
    features_window = needs.days("psychotic_features_window_days")
    disorders = needs.extraction("psychotic_disorders")

    def compute(call: Call) -> None:
        bipolar_ids = {id(c) for c, _, _ in call.coded("Condition", bipolar_codes)}
        # Each active episode with what ordering and citing it take, read once, guarded.
        episodes: dict[int, tuple[Resource, tuple[Any, ...], Evidence]] = {}
        for valueset in codes.episodes:
            for c, _, _ in call.coded("Condition", valueset):
                if id(c) in bipolar_ids or id(c) in episodes:
                    continue
                try:
                    if condition_is_active(c):
                        episodes[id(c)] = (c, codes.order(c), codes.evidence(c))
                except Exception as exc:
                    call.skip(c, exc)
        bipolar_refs = {e.ref for e in call.evidence(bipolar)}
        dysthymic = [e for e in call.evidence(dysthymia) if e.ref not in bipolar_refs]
        episode_ev = [ev for _, _, ev in episodes.values()]
        call.set("depression", bool(episodes or dysthymic), episode_ev + dysthymic)
        call.set("dysthymia", bool(dysthymic), dysthymic)
        latest = max(episodes.values(), key=lambda e: e[1], default=None)
        current = latest[0] if latest else None
        current_ev = latest[2] if latest else None
        call.set("episode", codes.course(current) if current else None)
        remission = codes.remission(current) if current else None

        total: Reading | None = call.fact(phq9)
        on = current_ev.on if current_ev is not None else None
        remission, basis = _recurrence(remission, total, on, recurrence_phq9)
        call.set("remission", remission)
        call.set("probable_recurrence", basis is not None)
        call.set("probable_recurrence_basis", basis)
        call.set("current_episode", current_ev)

        if total is not None:
            call.set("severity", _band(total.value, bands))
            call.set("severity_basis", f"PHQ-9 {total.value} on {total.date}")
        else:
            band = codes.severity(current) if current else None
            call.set("severity", band)
            said = f"diagnosis {current_ev.describe()}" if band and current_ev else None
            call.set("severity_basis", said)

        since = call.today - features_window
        found = call.evidence(disorders) + _features(call, features, since, current, remission)
        call.set("psychosis", bool(found), found)
        named = _short_name(found[0], "Psychotic features") if found else None
        call.set("psychosis_diagnosis", named)

    return compute


class _Codes:
    """What an episode's Condition says by its codes: its value sets resolved at start-up."""

    def __init__(self, needs: Needs) -> None:
        self.terms = needs.codes
        self.episodes = tuple(
            needs.valueset(a) for a in ("mdd", "depression_nos", "postpartum_depression")
        )
        # What an episode is cited as: its code in the first of these that holds it.
        self.cited = (*self.episodes, needs.valueset("dysthymia"))
        self.recurrent = needs.valueset("recurrent")
        self.single = needs.valueset("single_episode")
        self.remissions = tuple((k, needs.valueset(f"remission_{k}")) for k in REMISSIONS)
        self.coded = tuple((needs.valueset(a), band) for a, band in CODED_SEVERITY)
        self.stated = tuple((needs.valueset(a), band) for a, band in STATED_SEVERITY)

    def _in(self, valueset: ValueSetKey, c: Resource) -> bool:
        return self.terms.match(valueset, c.get("code")) is not None

    def evidence(self, c: Resource) -> Evidence:
        for valueset in self.cited:
            m = self.terms.match(valueset, c.get("code"))
            if m:
                dates = condition_dates(c)
                return Evidence(reference_of(c), m.code, m.display, dates[0] if dates else None)
        return Evidence(reference_of(c))

    def order(self, c: Resource) -> tuple[Any, ...]:
        # Most recently recorded first; then not in remission; then the more severe code.
        recorded = first_date(c, "recordedDate", "onsetDateTime", "onsetPeriod.start")
        severity = SEVERITY_RANK.get(self.severity(c) or "", -1)
        return (recorded is not None, recorded, self.remission(c) is None, severity)

    def course(self, c: Resource) -> Episode | None:
        if self._in(self.recurrent, c):
            return "recurrent"
        return "single" if self._in(self.single, c) else None

    def remission(self, c: Resource) -> Remission | None:
        for kind, valueset in self.remissions:
            if self._in(valueset, c):
                return kind
        return None

    def severity(self, c: Resource) -> Severity | None:
        for valueset, band in self.coded:
            if self._in(valueset, c):
                return band
        for valueset, band in self.stated:
            if self.terms.match(valueset, c.get("severity")):
                return band
        return None


def _recurrence(
    remission: Remission | None, total: Reading | None, recorded: date | None, threshold: float
) -> tuple[Remission | None, str | None]:
    """A remission code is superseded by a PHQ-9 at or above recurrence_phq9 dated on or after
    the day that Condition was recorded: a probable recurrence (said why), not a remission."""
    if (
        remission is None
        or total is None
        or recorded is None
        or total.value < threshold
        or date.fromisoformat(total.date) < recorded
    ):
        return remission, None
    basis = (
        f"PHQ-9 {total.value} on {total.date}, after remission recorded "
        f"{recorded.isoformat()}: probable recurrence"
    )
    return None, basis


def _features(
    call: Call,
    features: ValueSetKey,
    since: date,
    current: Resource | None,
    remission: Remission | None,
) -> list[Evidence]:
    """A major-depression-with-psychotic-features code counts only as the current episode (not
    in remission) or when recorded within the window: an old code from a past episode does not
    block IPT for good. (Psychotic disorders count while active.)"""
    found = []
    for c, match, _ in call.coded("Condition", features):
        try:
            if not condition_is_true(c):
                continue
            recorded = first_date(c, "recordedDate", "onsetDateTime", "onsetPeriod.start")
            ev = condition_evidence(c, match)
        except Exception as exc:
            call.skip(c, exc)
            continue
        current_episode = c is current and remission is None
        if current_episode or (recorded is not None and since <= recorded <= call.today):
            found.append(ev)
    return found


def _short_name(ev: Evidence, kind: str) -> str:
    if ev.display and len(ev.display) <= SHORT_NAME_CHARS:
        return ev.name()
    return f"{kind} ({markdown_text(ev.code)})" if ev.code else kind


def _band(score: float, bands: dict[str, int]) -> str:
    found = "minimal"
    for name, floor in sorted(bands.items(), key=lambda kv: kv[1]):
        if score >= floor:
            found = name
    return found
