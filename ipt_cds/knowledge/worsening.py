"""cards/worsening.yaml: which facts the card memory compares to tell that a record is worse
(ipt_cds/clinical/worsening.py), checked against the facts at start-up.

Each name must be a fact of the right kind: the band's and the level's facts closed words that
hold every word of their order, the level's fact one that keeps its references (the basis), the
flags True-or-False facts. The codes must also fit the card memory's columns
(ipt_cds/storage/store.py): a code too long would fail every write of a card shown.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from ipt_cds.clinical.fact_model import FactSpec
from ipt_cds.clinical.worsening import NO_LEVEL, UNKNOWN_BAND, Worsening
from ipt_cds.knowledge.datafiles import parse
from ipt_cds.knowledge.errors import KnowledgeError
from ipt_cds.storage.store import card_memory


def _chars(column: str) -> int:
    """The width of a column of the card memory, which keeps these codes."""
    return int(getattr(card_memory.c[column].type, "length"))  # noqa: B009 (a String's)


class _Band(BaseModel):
    model_config = ConfigDict(extra="forbid")
    fact: str
    measured_by: str
    order: list[str] = Field(min_length=1)
    from_unknown: str


class _Level(BaseModel):
    model_config = ConfigDict(extra="forbid")
    fact: str
    order: list[str] = Field(min_length=1)


class _WorseningFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    band: _Band
    level: _Level
    flags: list[str] = []


def load_worsening(path: Path, facts: Mapping[str, FactSpec]) -> Worsening:
    spec = parse(path, _WorseningFile)

    def fact(where: str, name: str) -> FactSpec:
        if name not in facts:
            raise KnowledgeError(f"{path}: {where}: no fact {name!r}")
        return facts[name]

    for where, name, order, chars in (
        ("band", spec.band.fact, spec.band.order, _chars("band")),
        ("level", spec.level.fact, spec.level.order, _chars("ideation")),
    ):
        values = fact(f"{where}.fact", name).values
        if values is None:
            raise KnowledgeError(f"{path}: {where}.fact: {name!r} is not a fact of closed words")
        for word in order:
            if word not in values or word in (UNKNOWN_BAND, NO_LEVEL) or len(word) > chars:
                raise KnowledgeError(
                    f"{path}: {where}.order: {word!r} is not a value of {name} "
                    f"(one of {', '.join(values)}; at most {chars} characters)"
                )
        if len(set(order)) != len(order):
            raise KnowledgeError(f"{path}: {where}.order: a word is listed twice")
    fact("band.measured_by", spec.band.measured_by)
    if spec.band.from_unknown not in spec.band.order:
        raise KnowledgeError(f"{path}: band.from_unknown: {spec.band.from_unknown!r} is no band")
    if not facts[spec.level.fact].explained:
        raise KnowledgeError(
            f"{path}: level.fact: {spec.level.fact!r} keeps no references to compare"
        )
    for name in spec.flags:
        if fact("flags", name).kinds != (bool,):
            raise KnowledgeError(f"{path}: flags: {name!r} is not a True-or-False fact")
    if len(",".join(spec.flags)) > _chars("flags"):
        raise KnowledgeError(f"{path}: flags: over {_chars('flags')} characters, commas included")
    return Worsening(
        band_of=spec.band.fact,
        measured_by=spec.band.measured_by,
        bands=tuple(spec.band.order),
        from_unknown=spec.band.from_unknown,
        level_of=spec.level.fact,
        levels=tuple(spec.level.order),
        flags=tuple(spec.flags),
    )
