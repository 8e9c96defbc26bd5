"""Whether the record is worse than when a card was shown or overridden (the clinical spec 7.1).

A card held back (snoozed after an override, or already shown this visit) comes back at once
when its trigger worsens. What is compared is kept by the card memory as codes and keyed hashes,
never values or dates: a band (the PHQ-9 severity), a level (suicidal ideation), keyed hashes of
the references behind the level, and which flags (psychosis, bipolar disorder, pregnancy, the
postpartum period) are on record. Which facts those are is cards/worsening.yaml's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from ipt_cds.clinical.fact_model import Facts

# The code of no level (the level fact unknown or None), lowest of all.
NO_LEVEL = "none"
# The code of no band (no measurement, or a band the spec does not know).
UNKNOWN_BAND = "unknown"


@dataclass(frozen=True)
class Worsening:
    """What "worse" compares, as cards/worsening.yaml says (checked by
    ipt_cds/knowledge/worsening.py): a band of one fact, counted only when another is on record;
    a level of one fact, with the references behind it; facts whose appearance is worse."""

    band_of: str
    measured_by: str
    # Lowest first; from no band, a band at or above from_unknown is worse.
    bands: tuple[str, ...]
    from_unknown: str
    level_of: str
    # Lowest first, after NO_LEVEL.
    levels: tuple[str, ...]
    flags: tuple[str, ...]


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
    # The level (named ideation in the card memory's rows).
    ideation: str = NO_LEVEL
    # Keyed hashes of the references behind the level.
    basis: frozenset[str] = frozenset()
    flags: frozenset[str] = frozenset()

    @classmethod
    def of(
        cls, facts: Facts, keyed: Callable[[Iterable[str]], frozenset[str]], spec: Worsening
    ) -> RecordState:
        """The state of a call's facts; ``keyed`` hashes references as the memory keeps them."""
        values = facts.values
        # A band only when measured: a severity read from a diagnosis code alone is no band, so
        # a PHQ-9 that later measures moderate or worse ends the snooze (version 3, 7.1).
        band = values.get(spec.band_of) if values.get(spec.measured_by) is not None else None
        level = values.get(spec.level_of)
        return cls(
            band=band if band in spec.bands else UNKNOWN_BAND,
            ideation=level if level in spec.levels else NO_LEVEL,
            basis=keyed(facts.refs.get(spec.level_of, [])),
            flags=frozenset(name for name in spec.flags if values.get(name) is True),
        )


def worse(old: State, new: State, spec: Worsening) -> bool:
    """True when ``new`` is worse than ``old``: a higher band, a higher level, a basis
    reference not seen then (even at the same level), or one of the flags newly on record."""
    levels = (NO_LEVEL, *spec.levels)
    return (
        _band_higher(old.band, new.band, spec)
        or _rank(levels, new.ideation) > _rank(levels, old.ideation)
        or not new.basis <= old.basis
        or not new.flags <= old.flags
    )


def _band_higher(old: str, new: str, spec: Worsening) -> bool:
    bands = spec.bands
    if new not in bands:
        return False  # a band no longer known is not evidence of worsening
    if old not in bands:
        # Unknown then: the card was decided without a band, so a band that would have
        # called for more (from_unknown or worse) is news.
        return bands.index(new) >= bands.index(spec.from_unknown)
    return bands.index(new) > bands.index(old)


def _rank(order: tuple[str, ...], value: str) -> int:
    # An unexpected code (a row from a later version) ranks lowest: it never hides worsening.
    return order.index(value) if value in order else 0
