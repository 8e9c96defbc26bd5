"""The local spool: entries kept in order within a bound; a file whose worker died (kill -9) is
taken over whole by the next worker of the same database, a live worker's file never; what the
drain writes twice counts once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ipt_cds.storage.drain import Drainer
from ipt_cds.storage.entries import CARDS, FEEDBACK, decode_cards, encode_cards
from ipt_cds.storage.spool import Spool, SpoolUnavailable
from ipt_cds.storage.store import IssuedCard, Remembered, Store

DB = "postgresql+psycopg://ipt:secret@db.example.org/ipt"
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def _card(n: int, hook_instance: str = "") -> IssuedCard:
    return IssuedCard(f"card-{n}", "ipt-order-sign", hook_instance or f"call-{n}", "r", "info", NOW)


def test_entries_come_back_in_order_until_removed(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path, DB, 1 << 20)
    for n in range(5):
        spool.append(CARDS, f"entry {n}".encode(), durable=n % 2 == 0)
    first = spool.oldest(3, 1 << 20)
    assert [e.payload for e in first] == [b"entry 0", b"entry 1", b"entry 2"]
    spool.remove(first)
    assert [e.payload for e in spool.oldest(10, 1 << 20)] == [b"entry 3", b"entry 4"]
    assert spool.entries == 2
    assert spool.size == len(b"entry 3") * 2
    spool.close()


def test_a_full_spool_refuses_with_a_503_and_takes_again_once_drained(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path, DB, 100)
    spool.append(FEEDBACK, b"x" * 60, durable=True)
    with pytest.raises(SpoolUnavailable) as refused:
        spool.append(FEEDBACK, b"y" * 60, durable=True)
    assert refused.value.status == 503
    assert refused.value.headers()["Retry-After"].isdigit()
    spool.remove(spool.oldest(10, 1000))
    spool.append(FEEDBACK, b"y" * 60, durable=True)
    assert spool.entries == 1
    spool.close()


def test_an_emptied_spool_gives_back_what_an_outage_grew_it_to(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path, DB, 64 << 20)
    for _ in range(64):
        spool.append(CARDS, os.urandom(256 << 10), durable=False)  # 16 MB
    grown = spool.path.stat().st_size + Path(f"{spool.path}-wal").stat().st_size
    while entries := spool.oldest(8, 1 << 30):
        spool.remove(entries)
    spool._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert grown > 16 << 20
    assert spool.path.stat().st_size < 8 << 20
    spool.close()


def test_an_empty_spool_leaves_no_file_and_a_full_one_is_kept(tmp_path: Path) -> None:
    empty = Spool.open(tmp_path, DB, 1000)
    empty.close()
    assert list(tmp_path.iterdir()) == []
    kept = Spool.open(tmp_path, DB, 1000)
    kept.append(CARDS, b"waits", durable=True)
    kept.close()
    assert kept.path.exists()
    again = Spool.open(tmp_path, DB, 1000)  # the same pid: its own file again
    assert [e.payload for e in again.oldest(10, 1000)] == [b"waits"]
    again.close()


# A worker that spools two entries and is killed (no close, no clean-up).
_KILLED_WORKER = """
import os, signal, sys
from pathlib import Path
from ipt_cds.storage.spool import Spool
spool = Spool.open(Path(sys.argv[1]), sys.argv[2], 1 << 20)
spool.append("cards", b"first", durable=True)
spool.append("feedback", b"second", durable=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def _killed_worker(folder: Path, database: str = DB) -> None:
    worker = subprocess.run(
        [sys.executable, "-c", _KILLED_WORKER, str(folder), database], check=False
    )
    assert worker.returncode == -signal.SIGKILL


def test_a_killed_workers_spool_is_taken_over_in_order_by_the_next(tmp_path: Path) -> None:
    _killed_worker(tmp_path)
    left = list(tmp_path.glob("spool-*.sqlite3"))
    assert len(left) == 1, "the killed worker's file stays"
    spool = Spool.open(tmp_path, DB, 1 << 20)
    assert [(e.kind, e.payload) for e in spool.oldest(10, 1000)] == [
        ("cards", b"first"),
        ("feedback", b"second"),
    ]
    assert not left[0].exists(), "taken over whole, and deleted"
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".sqlite3") == [spool.path.name]
    spool.close()


def test_a_live_workers_spool_and_another_databases_are_left_alone(tmp_path: Path) -> None:
    _killed_worker(tmp_path, "postgresql+psycopg://ipt@other.example.org/ipt")
    live = Spool.open(tmp_path, DB, 1000)
    live.append(CARDS, b"mine", durable=True)
    second = Spool.open(tmp_path, DB, 1000)  # another app in this process: its own file
    assert second.path != live.path
    assert second.entries == 0
    assert second.adopt_orphans() == 0
    assert live.entries == 1
    assert len(list(tmp_path.glob("spool-*.sqlite3"))) == 3
    second.close()
    live.close()


