"""What a FHIR server says it supports (its CapabilityStatement), and a search shaped to it.

Real servers differ: US Core dropped MedicationStatement, a strict server refuses a search
parameter or an ``_include`` it does not list, and a server may have no CapabilityStatement at
all. A search is shaped to what the server lists: a resource type it lacks is not asked for, a
parameter it lacks is left out (and applied here, see ipt_cds/fhir/filters.py), an ``_include``
it does not list is left out (the references are then read by id). Without a readable
CapabilityStatement every search is sent as written.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

# Parameters every server supports, or that only shape an answer: never left out.
_ALWAYS = frozenset({"_id", "_count", "_sort", "_total", "_format"})
_INCLUDES = ("_include", "_revinclude")


@dataclass(frozen=True)
class Offer:
    """One resource type as the server lists it: None where the statement says nothing (so
    nothing is assumed missing)."""

    params: frozenset[str] | None
    includes: frozenset[str] | None


@dataclass(frozen=True)
class Capabilities:
    """The resource types a server offers through its REST API (server mode)."""

    offers: dict[str, Offer]

    @classmethod
    def parse(cls, statement: Any) -> Capabilities | None:
        """None unless it is a CapabilityStatement with a server ``rest`` listing resources: an
        empty or other answer says nothing about the server."""
        if not isinstance(statement, dict) or statement.get("resourceType") != (
            "CapabilityStatement"
        ):
            return None
        offers: dict[str, Offer] = {}
        for rest in _list(statement.get("rest")):
            if not isinstance(rest, dict) or rest.get("mode", "server") != "server":
                continue
            for resource in _list(rest.get("resource")):
                kind = resource.get("type") if isinstance(resource, dict) else None
                if isinstance(kind, str):
                    offers[kind] = Offer(
                        _names(resource, "searchParam"), _strings(resource.get("searchInclude"))
                    )
        return cls(offers) if offers else None

    def offers_type(self, kind: str) -> bool:
        return kind in self.offers

    def shape(self, kind: str, query: str) -> tuple[str, tuple[str, ...]]:
        """The query with what the server does not list left out, and the names of the search
        parameters left out (an ``_include`` left out is not one: it filters nothing)."""
        offer = self.offers.get(kind)
        if offer is None:
            return query, ()
        kept: list[tuple[str, str]] = []
        dropped: list[str] = []
        pairs = parse_qsl(query, keep_blank_values=True)
        for name, value in pairs:
            if name in _INCLUDES:
                if offer.includes is not None and value in offer.includes:
                    kept.append((name, value))
            elif name in _ALWAYS or offer.params is None or _base(name) in offer.params:
                kept.append((name, value))
            else:
                dropped.append(name)
        if len(kept) == len(pairs):
            return query, ()
        return urlencode(kept, safe=",|:/"), tuple(dropped)


def _base(name: str) -> str:
    """``code:text`` and ``patient:Patient`` are the ``code`` and ``patient`` parameters."""
    return name.partition(":")[0]


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _names(resource: dict[str, Any], field: str) -> frozenset[str] | None:
    if field not in resource:
        return None
    return frozenset(
        p["name"] for p in _list(resource[field]) if isinstance(p, dict) and "name" in p
    )


def _strings(value: Any) -> frozenset[str] | None:
    if value is None:
        return None
    return frozenset(v for v in _list(value) if isinstance(v, str))


class CapabilityCache:
    """Each server's statement (or that it has none), kept a while: bounded, so a stream of
    servers cannot grow it, and aged, so a server's upgrade is seen."""

    def __init__(self, size: int, lifetime_seconds: float) -> None:
        self._size = size
        self._lifetime = lifetime_seconds
        # base -> (until, capabilities)
        self._known: OrderedDict[str, tuple[float, Capabilities | None]] = OrderedDict()

    def get(self, base: str) -> tuple[bool, Capabilities | None]:
        """(known, capabilities): known is False when the server must be asked."""
        entry = self._known.get(base)
        if entry is None or time.monotonic() > entry[0]:
            return False, None
        self._known.move_to_end(base)
        return True, entry[1]

    def put(
        self, base: str, capabilities: Capabilities | None, seconds: float | None = None
    ) -> None:
        keep = self._lifetime if seconds is None else seconds
        self._known[base] = (time.monotonic() + keep, capabilities)
        self._known.move_to_end(base)
        while len(self._known) > self._size:
            self._known.popitem(last=False)
