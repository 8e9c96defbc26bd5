"""What each fact reads from the record: the names in ``cards/facts.yaml`` (an extraction under
``facts:`` or a value set alias under ``valuesets:``) behind it.

It is what the glossary of docs/rules.md shows a clinician ("from these codes, within that
window"), and start-up checks every name exists, so the glossary cannot drift from the data.
Facts the Python derives from other facts read nothing here: ``FACT_BUILT_FROM`` says which;
those of cards/derived.yaml say it themselves (``DerivedFacts.facts_read``). ``FACT_PARAMS``
and ``fact_parameters`` say which parameters (windows, thresholds) a fact reads, for the
evidence pages.
"""

from __future__ import annotations

from collections.abc import Mapping

from ipt_cds.clinical.facts import CODED_SEVERITY, STATED_SEVERITY

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
    "pregnant": ("pregnancy_conditions", "pregnancy_status", "pregnant_answer"),
    "personality_traits": ("personality_avoidant", "personality_obsessive_compulsive"),
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

# The parameters of cards/parameters.yaml each Python fact reads itself (``params["..."]``,
# ``scope.since("...")`` in facts.py, suicide.py, plan.py): what an evidence page lists as
# the windows and thresholds behind a rule. A test greps the Python for those reads, so a new
# one cannot go unlisted here. The facts of cards/facts.yaml name theirs in their declaration.
FACT_PARAMS: Mapping[str, tuple[str, ...]] = {
    "severity": ("phq9_bands",),
    "neurovegetative": ("item_score_counts",),
    "neurovegetative_domains": ("item_score_counts",),
    # A PHQ-9 at or above recurrence_phq9 after a remission code undoes the remission.
    "remission": ("recurrence_phq9",),
    "probable_recurrence": ("recurrence_phq9",),
    "probable_recurrence_basis": ("recurrence_phq9",),
    "suicidal_ideation": ("item_score_counts", "suicidal_ideation_dx_days"),
    "suicidal_ideation_basis": ("item_score_counts", "suicidal_ideation_dx_days"),
    "suicidal_ideation_sources": ("item_score_counts", "suicidal_ideation_dx_days"),
    "ideation_basis": ("item_score_counts", "suicidal_ideation_dx_days"),
    "psychosis": ("psychotic_features_window_days",),
}

# Facts the Python computes from other facts (facts.py, plan.py): they read what those read,
# windows included. Only what the code takes from those facts is listed.
FACT_BUILT_FROM: Mapping[str, tuple[str, ...]] = {
    "severity": ("phq9",),
    "severity_basis": ("severity",),
    "probable_recurrence": ("phq9", "remission"),
    "probable_recurrence_basis": ("probable_recurrence",),
    "suicidal_ideation": ("item9",),
    "suicidal_ideation_basis": ("suicidal_ideation",),
    "suicidal_ideation_sources": ("suicidal_ideation",),
    "ideation_basis": ("suicidal_ideation",),
    "suicidal_ideation_dated": ("suicidal_ideation",),
    "suicide_behaviour_summary": ("suicide_behaviour",),
    "suicide_basis_in_course": ("suicidal_ideation", "course_start"),
    "psychosis_diagnosis": ("psychosis",),
    "neurovegetative_domains": ("neurovegetative",),
    "focus_areas": ("bereavement", "pregnant", "postpartum"),
    "antidepressant_in_plan": ("on_antidepressant", "draft_antidepressant"),
    "psychotherapy_in_plan": ("on_psychotherapy", "draft_psychotherapy"),
}


def declared_parameters(declaration: object) -> tuple[str, ...]:
    """The parameters a cards/facts.yaml declaration names: its window (``days``), its ceiling
    (``max``) and the dose limits of its ``not_when`` products; start-up checks they exist."""
    named = [getattr(declaration, "days", None), getattr(declaration, "max", None)]
    named += [getattr(x, "daily_mg_at_most", None) for x in getattr(declaration, "not_when", [])]
    return tuple(dict.fromkeys(n for n in named if isinstance(n, str)))


def fact_parameters(
    fact: str,
    declared: Mapping[str, tuple[str, ...]],
    built_from: Mapping[str, tuple[str, ...]] | None = None,
    own: Mapping[str, tuple[str, ...]] | None = None,
) -> tuple[str, ...]:
    """Every parameter ``fact`` reads: its own (FACT_PARAMS, or ``own`` for a derived fact),
    its extractions' (``declared``: a cards/facts.yaml name -> its declared parameters), and
    those of the facts it is built from (FACT_BUILT_FROM, or ``built_from``), transitively."""
    found: dict[str, None] = {}
    seen: set[str] = set()
    todo = [fact]
    while todo:
        name = todo.pop(0)
        if name in seen:
            continue
        seen.add(name)
        found.update(dict.fromkeys(FACT_PARAMS.get(name, ())))
        found.update(dict.fromkeys((own or {}).get(name, ())))
        # A fact of cards/facts.yaml is the extraction of its name.
        for source in (*FACT_READS.get(name, ()), name):
            found.update(dict.fromkeys(declared.get(source, ())))
        todo += FACT_BUILT_FROM.get(name, ())
        todo += (built_from or {}).get(name, ())
    return tuple(found)