def test_the_database_password_is_not_in_a_file_name(tmp_path: Path) -> None:
    with_password = Spool.open(tmp_path, DB, 1000)
    rotated = Spool.open(tmp_path, DB.replace("secret", "rotated"), 1000)
    assert "secret" not in with_password.path.name
    # The same database, whatever its password: one prefix.
    assert with_password.path.name.split("-")[1] == rotated.path.name.split("-")[1]
    rotated.close()
    with_password.close()


def test_card_rows_round_trip_through_an_entry() -> None:
    remembered = Remembered(
        "p", "r", "", "card-1", "shown", NOW, NOW + timedelta(days=1), "call", "svc", None, "mild"
    )
    assert decode_cards(encode_cards([_card(1)], [remembered])) == ([_card(1)], [remembered])


def test_drained_twice_an_entry_counts_once(tmp_path: Path) -> None:
    """A crash between the database's commit and the spool's deletion: the entry is written
    again at the next start, and a retried call (same hookInstance) counts once as well."""
    store = Store(f"sqlite:///{tmp_path / 'store.sqlite3'}")
    spool = Spool.open(tmp_path / "spool", "sqlite:///store", 1 << 20)
    rows = [_card(1, "same-call"), _card(2, "same-call"), _card(3)]

    async def drain_twice() -> None:
        drainer = Drainer(spool, store, lambda *_: None)
        drainer.start()
        payload = encode_cards(rows, [])
        spool.append(CARDS, payload, durable=False)
        assert await drainer.drain(10)
        spool.append(CARDS, payload, durable=False)  # as replayed after the crash
        assert await drainer.drain(10)
        await drainer.close(1)

    asyncio.run(drain_twice())
    rules = store.card_stats().services[0].rules
    assert rules[0].shown == 2, "two calls, one of them retried"
    assert spool.entries == 0
    spool.close()
    store.close()


def test_an_entry_the_database_refuses_is_set_aside_not_blocking(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'store.sqlite3'}")
    spool = Spool.open(tmp_path / "spool", "sqlite:///store", 1 << 20)
    rejected: list[int] = []

    async def scenario() -> None:
        drainer = Drainer(spool, store, lambda *_: None, rejected=rejected.append)
        drainer.start()
        spool.append(CARDS, b"not json", durable=False)
        spool.append(CARDS, encode_cards([_card(1)], []), durable=False)
        assert await drainer.drain(10)
        await drainer.close(1)

    asyncio.run(scenario())
    assert rejected == [1]
    assert store.card_stats().services[0].rules[0].shown == 1
    spool.close()
    assert spool.path.exists(), "the refused entry stays in the file for an operator"
    store.close()


def test_the_spool_folder_defaults_beside_an_sqlite_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ipt_cds.ops.config import SPOOL_FOLDER, Settings

    monkeypatch.delenv("IPT_CDS_SPOOL_DIR", raising=False)
    beside = Settings(database_url=f"sqlite:///{tmp_path / 'store.sqlite3'}")
    assert beside.spool_folder == tmp_path / SPOOL_FOLDER
    assert Settings(database_url="sqlite://").spool_folder == Path(SPOOL_FOLDER)
    assert Settings(database_url=DB).spool_folder == Path(SPOOL_FOLDER)
    chosen = Settings(database_url=DB, spool_dir=tmp_path / "elsewhere")
    assert chosen.spool_folder == tmp_path / "elsewhere"


def test_a_backlog_of_feedback_drains_together_each_post_answered(tmp_path: Path) -> None:
    """Posts spooled during an outage are written a step at a time, each still told how many
    of its items were new; one the drain cannot read is set aside, not holding the rest."""
    from ipt_cds.protocol.models import FeedbackItem
    from ipt_cds.storage.entries import SpooledFeedback, encode_feedback
    from ipt_cds.storage.feedback_rows import feedback_rows

    store = Store(f"sqlite:///{tmp_path / 'store.sqlite3'}")
    spool = Spool.open(tmp_path / "spool", "sqlite:///store", 1 << 20)
    rejected: list[int] = []

    def post(*cards: str) -> bytes:
        items = [
            FeedbackItem.model_validate(
                {"card": c, "outcome": "overridden", "outcomeTimestamp": NOW.isoformat()}
            )
            for c in cards
        ]
        return encode_feedback(SpooledFeedback(feedback_rows("svc", items, NOW), [], NOW))

    async def scenario() -> dict[str, int | None]:
        drainer = Drainer(spool, store, lambda *_: None, rejected=rejected.append)
        answers: dict[str, asyncio.Future[int | None]] = {}
        loop = asyncio.get_running_loop()
        # Spooled before the drain starts, as at start-up after an outage.
        for entry_id, payload in [
            ("a", post("card-1", "card-2")),
            ("b", b"not json"),
            ("c", post("card-2", "card-3")),
        ]:
            answers[entry_id] = drainer._waiting[entry_id] = loop.create_future()
            spool.append(FEEDBACK, payload, entry_id, durable=True)
        drainer.start()
        assert await drainer.drain(10)
        await drainer.close(1)
        return {k: f.result() for k, f in answers.items() if f.done()}

    answered = asyncio.run(scenario())
    assert answered == {"a": 2, "c": 1}, "card-2 was already in"
    assert rejected == [1]
    assert spool.entries == 0
    spool.close()
    store.close()
