"""The evidence page of each rule, as plain data: what the rule checks, an example of the card it
writes for each indicator it can take, and the evidence and parameters behind it. No patient
data: a page is the same for every caller, and its example cards are those the fixtures'
synthetic patients get.

``ipt_cds/http/evidence.py`` renders these pages as HTML at ``/evidence/{rule_id}`` (once, at
start-up), and every card's ``source.url`` points at its rule's page (``page_url``, ``linked``).

The example cards are read from ``examples/<rule-id>.json`` beside ``rules/`` in the knowledge
base (``ipt-cds fixtures build`` writes them, ``ipt_cds/devtools/examples.py``); the retired
rule ids from ``retired:`` in ``rules/_index.yaml``, when it has one.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, ValidationError

from ipt_cds.clinical.fact_sources import FactSources, declared_parameters, fact_parameters
from ipt_cds.knowledge.base import Knowledge
from ipt_cds.knowledge.errors import KnowledgeError
from ipt_cds.knowledge.expressions import expression_names
from ipt_cds.knowledge.rule_compiler import CompiledRule
from ipt_cds.knowledge.rule_files import RuleFile
from ipt_cds.knowledge.rules import SOURCE_LABEL, TOPIC_TITLE
from ipt_cds.knowledge.templates import template_names
from ipt_cds.protocol.models import Card, Link
from ipt_cds.protocol.vocabulary import Indicator

# Where the pages are served; a card's source.url is the service's base URL plus this and the id.
PATH = "/evidence"
# The topic every rule's evidence section and reference numbers refer to: named, never quoted.
TOPIC = TOPIC_TITLE
# The folder of the example cards, in the knowledge base beside rules/.
EXAMPLES = "examples"


class Example(BaseModel):
    """A card as the pipeline answered it for a fixture's synthetic patient."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    case: str
    describe: str
    hook: str
    card: Card


@dataclass(frozen=True)
class IndicatorCase:
    indicator: str
    # None: always (a single indicator) or otherwise (the last of a map).
    condition: str | None
    # A card of this indicator, from the first fixture that gets one; None: no fixture does.
    example: Example | None = None


@dataclass(frozen=True)
class SuggestionInfo:
    label: str
    condition: str | None


@dataclass(frozen=True)
class Parameter:
    name: str
    value: str
    # The rule names it itself (``params.NAME`` in a condition or the card's text).
    direct: bool = False
    # The facts the rule names that read it (their windows and thresholds).
    facts: tuple[str, ...] = ()


@dataclass(frozen=True)
class EvidencePage:
    rule_id: str
    title: str
    hooks: tuple[str, ...]
    # False for a rule written in Python by the embedding application: only its id and hooks
    # are known.
    described: bool = True
    when: str = ""
    then: str = ""
    indicators: tuple[IndicatorCase, ...] = ()
    suggestions: tuple[SuggestionInfo, ...] = ()
    override_reasons: tuple[str, ...] = ()
    # (label, url) of the links the card shows.
    links: tuple[tuple[str, str], ...] = ()
    topic: str = TOPIC
    sections: tuple[str, ...] = ()
    refs: tuple[int, ...] = ()
    figures: str = ""
    parameters: tuple[Parameter, ...] = ()
    # A retired rule id's page says only which rule replaced it (``retired`` in _index.yaml).
    replaced_by: str | None = None
    # Retired rule ids whose advice this rule now gives.
    replaces: tuple[str, ...] = ()


