"""What each fact reads from the record, as ``cards/facts.yaml`` declares it: a computed fact's
value sets (aliases under ``valuesets:``), extractions (names under ``facts:``), parameters and
the facts it is built from (its entry under ``computed:``); an extraction's own window and
limits; a derived fact's names (``DerivedFacts.facts_read``).

It is what the glossary of docs/rules.md shows a clinician ("from these codes, within that
window") and what an evidence page lists as the windows and thresholds behind a rule. Start-up
binds each computed fact's Python to its declaration (ipt_cds/knowledge/computed.py), so what a
fact is said to read here is what its code reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

Names = Mapping[str, tuple[str, ...]]


@dataclass(frozen=True)
class FactSources:
    """The reads of each computed fact, by kind, as its declaration names them."""

    valuesets: Names = field(default_factory=dict)
    extractions: Names = field(default_factory=dict)
    params: Names = field(default_factory=dict)
    # Facts it is computed from: it reads what they read, windows included.
    built_from: Names = field(default_factory=dict)
    # The value set each alias stands for.
    aliases: Mapping[str, str] = field(default_factory=dict)


def declared_parameters(declaration: object) -> tuple[str, ...]:
    """The parameters a cards/facts.yaml declaration names: its window (``days``), its ceiling
    (``max``) and the dose limits of its ``not_when`` products; start-up checks they exist."""
    named = [getattr(declaration, "days", None), getattr(declaration, "max", None)]
    named += [getattr(x, "daily_mg_at_most", None) for x in getattr(declaration, "not_when", [])]
    return tuple(dict.fromkeys(n for n in named if isinstance(n, str)))


def fact_parameters(
    fact: str,
    sources: FactSources,
    declared: Mapping[str, tuple[str, ...]],
    built_from: Mapping[str, tuple[str, ...]] | None = None,
    own: Mapping[str, tuple[str, ...]] | None = None,
) -> tuple[str, ...]:
    """Every parameter ``fact`` reads: its own (``sources.params``, or ``own`` for a derived
    fact), its extractions' (``declared``: a cards/facts.yaml name -> its declared parameters),
    and those of the facts it is built from (``sources.built_from``, or ``built_from`` for a
    derived fact), transitively."""
    found: dict[str, None] = {}
    seen: set[str] = set()
    todo = [fact]
    while todo:
        name = todo.pop(0)
        if name in seen:
            continue
        seen.add(name)
        found.update(dict.fromkeys(sources.params.get(name, ())))
        found.update(dict.fromkeys((own or {}).get(name, ())))
        # A fact of cards/facts.yaml is the extraction of its name.
        for source in (*sources.extractions.get(name, ()), name):
            found.update(dict.fromkeys(declared.get(source, ())))
        todo += sources.built_from.get(name, ())
        todo += (built_from or {}).get(name, ())
    return tuple(found)
