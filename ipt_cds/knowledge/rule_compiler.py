"""Rule files compiled: each checked against the facts and parameters it names, its
expressions and templates compiled once, at start-up. The rule book (ipt_cds/knowledge/rules.py)
only selects and renders what this module made."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ipt_cds.knowledge.datafiles import parse
from ipt_cds.knowledge.ehr_profile import check_topic_codes
from ipt_cds.knowledge.errors import KnowledgeError
from ipt_cds.knowledge.expressions import Compiled, ExpressionError, FactTypes, compile_expression
from ipt_cds.knowledge.orders import Orders
from ipt_cds.knowledge.rule_files import IndexFile, NoticesFile, RuleFile, SuggestionDef
from ipt_cds.knowledge.templates import NamedTemplate, compile_template
from ipt_cds.protocol.models import Link
from ipt_cds.protocol.vocabulary import INDICATORS

# An assessment holds a card back for its clinician for a visit at most, never for days.
MOST_HOLD_HOURS = 24


@dataclass(frozen=True)
class CompiledRule:
    spec: RuleFile
    path: Path
    summary: NamedTemplate
    detail: NamedTemplate
    reason: NamedTemplate | None
    applies: Compiled
    indicator: tuple[tuple[str, Compiled | None], ...]
    suggestions: tuple[tuple[SuggestionDef, Compiled | None], ...]
    links: tuple[tuple[str, Compiled | None], ...] = ()

    @property
    def id(self) -> str:
        return self.spec.id


@dataclass(frozen=True)
class CompiledRules:
    """What the rule files say, compiled: the rules in evaluation order, the families (of
    which the first card returned stands), the notices by name and the retired ids."""

    rules: list[CompiledRule]
    families: dict[str, list[str]]
    notices: dict[str, tuple[Compiled, NamedTemplate]]
    retired: dict[str, str]


def compile_rules(
    folder: Path,
    facts: FactTypes,
    params: Mapping[str, Any],
    links: Mapping[str, Link] | None = None,
    orders: Orders | None = None,
) -> CompiledRules:
    """Every rule file of ``folder`` in the index's order, checked and compiled: each
    expression against the facts' types, each template, links and notices by name, the
    families and the retired ids; a problem is a KnowledgeError naming the file."""
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
        compiled.append(_compile(files[rid], facts, params, [r.id for r in compiled], orders))
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
    return CompiledRules(compiled, index.families, notices, index.retired)


def _compile(
    path: Path,
    facts: FactTypes,
    params: Mapping[str, Any],
    earlier: list[str],
    orders: Orders | None,
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
    if sum(1 for reason in spec.overrideReasons if reason.holds_hours) > 1:
        # The card memory keeps that an assessment holds the card, not by which reason.
        raise KnowledgeError(f"{path}: overrideReasons: at most one reason holds the card")
    for i, reason in enumerate(spec.overrideReasons):
        hours = params.get(reason.holds_hours) if reason.holds_hours else None
        if reason.holds_hours and not (isinstance(hours, int) and 0 < hours <= MOST_HOLD_HOURS):
            raise KnowledgeError(
                f"{path}: overrideReasons[{i}].holds_hours: {reason.holds_hours!r} is not a "
                f"parameter of whole hours from 1 to {MOST_HOLD_HOURS}"
            )
        said = reason.others_read
        if bool(reason.holds_hours) != (said is not None) or (
            said is not None and (said.count("{") != 1 or said.count("{at}") != 1)
        ):
            raise KnowledgeError(
                f"{path}: overrideReasons[{i}]: a reason that holds the card (holds_hours) says "
                "what other clinicians read meanwhile (others_read, with {at} once), and only "
                "such a reason"
            )

    def template(text: str, where: str) -> NamedTemplate:
        try:
            return compile_template(text, facts, params)
        except ExpressionError as exc:
            raise KnowledgeError(f"{path}: {where}: {exc}") from None

    suggestions = []
    for i, sug in enumerate(spec.suggestions):
        if orders is None or sug.action not in orders:
            raise KnowledgeError(
                f"{path}: suggestions[{i}].action: no order {sug.action!r} in orders.yaml"
            )
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
) -> dict[str, tuple[Compiled, NamedTemplate]]:
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
