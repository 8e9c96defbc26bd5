"""Suicidal ideation and behaviour on record (the clinical spec section 1, ``suicidal_ideation``).

``high``: the latest PHQ-9 item 9 answer in the window is 2 or more, or a diagnosis of suicidal
ideation, a suicide attempt or intentional self-harm, or an 'at risk for suicide' finding is
active and was recorded within ``suicidal_ideation_dx_days``. ``low``: item 9 answered 1 —
still a positive answer. ``history``: only evidence that is older or no longer active, an
ideation diagnosis that a later item 9 answer of 0 followed, or a personal history of suicidal
behaviour (Z91.51). The basis names what set the level; an answer of 0 is never cited as
evidence of ideation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

from ipt_cds.clinical.extractors import (
    Evidence,
    condition_evidence,
    condition_is_active,
    condition_is_true,
)
from ipt_cds.clinical.fact_library import Call, Compute, Needs, ValueSetKey, computes, typed
from ipt_cds.clinical.fact_model import Reading, SuicidalIdeation, SuicideSource
from ipt_cds.clinical.reader import first_date, markdown_text

# What each value set is evidence of, in the words a card uses.
KINDS: tuple[tuple[str, SuicideSource, str], ...] = (
    ("suicidal_ideation", "ideation", "suicidal ideation"),
    ("suicide_attempt", "attempt", "suicide attempt or self-harm"),
    ("suicide_risk", "at-risk", "'at risk for suicide' finding"),
)


@dataclass
class Finding:
    level: SuicidalIdeation | None = None
    # What set the level: item 9 and/or the kinds of diagnosis.
    sources: list[SuicideSource] = field(default_factory=list)
    basis: list[str] = field(default_factory=list)
    evidence: list[Evidence] = field(default_factory=list)
    # The part of the basis that is ideation (item 9, an ideation diagnosis): what calls for
    # medication, where an attempt or an 'at risk' finding calls for the assessment.
    ideation: list[str] = field(default_factory=list)
    # The date of the newest evidence that set a high or low level (None: undated or none).
    dated: date | None = None
    # Suicidal behaviour at any time (an attempt or self-harm, whatever its status or age, or a
    # personal history of it): never buried under an all-clear (version 3, section 7.3).
    behaviour: list[str] = field(default_factory=list)
    behaviour_evidence: list[Evidence] = field(default_factory=list)
    behaviour_summary: str | None = None


@computes(
    "suicide",
    {
        "suicidal_ideation": typed(SuicidalIdeation | None, explained=True),
        "suicidal_ideation_basis": typed(str | None),
        "suicidal_ideation_sources": typed(list[SuicideSource]),
        "ideation_basis": typed(str | None),
        "suicidal_ideation_dated": typed(str | None),
        "suicide_behaviour": typed(str | None, explained=True),
        "suicide_behaviour_summary": typed(str | None),
    },
)
def suicide(needs: Needs) -> Compute:
    codes = _Codes(
        kinds=tuple((needs.valueset(alias), kind, words) for alias, kind, words in KINDS),
        history=needs.valueset("suicide_history"),
        counts=int(needs.parameter("item_score_counts")),
        window=needs.days("suicidal_ideation_dx_days"),
    )
    item9, answers = needs.fact("item9"), needs.extraction("phq9_item9")

    def compute(call: Call) -> None:
        found = suicidal_ideation(call, codes, call.fact(item9), call.evidence(answers))
        call.set("suicidal_ideation", found.level, found.evidence)
        call.set("suicidal_ideation_basis", "; ".join(found.basis) or None)
        call.set("suicidal_ideation_sources", found.sources)
        high = found.level == "high" and found.ideation
        call.set("ideation_basis", "; ".join(found.ideation) if high else None)
        call.set("suicidal_ideation_dated", found.dated.isoformat() if found.dated else None)
        behaviour = "; ".join(found.behaviour) or None
        call.set("suicide_behaviour", behaviour, found.behaviour_evidence)
        call.set("suicide_behaviour_summary", found.behaviour_summary)

    return compute


@dataclass(frozen=True)
class _Codes:
    """The value sets and parameters the finding reads, resolved at start-up."""

    kinds: tuple[tuple[ValueSetKey, SuicideSource, str], ...]
    history: ValueSetKey
    counts: int
    window: timedelta


def suicidal_ideation(
    call: Call, codes: _Codes, item9: Reading | None, item9_ev: list[Evidence]
) -> Finding:
    counts = codes.counts
    since = call.today - codes.window
    recent: list[tuple[SuicideSource, str, Evidence]] = []
    history: list[tuple[str, Evidence]] = []
    behaviour: list[tuple[str, Evidence]] = []
    for valueset, kind, words in codes.kinds:
        for c, match, _ in call.coded("Condition", valueset):
            try:
                if not condition_is_true(c):
                    continue
                ev = condition_evidence(c, match)
                recorded = first_date(c, "recordedDate", "onsetDateTime", "onsetPeriod.start")
                active = condition_is_active(c)
            except Exception as exc:
                call.skip(c, exc)
                continue
            # An undated active diagnosis cannot be shown to be old: it counts as recent.
            within = recorded is None or since <= recorded <= call.today
            denied_since = (
                kind == "ideation"
                and item9 is not None
                and item9.value == 0
                and recorded is not None
                and date.fromisoformat(item9.date) > recorded
            )
            if active and within and not denied_since:
                recent.append((kind, words, ev))
            else:
                history.append((words, ev))
            if kind == "attempt":
                behaviour.append((words, ev))
    for c, match, _ in call.coded("Condition", codes.history):
        try:
            if condition_is_true(c):
                words = "personal history of suicidal behaviour"
                history.append((words, condition_evidence(c, match)))
                behaviour.append((words, history[-1][1]))
        except Exception as exc:
            call.skip(c, exc)

    found = Finding()
    answered = item9 is not None and item9.value >= 1
    item_basis = ""
    if answered and item9 is not None:
        answer = f" ({markdown_text(item9.answer)})" if item9.answer else ""
        item_basis = f"PHQ-9 item 9 = {item9.value}{answer} on {item9.date}"
    if (item9 is not None and item9.value >= counts) or recent:
        found.level = "high"
        if item9 is not None and item9.value >= counts:
            found.sources.append("item9")
            found.basis.append(item_basis)
            found.ideation.append(item_basis)
            found.evidence += item9_ev
        for kind, words, ev in recent:
            if kind not in found.sources:
                found.sources.append(kind)
            found.basis.append(f"{words}: {ev.describe()}")
            if kind == "ideation":
                found.ideation.append(found.basis[-1])
            found.evidence.append(ev)
    elif answered:
        found.level = "low"
        found.sources.append("item9")
        found.basis.append(item_basis)
        found.evidence += item9_ev
    elif history:
        found.level = "history"
        found.basis += [f"{words}: {ev.describe()}" for words, ev in history]
        found.evidence += [ev for _, ev in history]
    if found.level in ("high", "low"):
        days = [ev.on for ev in found.evidence if ev.on is not None]
        if item9 is not None and "item9" in found.sources:
            days.append(date.fromisoformat(item9.date))
        found.dated = max(days, default=None)
    _behaviour(found, behaviour)
    return found


def _behaviour(found: Finding, behaviour: list[tuple[str, Evidence]]) -> None:
    """Name suicidal behaviour on record, newest first, and say it in a summary's few words."""
    newest = sorted(behaviour, key=lambda b: b[1].on or date.min, reverse=True)
    found.behaviour = [f"{words}: {ev.describe()}" for words, ev in newest]
    found.behaviour_evidence = [ev for _, ev in newest]
    if newest:
        words, ev = newest[0]
        what = (
            "Past suicide attempt or self-harm"
            if words.startswith("suicide")
            else ("Personal history of suicidal behaviour")
        )
        found.behaviour_summary = f"{what} recorded {ev.on.isoformat()}" if ev.on else what
