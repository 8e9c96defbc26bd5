"""Card uuids that say which service and rule made the card (RFC 9562 version-8 UUIDs).

Feedback names a card only by its uuid. The "card shown" rows that join a uuid to its rule are
written in batches, so a crash loses the last moment of them; a uuid that itself carries its
service and rule keeps that feedback attributable without them.

Layout, most significant bit first (128 bits, written ``rrrrrrrr-ssss-8xxx-Vxxx-xxxxxxxxxxxx``):

    bits   0-31   rule code     first 4 bytes of SHA-256(rule id, UTF-8)
    bits  32-47   service code  first 2 bytes of SHA-256(service id, UTF-8)
    bits  48-51   version       0b1000 (8, "custom")
    bits  52-63   random        12 bits
    bits  64-65   variant       0b10 (RFC 9562)
    bits  66-127  random        62 bits

74 random bits, from ``os.urandom`` as ``uuid4`` takes them. Two cards can only collide if the
same service and rule made both, so a collision never misattributes feedback. The codes are
hashes, not secrets: the uuid tells anyone which rule fired, which the card's
``source.topic`` says anyway.

A code is a hash of the id alone, never a position: adding or removing a rule changes no other
rule's code. A code maps back to an id only given the ids it may be: ``CardIds`` is built from
the knowledge base's services and rules, and the rules' retired ids (``retired`` in
``cards/rules/_index.yaml``), so that cards made before a rule was replaced stay attributed to
the id they were made under; it refuses two ids of one kind that share a code. A uuid that is
not version 8 with this variant, or whose codes are not known, is not ours: ``decode`` answers
None.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable, Iterable
from functools import lru_cache

RULE_CODE_BITS = 32
SERVICE_CODE_BITS = 16
RANDOM_BITS = 74
VERSION = 8
_RANDOM_LOW_BITS = 62  # after the variant; the other 12 follow the version nibble
_VARIANT = 0b10 << _RANDOM_LOW_BITS
_RANDOM_BYTES = (RANDOM_BITS + 7) // 8


def _code(identifier: str, bits: int) -> int:
    digest = hashlib.sha256(identifier.encode("utf-8")).digest()
    return int.from_bytes(digest[: bits // 8], "big")


def rule_code(rule_id: str) -> int:
    return _code(rule_id, RULE_CODE_BITS)


def service_code(service_id: str) -> int:
    return _code(service_id, SERVICE_CODE_BITS)


@lru_cache(maxsize=4096)
def _prefix(service_id: str, rule_id: str) -> str:
    """The first 14 characters, the same for every card of one service and rule."""
    return f"{rule_code(rule_id):08x}-{service_code(service_id):04x}-{VERSION:x}"


def mint(service_id: str, rule_id: str) -> str:
    """A new card uuid, as the canonical 36-character string."""
    bits = int.from_bytes(os.urandom(_RANDOM_BYTES), "big") >> (8 * _RANDOM_BYTES - RANDOM_BITS)
    high = bits >> _RANDOM_LOW_BITS
    tail = f"{_VARIANT | (bits & ((1 << _RANDOM_LOW_BITS) - 1)):016x}"
    return f"{_prefix(service_id, rule_id)}{high:03x}-{tail[:4]}-{tail[4:]}"


def codes(card_uuid: str) -> tuple[int, int] | None:
    """``(service code, rule code)`` of a uuid laid out as above; None for any other string."""
    try:
        value = uuid.UUID(card_uuid)
    except (ValueError, TypeError):
        return None
    if value.version != VERSION or value.variant != uuid.RFC_4122:
        return None
    number = value.int
    rule = number >> (128 - RULE_CODE_BITS)
    service = (number >> (128 - RULE_CODE_BITS - SERVICE_CODE_BITS)) & (
        (1 << SERVICE_CODE_BITS) - 1
    )
    return service, rule


# Services no EHR calls, whose cards are minted apart: the preview's (ipt_cds/http/preview.py),
# so that feedback on them is counted apart from every service an EHR calls.
PREVIEW_SERVICE = "preview"


class CodeCollision(ValueError):
    """Two ids of one kind hash to the same code: one of them must be renamed."""


class CardIds:
    """Reads card uuids back to ``(service id, rule id)`` for a known set of services and rules.

    Built once at start-up; raises ``CodeCollision`` when two services or two rules share a code
    (with 32-bit rule codes, about one knowledge base of 30 rules in ten million)."""

    def __init__(
        self, services: Iterable[str], rules: Iterable[str], retired: Iterable[str] = ()
    ) -> None:
        self.services = _by_code([*services, PREVIEW_SERVICE], service_code, "services")
        self.rules = _by_code([*rules, *retired], rule_code, "rules")

    def decode(self, card_uuid: str) -> tuple[str, str] | None:
        found = codes(card_uuid)
        if found is None:
            return None
        service, rule = self.services.get(found[0]), self.rules.get(found[1])
        if service is None or rule is None:
            return None
        return service, rule


def _by_code(ids: Iterable[str], code_of: Callable[[str], int], kind: str) -> dict[int, str]:
    by_code: dict[int, str] = {}
    for identifier in ids:
        code = code_of(identifier)
        other = by_code.setdefault(code, identifier)
        if other != identifier:
            raise CodeCollision(
                f"{kind} {other!r} and {identifier!r} share the card-uuid code {code:#x}; "
                "rename one of them"
            )
    return by_code
