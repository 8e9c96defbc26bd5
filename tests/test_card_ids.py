"""Card uuids carry their service and rule (RFC 9562 version 8), so that feedback on a card whose
"card shown" row was lost is still attributed."""

from __future__ import annotations

import hashlib
import itertools
import uuid

import pytest
from fastapi.testclient import TestClient

from ipt_cds.knowledge.base import Knowledge
from ipt_cds.protocol import card_ids
from ipt_cds.protocol.card_ids import CardIds, CodeCollision

from .conftest import SERVICE_OF_HOOK, AppFactory, full_prefetch, hook_request, hypertension
from .rules import CountingRule

SERVICES = ("ipt-order-select", "ipt-order-sign", "ipt-patient-view")
RULES = ("ipt-suitable", "ipt-psychosis", "counts-conditions")


def test_a_minted_uuid_is_a_version_8_rfc_9562_uuid() -> None:
    text = card_ids.mint("ipt-order-sign", "ipt-suitable")
    value = uuid.UUID(text)
    assert str(value) == text, "the canonical lower-case form"
    assert value.version == 8
    assert value.variant == uuid.RFC_4122  # the variant bits are 10
    assert (value.int >> 76) & 0xF == 8
    assert (value.int >> 62) & 0b11 == 0b10


def test_the_codes_are_truncated_sha256_of_the_ids_in_the_leading_bits() -> None:
    value = uuid.UUID(card_ids.mint("ipt-order-sign", "ipt-suitable")).int
    rule = hashlib.sha256(b"ipt-suitable").digest()[:4]
    service = hashlib.sha256(b"ipt-order-sign").digest()[:2]
    assert value >> 96 == int.from_bytes(rule, "big")
    assert (value >> 80) & 0xFFFF == int.from_bytes(service, "big")
    assert card_ids.codes(str(uuid.UUID(int=value))) == (
        int.from_bytes(service, "big"),
        int.from_bytes(rule, "big"),
    )


def test_every_service_and_rule_round_trip() -> None:
    ids = CardIds(SERVICES, RULES)
    for service, rule in itertools.product(SERVICES, RULES):
        assert ids.decode(card_ids.mint(service, rule)) == (service, rule)
        assert ids.decode(card_ids.mint(service, rule).upper()) == (service, rule)


def test_uuids_are_unique_and_every_random_bit_varies() -> None:
    minted = [card_ids.mint("ipt-order-sign", "ipt-suitable") for _ in range(50_000)]
    assert len(set(minted)) == len(minted)
    values = [uuid.UUID(u).int for u in minted]
    ones = zeros = 0
    for v in values:
        ones |= v
        zeros |= ~v
    random_mask = ((1 << 12) - 1) << 64 | ((1 << 62) - 1)
    assert card_ids.RANDOM_BITS == 74 == bin(random_mask).count("1")
    assert ones & zeros & random_mask == random_mask, "each random bit is seen as 0 and as 1"
    fixed = ~random_mask & ((1 << 128) - 1)
    assert len({v & fixed for v in values}) == 1, "only the random bits vary"


@pytest.mark.parametrize(
    "foreign",
    [
        "version-4",
        "version-1",
        "00000000-0000-0000-0000-000000000000",
        "not-a-uuid",
        "",
        "f3e72336-d750-8452-b448-91d636c5a9e4-extra",
        "version-8-microsoft-variant",
    ],
)
def test_a_uuid_we_did_not_issue_is_unattributed(foreign: str) -> None:
    # Fresh uuids are made in the test, not in its name: parallel workers must collect the same
    # test ids.
    made = {
        "version-4": lambda: str(uuid.uuid4()),
        "version-1": lambda: str(uuid.uuid1()),
        # version 8 but the Microsoft variant (110)
        "version-8-microsoft-variant": lambda: str(
            uuid.UUID(int=(uuid.UUID(card_ids.mint("ipt-order-sign", "x")).int | (1 << 62)))
        ),
    }
    value = made[foreign]() if foreign in made else foreign
    assert CardIds(SERVICES, [*RULES, "x"]).decode(value) is None


def test_a_version_8_uuid_with_unknown_codes_is_unattributed() -> None:
    ids = CardIds(SERVICES, RULES)
    assert ids.decode(card_ids.mint("ipt-order-sign", "a-rule-since-removed")) is None
    assert ids.decode(card_ids.mint("another-service", "ipt-suitable")) is None


def test_ids_that_share_a_code_are_refused_at_start_up() -> None:
    # 16-bit service codes: a collision turns up within a few hundred names.
    seen: dict[int, str] = {}
    for n in itertools.count():
        name = f"service-{n}"
        first = seen.setdefault(card_ids.service_code(name), name)
        if first != name:
            break
    with pytest.raises(CodeCollision, match=f"services '{first}' and '{name}' share"):
        CardIds([first, name], RULES)


def test_the_shipped_knowledge_has_no_colliding_codes(knowledge: Knowledge) -> None:
    ids = CardIds(knowledge.services, [r.id for r in knowledge.rulebook.rules])
    assert len(ids.services) == len(knowledge.services) + 1, "and the preview's"
    assert len(ids.rules) == len(knowledge.rulebook.rules)


def test_cards_answered_carry_their_service_and_rule(make_client: AppFactory) -> None:
    client: TestClient = make_client(rules=(CountingRule("counts-conditions", "Condition"),))
    ids = client.app.state.ipt.pipeline.card_ids  # type: ignore[attr-defined]
    for hook, service in SERVICE_OF_HOOK.items():
        body = hook_request(hook, full_prefetch(hypertension("c1")))
        cards = client.post(f"/cds-services/{service}", json=body).json()["cards"]
        assert cards
        for card in cards:
            assert ids.decode(card["uuid"]) == (service, card["source"]["topic"]["code"])