def pages(knowledge: Knowledge) -> list[EvidencePage]:
    """One page per rule of the knowledge base, in evaluation order, then one per retired id."""
    book = knowledge.rulebook
    if not book.rules:
        return []
    folder = book.rules[0].path.parent.parent
    reads = FactReads.of(knowledge)
    retired = book.retired
    organization = knowledge.site.organization
    label = f"{organization}: {SOURCE_LABEL}" if organization else SOURCE_LABEL
    out = []
    for rule in book.rules:
        page = rule_page(rule, knowledge.params, book.links, reads)
        found = examples(folder / EXAMPLES, rule.id)
        cases = tuple(
            replace(
                c,
                example=_as_site(
                    found.get(c.indicator), rule, book.links, label, book.default_links
                ),
            )
            for c in page.indicators
        )
        replaces = tuple(old for old, new in retired.items() if new == rule.id)
        out.append(replace(page, indicators=cases, replaces=replaces))
    return [*out, *(retired_page(old, new) for old, new in retired.items())]


def retired_page(rule_id: str, replaced_by: str) -> EvidencePage:
    """The page of a retired rule id: old cards' ``source.url`` still lead somewhere useful."""
    return EvidencePage(
        rule_id=rule_id, title=rule_id, hooks=(), described=False, replaced_by=replaced_by
    )


def rule_page(
    rule: CompiledRule,
    params: Mapping[str, Any],
    links: Mapping[str, Link] | None = None,
    reads: FactReads | None = None,
) -> EvidencePage:
    spec = rule.spec
    ev = spec.evidence
    return EvidencePage(
        rule_id=spec.id,
        title=spec.title,
        hooks=tuple(spec.hooks),
        when=" ".join(spec.when.split()),
        then=" ".join(spec.then.split()),
        indicators=tuple(
            IndicatorCase(indicator, condition) for indicator, condition in indicators(spec)
        ),
        suggestions=tuple(SuggestionInfo(s.label, s.when) for s in spec.suggestions),
        override_reasons=tuple(r.display for r in spec.overrideReasons),
        links=tuple(
            (links[k].label, links[k].url)
            for k in (item if isinstance(item, str) else item.key for item in spec.links)
            if links and k in links
        ),
        sections=tuple(part.strip() for part in ev.section.split(";") if part.strip()),
        refs=tuple(ev.refs),
        figures=" ".join(ev.figures.split()),
        parameters=parameters_read(spec, params, reads or FactReads((), {}, {}, {}, FactSources())),
    )


def indicators(spec: RuleFile) -> list[tuple[Indicator, str | None]]:
    """Each indicator the rule's card can take, with the condition that chooses it (None: always,
    or otherwise)."""
    if isinstance(spec.indicator, str):
        return [(spec.indicator, None)]  # type: ignore[list-item]  # checked at load
    items = list(spec.indicator.items())
    out: list[tuple[Any, str | None]] = [(ind, " ".join(c.split())) for ind, c in items[:-1]]
    return [*out, (items[-1][1], None)]


def python_rule_page(rule_id: str, hooks: Iterable[str]) -> EvidencePage:
    """The page of a rule passed to ``create_app(rules=...)``, so that its cards' links work."""
    return EvidencePage(rule_id=rule_id, title=rule_id, hooks=tuple(sorted(hooks)), described=False)


# --- what a rule reads -----------------------------------------------------------------------


@dataclass(frozen=True)
class FactReads:
    """What each fact reads, for the parameters an evidence page lists: the windows and limits
    of the extractions of cards/facts.yaml, what its computed facts declare they read, and the
    facts and parameters each derived fact of cards/derived.yaml names."""

    names: Collection[str]
    declared: Mapping[str, tuple[str, ...]]
    built_from: Mapping[str, tuple[str, ...]]
    own: Mapping[str, tuple[str, ...]]
    sources: FactSources

    @classmethod
    def of(cls, knowledge: Knowledge) -> FactReads:
        declarations = knowledge.factbook.declarations
        declared = {name: declared_parameters(decl) for name, decl in declarations.items()}
        derived = knowledge.derived
        return cls(
            knowledge.facts, declared, derived.facts_read, derived.params_read, knowledge.sources
        )

    def parameters(self, fact: str) -> tuple[str, ...]:
        return fact_parameters(fact, self.sources, self.declared, self.built_from, self.own)


