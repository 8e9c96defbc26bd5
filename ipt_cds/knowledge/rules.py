"""Rules as data: load ``cards/rules/``, check every file, and turn facts into cards.

A rule file says when it applies (an expression over facts), which indicator it gives, and its
card: summary and detail templates (Jinja2), suggestions, override reasons and evidence.
``_index.yaml`` fixes the evaluation order and the families of rules of which only the first
that fires stands; the standing card names the others' reasons.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, ParamSpec, TypeVar

from jinja2 import Template
from pydantic import BaseModel, ConfigDict, Field

from ipt_cds.clinical.fact_model import Facts
from ipt_cds.clinical.suggestions import ACTIONS, ORDERABLE_OF, build_actions
from ipt_cds.knowledge.datafiles import parse
from ipt_cds.knowledge.ehr_profile import check_topic_codes, shape
from ipt_cds.knowledge.errors import KnowledgeError
from ipt_cds.knowledge.expressions import (
    Compiled,
    ExpressionError,
    FactTypes,
    Fired,
    compile_expression,
)
from ipt_cds.knowledge.site import DEFAULT_SITE, SiteProfile
from ipt_cds.knowledge.templates import compile_template, tidy_markdown
from ipt_cds.protocol.models import Card, Coding, Link, Source, Suggestion
from ipt_cds.protocol.vocabulary import (
    INDICATOR_RANK,
    INDICATORS,
    OVERRIDE_SYSTEM,
    RULE_SYSTEM,
    SUMMARY_MAX_CHARS,
    Hook,
)

SOURCE_LABEL = "IPT decision support (UpToDate: IPT for depressed adults, 2023)"
# The reference topic the cards rest on (also named on the evidence pages).
TOPIC_TITLE = "Interpersonal psychotherapy for depressed adults"
TOPIC = f'UpToDate topic "{TOPIC_TITLE}"'

log = logging.getLogger("ipt_cds")
_P = ParamSpec("_P")
_T = TypeVar("_T")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _CardText(_Strict):
    summary: str = Field(min_length=1)
    detail: str = Field(min_length=1)


class _SuggestionDef(_Strict):
    label: str = Field(min_length=1)
    action: str
    note: str | None = None
    when: str | None = None
    # The fact whose evidence the order is for (its reasonReference or reasonCode), e.g.
    # psychosis for a psychiatry referral; by default the depression episode.
    reason: str | None = None


class _LinkDef(_Strict):
    """A link of cards/links.yaml shown only when its condition holds."""

    key: str
    when: str


class _NoticeDef(_Strict):
    """A line the engine adds once per response, to the first card returned (most urgent
    first) whose rule lists the notice, when its condition holds: e.g. the boxed warning on
    antidepressants under 25, which no card fires for alone."""

    when: str
    text: str = Field(min_length=1)


class NoticesFile(_Strict):
    notices: dict[str, _NoticeDef] = Field(default_factory=dict)


class _Reason(_Strict):
    code: str = Field(pattern=r"^[a-z0-9-]+$")
    display: str = Field(min_length=1)


class _Evidence(_Strict):
    section: str = Field(min_length=1)
    refs: list[int]
    figures: str = ""
    # False when the card's text cites its sources itself (a card whose evidence depends on
    # which reasons it shows): no evidence line is added.
    cite: bool = True


class RuleFile(_Strict):
    id: str = Field(pattern=r"^[a-z0-9-]+$")
    title: str = Field(min_length=1, max_length=100)
    hooks: list[Hook] = Field(min_length=1)
    when: str = Field(min_length=1)
    then: str = Field(min_length=1)
    applies: str
    indicator: str | dict[str, str]
    reason: str | None = None
    card: _CardText
    suggestions: list[_SuggestionDef] = Field(default_factory=list)
    # "any" when the suggestions go together (remove the IPT draft and refer to psychiatry).
    selectionBehavior: Literal["at-most-one", "any"] = "at-most-one"
    overrideReasons: list[_Reason] = Field(default_factory=list)
    # Keys of cards/links.yaml, shown on the card in this order (a key with ``when``: only then).
    links: list[str | _LinkDef] = Field(default_factory=list)
    # Notices of _notices.yaml this card may carry (the first card returned that lists one).
    notices: list[str] = Field(default_factory=list)
    evidence: _Evidence


class IndexFile(_Strict):
    order: list[str] = Field(min_length=1)
    families: dict[str, list[str]] = Field(default_factory=dict)
    # Old rule id -> the rule that replaced it. Cards once made under an old id stay
    # attributable (card uuids, statistics) and a site profile naming one still loads.
    retired: dict[str, str] = Field(default_factory=dict)


@dataclass
class Outcome:
    """A call's cards, each with its rule id: those returned, those a site made silent
    (recorded as "would have shown"), and those held back by what the patient already saw."""

    shown: list[tuple[str, Card]] = field(default_factory=list)
    silent: list[tuple[str, Card]] = field(default_factory=list)
    # Cards kept away because the patient saw them this visit ("repeat") or overrode them
    # ("snooze"): recorded and counted, never returned.
    held: list[tuple[str, Card, str]] = field(default_factory=list)


@dataclass(frozen=True)
class CompiledRule:
    spec: RuleFile
    path: Path
    summary: Template
    detail: Template
    reason: Template | None
    applies: Compiled
    indicator: tuple[tuple[str, Compiled | None], ...]
    suggestions: tuple[tuple[_SuggestionDef, Compiled | None], ...]
    links: tuple[tuple[str, Compiled | None], ...] = ()

    @property
    def id(self) -> str:
        return self.spec.id


class RuleBook:
    def __init__(
        self,
        rules: list[CompiledRule],
        families: dict[str, list[str]],
        links: Mapping[str, Link] | None = None,
        notices: Mapping[str, tuple[Compiled, Template]] | None = None,
        retired: Mapping[str, str] | None = None,
    ) -> None:
        self.rules = rules
        self.families = families
        self.notices = dict(notices or {})
        self.retired = dict(retired or {})
        self.by_id = {r.id: r for r in rules}
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
    ) -> RuleBook:
        index_path = folder / "_index.yaml"
        index = parse(index_path, IndexFile)
        files = {p.stem: p for p in folder.glob("*.yaml") if not p.name.startswith("_")}
        for rid in index.order:
            if rid not in files:
                raise KnowledgeError(f"{index_path}: rule {rid!r} has no file {rid}.yaml")
        if len(set(index.order)) != len(index.order):
            raise KnowledgeError(f"{index_path}: a rule is listed twice in order")
        unlisted = sorted(set(files) - set(index.order))
        if unlisted:
            raise KnowledgeError(f"{files[unlisted[0]]}: rule is not listed in {index_path.name}")
        compiled: list[CompiledRule] = []
        notices = _notices(folder / "_notices.yaml", facts, params)
        for rid in index.order:
            compiled.append(_compile(files[rid], facts, params, [r.id for r in compiled]))
            unknown = [k for k, _ in compiled[-1].links if k not in (links or {})]
            if unknown:
                raise KnowledgeError(f"{files[rid]}: links: no link {unknown[0]!r} in links.yaml")
            missing = [n for n in compiled[-1].spec.notices if n not in notices]
            if missing:
                raise KnowledgeError(
                    f"{files[rid]}: notices: no notice {missing[0]!r} in _notices.yaml"
                )
        by_id = {r.id: r for r in compiled}
        try:
            check_topic_codes(by_id)
        except ValueError as exc:
            raise KnowledgeError(f"{index_path}: {exc}") from None
        for name, members in index.families.items():
            for rid in members:
                if rid not in by_id:
                    raise KnowledgeError(f"{index_path}: family {name!r}: unknown rule {rid!r}")
                if by_id[rid].spec.reason is None:
                    raise KnowledgeError(
                        f"{by_id[rid].path}: a member of family {name!r} needs a reason"
                    )
        for old, new in index.retired.items():
            if old in by_id:
                raise KnowledgeError(f"{index_path}: retired: {old!r} is also a rule")
            if new not in by_id:
                raise KnowledgeError(
                    f"{index_path}: retired.{old}: its replacement {new!r} is not a rule"
                )
        return cls(compiled, index.families, links, notices, index.retired)

    def for_site(self, site: SiteProfile) -> RuleBook:
        """This rule book as a health system set it up: its links, codes and rule controls."""
        book = RuleBook(self.rules, self.families, self.default_links, self.notices, self.retired)
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
        orderables: set[str] = set()
        for sug, cond in rule.suggestions:
            if cond is None or cond(facts.values, shown):
                actions = build_actions(
                    sug.action, sug.label, sug.note, facts, self._codes, sug.reason
                )
                if actions:
                    suggestions.append(
                        Suggestion(label=sug.label, uuid=str(uuid.uuid4()), actions=actions)
                    )
                    orderables.add(ORDERABLE_OF.get(sug.action, ""))
        links = [
            self.links[k] for k, cond in rule.links if cond is None or cond(facts.values, shown)
        ]
        # A site's PHQ-9 app beside a PHQ-9 order, its patient material beside an IPT order.
        for key, orderable in (("phq9_app", "phq9"), ("patient_material", "ipt")):
            if orderable in orderables and key in self.links:
                links.append(self.links[key])
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
        return {
            ORDERABLE_OF[sug.action]
            for rule in self.rules
            if self.site.control(rule.id).enabled
            for sug, _ in rule.suggestions
            if sug.action in ORDERABLE_OF
        }


def _indicator(rule: CompiledRule, env: Mapping[str, Any], fired: Collection[str]) -> str:
    return next(ind for ind, cond in rule.indicator if cond is None or cond(env, fired))


def _evidence_line(ev: _Evidence) -> str:
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


def _render(template: Template | None, facts: Facts, also: list[str], shown: frozenset[str]) -> str:
    if template is None:
        return ""
    context = {
        **facts.values,
        "why": facts.why,
        "also": also,
        "params": facts.params,
        "shown": shown,
    }
    return template.render(context)


def _compile(
    path: Path, facts: FactTypes, params: Mapping[str, Any], earlier: list[str]
) -> CompiledRule:
    spec: RuleFile = parse(path, RuleFile)
    if spec.id != path.stem:
        raise KnowledgeError(f"{path}: id {spec.id!r} differs from the file name")

    def expr(text: str, where: str) -> Compiled:
        try:
            return compile_expression(text, facts, params, earlier)[0]
        except ExpressionError as exc:
            raise KnowledgeError(f"{path}: {where}: {exc}") from None

    if isinstance(spec.indicator, str):
        if spec.indicator not in INDICATORS:
            raise KnowledgeError(
                f"{path}: indicator: {spec.indicator!r} is not one of {INDICATORS}"
            )
        indicator: tuple[tuple[str, Compiled | None], ...] = ((spec.indicator, None),)
    else:
        items = list(spec.indicator.items())
        if (
            not items
            or items[-1][0] != "otherwise"
            or any(k not in INDICATORS for k, _ in items[:-1])
        ):
            raise KnowledgeError(
                f"{path}: indicator: map indicators to conditions, ending with 'otherwise'"
            )
        if items[-1][1] not in INDICATORS:
            raise KnowledgeError(f"{path}: indicator.otherwise: not an indicator: {items[-1][1]!r}")
        indicator = (
            *tuple((k, expr(v, f"indicator.{k}")) for k, v in items[:-1]),
            (items[-1][1], None),
        )
    if any(ind != "info" for ind, _ in indicator) and not spec.overrideReasons:
        raise KnowledgeError(f"{path}: a warning or critical card needs overrideReasons")

    def template(text: str, where: str) -> Template:
        try:
            return compile_template(text, facts, params)
        except ExpressionError as exc:
            raise KnowledgeError(f"{path}: {where}: {exc}") from None

    suggestions = []
    for i, sug in enumerate(spec.suggestions):
        if sug.action not in ACTIONS:
            raise KnowledgeError(f"{path}: suggestions[{i}].action: unknown action {sug.action!r}")
        if sug.reason is not None and not (sug.reason in facts and facts[sug.reason].explained):
            raise KnowledgeError(
                f"{path}: suggestions[{i}].reason: {sug.reason!r} is not a fact that keeps its "
                "evidence"
            )
        suggestions.append((sug, expr(sug.when, f"suggestions[{i}].when") if sug.when else None))
    links = tuple(
        (item, None) if isinstance(item, str) else (item.key, expr(item.when, f"links[{i}].when"))
        for i, item in enumerate(spec.links)
    )
    return CompiledRule(
        spec,
        path,
        template(spec.card.summary, "card.summary"),
        template(spec.card.detail, "card.detail"),
        template(spec.reason, "reason") if spec.reason else None,
        expr(spec.applies, "applies"),
        indicator,
        tuple(suggestions),
        links,
    )


def _notices(
    path: Path, facts: FactTypes, params: Mapping[str, Any]
) -> dict[str, tuple[Compiled, Template]]:
    if not path.exists():
        return {}
    out = {}
    for name, notice in parse(path, NoticesFile).notices.items():
        try:
            when = compile_expression(notice.when, facts, params, [])[0]
            text = compile_template(notice.text, facts, params)
        except ExpressionError as exc:
            raise KnowledgeError(f"{path}: notices.{name}: {exc}") from None
        out[name] = (when, text)
    return out
