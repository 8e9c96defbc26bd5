"""The PHQ-9 readings (the total, item 9) and the neurovegetative symptoms: the scores and the
conditions that say the same (the clinical spec section 1)."""

from __future__ import annotations

from ipt_cds.clinical.extractors import Evidence
from ipt_cds.clinical.fact_library import Call, Compute, Needs, computes, typed
from ipt_cds.clinical.fact_model import Domain, Reading

# The PHQ items (a score at or above item_score_counts) and the conditions that show each
# neurovegetative domain, by the extraction of cards/facts.yaml that finds them.
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
DOMAIN_ORDER: tuple[Domain, ...] = ("sleep", "energy", "appetite", "libido")


@computes(
    "scores",
    {
        "phq9": typed(Reading | None, explained=True),
        "item9": typed(Reading | None, explained=True),
        "neurovegetative": typed(int, explained=True),
        "neurovegetative_domains": typed(list[Domain]),
    },
)
def scores(needs: Needs) -> Compute:
    total, item9 = needs.extraction("phq9_total"), needs.extraction("phq9_item9")
    items = [(needs.extraction(name), domain) for name, domain in ITEM_DOMAINS.items()]
    conditions = [(needs.extraction(name), domain) for name, domain in CONDITION_DOMAINS.items()]
    high = needs.parameter("item_score_counts")

    def compute(call: Call) -> None:
        call.set("phq9", reading(call.evidence(total)), call.evidence(total))
        call.set("item9", reading(call.evidence(item9)), call.evidence(item9))
        domains: dict[str, list[Evidence]] = {}
        for key, domain in items:
            found = call.evidence(key)
            score = reading(found)
            if score is not None and score.value >= high:
                domains.setdefault(domain, []).extend(found)
        for key, domain in conditions:
            if found := call.evidence(key):
                domains.setdefault(domain, []).extend(found)
        call.set("neurovegetative", len(domains), [e for d in domains.values() for e in d])
        call.set("neurovegetative_domains", [d for d in DOMAIN_ORDER if d in domains])

    return compute


def reading(found: list[Evidence]) -> Reading | None:
    e = found[0] if found else None
    if e is None or e.on is None or e.value is None:
        return None
    value: int | float = int(e.value) if e.value.is_integer() else e.value
    return Reading(value, e.on.isoformat(), e.ref, e.answer)
