"""What each fact reads from the record: the names in ``cards/facts.yaml`` (an extraction under
``facts:`` or a value set alias under ``valuesets:``) behind it.

It is what the glossary of docs/rules.md shows a clinician ("from these codes, within that
window"), and start-up checks every name exists, so the glossary cannot drift from the data.
Facts derived only from other facts read nothing here; their meaning in ``FACTS`` says how.
"""

from __future__ import annotations

from collections.abc import Mapping

from service.clinical.facts import CODED_SEVERITY, STATED_SEVERITY

FACT_READS: Mapping[str, tuple[str, ...]] = {
    "age": (),
    "depression": ("mdd", "depression_nos", "postpartum_depression", "dysthymia_conditions"),
    "dysthymia": ("dysthymia_conditions",),
    "episode": ("recurrent", "single_episode"),
    "remission": ("remission_full", "remission_partial", "remission_unspecified", "phq9_total"),
    "phq9": ("phq9_total",),
    "severity": (
        "phq9_total",
        *(alias for alias, _ in CODED_SEVERITY),
        *(alias for alias, _ in STATED_SEVERITY),
    ),
    "item9": ("phq9_item9",),
    "suicidal_ideation": (
        "phq9_item9",
        "suicidal_ideation",
        "suicide_attempt",
        "suicide_risk",
        "suicide_history",
    ),
    "neurovegetative": (
        "item_sleep",
        "item_energy",
        "item_appetite",
        "insomnia",
        "fatigue",
        "appetite_loss",
        "decreased_libido",
    ),
    "psychosis": ("psychotic_disorders", "psychotic_features"),
    "bipolar": ("bipolar",),
    "cognitive_impairment": ("cognitive_impairment",),
    "anxiety": ("anxiety",),
    "chd": ("chd",),
    "hiv": ("hiv",),
    "personality_disorder": (
        "personality_disorder",
        "personality_avoidant",
        "personality_obsessive_compulsive",
    ),
    "pregnant": ("pregnancy_conditions", "pregnancy_status", "pregnant_answer"),
    "postpartum": ("postpartum",),
    "bereavement": ("bereavement",),
    "focus_areas": (
        "bereavement",
        "pregnancy_conditions",
        "postpartum",
        "role_transition_conditions",
        "new_hiv",
        "new_chd",
        "role_dispute_conditions",
        "interpersonal_deficit_conditions",
    ),
    "on_antidepressant": ("antidepressant_orders",),
    "on_psychotherapy": ("psychotherapy_orders", "psychotherapy_procedures"),
    "draft_ipt": ("ipt_drafts",),
    "draft_psychotherapy": ("psychotherapy_drafts", "ipt_drafts"),
    "draft_antidepressant": ("antidepressant_drafts",),
    "new_antidepressant": ("antidepressant_drafts", "antidepressant_orders"),
    "ipt_in_plan": ("ipt_drafts", "ipt_orders", "ipt_procedures", "ipt_record_drafts"),
    "psychiatry_in_plan": ("psychiatry_referrals", "psychiatry_referral_drafts"),
}
