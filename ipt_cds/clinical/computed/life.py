"""The patient's life as IPT works with it: pregnancy, the focus areas the record suggests
(grief, role transitions, disputes, interpersonal deficits) and personality traits."""

from __future__ import annotations

from ipt_cds.clinical.fact_library import Call, Compute, Needs, computes, typed
from ipt_cds.clinical.fact_model import FocusArea, Trait

# The personality traits, by the extraction of cards/facts.yaml that finds each.
TRAITS: dict[str, Trait] = {
    "personality_avoidant": "avoidant",
    "personality_obsessive_compulsive": "obsessive-compulsive",
}


@computes("personality", {"personality_traits": typed(list[Trait])})
def personality(needs: Needs) -> Compute:
    traits = [(needs.extraction(name), trait) for name, trait in TRAITS.items()]

    def compute(call: Call) -> None:
        call.set("personality_traits", [t for key, t in traits if call.evidence(key)])

    return compute


@computes(
    "life",
    {"pregnant": typed(bool, explained=True), "focus_areas": typed(list[FocusArea])},
)
def life(needs: Needs) -> Compute:
    conditions = needs.extraction("pregnancy_conditions")
    status = needs.extraction("pregnancy_status")
    pregnant_answer = needs.valueset("pregnant_answer")
    terms = needs.codes
    bereavement, postpartum = needs.fact("bereavement"), needs.fact("postpartum")
    transitions = [
        needs.extraction(name) for name in ("role_transition_conditions", "new_hiv", "new_chd")
    ]
    disputes = needs.extraction("role_dispute_conditions")
    deficits = needs.extraction("interpersonal_deficit_conditions")

    def compute(call: Call) -> None:
        by_observation = [
            e
            for e in call.evidence(status)
            if any(terms.contains(pregnant_answer, s, c) for s, c in e.answer_codes)
        ]
        found = call.evidence(conditions) + by_observation
        call.set("pregnant", bool(found), found)
        areas: list[FocusArea] = []
        if call.fact(bereavement):
            areas.append("grief")
        if found or call.fact(postpartum) or any(call.evidence(key) for key in transitions):
            areas.append("role-transition")
        if call.evidence(disputes):
            areas.append("role-dispute")
        if not areas and call.evidence(deficits):
            areas.append("interpersonal-deficits")
        call.set("focus_areas", areas)

    return compute
