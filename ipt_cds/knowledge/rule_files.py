"""The rule files of ``cards/rules/`` as the engine reads them: their schema, checked field by
field when the knowledge base loads (a file with a key the schema lacks is refused, with its
name). ipt_cds/knowledge/rule_compiler.py turns them into compiled rules."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ipt_cds.protocol.vocabulary import Hook


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CardText(Strict):
    summary: str = Field(min_length=1)
    detail: str = Field(min_length=1)


class SuggestionDef(Strict):
    label: str = Field(min_length=1)
    action: str
    note: str | None = None
    when: str | None = None
    # The fact whose evidence the order is for (its reasonReference or reasonCode), e.g.
    # psychosis for a psychiatry referral; by default the depression episode.
    reason: str | None = None


class LinkDef(Strict):
    """A link of cards/links.yaml shown only when its condition holds."""

    key: str
    when: str


class NoticeDef(Strict):
    """A line the engine adds once per response, to the first card returned (most urgent
    first) whose rule lists the notice, when its condition holds: e.g. the boxed warning on
    antidepressants under 25, which no card fires for alone."""

    when: str
    text: str = Field(min_length=1)


class NoticesFile(Strict):
    notices: dict[str, NoticeDef] = Field(default_factory=dict)


class ReasonDef(Strict):
    code: str = Field(pattern=r"^[a-z0-9-]+$")
    display: str = Field(min_length=1)
    # A reason that documents an assessment (a suicide risk assessed): an override giving it
    # holds the card back for the clinician who gave it, for this parameter's hours, even a
    # critical card. Others see it, with others_read as its first line ({at}: when, in UTC).
    holds_hours: str | None = None
    others_read: str | None = Field(None, min_length=1)


class EvidenceDef(Strict):
    section: str = Field(min_length=1)
    refs: list[int]
    figures: str = ""
    # False when the card's text cites its sources itself (a card whose evidence depends on
    # which reasons it shows): no evidence line is added.
    cite: bool = True


class RuleFile(Strict):
    id: str = Field(pattern=r"^[a-z0-9-]+$")
    title: str = Field(min_length=1, max_length=100)
    hooks: list[Hook] = Field(min_length=1)
    when: str = Field(min_length=1)
    then: str = Field(min_length=1)
    applies: str
    indicator: str | dict[str, str]
    reason: str | None = None
    card: CardText
    suggestions: list[SuggestionDef] = Field(default_factory=list)
    # "any" when the suggestions go together (remove the IPT draft and refer to psychiatry).
    selectionBehavior: Literal["at-most-one", "any"] = "at-most-one"
    overrideReasons: list[ReasonDef] = Field(default_factory=list)
    # Keys of cards/links.yaml, shown on the card in this order (a key with ``when``: only then).
    links: list[str | LinkDef] = Field(default_factory=list)
    # Notices of _notices.yaml this card may carry (the first card returned that lists one).
    notices: list[str] = Field(default_factory=list)
    evidence: EvidenceDef


class IndexFile(Strict):
    order: list[str] = Field(min_length=1)
    families: dict[str, list[str]] = Field(default_factory=dict)
    # Old rule id -> the rule that replaced it. Cards once made under an old id stay
    # attributable (card uuids, statistics) and a site profile naming one still loads.
    retired: dict[str, str] = Field(default_factory=dict)
