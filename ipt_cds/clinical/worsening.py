"""Whether the record is worse than when a card was shown or overridden (the clinical spec 7.1).

A card held back (snoozed after an override, or already shown this visit) comes back at once
when its trigger worsens. What is compared is kept by the card memory as codes and keyed hashes,
never values or dates: the PHQ-9 severity band, the suicidal-ideation level, keyed hashes of the
references its basis came from, and which of psychosis, bipolar disorder, pregnancy and the
postpartum period are on record.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from ipt_cds.clinical.fact_model import Facts

# Lowest first. "unknown" is no band: from it, only moderate or worse counts as higher.
BANDS = ("minimal", "mild", "moderate", "moderately-severe", "severe")
UNKNOWN_BAND = "unknown"
IDEATION = ("none", "history", "low", "high")
# Facts whose appearance changes what a card must say (or whether IPT is on the table at all).
FLAGS = ("psychosis", "bipolar", "pregnant", "postpartum")


class State(Protocol):
    """What a card memory row keeps of the record; ``RecordState`` and the store's rows."""

    @property
    def band(self) -> str: ...

    @property
    def ideation(self) -> str: ...

    @property
    def basis(self) -> frozenset[str]: ...

    @property
    def flags(self) -> frozenset[str]: ...


@dataclass(frozen=True)
class RecordState:
    band: str = UNKNOWN_BAND
    ideation: str = "none"
    # Keyed hashes of the references behind the suicidal-ideation level.
    basis: frozenset[str] = frozenset()
    flags: frozenset[str] = frozenset()

    @classmethod
    def of(cls, facts: Facts, keyed: Callable[[Iterable[str]], frozenset[str]]) -> RecordState:
        """The state of a call's facts; ``keyed`` hashes references as the memory keeps them."""
        values = facts.values
        # The PHQ-9 band: a severity read from a diagnosis code alone is no band, so a PHQ-9 that
        # later measures moderate or worse ends the snooze (version 3, section 7.1).
        band = values.get("severity") if values.get("phq9") is not None else None
        level = values.get("suicidal_ideation")
        return cls(
            band=band if band in BANDS else UNKNOWN_BAND,
            ideation=level if level in IDEATION else "none",
            basis=keyed(facts.refs.get("suicidal_ideation", [])),
            flags=frozenset(name for name in FLAGS if values.get(name) is True),
        )


def worse(old: State, new: State) -> bool:
    """True when ``new`` is worse than ``old``: a higher band, a higher ideation level, a basis
    reference not seen then (even at the same level), or one of the flags newly on record."""
    return (
        _band_higher(old.band, new.band)
        or _rank(IDEATION, new.ideation) > _rank(IDEATION, old.ideation)
        or not new.basis <= old.basis
        or not new.flags <= old.flags
    )


def _band_higher(old: str, new: str) -> bool:
    if new not in BANDS:
        return False  # a band no longer known is not evidence of worsening
    if old not in BANDS:
        # Unknown then: the card was decided without a band, so a band that would have
        # called for more (moderate or worse) is news.
        return BANDS.index(new) >= BANDS.index("moderate")
    return BANDS.index(new) > BANDS.index(old)


def _rank(order: tuple[str, ...], value: str) -> int:
    # An unexpected code (a row from a later version) ranks lowest: it never hides worsening.
    return order.index(value) if value in order else 0
