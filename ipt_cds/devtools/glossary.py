"""The glossary of docs/rules.md: every fact a rule may name, what it means, and what in the
record it comes from (value sets by title, windows in days), so that a clinician reviewing a
rule never needs the Python."""

from __future__ import annotations

from ipt_cds.clinical.declarations import (
    ActiveCondition,
    ConditionWithin,
    CurrentMedication,
    CurrentOrder,
    Declaration,
    DraftOrders,
    LatestObservation,
    RecentProcedure,
)
from ipt_cds.knowledge.base import Knowledge
from ipt_cds.knowledge.derived import Derivation, Sentence


def render(knowledge: Knowledge) -> list[str]:
    out = [
        "## Glossary of facts\n",
        "What each fact a rule or card names means, and what it is read from. A Condition "
        "counts when active (clinicalStatus active, recurrence or relapse, or none and no "
        "abatement) and not refuted or entered in error, unless a window is named; windows "
        "count back from the day of the call.\n",
    ]
    derived = knowledge.derived.declarations
    for name, spec in knowledge.facts.items():
        out.append(f"- **`{name}`** ({spec.describe()}): {spec.meaning}.")
        out += _reads(knowledge, name)
        if name in derived:
            out += _derivation(derived[name])
        elif name.endswith("_reasons") and name.removesuffix("_reasons") in derived:
            out.append(
                f"  - the reasons of the case of `{name.removesuffix('_reasons')}` that holds"
            )
    out.append("")
    return out


def _derivation(d: Derivation) -> list[str]:
    """How cards/derived.yaml derives the fact, as it declares it."""
    if d.is_ is not None:
        return [f"  - derived: `{_one_line(d.is_)}`"]
    if d.says is not None:
        return ["  - derived: each sentence whose condition holds, in this order:"] + [
            f"    - {_sentence(s)}" for s in d.says
        ]
    lines = ["  - derived: the first case that holds:"]
    for case in d.first_of or []:
        condition = "otherwise" if case.when.strip() == "True" else f"`{_one_line(case.when)}`"
        lines.append(f"    - {condition}: **{case.then}**")
    return lines


def _sentence(s: Sentence) -> str:
    text = f"every sentence of `{s.each}`" if s.each is not None else f"“{_one_line(s.says or '')}”"
    return f"`{_one_line(s.when)}`: {text}" if s.when is not None else text


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _reads(knowledge: Knowledge, name: str) -> list[str]:
    """What a fact read from the record reads, as cards/facts.yaml declares it: an extraction
    with a meaning reads itself; a computed fact its extractions, the codes its Python matches
    itself, its parameters and the facts it is computed from."""
    book, sources = knowledge.factbook, knowledge.sources
    own = (name,) if name in book.declared_facts else ()
    lines = []
    for source in sources.extractions.get(name, own):
        decl = book.declarations[source]
        lines.append(f"{_what(decl, knowledge)}: {_valueset(knowledge, decl.valueset)}")
    for alias in sources.valuesets.get(name, ()):
        lines.append(f"codes in {_valueset(knowledge, sources.aliases[alias])}")
    if params := sources.params.get(name):
        lines.append(f"parameters {_names(params)}")
    if facts := sources.built_from.get(name):
        lines.append(f"computed from {_names(facts)}")
    return [f"  - {line}" for line in lines]


def _names(names: tuple[str, ...]) -> str:
    return ", ".join(f"`{n}`" for n in names)


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
