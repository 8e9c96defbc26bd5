"""The rule book: which rules fire for a call's facts, which of their cards are returned,
silent or held back, and each card rendered (a site's links, codes and EHR shape included).

A rule file (ipt_cds/knowledge/rule_files.py) says when it applies (an expression over facts),
which indicator it gives, and its card: summary and detail templates (Jinja2), suggestions,
override reasons and evidence; ipt_cds/knowledge/rule_compiler.py checks and compiles them at
start-up. ``_index.yaml`` fixes the evaluation order and the families of rules of which only
the first that fires stands; the standing card names the others' reasons.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from ipt_cds.clinical.fact_model import Facts
from ipt_cds.knowledge.ehr_profile import shape
from ipt_cds.knowledge.expressions import Compiled, FactTypes, Fired
from ipt_cds.knowledge.orders import Orders
from ipt_cds.knowledge.rule_compiler import CompiledRule, compile_rules
from ipt_cds.knowledge.rule_files import EvidenceDef
from ipt_cds.knowledge.site import DEFAULT_SITE, SiteProfile
from ipt_cds.knowledge.templates import NamedTemplate, tidy_markdown
from ipt_cds.protocol.models import Card, Coding, Link, Source, Suggestion
from ipt_cds.protocol.vocabulary import (
    INDICATOR_RANK,
    OVERRIDE_SYSTEM,
    RULE_SYSTEM,
    SUMMARY_MAX_CHARS,
)

SOURCE_LABEL = "IPT decision support (UpToDate: IPT for depressed adults, 2023)"
# The reference topic the cards rest on (also named on the evidence pages).
TOPIC_TITLE = "Interpersonal psychotherapy for depressed adults"
TOPIC = f'UpToDate topic "{TOPIC_TITLE}"'

log = logging.getLogger("ipt_cds")
_P = ParamSpec("_P")
_T = TypeVar("_T")


@dataclass
class Outcome:
    """A call's cards, each with its rule id: those returned, those a site made silent
    (recorded as "would have shown"), and those held back by what the patient already saw."""

    shown: list[tuple[str, Card]] = field(default_factory=list)
    silent: list[tuple[str, Card]] = field(default_factory=list)
    # Cards kept away because the patient saw them this visit ("repeat") or overrode them
    # ("snooze"): recorded and counted, never returned.
    held: list[tuple[str, Card, str]] = field(default_factory=list)


class RuleBook:
    def __init__(
        self,
        rules: list[CompiledRule],
        families: dict[str, list[str]],
        links: Mapping[str, Link] | None = None,
        notices: Mapping[str, tuple[Compiled, NamedTemplate]] | None = None,
        retired: Mapping[str, str] | None = None,
        orders: Orders | None = None,
    ) -> None:
        self.rules = rules
        # What the suggestions order (cards/orders.yaml); None: rules with no suggestions.
        self.orders = orders
        self.families = families
        self.notices = dict(notices or {})
        self.retired = dict(retired or {})
        self.by_id = {r.id: r for r in rules}
        # Rule id -> the override reason that documents an assessment and holds its card back
        # for the clinician who gives it (holds_hours; at most one a rule, start-up checks).
        self.holding = {
            r.id: reason for r in rules for reason in r.spec.overrideReasons if reason.holds_hours
        }
        # The links of cards/links.yaml; ``links`` has a site's in their place (for_site).
        self.default_links = dict(links or {})
        self.links = dict(links or {})
        self.site = DEFAULT_SITE
        # The site's orderable codings by order (the clinical spec section 5), and source.label.
        self._codes: dict[str, list[dict[str, Any]]] = {}
        self._label = SOURCE_LABEL

    @classmethod
    def load(
        cls,
        folder: Path,
        facts: FactTypes,
        params: Mapping[str, Any],
        links: Mapping[str, Link] | None = None,
        orders: Orders | None = None,
    ) -> RuleBook:
        made = compile_rules(folder, facts, params, links, orders)
        return cls(made.rules, made.families, links, made.notices, made.retired, orders)

    def for_site(self, site: SiteProfile) -> RuleBook:
        """This rule book as a health system set it up: its links, codes and rule controls."""
        book = RuleBook(
            self.rules, self.families, self.default_links, self.notices, self.retired, self.orders
        )
        book.links.update({key: link.as_link() for key, link in site.links.items()})
        book.site = site
        book._codes = {
            name: [c.as_coding().model_dump(exclude_none=True) for c in codings]
            for name, codings in site.orderables.items()
        }
        if site.organization:
            book._label = f"{site.organization}: {SOURCE_LABEL}"
        return book

    def cards(self, facts: Facts) -> list[tuple[str, Card]]:
        """The cards returned, each with its rule id."""
        return self.outcome(facts).shown

    def outcome(
        self,
        facts: Facts,
        recalled: Mapping[str, str] | None = None,
        notes: Mapping[str, str] | None = None,
    ) -> Outcome:
        """``recalled``: rule id -> "repeat" or "snooze" for the rules whose card this patient
        saw within the repeat window, or overrode (ipt_cds/storage/memory.py); a critical card
        shows all the same, unless "assessed" (its clinician documented a risk assessment).
        ``notes``: rule id -> a line its card shows first (an assessment by another
        clinician)."""
        env = facts.values
        hook = env["hook"]
        fired: list[CompiledRule] = []
        names = Fired()
        indicators: dict[str, str | None] = {}
        for rule in self.rules:
            if hook in rule.spec.hooks and guarded(rule.id, rule.applies, env, names):
                fired.append(rule)
                names.add(rule.id)
                indicators[rule.id] = guarded(rule.id, _indicator, rule, env, names)
                if indicators[rule.id] in ("warning", "critical"):
                    names.alerting.add(rule.id)
        recalled = recalled or {}
        held = {
            r: why
            for r, why in recalled.items()
            if r in names and (indicators[r] != "critical" or why == "assessed")
        }
        notes = notes or {}
        # Whether a card fires looked at every card the rules produced (an all-clear never
        # shows because a warning was silenced); what is returned is decided now: disabled
        # rules are dropped, silent ones recorded but not returned. Of a family, the first
        # member returned stands; a silent member before it is what would have shown.
        control = {r.id: self._control(r.id) for r in fired}
        returned = [r.id for r in fired if control[r.id] == "shown" and r.id not in held]
        silenced = [r.id for r in fired if control[r.id] == "silent"]
        families = [[r for r in members if r in names] for members in self.families.values()]
        families = [firing for firing in families if len(firing) > 1]
        losers = set()
        for firing in families:
            standing = [r for r in firing if r in returned][:1]
            losers |= {r for r in firing if r not in standing}
            # The family's advice held back as seen: no other member repeats it.
            first_on = next((r for r in firing if control[r] != "disabled"), None)
            if first_on in held:
                losers |= set(firing)
                losers.discard(first_on)
                continue
            first = firing[0]
            if first in silenced and (not standing or firing.index(standing[0]) > 0):
                losers.discard(first)
        # What a card says about other cards (pointers, which card carries the one referral)
        # is decided among the cards returned, so no card points at one that is not shown.
        shown = frozenset(r for r in returned if r not in losers)
        reasons = {
            r: guarded(r, _render, self.by_id[r].reason, facts, [], shown)
            for firing in families
            for r in firing
        }
        out = Outcome()
        for rule in fired:
            if rule.id in held and control[rule.id] == "shown" and rule.id not in losers:
                card = guarded(rule.id, self._card, rule, facts, [], shown)
                if card is not None:
                    out.held.append((rule.id, card, held[rule.id]))
                continue
            if rule.id in losers or rule.id not in (*returned, *silenced):
                continue
            family = next((f for f in families if rule.id in f), [])
            also = [text for o in family if o != rule.id and (text := reasons[o]) is not None]
            card = guarded(rule.id, self._card, rule, facts, also, shown, notes.get(rule.id))
            if card is None and family and rule.id in shown:
                # A family card that fails to build: the next member returned stands instead.
                for other in family[family.index(rule.id) + 1 :]:
                    if other in returned and other in losers:
                        rest = [t for o in family if o != other and (t := reasons[o])]
                        card = guarded(other, self._card, self.by_id[other], facts, rest, shown)
                        if card is not None:
                            out.shown.append((other, card))
                            break
                continue
            if card is not None:
                (out.shown if rule.id in shown else out.silent).append((rule.id, card))
        self._add_notices(out.shown, facts, shown)
        return out

    def _add_notices(
        self, cards: list[tuple[str, Card]], facts: Facts, shown: frozenset[str]
    ) -> None:
        """Each notice whose condition holds, once, on the most urgent card returned that may
        carry it (ties: the rules' order)."""
        ranked = sorted(range(len(cards)), key=lambda i: INDICATOR_RANK[cards[i][1].indicator])
        for name, (when, text) in self.notices.items():
            if not guarded(name, when, facts.values, shown):
                continue
            for i in ranked:
                rule_id, card = cards[i]
                rule = self.by_id.get(rule_id)  # None: a Python rule, which carries none
                if rule is not None and name in rule.spec.notices:
                    line = " ".join(_render(text, facts, [], shown).split())
                    detail = f"{card.detail}\n\n{line}" if card.detail else line
                    cards[i] = (rule_id, card.model_copy(update={"detail": detail}))
                    break

    def _control(self, rule_id: str) -> str:
        control = self.site.control(rule_id)
        if not control.enabled:
            return "disabled"
        return "silent" if control.silent else "shown"

    def _card(
        self,
        rule: CompiledRule,
        facts: Facts,
        also: list[str],
        shown: frozenset[str],
        note: str | None = None,
    ) -> Card:
        spec = rule.spec
        # Conditions on what a card says (its indicator, its suggestions) read fires() as "is
        # that card returned": e.g. the one psychiatry referral goes to the first card shown.
        indicator = _indicator(rule, facts.values, shown)
        summary = " ".join(_render(rule.summary, facts, also, shown).split())
        if len(summary) > SUMMARY_MAX_CHARS:
            summary = summary[: SUMMARY_MAX_CHARS - 1].rstrip() + "…"
        # The memory's note (an assessment by another clinician) is read before the card.
        paragraphs = [note or "", tidy_markdown(_render(rule.detail, facts, also, shown))]
        if also:
            paragraphs.append("**Also:** " + "; ".join(also) + ".")
        if spec.evidence.cite:
            paragraphs.append(_evidence_line(spec.evidence))
        detail = "\n\n".join(p for p in paragraphs if p)
        suggestions = []
        ordered: set[str] = set()
        for sug, cond in rule.suggestions:
            if self.orders is not None and (cond is None or cond(facts.values, shown)):
                actions = self.orders.build(
                    sug.action, sug.label, sug.note, facts, self._codes, sug.reason
                )
                if actions:
                    suggestions.append(
                        Suggestion(label=sug.label, uuid=str(uuid.uuid4()), actions=actions)
                    )
                    ordered.add(self.orders.orderable_of(sug.action) or "")
        links = [
            self.links[k] for k, cond in rule.links if cond is None or cond(facts.values, shown)
        ]
        # A site's links that sit beside an order (cards/orders.yaml ``orderables``: its PHQ-9
        # app beside a PHQ-9 order, its patient material beside an IPT order).
        if self.orders is not None:
            links += [self.links[k] for k in self.orders.links_beside(ordered) if k in self.links]
        card = Card(
            summary=summary,
            detail=detail,
            indicator=indicator,
            source=Source(
                label=self._label,
                topic=Coding(system=RULE_SYSTEM, code=spec.id, display=spec.title),
            ),
            suggestions=suggestions or None,
            selectionBehavior=spec.selectionBehavior if suggestions else None,
            overrideReasons=[
                Coding(system=OVERRIDE_SYSTEM, code=r.code, display=r.display)
                for r in spec.overrideReasons
            ]
            if indicator != "info"
            else None,
            links=links or None,
        )
        return shape(card, self.site.ehr)

    def suggested_orders(self) -> set[str]:
        """The orders the suggestions of the rules switched on can create, by orderable name."""
        if self.orders is None:
            return set()
        found = {
            self.orders.orderable_of(sug.action)
            for rule in self.rules
            if self.site.control(rule.id).enabled
            for sug, _ in rule.suggestions
        }
        return {name for name in found if name is not None}


def _indicator(rule: CompiledRule, env: Mapping[str, Any], fired: Collection[str]) -> str:
    return next(ind for ind, cond in rule.indicator if cond is None or cond(env, fired))


def _evidence_line(ev: EvidenceDef) -> str:
    word = "ref" if len(ev.refs) == 1 else "refs"
    refs = f", {word} {', '.join(str(r) for r in ev.refs)}" if ev.refs else ""
    return f"**Evidence:** {TOPIC}, section {ev.section}{refs}."


def guarded(rule_id: str, step: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T | None:
    """One rule's step, or None when it fails: a broken rule loses its own card, not the
    other cards of the call (a suicide-risk card must not vanish because another rule broke).
    Only the exception's type is logged; its text may quote the record."""
    try:
        return step(*args, **kwargs)
    except Exception as exc:
        log.error("rule %s failed: %s", rule_id, type(exc).__name__)
        return None


def _render(
    template: NamedTemplate | None, facts: Facts, also: list[str], shown: frozenset[str]
) -> str:
    if template is None:
        return ""
    extra = {"why": facts.why, "also": also, "params": facts.params, "shown": shown}
    return template.render_from(facts.values, extra)
