"""Durable record of the cards we showed and the feedback clinicians gave on them.

SQLAlchemy Core keeps one code path for the embedded SQLite file and for PostgreSQL. Nothing
here holds protected health information: a card row is (card uuid, service, hookInstance, rule,
indicator, time); a feedback row keeps the outcome and the coded reasons, not the free-text
comment, which may name the patient.

Feedback is idempotent: an item is keyed by a digest of its meaning (service, card, outcome,
time, suggestions, reasons), so a client that retries after a lost answer stores it once.

Card rows are written in batches and a crash loses the last of them; feedback on such a card is
still attributed, since its uuid names its service and rule (``protocol.card_ids``). The store
does not know the knowledge base that maps the uuid back: the caller passes ``card_stats`` the
decoder.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    bindparam,
    create_engine,
    delete,
    distinct,
    event,
    func,
    or_,
    select,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from ipt_cds.protocol.models import (
    CardStats,
    Coding,
    FeedbackItem,
    ReasonCount,
    RuleStats,
    ServiceStats,
)
from ipt_cds.storage.feedback_rows import feedback_rows
from ipt_cds.storage.migrations import migrate

metadata = MetaData()

# The tables as queries see them; the migrations create them (migration 1 with its own frozen
# copy), so a width here must match theirs. A card's uuid (36 characters) and a SHA-256 hex
# digest (64) fit 64; hookInstance and a feedback's card fit 128, the most protocol.models
# accepts; an indicator or an outcome is one short word.
cards_issued = Table(
    "cards_issued",
    metadata,
    Column("card_uuid", String(64), primary_key=True),
    Column("service_id", String(128), nullable=False, index=True),
    Column("hook_instance", String(128), nullable=False),
    Column("rule_id", String(128), nullable=False),
    Column("indicator", String(16), nullable=False),
    Column("issued_at", DateTime(timezone=True), nullable=False),
    # "shown" (returned to the EHR), "silent" (a site's silent rule: would have shown), or held
    # back as seen this visit ("repeat"), overridden ("snooze") or, a critical card, for the
    # clinician who documented a risk assessment ("assessed").
    Column("disposition", String(16), nullable=False, server_default="shown"),
)

feedback = Table(
    "feedback",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dedupe_key", String(64), nullable=False, unique=True),
    Column("service_id", String(128), nullable=False),
    Column("card_uuid", String(128), nullable=False, index=True),
    Column("outcome", String(16), nullable=False),
    Column("outcome_at", DateTime(timezone=True), nullable=False),
    Column("accepted_suggestions", Text),
    Column("override_reasons", Text),
    Column("received_at", DateTime(timezone=True), nullable=False),
)


# The widths of a used JWT's key columns: first_use cuts longer values (the caller chose them)
# to fit.
ISS_CHARS = 512
JTI_CHARS = 256

jti_seen = Table(
    "jti_seen",
    metadata,
    Column("iss", String(ISS_CHARS), primary_key=True),
    Column("jti", String(JTI_CHARS), primary_key=True),
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
)


# What the service remembers per patient (the clinical spec section 5), as state: one row per
# patient (a keyed pseudonym, never the patient id), rule, draft order (a keyed reference to a
# draft in the EHR; "" for the chart, a snooze or an assessment), kind ("shown", "snooze",
# "assessed"), service and clinician, holding the latest. A patient has at most rules x drafts
# x services x clinicians rows whatever the number of calls, and a call's lookup reads no more.
# "shown" rows make "once per visit" and let an override find its patient; "snooze" and
# "assessed" rows keep a rule away after one.
card_memory = Table(
    "card_memory",
    metadata,
    Column("patient", String(64), primary_key=True),
    Column("rule_id", String(128), primary_key=True),
    Column("draft_key", String(256), primary_key=True),
    Column("event", String(8), primary_key=True),
    # The service that showed the card: order-select fired again for the order being edited
    # shows its cards again (the clinical spec 7.1). "" in rows written before it was kept.
    Column("service_id", String(128), primary_key=True),
    # The clinician of that call, keyed: a documented risk assessment holds a critical card
    # back for that clinician only; feedback on a card finds it while that clinician's next
    # card of the rule has not replaced it.
    Column("user_key", String(64), primary_key=True),
    # The latest card shown of this row: feedback on it finds its patient.
    Column("card_uuid", String(64), index=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
    # The hook call that showed the card, keyed: a retry of that same call is not a repeat.
    Column("call_key", String(64)),
    # The record when the card was shown (a snooze or an assessment copies it from the shown
    # row), as codes and keyed hashes (ipt_cds/clinical/worsening.py): a held card comes back
    # when the record is worse. NULL band: a row written before this was kept.
    Column("band", String(24)),
    Column("ideation", String(16)),
    Column("basis", Text),
    Column("flags", String(64)),
)

# The secret the pseudonyms are keyed with: made on first start, shared by every replica.
memory_key = Table(
    "memory_key",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("secret", String(64), nullable=False),
)


# A card uuid -> (service id, rule id) of the card, or None when the uuid is not one we issued.
Attribution = Callable[[str], tuple[str, str] | None]


def _unattributed(_card_uuid: str) -> None:
    return None


@dataclass(frozen=True)
class IssuedCard:
    card_uuid: str
    service_id: str
    hook_instance: str
    rule_id: str
    indicator: str
    issued_at: datetime
    disposition: str = "shown"


@dataclass
class Remembered:
    """A card_memory row: the latest of its kind for a patient, rule, draft, service and
    clinician."""

    patient: str
    rule_id: str
    draft_key: str
    card_uuid: str | None
    event: str
    at: datetime
    expires_at: datetime
    call_key: str | None = None
    service_id: str | None = None
    user_key: str | None = None
    band: str | None = None
    ideation: str | None = None
    # Keyed hashes, space-separated; flags comma-separated (ipt_cds/storage/memory.py Marks).
    basis: str | None = None
    flags: str | None = None

    def key(self) -> tuple[str, str, str, str, str, str]:
        """Its primary key: a row replaces the one of the same key."""
        return (
            self.patient,
            self.rule_id,
            self.draft_key,
            self.event,
            self.service_id or "",
            self.user_key or "",
        )

    def values(self) -> dict[str, Any]:
        """The row as written: no NULL in a key column (NULLs never conflict)."""
        keyed = {"service_id": self.service_id or "", "user_key": self.user_key or ""}
        return {**self.__dict__, **keyed}


class Store:
    def __init__(self, url: str) -> None:

        self.engine = _make_engine(database_url(url))
        migrate(self.engine)
        # The card writer runs in a thread beside a busy event loop. SQLite's executemany
        # steps once per row, handing the GIL back and forth with the loop for every row
        # (a 1,000-row batch took ~700 ms under load); RETURNING makes SQLAlchemy send
        # multi-row INSERTs instead (~80 ms). psycopg pipelines executemany already, and
        # there the multi-row form costs three times the CPU. A uuid already recorded (a card
        # uuid has 74 random bits, and only cards of one service and rule can share one) is
        # skipped rather than failing the whole batch.
        self._insert_cards: Any = self._insert(cards_issued).on_conflict_do_nothing(
            index_elements=["card_uuid"]
        )
        if self.engine.dialect.name == "sqlite":
            self._insert_cards = self._insert_cards.returning(cards_issued.c.card_uuid)
        # Each row holds the latest of its kind: a row written later with an earlier time (a
        # replica whose batch was slower, a late-reported assessment) does not replace it.
        # SQLite gets multi-row statements through RETURNING, as the cards do.
        upsert = self._insert(card_memory)
        self._upsert_memory: Any = upsert.on_conflict_do_update(
            index_elements=[c.name for c in card_memory.primary_key],
            set_={c.name: upsert.excluded[c.name] for c in MEMORY_COLUMNS if not c.primary_key},
            where=upsert.excluded.at >= card_memory.c.at,
        )
        if self.engine.dialect.name == "sqlite":
            self._upsert_memory = self._upsert_memory.returning(card_memory.c.patient)
        # Built once: it runs on every hook call. It reads the patient's rows on the primary
        # key, which are few whatever the patient's history.
        m = card_memory.c
        self.recall_statement: Any = select(*MEMORY_COLUMNS).where(
            m.patient == bindparam("patient"),
            or_(
                and_(m.event == "shown", m.at >= bindparam("since")),
                and_(m.event != "shown", m.expires_at > bindparam("now")),
            ),
        )

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(select(1))

    def close(self) -> None:
        self.engine.dispose()

    def record_cards(
        self, rows: Sequence[IssuedCard], remembered: Sequence[Remembered] = ()
    ) -> None:
        """The cards issued and what to remember of them, in one transaction; rows past their
        time are purged with it."""
        if not rows and not remembered:
            return
        with self.engine.begin() as conn:
            if rows:
                result = conn.execute(self._insert_cards, [row.__dict__ for row in rows])
                if result.returns_rows:
                    result.all()
            if remembered:
                self._remember(conn, remembered)
                oldest = min(r.at for r in remembered)
                conn.execute(delete(card_memory).where(card_memory.c.expires_at < oldest))

    def memory_secret(self) -> str:
        """The pseudonyms' key: made by the first replica to start, then read by all."""
        with self.engine.begin() as conn:
            conn.execute(
                self._insert(memory_key).on_conflict_do_nothing(),
                {"id": 1, "secret": secrets.token_hex(32)},
            )
            found: str = conn.execute(select(memory_key.c.secret)).scalar_one()
        return found

    def recall(self, patient: str, since: datetime, now: datetime) -> list[Remembered]:
        """Of one patient, the cards shown since ``since`` and the snoozes and assessments
        still running: one query on the primary key, which holds one row per rule, draft, kind,
        service and clinician at most."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                self.recall_statement, {"patient": patient, "since": since, "now": now}
            )
            return [as_remembered(row) for row in rows]

    def shown_card(self, card_uuid: str) -> Remembered | None:
        """The "shown" row of a card, if it is still kept."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(*MEMORY_COLUMNS)
                .where(card_memory.c.card_uuid == card_uuid, card_memory.c.event == "shown")
                .limit(1)
            ).first()
        return as_remembered(row) if row is not None else None

    def remember(self, rows: Sequence[Remembered]) -> None:
        if rows:
            with self.engine.begin() as conn:
                self._remember(conn, rows)

    def _remember(self, conn: Connection, rows: Sequence[Remembered]) -> None:
        """Each row replaces the one of its key unless that one is later. Of the rows a batch
        holds for one key only the latest is sent: one statement may not update a row twice
        on PostgreSQL, and a call retried in a burst would otherwise be written again and
        again."""
        latest: dict[tuple[str, ...], Remembered] = {}
        for row in rows:
            kept = latest.get(row.key())
            if kept is None or row.at >= kept.at:
                latest[row.key()] = row
        values = [r.values() for r in latest.values()]
        result = conn.execute(self._upsert_memory, values)
        if result.returns_rows:
            result.all()

    def add_feedback(self, service_id: str, items: Iterable[FeedbackItem]) -> int:
        """Store the items in one transaction; answer how many were new."""
        return self.insert_feedback(feedback_rows(service_id, items, datetime.now(UTC)))

    def insert_feedback(self, rows: Sequence[dict[str, Any]]) -> int:
        """Store ``feedback_rows`` in one transaction; answer how many were new."""
        return self.insert_feedback_posts([rows])[0]

    def insert_feedback_posts(self, posts: Sequence[Sequence[dict[str, Any]]]) -> list[int]:
        """Store several posts' ``feedback_rows`` in one transaction (a spooled backlog is
        written in steps, not a commit per post); answer how many of each post's were new."""
        # RETURNING tells what was inserted on both databases (rowcount does not on PostgreSQL).
        stmt = (
            self._insert(feedback)
            .on_conflict_do_nothing(index_elements=["dedupe_key"])
            .returning(feedback.c.id)
        )
        with self.engine.begin() as conn:
            return [sum(len(conn.execute(stmt, row).all()) for row in rows) for rows in posts]

    def first_use(self, iss: str, jti: str, expires_at: float, now: float) -> bool:
        """Record a client JWT's jti; False when any replica has seen it before."""
        expiry = datetime.fromtimestamp(expires_at, UTC)
        with self.engine.begin() as conn:
            purge = datetime.fromtimestamp(now, UTC)
            conn.execute(delete(jti_seen).where(jti_seen.c.expires_at < purge))
            inserted = conn.execute(
                self._insert(jti_seen).on_conflict_do_nothing().returning(jti_seen.c.jti),
                {"iss": iss[:ISS_CHARS], "jti": jti[:JTI_CHARS], "expires_at": expiry},
            ).all()
        return len(inserted) == 1

    def _insert(self, table: Table) -> Any:
        dialect = pg_insert if self.engine.dialect.name == "postgresql" else sqlite_insert
        return dialect(table)

    def card_stats(
        self,
        attribute: Attribution = _unattributed,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> CardStats:
        """Cards shown and their feedback, per service and rule: cards issued from ``since``
        (included) to ``until`` (excluded), feedback whose outcome falls between them.

        Feedback on a card without a "card shown" row (lost in a crash, or dropped when the
        store fell behind) is attributed by ``attribute(card uuid)``, and the card counts as
        shown; feedback that cannot be attributed (a card we never issued) is left out."""
        with self.engine.connect() as conn:
            issued = (cards_issued.c.service_id, cards_issued.c.rule_id, cards_issued.c.disposition)
            # A call counts once per rule: an EHR that retries a call (same service and
            # hookInstance) after a lost answer gets fresh card uuids, not a second card.
            calls = func.count(distinct(cards_issued.c.hook_instance))
            shown = conn.execute(
                select(*issued, calls)
                .where(*_window(cards_issued.c.issued_at, since, until))
                .group_by(*issued)
            ).all()
            answered = conn.execute(
                select(
                    cards_issued.c.service_id,
                    cards_issued.c.rule_id,
                    feedback.c.card_uuid,
                    feedback.c.outcome,
                    feedback.c.override_reasons,
                )
                .select_from(
                    feedback.outerjoin(
                        cards_issued, feedback.c.card_uuid == cards_issued.c.card_uuid
                    )
                )
                .where(*_window(feedback.c.outcome_at, since, until))
            ).all()
        return _stats(shown, *_attributed(answered, attribute))

    def card_days(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> list[tuple[str, str, int]]:
        """(UTC day as YYYY-MM-DD, what happened, count) for the statistics page: calls
        that showed a card, held one back or computed a silent one (each rule of a call once),
        and feedback outcomes; ``since`` and ``until`` as ``card_stats``'s."""
        c, f = cards_issued.c, feedback.c
        issued_day, outcome_day = self._day(c.issued_at), self._day(f.outcome_at)
        # A retried call counts once per rule, as in card_stats; days and rules are few.
        calls = func.count(distinct(c.hook_instance))
        with self.engine.connect() as conn:
            issued = conn.execute(
                select(issued_day, c.disposition, c.rule_id, calls)
                .where(*_window(c.issued_at, since, until))
                .group_by(issued_day, c.disposition, c.rule_id)
            ).all()
            answered = conn.execute(
                select(outcome_day, f.outcome, func.count())
                .where(*_window(f.outcome_at, since, until))
                .group_by(outcome_day, f.outcome)
            ).all()
        counts: Counter[tuple[str, str]] = Counter()
        for day, disposition, _rule, n in issued:
            kind = disposition if disposition in ("shown", "silent") else "held back"
            counts[(str(day), kind)] += n
        for day, outcome, n in answered:
            counts[(str(day), outcome)] += n
        return sorted((day, kind, n) for (day, kind), n in counts.items())

    def _day(self, column: Any) -> Any:
        """The UTC calendar day of a time column, as SQL (PostgreSQL's date() would take the
        session's time zone; SQLite holds the UTC text)."""
        if self.engine.dialect.name == "postgresql":
            return func.date(func.timezone("UTC", column))
        return func.date(column)


MEMORY_COLUMNS = (
    card_memory.c.patient,
    card_memory.c.rule_id,
    card_memory.c.draft_key,
    card_memory.c.card_uuid,
    card_memory.c.event,
    card_memory.c.at,
    card_memory.c.expires_at,
    card_memory.c.call_key,
    card_memory.c.service_id,
    card_memory.c.user_key,
    card_memory.c.band,
    card_memory.c.ideation,
    card_memory.c.basis,
    card_memory.c.flags,
)


def as_remembered(row: Any) -> Remembered:
    found = Remembered(*row)
    # SQLite hands times back without their zone; they were written in UTC.
    for name in ("at", "expires_at"):
        value = getattr(found, name)
        if value.tzinfo is None:
            setattr(found, name, value.replace(tzinfo=UTC))
    return found


def database_url(url: str) -> str:
    """Plain ``postgresql://`` URLs (as most platforms hand them out) use psycopg 3."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    return url


# How long an SQLite connection waits for another's write lock (the card writer's batch, a
# second worker) before failing with "database is locked".
SQLITE_LOCK_WAIT_SECONDS = 30
CONNECT_TIMEOUT_SECONDS = 5


def _make_engine(url: str) -> Engine:
    if not url.startswith("sqlite"):
        # A database that does not answer (a partition, not a refusal) must fail a connection
        # in seconds: the spool's drain retries it, and /ready reports it.
        postgres = url.startswith("postgresql") and "connect_timeout" not in url
        wait = {"connect_timeout": CONNECT_TIMEOUT_SECONDS} if postgres else {}
        return create_engine(url, pool_pre_ping=True, connect_args=wait)
    # No prepared-statement cache: a batch of cards is one multi-row INSERT whose text depends
    # on its row count, and keeping 128 of those per connection grew a worker by ~70 MB. Our
    # other statements are short and cheap to prepare again.
    engine = create_engine(
        url,
        connect_args={
            "timeout": SQLITE_LOCK_WAIT_SECONDS,
            "check_same_thread": False,
            "cached_statements": 0,
        },
    )

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        # WAL lets readers run beside the writer; FULL makes a commit survive power loss,
        # since a 200 on feedback promises the item is stored.
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.close()

    return engine


def _window(column: Any, since: datetime | None, until: datetime | None) -> list[Any]:
    return [
        *([column >= since] if since is not None else []),
        *([column < until] if until is not None else []),
    ]


def _attributed(
    rows: Sequence[Any], attribute: Attribution
) -> tuple[list[tuple[str, str, str, str | None]], Counter[tuple[str, str]]]:
    """(service, rule, outcome, reasons) of each attributable feedback row, and the cards
    without a row (known only from their feedback) per service and rule."""
    answered: list[tuple[str, str, str, str | None]] = []
    recovered: dict[str, tuple[str, str]] = {}
    for service_id, rule_id, card_uuid, outcome, reason_json in rows:
        if service_id is None:
            found = attribute(card_uuid)
            if found is None:
                continue
            service_id, rule_id = recovered[card_uuid] = found
        answered.append((service_id, rule_id, outcome, reason_json))
    return answered, Counter(recovered.values())


def _stats(
    shown: Sequence[Any],
    answered: Sequence[tuple[str, str, str, str | None]],
    recovered: Counter[tuple[str, str]],
) -> CardStats:
    counts: dict[tuple[str, str], Counter[str]] = {}
    reasons: dict[tuple[str, str], Counter[tuple[str | None, str, str | None]]] = {}
    for service_id, rule_id, disposition, n in shown:
        counts.setdefault((service_id, rule_id), Counter())[disposition] += n
    for key, n in recovered.items():
        counts.setdefault(key, Counter())["shown"] += n
    for service_id, rule_id, outcome, reason_json in answered:
        key = (service_id, rule_id)
        counts.setdefault(key, Counter())[outcome] += 1
        for r in orjson.loads(reason_json) if reason_json else []:
            coding = Coding.model_validate(r)
            reasons.setdefault(key, Counter())[(coding.system, coding.code, coding.display)] += 1
    by_service: dict[str, list[RuleStats]] = {}
    for (service_id, rule_id), c in sorted(counts.items()):
        given = reasons.get((service_id, rule_id), Counter())
        by_service.setdefault(service_id, []).append(
            RuleStats(
                rule=rule_id,
                shown=c["shown"],
                silent=c["silent"],
                suppressedAsRepeat=c["repeat"],
                # A critical card held for the clinician who documented a risk assessment
                # is held after an override, as a snoozed one is.
                suppressedBySnooze=c["snooze"] + c["assessed"],
                accepted=c["accepted"],
                overridden=c["overridden"],
                overrideReasons=[
                    ReasonCount(system=s, code=code, display=d, count=n)
                    for (s, code, d), n in sorted(given.items(), key=lambda kv: (-kv[1], kv[0][1]))
                ],
            )
        )
    return CardStats(
        services=[ServiceStats(service=s, rules=rules) for s, rules in by_service.items()]
    )
