"""The evidence page of each rule, as plain data: what the rule checks, the card it writes, and
the evidence and parameters behind it. No patient data: a page is the same for every caller.

``service/http/evidence.py`` renders these pages as HTML at ``/evidence/{rule_id}`` (once, at
start-up), and every card's ``source.url`` points at its rule's page (``page_url``, ``linked``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

from service.knowledge.base import Knowledge
from service.knowledge.rules import TOPIC_TITLE, CompiledRule
from service.protocol.models import Card, Link

# Where the pages are served; a card's source.url is the service's base URL plus this and the id.
PATH = "/evidence"
# The topic every rule's evidence section and reference numbers refer to: named, never quoted.
TOPIC = TOPIC_TITLE

# A card template's Jinja2 tags: a value filled from the record, logic choosing text, a comment.
_TAG = re.compile(r"(\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\})", re.DOTALL)
# A name as rules write them: ``params.NAME`` or a bare name, never an attribute (``phq9.value``).
_NAME = re.compile(r"(?<![\w.])(?:params\.)?([A-Za-z_]\w*)")


@dataclass(frozen=True)
class Segment:
    """A piece of card template text: ``text`` as written, a ``value`` filled from the patient's
    record (``{{ age }}``: the expression), or ``logic`` choosing text (``{% if … %}``)."""

    kind: Literal["text", "value", "logic"]
    text: str


@dataclass(frozen=True)
class IndicatorCase:
    indicator: str
    # None: always (a single indicator) or otherwise (the last of a map).
    condition: str | None


@dataclass(frozen=True)
class SuggestionInfo:
    label: str
    condition: str | None


@dataclass(frozen=True)
class Parameter:
    name: str
    value: str


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
    summary: tuple[Segment, ...] = ()
    detail: tuple[Segment, ...] = ()
    reason: tuple[Segment, ...] = ()
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


def pages(knowledge: Knowledge) -> list[EvidencePage]:
    """One page per rule of the knowledge base, in evaluation order, then one per retired id."""
    book = knowledge.rulebook
    return [
        *(rule_page(rule, knowledge.params, book.links) for rule in book.rules),
        *(retired_page(old, new) for old, new in book.retired.items()),
    ]


def retired_page(rule_id: str, replaced_by: str) -> EvidencePage:
    """The page of a retired rule id: old cards' ``source.url`` still lead somewhere useful."""
    return EvidencePage(
        rule_id=rule_id, title=rule_id, hooks=(), described=False, replaced_by=replaced_by
    )


def rule_page(
    rule: CompiledRule, params: Mapping[str, Any], links: Mapping[str, Link] | None = None
) -> EvidencePage:
    spec = rule.spec
    if isinstance(spec.indicator, str):
        indicators: tuple[IndicatorCase, ...] = (IndicatorCase(spec.indicator, None),)
    else:
        items = list(spec.indicator.items())
        indicators = (
            *(IndicatorCase(ind, cond.strip()) for ind, cond in items[:-1]),
            IndicatorCase(items[-1][1], None),
        )
    conditions = [spec.applies, *(c.condition or "" for c in indicators)]
    conditions += [s.when or "" for s in spec.suggestions]
    templates = [spec.card.summary, spec.card.detail, spec.reason or ""]
    ev = spec.evidence
    return EvidencePage(
        rule_id=spec.id,
        title=spec.title,
        hooks=tuple(spec.hooks),
        when=" ".join(spec.when.split()),
        then=" ".join(spec.then.split()),
        indicators=indicators,
        summary=segments(spec.card.summary.strip()),
        detail=segments(spec.card.detail.strip()),
        reason=segments(spec.reason.strip()) if spec.reason else (),
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
        parameters=used_parameters([*conditions, *templates], params),
    )


def python_rule_page(rule_id: str, hooks: Iterable[str]) -> EvidencePage:
    """The page of a rule passed to ``create_app(rules=...)``, so that its cards' links work."""
    return EvidencePage(rule_id=rule_id, title=rule_id, hooks=tuple(sorted(hooks)), described=False)


def segments(template: str) -> tuple[Segment, ...]:
    """A card template as text, values and logic, so that a page can show it readably."""
    out: list[Segment] = []
    for i, part in enumerate(_TAG.split(template)):
        if not part:
            continue
        if i % 2 == 0:
            out.append(Segment("text", part))
        elif part.startswith("{{"):
            out.append(Segment("value", _inner(part)))
        elif part.startswith("{%"):
            out.append(Segment("logic", _inner(part)))
        # comments ({# … #}) are left out
    return tuple(out)


def _inner(tag: str) -> str:
    return " ".join(tag[2:-2].strip("-+ \t\r\n").split())


def used_parameters(texts: Sequence[str], params: Mapping[str, Any]) -> tuple[Parameter, ...]:
    """The parameters named in ``texts`` (``params.NAME`` or the bare name), in file order."""
    named = {word for text in texts for word in _NAME.findall(text)}
    return tuple(Parameter(name, _shown(value)) for name, value in params.items() if name in named)


def _shown(value: Any) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {_shown(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(_shown(v) for v in value)
    return str(value)


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
