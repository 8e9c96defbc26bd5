"""Cards shaped for the EHR that shows them: the site profile's ``ehr`` (spec section 5).

``generic`` is the CDS Hooks 2.0 specification and changes nothing. ``epic`` applies what Epic's
published CDS Hooks documentation says its client accepts (docs/site-profile.md, "The Epic
profile", lists each point and where it comes from):

- one action per suggestion: a suggestion of several actions becomes one suggestion per action,
  each labelled with its action's description, which Epic shows in place of the label;
- ``selectionBehavior`` ``any`` only;
- ``source.topic.code`` letters and digits only, at most 100, and the same for every card of a
  rule: Epic ties a clinician's override to it, so it must not change between calls.

What a card says, its indicator, links and override reasons are the same under both profiles.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from typing import Literal

from ipt_cds.protocol.models import Card, Suggestion

Ehr = Literal["generic", "epic"]

# Epic places an order from one of its own order preference list items; our standard codes alone
# name no orderable it knows (Epic's "Codesets for Create APIs").
EPIC_PREFERENCE_LIST = "urn:com.epic.cdshooks.action.code.system.preference-list-item"
EPIC_TOPIC_MAX_CHARS = 100
_ALPHANUMERIC = re.compile(r"[A-Za-z0-9]+")


def epic_topic_code(rule_id: str) -> str:
    """``ipt-chd`` -> ``IptChd``: static per rule, letters and digits only."""
    return "".join(part.capitalize() for part in rule_id.split("-"))


def check_topic_codes(rule_ids: Iterable[str]) -> None:
    """Start-up check that every rule has an Epic topic code of its own."""
    seen: dict[str, str] = {}
    for rule_id in rule_ids:
        code = epic_topic_code(rule_id)
        if not _ALPHANUMERIC.fullmatch(code) or len(code) > EPIC_TOPIC_MAX_CHARS:
            raise ValueError(f"rule {rule_id!r}: no valid Epic topic code ({code!r})")
        # Compared without case: nothing says Epic keeps the case of a topic code.
        other = seen.setdefault(code.lower(), rule_id)
        if other != rule_id:
            raise ValueError(f"rules {other!r} and {rule_id!r} share the Epic topic code {code!r}")


def shape(card: Card, ehr: Ehr) -> Card:
    if ehr == "generic":
        return card
    update: dict[str, object] = {}
    if card.suggestions:
        update["suggestions"] = [part for s in card.suggestions for part in _one_action_each(s)]
        update["selectionBehavior"] = "any"
    topic = card.source.topic
    if topic is not None:
        epic = topic.model_copy(update={"code": epic_topic_code(topic.code)})
        update["source"] = card.source.model_copy(update={"topic": epic})
    return card.model_copy(update=update)


def _one_action_each(suggestion: Suggestion) -> list[Suggestion]:
    actions = suggestion.actions or []
    if len(actions) < 2:
        return [suggestion]
    return [
        Suggestion(
            label=action.description,
            uuid=str(uuid.uuid4()),
            isRecommended=suggestion.isRecommended,
            actions=[action],
        )
        for action in actions
    ]
