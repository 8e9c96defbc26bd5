"""What the EHR could not give this call, in words, and the facts that are unknown for it."""

from __future__ import annotations

from ipt_cds.clinical.fact_library import Call, Compute, Needs, computes, typed
from ipt_cds.clinical.medications import unidentified

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


@computes(
    "unreadable",
    {
        "unreadable": typed(list[str]),
        "medications_unknown": typed(bool),
        "therapy_unknown": typed(bool),
        "observations_unknown": typed(bool),
    },
)
def unreadable(needs: Needs) -> Compute:
    return _unreadable


def _unreadable(call: Call) -> None:
    """A type the server does not offer is unknown only when no type of its kind is offered (US
    Core records every medication as a MedicationRequest, and has no MedicationStatement)."""
    record = call.record
    kinds = set(record.unreadable)
    for group in UNKNOWN_TOGETHER:
        if group <= record.not_offered:
            kinds |= group
    drugs = unidentified(record)
    words = [words for kind, words in UNREADABLE_WORDS.items() if kind in kinds]
    if drugs:
        words.append(f"the drug of {drugs} current medication{'s' if drugs > 1 else ''}")
    call.set("unreadable", words)
    medications, therapy, observations = UNKNOWN_TOGETHER
    call.set("medications_unknown", bool(kinds & medications) or drugs > 0)
    call.set("therapy_unknown", bool(kinds & therapy))
    call.set("observations_unknown", bool(kinds & observations))
