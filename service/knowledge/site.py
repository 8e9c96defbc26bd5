"""The site profile: what a health system sets to fit the cards to its EHR without touching the
rules (the clinical spec section 5; docs/site-profile.md documents every key).

``IPT_CDS_SITE_FILE`` names a YAML file, checked at start-up like the knowledge base: a wrong key,
value or rule id stops the service naming the file and the field. No file, the defaults: every
rule on, nothing silent, our links and codes only.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_validator

from service.knowledge.datafiles import parse, read_yaml
from service.knowledge.ehr_profile import EPIC_PREFERENCE_LIST, Ehr
from service.knowledge.errors import KnowledgeError
from service.protocol.models import Coding, Link

# The links a card may show, by key: cards/links.yaml has our defaults for the first three.
LinkKey = Literal[
    "crisis_line",
    "risk_assessment",
    "safety_plan",
    "treatment_guideline",
    "phq9_app",
    "patient_material",
]
# The orders our suggestions create, to which a site adds its own orderable codings.
Orderable = Literal["ipt", "psychiatry_referral", "phq9"]

log = logging.getLogger("ipt_cds")

DEFAULT_REPEAT_WINDOW_HOURS = 12.0
DEFAULT_SNOOZE_DAYS = 30


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SiteLink(_Strict):
    label: str = Field(min_length=1, max_length=200)
    url: str = Field(min_length=1)
    type: Literal["absolute", "smart"] = "absolute"

    @field_validator("url")
    @classmethod
    def _http(cls, url: str) -> str:
        HttpUrl(url)  # raises for anything but an absolute http(s) URL
        return url

    def as_link(self) -> Link:
        return Link(label=self.label, url=self.url, type=self.type)


class SiteCoding(_Strict):
    system: str = Field(min_length=1)
    code: str = Field(min_length=1)
    display: str | None = None

    def as_coding(self) -> Coding:
        return Coding(system=self.system, code=self.code, display=self.display)


class RuleControl(_Strict):
    enabled: bool = True
    # Computed and recorded as "would have shown", never returned: alert burden before go-live.
    silent: bool = False
    # Days an overridden card of this rule stays away for that patient; critical cards never do.
    snooze_days: int | None = Field(default=None, ge=0, le=3650)


class SiteProfile(_Strict):
    organization: str | None = Field(default=None, min_length=1, max_length=100)
    ehr: Ehr = "generic"
    repeat_window_hours: float = Field(default=DEFAULT_REPEAT_WINDOW_HOURS, ge=0, le=24 * 30)
    links: dict[LinkKey, SiteLink] = Field(default_factory=dict)
    orderables: dict[Orderable, list[SiteCoding]] = Field(default_factory=dict)
    rules: dict[str, RuleControl] = Field(default_factory=dict)

    def control(self, rule_id: str) -> RuleControl:
        return self.rules.get(rule_id, _DEFAULT_CONTROL)

    def snooze_days(self, rule_id: str) -> int:
        days = self.control(rule_id).snooze_days
        return DEFAULT_SNOOZE_DAYS if days is None else days

    def unplaceable_orders(self, suggested: Iterable[str]) -> list[str]:
        """Under ``ehr: epic``, the orders our suggestions create that have no Epic order
        preference list item here: Epic cannot place them from our standard codes alone."""
        if self.ehr != "epic":
            return []
        placeable = {
            name
            for name, codings in self.orderables.items()
            if any(c.system == EPIC_PREFERENCE_LIST for c in codings)
        }
        return [name for name in sorted(set(suggested)) if name not in placeable]


_DEFAULT_CONTROL = RuleControl()
DEFAULT_SITE = SiteProfile()


def load_site(
    path: Path | None, rule_ids: set[str], retired: Mapping[str, str] | None = None
) -> SiteProfile:
    """The profile in ``path`` (None: the defaults), its rule ids checked against ours.

    ``retired`` maps old rule ids to the rules that replaced them: a profile naming one still
    loads, with a warning, and its control moves to the replacement (``_carried_over``)."""
    if path is None:
        return DEFAULT_SITE
    retired = retired or {}
    site = parse(path, SiteProfile, read_yaml(path) or {})
    unknown = sorted(set(site.rules) - rule_ids - set(retired))
    if unknown:
        raise KnowledgeError(
            f"{path}: rules.{unknown[0]}: no such rule (the rules are listed at /evidence)"
        )
    named = sorted(set(site.rules) & set(retired))
    if not named:
        return site
    rules = {rid: control for rid, control in site.rules.items() if rid not in retired}
    for new in sorted({retired[old] for old in named}):
        olds = sorted(old for old, to in retired.items() if to == new)
        own = new in rules
        if not own:
            rules[new] = _carried_over([site.control(old) for old in olds])
        for old in (o for o in olds if o in site.rules):
            log.warning(
                "%s: rules.%s: retired rule, replaced by %s; %s",
                path,
                old,
                new,
                f"its control is ignored: {new} has its own"
                if own
                else f"{new} takes the least restrictive control of {', '.join(olds)} "
                f"(unnamed ones at the defaults): {_words(rules[new])}. Name {new} in the "
                "profile to set it",
                extra={"event": "site-retired-rule"},
            )
    return site.model_copy(update={"rules": rules})


def _carried_over(controls: list[RuleControl]) -> RuleControl:
    """One control for a rule that replaced several: the least restrictive of theirs. The new
    card says more than any one old card did (its cautions include some no old card showed), so
    a site's choice to hide one old card must not hide the others' content."""
    days = [DEFAULT_SNOOZE_DAYS if c.snooze_days is None else c.snooze_days for c in controls]
    return RuleControl(
        enabled=any(c.enabled for c in controls),
        silent=all(c.silent for c in controls),
        snooze_days=None if min(days) == DEFAULT_SNOOZE_DAYS else min(days),
    )


def _words(control: RuleControl) -> str:
    state = "disabled" if not control.enabled else "silent" if control.silent else "shown"
    days = DEFAULT_SNOOZE_DAYS if control.snooze_days is None else control.snooze_days
    return f"{state}, snooze {days} days"
