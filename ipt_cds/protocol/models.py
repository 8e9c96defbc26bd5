"""Pydantic models of the CDS Hooks 2.0 objects, one class per object of the specification.

Field names are the specification's own JSON names (camelCase) so that a model reads like the
spec. Responses never carry ``null``, ``""``, ``[]`` or ``{}`` for an optional field: the shared
serializer drops them. FHIR resources stay plain JSON objects here; the tolerant reader
(``record``) interprets them.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from ipt_cds.protocol.vocabulary import SUMMARY_MAX_CHARS, Indicator

_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_REFERENCE = re.compile(r"[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}")
_EMPTY: tuple[Any, ...] = (None, "", [], {})


def _fhir_id(value: str) -> str:
    if not _FHIR_ID.fullmatch(value):
        raise ValueError(
            "must be a FHIR id (letters, digits, '-' and '.', at most 64), not a reference"
        )
    return value


def _reference(value: str) -> str:
    if not _REFERENCE.fullmatch(value):
        raise ValueError("must be a relative reference of the form {type}/{id}")
    return value


def _storable(value: str) -> str:
    # Kept verbatim in the store, whose PostgreSQL text columns cannot hold NUL: one such id
    # would fail its insert (a 500 for feedback, a lost batch of card rows for a hook call).
    if "\x00" in value:
        raise ValueError("must not contain the NUL character")
    return value


def _instant_text(value: Any) -> Any:
    # pydantic's lax datetime would take a number as Unix seconds (0 is 1970) and a date as
    # midnight: CDS Hooks sends an instant, a date-time string with its offset.
    if not isinstance(value, str):
        raise ValueError("is a date-time string with its offset, e.g. 2026-11-29T10:00:00Z")
    return value


def _utc_representable(value: datetime) -> datetime:
    # The store keeps UTC: 9999-12-31T23:59:59-14:00 has no UTC form.
    if value.tzinfo is not None:
        try:
            value.astimezone(UTC)
        except OverflowError:
            raise ValueError("is outside the range of dates") from None
    return value


def _resource(value: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(value.get("resourceType"), str):
        raise ValueError("is not a FHIR resource (no resourceType)")
    return value


FhirId = Annotated[str, AfterValidator(_fhir_id)]
Reference = Annotated[str, AfterValidator(_reference)]
NonEmptyStr = Annotated[str, Field(min_length=1)]
Resource = dict[str, Any]
# A FHIR resource we receive: any JSON object with a resourceType; read tolerantly later.
InResource = Annotated[dict[str, Any], AfterValidator(_resource)]


class CdsModel(BaseModel):
    """Base of the objects we send: strict in, and no empty optional field out."""

    model_config = ConfigDict(extra="forbid")

    @model_serializer(mode="wrap")
    def _drop_empty(
        self, handler: SerializerFunctionWrapHandler, _info: SerializationInfo
    ) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        fields = type(self).model_fields
        return {
            k: v
            for k, v in data.items()
            if not (v in _EMPTY and k in fields and not fields[k].is_required())
        }


class Inbound(BaseModel):
    """Base of the objects we receive: CDS Hooks lets clients add ``extension`` and new keys."""

    model_config = ConfigDict(extra="allow")


# --- discovery -----------------------------------------------------------------------------


# Prefetch template tokens of CDS Hooks 2.0: context fields and the four user-derived ids.
PREFETCH_TOKEN = re.compile(r"\{\{\s*([A-Za-z.]+)\s*\}\}")
PREFETCH_USER_TOKENS = frozenset(
    {"userPractitionerId", "userPractitionerRoleId", "userPatientId", "userRelatedPersonId"}
)


class Service(CdsModel):
    hook: NonEmptyStr
    id: NonEmptyStr
    title: str | None = None
    description: NonEmptyStr
    prefetch: dict[str, str] | None = None
    usageRequirements: str | None = None


class DiscoveryResponse(CdsModel):
    services: list[Service]


# --- responses -----------------------------------------------------------------------------


class Coding(CdsModel):
    # Clients echo codings back in feedback, sometimes with version or userSelected.
    model_config = ConfigDict(extra="ignore")

    code: NonEmptyStr
    system: str | None = None
    display: str | None = None


class Source(CdsModel):
    label: NonEmptyStr
    url: str | None = None
    icon: str | None = None
    topic: Coding | None = None


class Link(CdsModel):
    label: NonEmptyStr
    url: NonEmptyStr
    type: Literal["absolute", "smart"]
    appContext: str | None = None


class Action(CdsModel):
    type: Literal["create", "update", "delete"]
    description: NonEmptyStr
    resource: Resource | None = None
    resourceId: str | None = None

    @model_validator(mode="after")
    def _target(self) -> Action:
        if self.type == "delete" and not self.resourceId:
            raise ValueError("a delete action names its resourceId")
        if self.type in ("create", "update") and not self.resource:
            raise ValueError(f"a {self.type} action carries the resource")
        return self


class Suggestion(CdsModel):
    label: NonEmptyStr
    uuid: str | None = None
    isRecommended: bool | None = None
    actions: list[Action] | None = None


class Card(CdsModel):
    uuid: str | None = None
    summary: Annotated[str, Field(min_length=1, max_length=SUMMARY_MAX_CHARS)]
    detail: str | None = None
    indicator: Indicator
    source: Source
    suggestions: list[Suggestion] | None = None
    selectionBehavior: Literal["at-most-one", "any"] | None = None
    overrideReasons: list[Coding] | None = None
    links: list[Link] | None = None

    @model_validator(mode="after")
    def _selection(self) -> Card:
        if self.suggestions and not self.selectionBehavior:
            raise ValueError("a card with suggestions states its selectionBehavior")
        return self


class CdsResponse(CdsModel):
    cards: list[Card]
    systemActions: list[Action] | None = None


# --- hook requests -------------------------------------------------------------------------


class FhirAuthorization(Inbound):
    access_token: NonEmptyStr = Field(repr=False)
    token_type: Literal["Bearer", "bearer"]
    expires_in: int
    scope: NonEmptyStr
    subject: NonEmptyStr
    patient: FhirId | None = None


class BundleEntry(Inbound):
    fullUrl: str | None = None
    resource: InResource


class DraftOrders(Inbound):
    resourceType: Literal["Bundle"]
    entry: list[BundleEntry] = Field(default_factory=list)


class PatientViewContext(Inbound):
    userId: Reference
    patientId: FhirId
    encounterId: FhirId | None = None


class OrderSignContext(PatientViewContext):
    draftOrders: DraftOrders


class OrderSelectContext(OrderSignContext):
    selections: Annotated[list[Reference], Field(min_length=1)]

    @field_validator("selections")
    @classmethod
    def _selected_are_drafts(cls, selections: list[str], info: ValidationInfo) -> list[str]:
        orders = info.data.get("draftOrders")
        if orders is None:  # already reported as missing
            return selections
        drafts = {f"{e.resource['resourceType']}/{e.resource.get('id')}" for e in orders.entry}
        for selection in selections:
            if selection not in drafts:
                raise ValueError(f"{selection} is not among the draftOrders")
        return selections


class HookRequest(Inbound):
    hook: NonEmptyStr
    hookInstance: Annotated[str, Field(min_length=1, max_length=128), AfterValidator(_storable)]
    fhirAuthorization: FhirAuthorization | None = None
    fhirServer: Annotated[str | None, Field(pattern=r"^https?://", validate_default=True)] = None
    context: PatientViewContext
    prefetch: dict[str, InResource | None] | None = None
    extension: dict[str, Any] | None = None

    @field_validator("fhirServer")
    @classmethod
    def _server_with_token(cls, server: str | None, info: ValidationInfo) -> str | None:
        if server is None and info.data.get("fhirAuthorization") is not None:
            raise ValueError("fhirServer is required when fhirAuthorization is given")
        return server

    # Only a context that declares them has drafts or selections: another hook's context may
    # carry a key of that name as an unchecked extra, which must be ignored, not read.
    @property
    def draft_orders(self) -> list[Resource]:
        if not isinstance(self.context, OrderSignContext):
            return []
        return [e.resource for e in self.context.draftOrders.entry]

    @property
    def selections(self) -> list[str]:
        return list(self.context.selections) if isinstance(self.context, OrderSelectContext) else []


class PatientViewRequest(HookRequest):
    hook: Literal["patient-view"]
    context: PatientViewContext


class OrderSignRequest(HookRequest):
    hook: Literal["order-sign"]
    context: OrderSignContext


class OrderSelectRequest(HookRequest):
    hook: Literal["order-select"]
    context: OrderSelectContext


def _by_hook(*models: type[HookRequest]) -> dict[str, type[HookRequest]]:
    """Key each model by the hook its ``hook`` field admits, so the name is written once."""
    return {get_args(m.model_fields["hook"].annotation)[0]: m for m in models}


# The hooks we answer, each with the model its request must validate against: discovery
# (cards/services.yaml) may offer only these, and the OpenAPI document describes these.
# vocabulary.Hook spells the same names for type checking; tests/test_models.py keeps the two
# equal.
REQUEST_MODELS: dict[str, type[HookRequest]] = _by_hook(
    PatientViewRequest,
    OrderSignRequest,
    OrderSelectRequest,
)


# --- feedback ------------------------------------------------------------------------------


class AcceptedSuggestion(Inbound):
    id: NonEmptyStr


class OverrideReason(Inbound):
    reason: Coding | None = None
    userComment: str | None = None


class FeedbackItem(Inbound):
    card: Annotated[str, Field(min_length=1, max_length=128), AfterValidator(_storable)]
    outcome: Literal["accepted", "overridden"]
    acceptedSuggestions: list[AcceptedSuggestion] | None = None
    overrideReason: OverrideReason | None = None
    # Epic sends a list under the plural name; a bare Coding per item is accepted too.
    overrideReasons: list[OverrideReason | Coding] | None = None
    outcomeTimestamp: Annotated[
        AwareDatetime, BeforeValidator(_instant_text), AfterValidator(_utc_representable)
    ]

    @model_validator(mode="after")
    def _outcome_fields(self) -> FeedbackItem:
        if self.outcome == "accepted":
            if not self.acceptedSuggestions:
                raise ValueError("an accepted outcome lists its acceptedSuggestions")
            if self.overrideReason or self.overrideReasons:
                raise ValueError("an accepted outcome carries no overrideReason")
        elif self.acceptedSuggestions:
            raise ValueError("an overridden outcome carries no acceptedSuggestions")
        return self

    def reasons(self) -> list[Coding]:
        """Every coded override reason, whichever way the client sent it."""
        given: list[OverrideReason | Coding] = [
            *([self.overrideReason] if self.overrideReason else []),
            *(self.overrideReasons or []),
        ]
        out = []
        for item in given:
            coding = item.reason if isinstance(item, OverrideReason) else item
            if coding is not None:
                out.append(coding)
        return out


class FeedbackRequest(Inbound):
    feedback: Annotated[list[FeedbackItem], Field(min_length=1, max_length=1000)]


# --- our own answers -----------------------------------------------------------------------


class ErrorBody(CdsModel):
    code: str
    message: str
    field: str | None = None


class Health(CdsModel):
    # "degraded": ready to answer hook calls, but the database is away or the spool is filling
    # (what is degraded says which); load balancers should keep the instance (200).
    status: Literal["ok", "ready", "degraded", "unavailable"]
    reason: str | None = None
    degraded: list[Literal["database", "spool"]] | None = None
    # Entries waiting in this worker's spool for the database.
    spooled: int | None = None


class FeedbackAck(CdsModel):
    received: int
    # Items new to the database (an item sent again is stored once).
    stored: int
    # Items kept in the spool that the database does not have yet (it is away or slow): they
    # are stored, once, when it has them.
    pending: int | None = None


class ReasonCount(CdsModel):
    system: str | None = None
    code: str
    display: str | None = None
    count: int


class RuleStats(CdsModel):
    rule: str
    shown: int
    # Computed for a rule a site made silent, recorded, never returned.
    silent: int = 0
    # Held back: already shown to this patient within the repeat window, or snoozed after an
    # override (ipt_cds/storage/memory.py).
    suppressedAsRepeat: int = 0
    suppressedBySnooze: int = 0
    accepted: int
    overridden: int
    overrideReasons: list[ReasonCount] | None = None


class ServiceStats(CdsModel):
    service: str
    rules: list[RuleStats]


class CardStats(CdsModel):
    services: list[ServiceStats]
