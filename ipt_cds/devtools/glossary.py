"""The glossary of docs/rules.md: every fact a rule may name, what it means, and what in the
record it comes from (value sets by title, windows in days), so that a clinician reviewing a
rule never needs the Python."""

from __future__ import annotations

from ipt_cds.clinical.extractors import (
    ActiveCondition,
    ConditionWithin,
    CurrentMedication,
    CurrentOrder,
    Declaration,
    DraftOrders,
    LatestObservation,
    RecentProcedure,
)
from ipt_cds.clinical.fact_model import FACTS
from ipt_cds.clinical.fact_sources import FACT_READS
from ipt_cds.knowledge.base import Knowledge


def render(knowledge: Knowledge) -> list[str]:
    out = [
        "## Glossary of facts\n",
        "What each fact a rule or card names means, and what it is read from. A Condition "
        "counts when active (clinicalStatus active, recurrence or relapse, or none and no "
        "abatement) and not refuted or entered in error, unless a window is named; windows "
        "count back from the day of the call.\n",
    ]
    for name, spec in FACTS.items():
        out.append(f"- **`{name}`** ({spec.describe()}): {spec.meaning}.")
        for source in FACT_READS.get(name, ()):
            out.append(f"  - {_source(knowledge, source)}")
    out.append("")
    return out


def _source(knowledge: Knowledge, name: str) -> str:
    book = knowledge.factbook
    decl = book.declarations.get(name)
    if decl is None:  # a value set the Python facts read
        return f"codes in {_valueset(knowledge, book.vs[name])}"
    return f"{_what(decl, knowledge)}: {_valueset(knowledge, decl.valueset)}"


def _valueset(knowledge: Knowledge, url: str) -> str:
    name = url.rsplit("/", 1)[-1]
    return f"[{knowledge.terms.titles.get(url, url)}](../cards/valuesets/{name}.json)"


def _days(knowledge: Knowledge, param: str) -> str:
    return f"{knowledge.params[param]} days (`{param}`)"


def _what(decl: Declaration, knowledge: Knowledge) -> str:
    match decl:
        case ActiveCondition():
            return "active Conditions"
        case ConditionWithin(days=days, status=status):
            states = {
                "active": "active Conditions recorded",
                "active-or-within": "Conditions active or recorded",
                "any": "Conditions in any status recorded",
            }
            return f"{states[status]} within {_days(knowledge, days)}"
        case LatestObservation(days=days):
            return f"the latest Observation within {_days(knowledge, days)}"
        case CurrentMedication():
            return (
                "current MedicationRequests and MedicationStatements, less the products listed "
                "under not_when in cards/facts.yaml"
            )
        case CurrentOrder(statuses=statuses):
            return f"ServiceRequests with status {', '.join(statuses)}"
        case RecentProcedure(days=days):
            return f"Procedures completed or in progress within {_days(knowledge, days)}"
        case DraftOrders(resource=resource):
            return f"draft {resource}s in context.draftOrders"
    raise AssertionError(decl)  # pragma: no cover
