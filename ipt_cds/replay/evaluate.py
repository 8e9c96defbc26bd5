"""One patient through every scenario, with the very pipeline the HTTP service runs.

A worker process (local engine) or a Spark executor builds one ``Evaluator`` and feeds it
patients; what comes back is small (the cards' rules and indicators, the verdict), so the
patients' data never leaves the worker.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

import orjson

from ipt_cds.knowledge.base import Knowledge
from ipt_cds.pipeline import Pipeline
from ipt_cds.protocol.errors import ServiceError
from ipt_cds.protocol.models import Resource
from ipt_cds.replay.scenarios import Call, bind
from ipt_cds.replay.search import Search
from ipt_cds.replay.source import referenced_id

log = logging.getLogger("ipt_cds")


@dataclass(frozen=True)
class Outcome:
    """One scenario's call for one patient: the cards (rule, indicator) shown and silent, the
    verdict, or the error code when the call was refused."""

    scenario: str
    shown: tuple[tuple[str, str], ...] = ()
    silent: tuple[tuple[str, str], ...] = ()
    verdict: str | None = None
    error: str | None = None


class SharedResources:
    """The Medications an ``_include`` brings, by reference (``Medication/1``, or an absolute
    URL ending so), read from wherever an engine keeps them and parsed once per process."""

    def __init__(self, fetch: Callable[[str], bytes | None]) -> None:
        self._fetch = fetch
        self._parsed: dict[str, Resource | None] = {}

    def __call__(self, reference: str) -> Resource | None:
        rid = referenced_id(reference, "Medication")
        if rid is None:
            return None
        ref = f"Medication/{rid}"
        if ref not in self._parsed:
            body = self._fetch(ref)
            self._parsed[ref] = orjson.loads(body) if body is not None else None
        return self._parsed[ref]


def moment(as_of: date) -> datetime:
    """ "Now" of a replay as of a day: its noon UTC, the same on every machine."""
    return datetime.combine(as_of, time(12), tzinfo=UTC)


class Evaluator:
    def __init__(
        self,
        knowledge_dir: Path,
        site_file: Path | None,
        scenarios: list[str],
        as_of: date,
        knowledge: Knowledge | None = None,
    ) -> None:
        """``knowledge``: already loaded from ``knowledge_dir`` and ``site_file`` (loading it
        again takes half a second per process)."""
        knowledge = knowledge or Knowledge.load(knowledge_dir, site_file)
        self.pipeline = Pipeline(knowledge)
        self.calls: list[Call] = bind(scenarios, knowledge.services)
        self.now = moment(as_of)
        self._loop = asyncio.new_event_loop()

    def close(self) -> None:
        self._loop.close()

    def patient(
        self,
        patient_id: str,
        bodies: Iterable[bytes],
        shared: Callable[[str], Resource | None],
    ) -> list[Outcome]:
        own: dict[str, list[Resource]] = {}
        for body in bodies:
            resource = orjson.loads(body)
            own.setdefault(resource["resourceType"], []).append(resource)
        return self._loop.run_until_complete(self._all(patient_id, own, shared))

    async def _all(
        self,
        patient_id: str,
        own: Mapping[str, list[Resource]],
        shared: Callable[[str], Resource | None],
    ) -> list[Outcome]:
        outcomes: list[Outcome] = []
        # The services declare the same prefetch (cards/services.yaml): answered once a patient.
        answered: dict[tuple[Search, ...], dict[str, Any]] = {}
        for call in self.calls:
            name = call.scenario.name
            if call.searches not in answered:
                answered[call.searches] = call.prefetch(patient_id, own, shared)
            try:
                result = await self.pipeline.run(
                    call.service,
                    call.body(patient_id, answered[call.searches]),
                    fhir=None,
                    fhir_allowed=_nowhere,
                    now=self.now,
                )
            except ServiceError as exc:
                outcomes.append(Outcome(name, error=exc.code))
                continue
            except Exception as exc:
                # The HTTP service would answer 500 and serve the next call; so does replay.
                # The type only: a message could quote the patient's data.
                log.error("replay: %s on a %s call", type(exc).__name__, name)
                outcomes.append(Outcome(name, error="internal_error"))
                continue
            outcomes.append(
                Outcome(
                    name,
                    tuple((rule, card.indicator) for rule, card in result.fired),
                    tuple((rule, card.indicator) for rule, card in result.silent),
                    result.verdict,
                )
            )
        return outcomes


def _nowhere(url: str) -> bool:
    return False
