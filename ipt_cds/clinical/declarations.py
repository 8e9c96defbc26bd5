"""The declarations of ``cards/facts.yaml``'s ``facts:``: which generic extractor an extraction
runs (ipt_cds/clinical/extractors.py) and with what value sets, windows and limits. They are
validated at start-up; each window or limit names a parameter of parameters.yaml.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from ipt_cds.clinical.medications import Exclusion


class _Decl(BaseModel):
    model_config = ConfigDict(extra="forbid")
    valueset: str
    # With a meaning, the extraction is also a fact of its name that rules may name: True when
    # the record holds any, with that evidence (``why.NAME``).
    meaning: str | None = Field(None, min_length=1)


class ActiveCondition(_Decl):
    extractor: Literal["active_condition"]


class ConditionWithin(_Decl):
    """Conditions dated (recordedDate or onset, either counts) within a window.

    ``status``: ``active`` needs both active and in the window; ``active-or-within`` either;
    ``any`` only the window (any clinical status that is not refuted).
    """

    extractor: Literal["condition_within"]
    days: str
    status: Literal["active", "active-or-within", "any"]


class LatestObservation(_Decl):
    """The most recent reading in the window; a numeric value above ``max`` (a parameter) is a
    data error and is passed over for the reading before it.

    A reading is an Observation's own value, a component's, or that of an Observation a panel
    contains or names in ``hasMember`` (dated by the panel when it has no date of its own).
    Readings of the same day that disagree: with ``same_day: highest`` the higher stands,
    wherever it sits (two answers to one question: the safer one); with ``separate`` an
    Observation's own value stands over a panel's component, that over a sum, then the higher.
    ``sum_of``: a value set of items; a panel answering every one of them reads as their sum,
    which any value recorded as such that day outranks (with ``separate``). ``answers``: a value
    set whose concepts score an answer given as a code (their ordinalValue), or null for a
    reading whose coded answers are read for their codes only (pregnancy status). It must be
    written either way: a score question left without it would read "More than half the days"
    as no score at all.
    """

    extractor: Literal["latest_observation"]
    days: str
    max: str | None = None
    same_day: Literal["highest", "separate"] = "highest"
    sum_of: str | None = None
    answers: str | None


class CurrentMedication(_Decl):
    """Current MedicationRequests (active, on-hold) and MedicationStatements (active, intended,
    on-hold) of the class, minus the products ``not_when`` names."""

    extractor: Literal["current_medication"]
    ingredients: str
    not_when: list[Exclusion] = Field(default_factory=list)


class CurrentOrder(_Decl):
    """ServiceRequests in the record with one of ``statuses`` (a ``draft`` in the record counts
    as drafted, like one in context.draftOrders)."""

    extractor: Literal["current_order"]
    statuses: list[str] = Field(default_factory=lambda: ["active", "on-hold"], min_length=1)
    # Only orders authored within this window (a parameter); an undated one is left out.
    days: str | None = None


class RecentProcedure(_Decl):
    extractor: Literal["recent_procedure"]
    days: str


class DraftOrders(_Decl):
    """Draft orders in the value set; by text only when no coding is in ``unless_coded``."""

    extractor: Literal["draft_orders"]
    resource: Literal["ServiceRequest", "MedicationRequest"]
    ingredients: str | None = None
    not_when: list[Exclusion] = Field(default_factory=list)
    text_includes: list[str] = Field(default_factory=list)
    text_excludes: list[str] = Field(default_factory=list)
    unless_coded: str | None = None


Declaration = Annotated[
    ActiveCondition
    | ConditionWithin
    | LatestObservation
    | CurrentMedication
    | CurrentOrder
    | RecentProcedure
    | DraftOrders,
    Field(discriminator="extractor"),
]
