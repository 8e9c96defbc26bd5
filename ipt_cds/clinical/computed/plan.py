"""The treatment plan: what is current, what is drafted, and whether a drafted antidepressant is
a new start or a renewal (the clinical spec section 1, and version 3 section 7.1 "Renewals").

A renewal is the same ingredient at the same daily dose as a current prescription; a changed
dose is a new start for every rule. When the medications could not be read, no draft is a
renewal: unknown never counts as "already taking it". The day the renewed drug's course began
(``course_start``) decides, in cards/derived.yaml, whether suicidal ideation arose in it.
"""

from __future__ import annotations

from datetime import date

from ipt_cds.clinical.extractors import Evidence
from ipt_cds.clinical.fact_library import Call, Compute, Extraction, Needs, computes, typed

# A dose in mg a day read from two orders: equal within this (12.5 mg twice a day and 25 mg once).
_SAME_DOSE = 1e-6


@computes(
    "plan",
    {
        "on_antidepressant": typed(bool, explained=True),
        "on_psychotherapy": typed(bool, explained=True),
        "draft_ipt": typed(bool, explained=True),
        "draft_psychotherapy": typed(bool, explained=True),
        "draft_antidepressant": typed(bool, explained=True),
        "new_antidepressant": typed(bool, explained=True),
        "renewed_antidepressant": typed(bool, explained=True),
        "course_start": typed(str | None),
        "ipt_draft_refs": typed(list[str]),
        "antidepressant_in_plan": typed(bool),
        "psychotherapy_in_plan": typed(bool),
        "ipt_in_plan": typed(bool),
        "psychiatry_in_plan": typed(bool, explained=True),
        "psychiatric_care": typed(bool, explained=True),
    },
)
def plan(needs: Needs) -> Compute:
    read = needs.extraction
    current_ad, ad = read("antidepressant_orders"), read("antidepressant_drafts")
    therapy = (read("psychotherapy_orders"), read("psychotherapy_procedures"))
    ipt, psy = read("ipt_drafts"), read("psychotherapy_drafts")
    ipt_current = (read("ipt_orders"), read("ipt_procedures"), read("ipt_record_drafts"))
    referrals = (read("psychiatry_referrals"), read("psychiatry_referral_drafts"))
    care = (read("psychiatry_referrals_completed"), read("psychiatric_care_procedures"))
    medications_unknown = needs.fact("medications_unknown")

    def all_of(call: Call, keys: tuple[Extraction, ...]) -> list[Evidence]:
        return [e for key in keys for e in call.evidence(key)]

    def compute(call: Call) -> None:
        treatment(
            call,
            call.evidence(current_ad),
            all_of(call, therapy),
            (call.evidence(ipt), call.evidence(psy) + call.evidence(ipt), call.evidence(ad)),
            not call.fact(medications_unknown),
        )
        call.set("ipt_in_plan", bool(call.evidence(ipt) or all_of(call, ipt_current)))
        found = all_of(call, referrals)
        call.set("psychiatry_in_plan", bool(found), found)
        received = all_of(call, care)
        call.set("psychiatric_care", bool(received), received)

    return compute


def treatment(
    call: Call,
    current_ad: list[Evidence],
    therapy: list[Evidence],
    drafts: tuple[list[Evidence], list[Evidence], list[Evidence]],
    known: bool,
) -> None:
    """What is current, what is drafted, which drafted antidepressant is new, and the day the
    renewed drug's course began."""
    ipt, psy, ad = drafts
    call.set("on_antidepressant", bool(current_ad), current_ad)
    call.set("on_psychotherapy", bool(therapy), therapy)
    call.set("draft_ipt", any(e.selected for e in ipt), [e for e in ipt if e.selected])
    call.set("draft_psychotherapy", any(e.selected for e in psy), [e for e in psy if e.selected])
    call.set("draft_antidepressant", any(e.selected for e in ad), [e for e in ad if e.selected])
    new: list[Evidence] = []
    renewed: list[Evidence] = []
    for draft in (e for e in ad if e.selected):
        same = [c for c in current_ad if _same_drug(draft, c)]
        (renewed if known and same else new).append(draft)
    call.set("new_antidepressant", bool(new), new)
    call.set("renewed_antidepressant", bool(renewed), renewed)
    starts = [course_start(current_ad, d) for d in renewed]
    known_starts = [d for d in starts if d is not None]
    whole = known_starts and len(known_starts) == len(starts)
    start = min(known_starts).isoformat() if whole else None
    call.set("course_start", start)
    call.set("ipt_draft_refs", sorted({e.ref for e in ipt if e.selected}))
    call.set("antidepressant_in_plan", bool(current_ad or ad))
    call.set("psychotherapy_in_plan", bool(therapy or psy))


def _same_drug(draft: Evidence, current: Evidence) -> bool:
    """Same ingredient at the same daily dose. Neither dose stated: the same product code is the
    same dose; one stated and not the other cannot be shown to be the same, so it is new."""
    if draft.ingredient is None or draft.ingredient != current.ingredient:
        return False
    if draft.dose is not None and current.dose is not None:
        return abs(draft.dose - current.dose) < _SAME_DOSE
    if draft.dose is None and current.dose is None:
        return draft.code is not None and draft.code == current.code
    return False


def course_start(current: list[Evidence], draft: Evidence) -> date | None:
    """When the continuous course of the draft's ingredient began: the earliest of its current
    prescriptions (all current, so they leave no gap between them). Stopped or completed earlier
    prescriptions are not asked for, so a course is never taken to have begun earlier than what
    is current: the later start lets more new ideation count. None when a prescription of it is
    undated: an unknown start counts as new."""
    days = [c.on for c in current if c.ingredient == draft.ingredient]
    if not days or None in days:
        return None
    return min(d for d in days if d is not None)
