"""What the service remembers per patient, so that a card does not nag (the clinical spec sections
5 and 7.1).

Once per visit: a card shown for the same patient, rule and draft order (the chart, on
patient-view) within the repeat window is not shown again, by any of the three services —
except that order-select fired again for the same order (being edited) shows its cards again.
Snooze: an ``overridden`` feedback keeps that rule away for that patient for the rule's days.
An assessment: an override with a reason its rule declares as holding (``holds_hours``: the
suicide card's ``risk-assessed``) keeps the card away from the clinician who gave it, for those
hours. Each row keeps the record as it was when the card was
shown (``Marks``), so that a held card comes back when the record is worse. Critical cards are
exempt from all but the assessment, and the comparison is clinical: the rules and
ipt_cds/clinical/worsening.py decide, this module only says what was seen.

It keeps a keyed pseudonym of the patient (HMAC-SHA256 of the FHIR server and the patient id,
with a secret the store makes on first start and every replica shares), never the id; keyed
hashes of the clinician and of the references behind the suicidal-ideation level; codes of the
severity band, the ideation level and four facts; never values or dates of the record.

It keeps state, not a log: per patient, rule, draft, service and clinician, the latest card
shown, the latest snooze and the latest assessment (store.py ``card_memory``). A later row
replaces the one of its key, so what a call reads back is bounded by the rules, drafts,
services and clinicians, not by how often the patient was called or a call retried. Keeping
only the latest changes nothing as long as the record does not improve: a card is shown again
only where the older row did not hold it, and the newer row holds wherever the older one
would. "Shown" rows are written with the card recorder's batch; until then this worker
remembers the latest of each itself, so that order-sign a moment after order-select already
sees what it showed. Feedback finds its card's patient through the latest card of each row:
feedback on a card that the same clinician's next card of the rule, from the same service,
replaced (a retried call, order-select fired again) snoozes nothing, unless this worker still
holds the card in its own copy.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ipt_cds.storage.recall import PostgresRecall, SqliteRecall
from ipt_cds.storage.store import Remembered, Store

log = logging.getLogger("ipt_cds")

# A "shown" row is kept this long at least, even with the repeat window off: an override that
# comes later must still find the card's patient to snooze the rule.
KEEP_SHOWN_AT_LEAST = timedelta(hours=24)
# How long this worker keeps its own copy of rows the recorder has not written yet: the
# recorder writes within a fraction of a second; a longer copy only costs memory (a minute of
# a busy worker's rows held ~8 MB more under the long fuzz run).
LOCAL_COPY = timedelta(seconds=10)


def _same(refs: tuple[str, ...]) -> tuple[str, ...]:
    return refs


def _plain(refs: Iterable[str]) -> frozenset[str]:
    return frozenset(refs)


@dataclass(frozen=True)
class Marks:
    """The record when a card was shown, as codes and keyed hashes (the fields of
    ipt_cds/clinical/worsening.py ``RecordState``)."""

    band: str
    ideation: str
    basis: frozenset[str] = frozenset()
    flags: frozenset[str] = frozenset()

    @classmethod
    def of_row(cls, row: Remembered) -> Marks | None:
        """None for a row written before the record was kept: it holds as it did then."""
        if row.band is None:
            return None
        return cls(
            row.band,
            row.ideation or "",
            frozenset((row.basis or "").split()),
            frozenset(f for f in (row.flags or "").split(",") if f),
        )

    def columns(self) -> dict[str, str]:
        return {
            "band": self.band,
            "ideation": self.ideation,
            "basis": " ".join(sorted(self.basis)),
            "flags": ",".join(sorted(self.flags)),
        }


@dataclass(frozen=True)
class Hold:
    """A row that would keep a rule's card back now: ``why`` is "repeat", "snooze" or
    "assessed"; ``marks`` the record then; ``at`` when it was shown or overridden; ``mine``
    whether an assessment was this call's clinician's."""

    rule_id: str
    why: str
    marks: Marks | None
    at: datetime
    mine: bool = False


@dataclass(frozen=True)
class Recall:
    """Of one patient: the rows that may hold a card back (shown within the window by another
    call, snoozes and assessments still running). ``key`` keys a call's draft references as
    the rows do, ``keyed`` the references of a suicidal-ideation basis; ``user`` is the call's
    clinician, keyed."""

    rows: tuple[Remembered, ...] = ()
    key: Callable[[tuple[str, ...]], tuple[str, ...]] = _same
    keyed: Callable[[Iterable[str]], frozenset[str]] = _plain
    user: str = ""

    def holds(self, draft_refs: tuple[str, ...]) -> list[Hold]:
        draft_keys = set(self.key(draft_refs))
        out = []
        for row in self.rows:
            if row.event == "shown" and row.draft_key not in draft_keys:
                continue
            why = "repeat" if row.event == "shown" else row.event
            mine = why == "assessed" and bool(self.user) and row.user_key == self.user
            out.append(Hold(row.rule_id, why, Marks.of_row(row), row.at, mine))
        return out


@dataclass(frozen=True)
class Overridden:
    """An overridden card: its rule's snooze days, and with a documented risk assessment, when
    it was made and until when it holds the card back for its clinician."""

    card_uuid: str
    snooze_days: int
    assessed_at: datetime | None = None
    assessed_until: datetime | None = None


@dataclass
class CardMemory:
    store: Store
    repeat_window: timedelta
    _secret: bytes = b""
    # This worker's recent rows: in order, for pruning; the latest per patient and key (the
    # store's), so that a patient called again and again costs no more; and by card, for
    # snoozes.
    _local: deque[Remembered] = field(default_factory=deque)
    _by_patient: dict[str, dict[_Key, Remembered]] = field(default_factory=dict)
    _by_card: dict[str, Remembered] = field(default_factory=dict)
    _sqlite: SqliteRecall | None = None
    _postgres: PostgresRecall | None = None

    def __post_init__(self) -> None:
        self._secret = bytes.fromhex(self.store.memory_secret())
        self._sqlite = SqliteRecall.open(self.store)
        self._postgres = PostgresRecall.open(self.store)

    async def close(self) -> None:
        if self._sqlite is not None:
            self._sqlite.close()
        if self._postgres is not None:
            await self._postgres.close()

    def pseudonym(self, fhir_server: str, patient_id: str) -> str:
        return self._keyed(f"patient\n{fhir_server.rstrip('/')}\n{patient_id}")

    def call_key(self, service_id: str, hook_instance: str) -> str:
        return self._keyed(f"call\n{service_id}\n{hook_instance}")

    def draft_keys(self, refs: tuple[str, ...]) -> tuple[str, ...]:
        """Draft references keyed too: an EHR's draft ids may embed the patient's."""
        return tuple(self._keyed(f"draft\n{ref}") if ref else "" for ref in refs)

    def basis_keys(self, refs: Iterable[str]) -> frozenset[str]:
        """The references behind a suicidal-ideation level, keyed as the pseudonyms are."""
        return frozenset(self._keyed(f"basis\n{ref}") for ref in refs)

    def user_key(self, user_id: str) -> str:
        return self._keyed(f"user\n{user_id}") if user_id else ""

    def _keyed(self, text: str) -> str:
        return hmac.new(self._secret, text.encode(), hashlib.sha256).hexdigest()

    def recall_soon(
        self,
        patient: str,
        now: datetime,
        call: str = "",
        *,
        service: str = "",
        user: str = "",
        editing: bool = False,
    ) -> asyncio.Future[Recall]:
        """What ``patient`` saw, asked now and awaited when the rules need it: one indexed
        query (ipt_cds/storage/recall.py), plus this worker's rows not written yet. The rows
        the same hook call wrote (``call``: its keyed hookInstance) are not repeats: an EHR that
        retries a call gets the same cards. With ``editing`` (order-select fired again), the
        rows ``service`` wrote are not repeats either: the cards stay on screen while the
        order is edited. ``user``: the call's clinician, keyed."""
        # With the window off, no shown row is asked for (a future bound selects none).
        since = now - self.repeat_window if self.repeat_window else now + timedelta(days=1)
        ask = _Asked(patient, since, now, call, service if editing else "", user)
        if self._postgres is not None:
            return asyncio.ensure_future(self._remote(self._postgres, ask))
        try:
            stored = (self._sqlite or self.store).recall(patient, since, now)
        except Exception as exc:
            stored = _unavailable(exc)
        done: asyncio.Future[Recall] = asyncio.get_running_loop().create_future()
        done.set_result(self._recall(stored, ask))
        return done

    async def _remote(self, reader: PostgresRecall, ask: _Asked) -> Recall:
        try:
            stored = await reader.recall(ask.patient, ask.since, ask.now)
        except Exception as exc:
            stored = _unavailable(exc)
        return self._recall(stored, ask)

    def _recall(self, stored: list[Remembered], ask: _Asked) -> Recall:
        # In the event loop's thread: this worker's own rows change there. Its rows not
        # written yet replace the stored ones they will replace, so a call sees one row per key.
        latest: dict[_Key, Remembered] = {}
        for row in (*stored, *self._recent(ask.patient, ask.now)):
            before = latest.get(row.key())
            if before is None or row.at >= before.at:
                latest[row.key()] = row
        kept = tuple(
            r
            for r in latest.values()
            if (
                r.event == "shown"
                and r.at >= ask.since
                and not (ask.call and r.call_key == ask.call)
                and not (ask.editing and r.service_id == ask.editing)
            )
            or (r.event in ("snooze", "assessed") and r.expires_at > ask.now)
        )
        return Recall(kept, self.draft_keys, self.basis_keys, ask.user)

    def shown(
        self,
        patient: str,
        rule_id: str,
        draft_keys: tuple[str, ...],
        card_uuid: str,
        now: datetime,
        call: str = "",
        *,
        marks: Marks | None = None,
        service: str | None = None,
        user: str = "",
    ) -> list[Remembered]:
        """The rows that remember a card shown; kept here too until the recorder writes them."""
        until = now + max(self.repeat_window, KEEP_SHOWN_AT_LEAST)
        state = marks.columns() if marks is not None else {}
        rows = [
            Remembered(
                patient,
                rule_id,
                key,
                card_uuid,
                "shown",
                now,
                until,
                call or None,
                service,
                user or None,
                **state,
            )
            for key in draft_keys
        ]
        self._local.extend(rows)
        latest = self._by_patient.setdefault(patient, {})
        for row in rows:
            latest[row.key()] = row
            self._by_card[card_uuid] = row
        return rows

    def snooze(self, overridden: Sequence[Overridden], now: datetime) -> int:
        """Keep each overridden card's rule away from its patient for its days, and a card
        whose risk assessment was documented away from its clinician until then; answer how
        many rows were written. Each copies the record of the card's "shown" row. A card whose
        patient is not known (older than its row, or not ours) holds nothing; a store that
        fails is logged, not raised: the feedback itself is already stored."""
        try:
            rows = []
            for item in overridden:
                if item.snooze_days <= 0 and item.assessed_at is None:
                    continue
                card = self._by_card.get(item.card_uuid) or self.store.shown_card(item.card_uuid)
                if card is None:
                    continue
                kept = _kept(card)
                if item.snooze_days > 0:
                    until = now + timedelta(days=item.snooze_days)
                    rows.append(
                        Remembered(
                            card.patient, card.rule_id, "", None, "snooze", now, until, **kept
                        )
                    )
                if item.assessed_at is not None and item.assessed_until is not None:
                    rows.append(
                        Remembered(
                            card.patient,
                            card.rule_id,
                            "",
                            None,
                            "assessed",
                            item.assessed_at,
                            item.assessed_until,
                            **kept,
                        )
                    )
            self.store.remember(rows)
        except Exception as exc:
            log.warning("snooze not recorded: %s", type(exc).__name__)
            return 0
        return len(rows)

    def _recent(self, patient: str, now: datetime) -> list[Remembered]:
        oldest = now - LOCAL_COPY
        while self._local and self._local[0].at < oldest:
            gone = self._local.popleft()
            mine = self._by_patient.get(gone.patient, {})
            if mine.get(gone.key()) is gone:
                del mine[gone.key()]
                if not mine:
                    del self._by_patient[gone.patient]
            if gone.card_uuid is not None and self._by_card.get(gone.card_uuid) is gone:
                del self._by_card[gone.card_uuid]
        return list(self._by_patient.get(patient, {}).values())


# A row's key in the store: patient, rule, draft key, kind, service, clinician.
_Key = tuple[str, str, str, str, str, str]


@dataclass(frozen=True)
class _Asked:
    patient: str
    since: datetime
    now: datetime
    call: str
    # The service whose rows are not repeats (order-select fired again), or "".
    editing: str
    user: str


def _kept(card: Remembered) -> dict[str, str | None]:
    """What a snooze or an assessment copies of the card's "shown" row: its clinician and the
    record then."""
    return {
        "service_id": card.service_id,
        "user_key": card.user_key,
        "band": card.band,
        "ideation": card.ideation,
        "basis": card.basis,
        "flags": card.flags,
    }


def _unavailable(exc: Exception) -> list[Remembered]:
    # The cards matter more than not repeating them: with the store down, a call answers as
    # if nothing had been seen (this worker's own rows aside).
    log.warning("card memory unavailable: %s", type(exc).__name__)
    return []
