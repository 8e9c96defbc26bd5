"""What the service remembers per patient, so that a card does not nag (KNOWLEDGE.md section 5).

Once per visit: a card shown for the same patient, rule and draft order (the chart, on
patient-view) within the repeat window is not shown again, by any of the three services.
Snooze: an ``overridden`` feedback keeps that rule away for that patient for the rule's days.
Critical cards are exempt from both; the rules decide that (service/knowledge/rules.py), this
module only says what was seen.

It keeps a keyed pseudonym of the patient (HMAC-SHA256 of the FHIR server and the patient id,
with a secret the store makes on first start and every replica shares), never the id. "Shown"
rows are written with the card recorder's batch; until then this worker remembers them itself,
so that order-sign a moment after order-select already sees what it showed.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from service.storage.recall import PostgresRecall, SqliteRecall
from service.storage.store import Remembered, Store

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


@dataclass(frozen=True)
class Recall:
    """Of one patient: the (rule, keyed draft) pairs shown within the window, the snoozed
    rules; ``key`` keys a call's draft references as the rows do."""

    shown: frozenset[tuple[str, str]] = frozenset()
    snoozed: frozenset[str] = frozenset()
    key: Callable[[tuple[str, ...]], tuple[str, ...]] = _same

    def suppressed(self, draft_refs: tuple[str, ...]) -> dict[str, str]:
        """Rule id -> why its card would stay away now: "snooze" or "repeat"."""
        draft_keys = self.key(draft_refs)
        out = {rule: "repeat" for rule, key in self.shown if key in draft_keys}
        out.update({rule: "snooze" for rule in self.snoozed})
        return out


@dataclass
class CardMemory:
    store: Store
    repeat_window: timedelta
    _secret: bytes = b""
    # This worker's recent rows: in order, for pruning; the latest per patient and (rule, draft
    # key), so that a patient called again and again costs no more; and by card, for snoozes.
    _local: deque[Remembered] = field(default_factory=deque)
    _by_patient: dict[str, dict[tuple[str, str], Remembered]] = field(default_factory=dict)
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

    def _keyed(self, text: str) -> str:
        return hmac.new(self._secret, text.encode(), hashlib.sha256).hexdigest()

    def recall_soon(self, patient: str, now: datetime, call: str = "") -> asyncio.Future[Recall]:
        """What ``patient`` saw, asked now and awaited when the rules need it: one indexed
        query (service/storage/recall.py), plus this worker's rows not written yet. The rows
        the same hook call wrote (``call``: its keyed hookInstance) are not repeats: an EHR that
        retries a call gets the same cards."""
        # With the window off, no shown row is asked for (a future bound selects none).
        since = now - self.repeat_window if self.repeat_window else now + timedelta(days=1)
        if self._postgres is not None:
            return asyncio.ensure_future(self._remote(self._postgres, patient, since, now, call))
        try:
            stored = (self._sqlite or self.store).recall(patient, since, now)
        except Exception as exc:
            stored = _unavailable(exc)
        done: asyncio.Future[Recall] = asyncio.get_running_loop().create_future()
        done.set_result(self._recall(stored, patient, since, now, call))
        return done

    async def _remote(
        self, reader: PostgresRecall, patient: str, since: datetime, now: datetime, call: str
    ) -> Recall:
        try:
            stored = await reader.recall(patient, since, now)
        except Exception as exc:
            stored = _unavailable(exc)
        return self._recall(stored, patient, since, now, call)

    def _recall(
        self, stored: list[Remembered], patient: str, since: datetime, now: datetime, call: str
    ) -> Recall:
        # In the event loop's thread: this worker's own rows change there.
        rows = [*stored, *self._recent(patient, now)]
        shown = frozenset(
            (r.rule_id, r.draft_key)
            for r in rows
            if r.event == "shown" and r.at >= since and not (call and r.call_key == call)
        )
        snoozed = frozenset(r.rule_id for r in rows if r.event == "snooze" and r.expires_at > now)
        return Recall(shown, snoozed, self.draft_keys)

    def shown(
        self,
        patient: str,
        rule_id: str,
        draft_keys: tuple[str, ...],
        card_uuid: str,
        now: datetime,
        call: str = "",
    ) -> list[Remembered]:
        """The rows that remember a card shown; kept here too until the recorder writes them."""
        until = now + max(self.repeat_window, KEEP_SHOWN_AT_LEAST)
        rows = [
            Remembered(patient, rule_id, key, card_uuid, "shown", now, until, call or None)
            for key in draft_keys
        ]
        self._local.extend(rows)
        latest = self._by_patient.setdefault(patient, {})
        for row in rows:
            latest[row.rule_id, row.draft_key] = row
            self._by_card[card_uuid] = row
        return rows

    def snooze(self, overridden: list[tuple[str, int]], now: datetime) -> int:
        """Keep each overridden card's rule away from its patient for its days (card uuid,
        days); answer how many snoozes were written. A card whose patient is not known (older
        than its row, or not ours) snoozes nothing; a store that fails is logged, not raised:
        the feedback itself is already stored."""
        try:
            rows = []
            for card_uuid, days in overridden:
                card = self._by_card.get(card_uuid) if days > 0 else None
                card = card or (self.store.shown_card(card_uuid) if days > 0 else None)
                if card is not None:
                    until = now + timedelta(days=days)
                    rows.append(
                        Remembered(card.patient, card.rule_id, "", None, "snooze", now, until)
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
            if mine.get((gone.rule_id, gone.draft_key)) is gone:
                del mine[gone.rule_id, gone.draft_key]
                if not mine:
                    del self._by_patient[gone.patient]
            if gone.card_uuid is not None and self._by_card.get(gone.card_uuid) is gone:
                del self._by_card[gone.card_uuid]
        return list(self._by_patient.get(patient, {}).values())


def _unavailable(exc: Exception) -> list[Remembered]:
    # The cards matter more than not repeating them: with the store down, a call answers as
    # if nothing had been seen (this worker's own rows aside).
    log.warning("card memory unavailable: %s", type(exc).__name__)
    return []
