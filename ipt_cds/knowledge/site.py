"""The site profile: what a health system sets to fit the cards to its EHR without touching the
rules (the clinical spec section 5; docs/site-profile.md documents every key).

``IPT_CDS_SITE_FILE`` names a YAML file, checked at start-up like the knowledge base: a wrong key,
value or rule id stops the service naming the file and the field (``ipt-cds site check FILE``
lists every problem, in plain words). No file, the defaults: every rule on, nothing silent, our
links and codes only. The safety rules (``SAFETY_RULES``) are switched off or made silent only
when the profile says ``acknowledge_safety_rules_off: true`` as well.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, ValidationError, field_validator

from ipt_cds.knowledge.datafiles import read_yaml
from ipt_cds.knowledge.ehr_profile import EPIC_PREFERENCE_LIST, Ehr
from ipt_cds.knowledge.errors import KnowledgeError
from ipt_cds.knowledge.plain_errors import did_you_mean, plain
from ipt_cds.protocol.models import Coding, Link

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
# The cards that stand between a patient and harm: a suicide risk on record, psychotic features
# (IPT is not the treatment, an urgent psychiatric assessment is). A profile switching one off
# or making it silent is refused unless it also says acknowledge_safety_rules_off: true, so that
# a copied line or a trial setting cannot do it unnoticed.
SAFETY_RULES = ("ipt-suicide-risk", "ipt-psychosis")


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
    acknowledge_safety_rules_off: bool = False

    def control(self, rule_id: str) -> RuleControl:
        return self.rules.get(rule_id, _DEFAULT_CONTROL)

    def safety_rules_off(self) -> dict[str, str]:
        """The safety rules this profile switches off or makes silent, with their state."""
        return {
            rid: state(self.control(rid))
            for rid in SAFETY_RULES
            if state(self.control(rid)) != "shown"
        }

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


@dataclass(frozen=True)
class SiteCheck:
    """What ``check_site`` found: the profile (None when it has problems), the problems (each
    ``where: what is wrong``, in plain words), and notes that do not stop the service."""

    site: SiteProfile | None
    problems: list[str]
    notes: list[str]


def load_site(
    path: Path | None, rule_ids: set[str], retired: Mapping[str, str] | None = None
) -> SiteProfile:
    """The profile in ``path`` (None: the defaults), its rule ids checked against ours; the
    first problem stops start-up, naming the file and the field.

    ``retired`` maps old rule ids to the rules that replaced them: a profile naming one still
    loads, with a warning, and its control moves to the replacement (``_carried_over``)."""
    if path is None:
        return DEFAULT_SITE
    checked = check_site(path, rule_ids, retired)
    if checked.site is None:
        first, more = checked.problems[0], len(checked.problems) - 1
        rest = f" (and {more} more: `ipt-cds site check {path}` lists them)" if more else ""
        raise KnowledgeError(f"{path}: {first}{rest}")
    for note in checked.notes:
        log.warning("%s: %s", path, note, extra={"event": "site-retired-rule"})
    return checked.site


def check_site(
    path: Path, rule_ids: set[str], retired: Mapping[str, str] | None = None
) -> SiteCheck:
    """Every problem of the profile in ``path``, not only the first (``ipt-cds site check``).
    A file that cannot be read or is not YAML raises ``KnowledgeError``."""
    retired = retired or {}
    raw = read_yaml(path)
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        return SiteCheck(None, ["the file must hold settings as `name: value` lines"], [])
    problems: list[str] = []
    try:
        site: SiteProfile | None = SiteProfile.model_validate(raw)
    except ValidationError as exc:
        site = None
        problems += [plain(error, SiteProfile) for error in exc.errors()]
    named = raw.get("rules")
    named = named if isinstance(named, dict) else {}
    known = sorted(rule_ids | set(retired))
    for rid in sorted(set(map(str, named)) - set(known)):
        problems.append(
            f"rules.{rid}: no such rule{did_you_mean(rid, known)} "
            "(the rules are listed in docs/rules.md and at /evidence)"
        )
    notes: list[str] = []
    if site is not None:
        site, notes = _retire(site, retired)
        off = site.safety_rules_off()
    else:
        off = _safety_rules_off(named)
    if raw.get("acknowledge_safety_rules_off") is not True:
        problems += [
            f"rules.{rid}: a safety rule cannot be {_DONE[how]} without "
            "`acknowledge_safety_rules_off: true` in the profile (the service then warns at "
            "every start)"
            for rid, how in off.items()
        ]
    order = {str(key): n for n, key in enumerate(raw)}
    problems.sort(
        key=lambda problem: order.get(re.split(r"[.:\[]", problem, maxsplit=1)[0], len(order))
    )
    return SiteCheck(None if problems else site, problems, notes)


_DONE = {"disabled": "switched off", "silent": "made silent"}


def _safety_rules_off(named: Mapping[object, object]) -> dict[str, str]:
    """``SiteProfile.safety_rules_off`` read from a profile with problems elsewhere."""
    off = {}
    for rid in SAFETY_RULES:
        try:
            control = RuleControl.model_validate(named.get(rid) or {})
        except ValidationError:
            continue  # its own problem is reported
        if state(control) != "shown":
            off[rid] = state(control)
    return off


def _retire(site: SiteProfile, retired: Mapping[str, str]) -> tuple[SiteProfile, list[str]]:
    """The profile with each retired rule's control moved to its replacement, and a note for
    each retired rule named."""
    named = sorted(set(site.rules) & set(retired))
    if not named:
        return site, []
    rules = {rid: control for rid, control in site.rules.items() if rid not in retired}
    notes = []
    for new in sorted({retired[old] for old in named}):
        olds = sorted(old for old, to in retired.items() if to == new)
        own = new in rules
        if not own:
            rules[new] = _carried_over([site.control(old) for old in olds])
        for old in (o for o in olds if o in site.rules):
            notes.append(
                f"rules.{old}: retired rule, replaced by {new}; "
                + (
                    f"its control is ignored: {new} has its own"
                    if own
                    else f"{new} takes the least restrictive control of {', '.join(olds)} "
                    f"(unnamed ones at the defaults): {words(rules[new])}. Name {new} in the "
                    "profile to set it"
                )
            )
    return site.model_copy(update={"rules": rules}), notes


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


def words(control: RuleControl) -> str:
    """``disabled|silent|shown, snooze N days``: a control as an operator reads it."""
    days = DEFAULT_SNOOZE_DAYS if control.snooze_days is None else control.snooze_days
    return f"{state(control)}, snooze {days} days"


def state(control: RuleControl) -> str:
    return "disabled" if not control.enabled else "silent" if control.silent else "shown"
