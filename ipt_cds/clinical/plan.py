"""The treatment plan: what is current, what is drafted, and whether a drafted antidepressant is
a new start or a renewal (the clinical spec section 1, and version 3 section 7.1 "Renewals").

A renewal is the same ingredient at the same daily dose as a current prescription; a changed
dose is a new start for every rule. When the medications could not be read, no draft is a
renewal: unknown never counts as "already taking it".
"""

from __future__ import annotations

from datetime import date

from ipt_cds.clinical.extractors import Evidence
from ipt_cds.clinical.fact_model import Facts

# A dose in mg a day read from two orders: equal within this (12.5 mg twice a day and 25 mg once).
_SAME_DOSE = 1e-6


def plan_facts(f: Facts, raw: dict[str, list[Evidence]]) -> None:
    current_ad = raw["antidepressant_orders"]
    therapy = raw["psychotherapy_orders"] + raw["psychotherapy_procedures"]
    f.set("on_antidepressant", bool(current_ad), current_ad)
    f.set("on_psychotherapy", bool(therapy), therapy)
    ipt, psy, ad = (
        raw["ipt_drafts"],
        raw["psychotherapy_drafts"] + raw["ipt_drafts"],
        raw["antidepressant_drafts"],
    )
    f.set("draft_ipt", any(e.selected for e in ipt), [e for e in ipt if e.selected])
    f.set("draft_psychotherapy", any(e.selected for e in psy), [e for e in psy if e.selected])
    f.set("draft_antidepressant", any(e.selected for e in ad), [e for e in ad if e.selected])
    known = not f["medications_unknown"]
    new: list[Evidence] = []
    renewed: list[Evidence] = []
    for draft in (e for e in ad if e.selected):
        same = [c for c in current_ad if _same_drug(draft, c)]
        (renewed if known and same else new).append(draft)
    f.set("new_antidepressant", bool(new), new)
    f.set("renewed_antidepressant", bool(renewed), renewed)
    starts = [course_start(current_ad, d) for d in renewed]
    known_starts = [d for d in starts if d is not None]
    whole = known_starts and len(known_starts) == len(starts)
    f.set("course_start", min(known_starts).isoformat() if whole else None)
    f.set("ipt_draft_refs", sorted({e.ref for e in ipt if e.selected}))
    ipt_current = raw["ipt_orders"] + raw["ipt_procedures"] + raw["ipt_record_drafts"]
    f.set("antidepressant_in_plan", bool(current_ad or ad))
    f.set("psychotherapy_in_plan", bool(therapy or psy))
    f.set("ipt_in_plan", bool(ipt or ipt_current))
    referrals = raw["psychiatry_referrals"] + raw["psychiatry_referral_drafts"]
    f.set("psychiatry_in_plan", bool(referrals), referrals)
    care = raw["psychiatry_referrals_completed"] + raw["psychiatric_care_procedures"]
    f.set("psychiatric_care", bool(care), care)


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