def names_read(spec: RuleFile, names: Collection[str]) -> tuple[set[str], set[str]]:
    """The facts (of ``names``) and the parameters the rule's conditions and card texts name."""
    facts: set[str] = set()
    params: set[str] = set()
    expressions = [spec.applies, *(s.when for s in spec.suggestions if s.when)]
    if isinstance(spec.indicator, dict):
        expressions += list(spec.indicator.values())[:-1]
    for text in expressions:
        expression_names(text, facts, params)
    for template in (spec.card.summary, spec.card.detail, spec.reason):
        if template:
            template_names(template, facts, params)
    return {f for f in facts if f in names}, params


def parameters_read(
    spec: RuleFile, params: Mapping[str, Any], reads: FactReads
) -> tuple[Parameter, ...]:
    """Every parameter the rule reads, in the order of parameters.yaml: those it names itself,
    and the windows and thresholds of the facts it names (``fact_parameters``)."""
    facts, direct = names_read(spec, reads.names)
    via: dict[str, list[str]] = {}
    for fact in sorted(facts):
        for name in reads.parameters(fact):
            via.setdefault(name, []).append(fact)
    return tuple(
        Parameter(name, _shown(value), name in direct, tuple(via.get(name, ())))
        for name, value in params.items()
        if name in direct or name in via
    )


def used_parameters(texts: Iterable[str], params: Mapping[str, Any]) -> tuple[Parameter, ...]:
    """The parameters named as ``params.NAME`` in condition ``texts``, in file order."""
    named: set[str] = set()
    for text in texts:
        expression_names(text, set(), named)
    return tuple(Parameter(n, _shown(v), True) for n, v in params.items() if n in named)


def _shown(value: Any) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {_shown(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(_shown(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # 50, as parameters.yaml writes it, not 50.0
    return str(value)


# --- examples and retired ids ------------------------------------------------------------------


@cache
def examples(folder: Path, rule_id: str) -> Mapping[str, Example]:
    """The rule's example card per indicator; none when the knowledge base has no file for it
    (a knowledge base of one's own need not ship examples). Read once per process."""
    path = folder / f"{rule_id}.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {ind: Example.model_validate(ex) for ind, ex in data.items()}
    except (ValueError, ValidationError, AttributeError) as exc:
        raise KnowledgeError(f"{path}: not an example file: {type(exc).__name__}") from None


def _as_site(
    example: Example | None,
    rule: CompiledRule,
    links: Mapping[str, Link],
    label: str,
    defaults: Mapping[str, Link],
) -> Example | None:
    """The example as this site's EHR shows it: the site's links and source label in place of
    the defaults it was built with."""
    if example is None:
        return None
    card = example.card
    # The example's links, each of the rule's own keys replaced by the site's link for it (a
    # link shown only under a condition is in the example only if its case met it).
    keys = [k for k, _ in rule.links]
    key_of = {defaults[k].url: k for k in keys if k in defaults}
    own = [links[key_of[x.url]] if key_of.get(x.url) in links else x for x in card.links or []]
    source = card.source.model_copy(update={"label": label})
    shown = card.model_copy(update={"links": own or None, "source": source})
    return example.model_copy(update={"card": shown})


def page_url(base: str, rule_id: str) -> str:
    """The absolute URL of a rule's page: ``base`` is the service's public base URL."""
    return f"{base.rstrip('/')}{PATH}/{quote(rule_id, safe='')}"


def linked(fired: Iterable[tuple[str, Card]], base: str) -> list[tuple[str, Card]]:
    """Each card with ``source.url`` set to its rule's page, unless its rule set one itself."""
    out = []
    for rule_id, card in fired:
        if not card.source.url:
            source = card.source.model_copy(update={"url": page_url(base, rule_id)})
            card = card.model_copy(update={"source": source})
        out.append((rule_id, card))
    return out
