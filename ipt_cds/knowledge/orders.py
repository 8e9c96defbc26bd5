"""``cards/orders.yaml``: the orders a card's suggestion can make, as data. Checked at start-up
(each template a ServiceRequest's elements with a code, each ``removes`` a fact of references,
each orderable's links known); ``Orders.build`` turns one into the actions of a suggestion.
The clinical helpers that fill a template for a patient are in ipt_cds/clinical/suggestions.py;
the codes, texts, schedules and priorities are all in the file."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ipt_cds.clinical.fact_model import Facts
from ipt_cds.clinical.suggestions import removals, service_request
from ipt_cds.knowledge.datafiles import parse
from ipt_cds.knowledge.errors import KnowledgeError
from ipt_cds.knowledge.expressions import FactTypes
from ipt_cds.protocol.models import Action

# What the engine writes itself: a template may not set these.
_ENGINE_ELEMENTS = {"resourceType", "status", "intent", "subject", "reasonReference", "reasonCode"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Coding(_Strict):
    system: str = Field(min_length=1)
    code: str = Field(min_length=1)
    display: str = Field(min_length=1)


class _Concept(_Strict):
    coding: list[_Coding] = Field(min_length=1)
    text: str = Field(min_length=1)


class _Orderable(_Strict):
    links: list[str] = Field(default_factory=list)


class OrderDef(_Strict):
    orderable: str | None = None
    create: dict[str, Any] | None = None
    label: str | None = None
    removes: str | None = None
    removal: str | None = None

    @model_validator(mode="after")
    def _makes_something(self) -> OrderDef:
        if self.create is None and self.removes is None:
            raise ValueError("an order creates (create) or removes drafts (removes), or both")
        if self.create is not None:
            if "code" not in self.create:
                raise ValueError("create: a ServiceRequest needs its code")
            _Concept.model_validate(self.create["code"])
            written = sorted(_ENGINE_ELEMENTS & set(self.create))
            if written:
                raise ValueError(f"create: {written[0]} is written by the engine")
        if self.create is not None and self.orderable is None:
            raise ValueError("an order that creates names its orderable")
        return self


class OrdersFile(_Strict):
    orderables: dict[str, _Orderable]
    orders: dict[str, OrderDef] = Field(min_length=1)


class Orders:
    def __init__(self, spec: OrdersFile) -> None:
        self._orders = dict(spec.orders)
        self._beside = {name: tuple(o.links) for name, o in spec.orderables.items()}

    @classmethod
    def load(
        cls, path: Path, facts: FactTypes, links: Collection[str], orderables: Collection[str]
    ) -> Orders:
        """``links``: the keys a card's link may have; ``orderables``: the names a site
        profile may give codes under."""
        spec = parse(path, OrdersFile)
        unknown_orderables = sorted(set(spec.orderables) - set(orderables))
        if unknown_orderables:
            raise KnowledgeError(
                f"{path}: orderables: {unknown_orderables[0]!r} is not one a site profile can "
                f"name ({', '.join(sorted(orderables))})"
            )
        for name, order in spec.orders.items():
            if order.orderable is not None and order.orderable not in spec.orderables:
                raise KnowledgeError(
                    f"{path}: orders.{name}.orderable: {order.orderable!r} is not in orderables"
                )
            if order.removes is not None and order.removes not in facts:
                raise KnowledgeError(f"{path}: orders.{name}.removes: no fact {order.removes!r}")
        for name, orderable in spec.orderables.items():
            unknown = [key for key in orderable.links if key not in links]
            if unknown:
                raise KnowledgeError(
                    f"{path}: orderables.{name}.links: {unknown[0]!r} is not a link key"
                )
        return cls(spec)

    def __contains__(self, action: object) -> bool:
        return action in self._orders

    def orderable_of(self, action: str) -> str | None:
        """The name a site profile gives its codes for what ``action`` creates."""
        return self._orders[action].orderable if action in self._orders else None

    def links_beside(self, orderables: Collection[str]) -> list[str]:
        """Keys of the links shown beside a card suggesting these orderables, in the file's
        order."""
        return [key for name, keys in self._beside.items() if name in orderables for key in keys]

    def code_of(self, action: str) -> dict[str, Any]:
        """The code of what ``action`` creates (a CodeableConcept, as in the file)."""
        create = self._orders[action].create
        if create is None:
            raise KeyError(action)
        code: dict[str, Any] = create["code"]
        return code

    def build(
        self,
        action: str,
        label: str,
        note: str | None,
        facts: Facts,
        local_codes: Mapping[str, list[dict[str, Any]]] | None = None,
        reason: str | None = None,
    ) -> list[Action]:
        """The suggestion's actions: the drafts removed, then the order created (with the
        site's own codes after ours); ``reason`` names the fact whose evidence the order is for
        (default: the depression)."""
        order = self._orders[action]
        out: list[Action] = []
        if order.removes is not None:
            out = removals(facts, order.removes, order.removal or label)
            if order.create is not None and not out:
                return []  # a replacement with nothing to replace
        if order.create is not None:
            extra = (local_codes or {}).get(order.orderable or "", [])
            resource = service_request(order.create, facts, note, reason, extra)
            out.append(Action(type="create", description=order.label or label, resource=resource))
        return out
