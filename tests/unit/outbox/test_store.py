"""The state store: snapshots, state and the outbox in one SQLite file that survives crashes."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import textwrap
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from printfleet.core.delivery import Delivery
from printfleet.core.model import (
    Material,
    Print,
    Printer,
    PrinterStatus,
    PrintStatus,
    Snapshot,
    Tank,
    Vendor,
)
from printfleet.errors import StoreError
from printfleet.store import FILENAME, Store
from printfleet.store_file import SCHEMA_VERSION
from printfleet.testing import FakeClock

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def printer(serial: str, *, status: PrinterStatus = PrinterStatus.IDLE, **kw: Any) -> Printer:
    return Printer(
        serial=serial,
        name=f"name-{serial}",
        vendor=Vendor.FORMLABS,
        model="Form 4",
        model_code="FORM-4-0",
        status=status,
        status_raw=status.value,
        online=True,
        last_seen_at=kw.pop("last_seen_at", T0),
        raw={"vendor": "stuff", "secret_ish": serial},
        **kw,
    )


def snapshot(*printers: Printer, at: datetime = T0, source: str = "lab") -> Snapshot:
    return Snapshot(
        source=source,
        vendor=Vendor.FORMLABS,
        taken_at=at,
        printers={p.serial: p for p in printers},
        runs={"r1": Print(id="r1", name="old", status=PrintStatus.FINISHED, status_raw="DONE")},
    )


def delivery(
    n: int, *, key: str = "lab/A", sink: str = "hook", at: datetime | None = None
) -> Delivery:
    return Delivery(
        id=f"d{n}",
        sink=sink,
        event_id=f"e{n}",
        key=key,
        created_at=at or T0 + timedelta(seconds=n),
        payload={"event": {"id": f"e{n}", "type": "print.finished", "subject": key}},
    )


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """A database file in a directory that does not exist yet, so opening has to create it."""
    return tmp_path / "state" / FILENAME


@pytest.fixture
def store_path(path: Path) -> Path:
    """The shared ``store`` fixture opens the same not-yet-existing directory."""
    return path


def ids(entries: list[Any]) -> list[str]:
    return [e.delivery.id for e in entries]


# -- opening -------------------------------------------------------------------------------


def test_open_creates_directories_and_uses_wal(path: Path, clock: FakeClock) -> None:
    """Opening creates the state directory and a WAL-mode database at the current schema."""
    Store.open(path, clock=clock).close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_store_sets_synchronous_normal(store: Store) -> None:
    """The connection runs with synchronous=NORMAL (crash-safe in WAL, one fsync per checkpoint)."""
    assert store._conn is not None
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 1


def test_corrupt_database_is_moved_aside_and_replaced(path: Path, clock: FakeClock) -> None:
    """A file that is not a database is renamed ``.corrupt-<time>``, logged once, and replaced."""
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not sqlite" * 100)
    with capture_logs() as logs, Store.open(path, clock=clock) as store:
        assert store.commit(deliveries=[delivery(1)]) == 1
    moved = path.with_name(f"{FILENAME}.corrupt-20260101T000000Z")
    assert moved.read_bytes().startswith(b"this is not sqlite")
    errors = [e for e in logs if e["log_level"] == "error"]
    assert [e["event"] for e in errors] == ["store.replaced"]


def test_damaged_pages_are_detected_and_replaced(path: Path, clock: FakeClock) -> None:
    """A database whose pages were overwritten fails the integrity check and is replaced."""
    with Store.open(path, clock=clock) as store:
        store.commit(deliveries=[delivery(n, key=f"lab/{n}") for n in range(300)])
    data = bytearray(path.read_bytes())
    data[4096 : 4096 * 3] = b"\xff" * (4096 * 2)
    path.write_bytes(bytes(data))
    with Store.open(path, clock=clock) as store:
        assert store.pending_count() == {}
    assert list(path.parent.glob(f"{FILENAME}.corrupt-*"))


def test_database_from_a_newer_release_is_moved_aside(path: Path, clock: FakeClock) -> None:
    """A schema newer than this release understands is kept aside, not misread."""
    Store.open(path, clock=clock).close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    Store.open(path, clock=clock).close()
    assert list(path.parent.glob(f"{FILENAME}.unsupported-*"))


def test_use_after_close_raises_store_error(store: Store) -> None:
    """A closed store refuses work with a StoreError naming the file."""
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.pending_count()


# -- snapshots and state -------------------------------------------------------------------


def test_snapshot_round_trips_without_raw(path: Path, clock: FakeClock) -> None:
    """A committed snapshot reads back equal after reopening, minus the vendor raw records."""
    snap = snapshot(
        printer(
            "A",
            current_print=Print(
                id="p1", name="x", status=PrintStatus.PRINTING, status_raw="P", raw={"k": 1}
            ),
            materials=(Material(slot="main", remaining_ml=100.0, capacity_ml=1000.0),),
            tank=Tank(serial="T", layers_printed=5),
            alerts=("door open",),
        ),
        printer("B", last_seen_at=T0 + timedelta(seconds=3)),
    )
    with Store.open(path, clock=clock) as store:
        store.commit(snapshot=snap)
    with Store.open(path, clock=clock) as store:
        loaded = store.load_snapshot("lab")
    assert loaded == snap
    assert loaded is not None
    assert loaded.printers["B"].last_seen_at == T0 + timedelta(seconds=3)
    assert dict(loaded.printers["A"].raw) == {}
    assert loaded.printers["A"].current_print is not None
    assert dict(loaded.printers["A"].current_print.raw) == {}


def test_unknown_source_has_no_snapshot(store: Store) -> None:
    """A source never committed has no snapshot."""
    assert store.load_snapshot("nope") is None


def test_changed_and_removed_printers_are_stored(path: Path, clock: FakeClock) -> None:
    """After successive commits the stored snapshot is the latest one, removed printers gone."""
    first = snapshot(printer("A"), printer("B"), printer("C"))
    second = snapshot(
        printer("A", status=PrinterStatus.PRINTING),
        printer("C", last_seen_at=T0 + timedelta(minutes=15)),
        printer("D"),
        at=T0 + timedelta(seconds=15),
    )
    with Store.open(path, clock=clock) as store:
        store.commit(snapshot=first)
        store.commit(snapshot=second)
    with Store.open(path, clock=clock) as store:
        loaded = store.load_snapshot("lab")
    assert loaded == second
    assert loaded is not None
    assert loaded.taken_at == second.taken_at
    assert loaded.printers["C"].last_seen_at == T0 + timedelta(minutes=15)


def test_a_heartbeat_alone_is_written_only_every_15_minutes(store: Store) -> None:
    """A printer whose only change is ``last_seen_at`` is not rewritten on every poll."""
    store.commit(snapshot=snapshot(printer("A")))
    assert store._conn is not None
    before = store._conn.total_changes
    store.commit(snapshot=snapshot(printer("A", last_seen_at=T0 + timedelta(minutes=14))))
    assert store._conn.total_changes - before == 1  # the source row's taken_at only
    store.commit(snapshot=snapshot(printer("A", last_seen_at=T0 + timedelta(minutes=15))))
    assert store._conn.total_changes - before == 3
    store._known.clear()
    loaded = store.load_snapshot("lab")
    assert loaded is not None
    assert loaded.printers["A"].last_seen_at == T0 + timedelta(minutes=15)


def test_first_commit_after_reopen_replaces_the_stored_printers(
    path: Path, clock: FakeClock
) -> None:
    """Committing without loading first still removes printers the database had."""
    with Store.open(path, clock=clock) as store:
        store.commit(snapshot=snapshot(printer("A"), printer("B")))
    with Store.open(path, clock=clock) as store:
        store.commit(snapshot=snapshot(printer("B")))
        loaded = store.load_snapshot("lab")
    assert loaded is not None
    assert set(loaded.printers) == {"B"}


def test_unchanged_snapshot_commit_writes_one_row(store: Store) -> None:
    """Committing a fleet that did not change only updates the source's timestamp row."""
    fleet = [printer(f"P{n}") for n in range(500)]
    store.commit(snapshot=snapshot(*fleet))
    assert store._conn is not None
    before = store._conn.total_changes
    store.commit(snapshot=snapshot(*fleet, at=T0 + timedelta(seconds=15)))
    assert store._conn.total_changes - before == 1


def test_state_round_trips_and_none_deletes(store: Store) -> None:
    """State values come back as committed JSON; committing None deletes the key."""
    store.commit(state={"rules": {"timers": [1, 2]}, "watermark:lab": "2026-01-01T00:00:00Z"})
    assert store.load_state("rules") == {"timers": [1, 2]}
    store.commit(state={"rules": None})
    assert store.load_state("rules") is None
    assert store.load_state("watermark:lab") == "2026-01-01T00:00:00Z"


def test_failed_commit_writes_nothing_and_raises_store_error(store: Store) -> None:
    """An error inside the transaction rolls back snapshot, deliveries and state together."""
    store.commit(snapshot=snapshot(printer("A")), state={"k": 1})
    assert store._conn is not None
    store._conn.execute(
        "CREATE TRIGGER boom BEFORE INSERT ON state BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
    )
    with pytest.raises(StoreError, match="could not commit"):
        store.commit(
            snapshot=snapshot(printer("B"), at=T0 + timedelta(seconds=5)),
            deliveries=[delivery(1)],
            state={"k": 2},
        )
    loaded = store.load_snapshot("lab")
    assert loaded is not None
    assert set(loaded.printers) == {"A"}
    assert store.pending_count() == {}
    assert store.load_state("k") == 1


def test_failed_commit_can_be_retried_with_the_same_arguments(store: Store) -> None:
    """After a failed commit, committing the same snapshot and deliveries again succeeds."""
    assert store._conn is not None
    store._conn.execute(
        "CREATE TRIGGER boom BEFORE INSERT ON outbox BEGIN SELECT RAISE(ABORT, 'full'); END"
    )
    snap = snapshot(printer("A"))
    with pytest.raises(StoreError):
        store.commit(snapshot=snap, deliveries=[delivery(1)])
    store._conn.execute("DROP TRIGGER boom")
    assert store.commit(snapshot=snap, deliveries=[delivery(1)]) == 1
    assert store.load_snapshot("lab") == snap


def test_disk_full_is_a_store_error_saying_so(store: Store) -> None:
    """SQLITE_FULL surfaces as a StoreError that says the disk is full."""
    assert store._conn is not None
    pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
    store._conn.execute(f"PRAGMA max_page_count = {pages}")
    big = [
        replace(delivery(n, key=f"lab/{n}"), payload={"event": {"blob": "x" * 2000}})
        for n in range(200)
    ]
    with pytest.raises(StoreError, match="disk is full"):
        store.commit(deliveries=big)
    assert store.pending_count() == {}


def test_kill_during_commit_leaves_the_previous_state(path: Path, clock: FakeClock) -> None:
    """A process killed in the middle of a commit leaves the last committed state intact."""
    with Store.open(path, clock=clock) as store:
        store.commit(snapshot=snapshot(printer("A")), state={"k": "old"})
    script = textwrap.dedent(
        f"""
        import os
        from datetime import UTC, datetime
        from printfleet.core.delivery import Delivery
        from printfleet.core.model import Printer, PrinterStatus, Snapshot, Vendor
        from printfleet.store import Store

        store = Store.open(__import__("pathlib").Path({str(path)!r}))
        store._conn.create_function("die", 0, lambda: os._exit(9))
        store._conn.execute(
            "CREATE TEMP TRIGGER die AFTER INSERT ON main.state BEGIN SELECT die(); END"
        )
        t = datetime(2026, 1, 1, tzinfo=UTC)
        p = Printer("B", "B", Vendor.FORMLABS, "Form 4", "F4", PrinterStatus.IDLE, "IDLE", True)
        store.commit(
            snapshot=Snapshot("lab", Vendor.FORMLABS, t, {{"B": p}}),
            deliveries=[Delivery("d1", "hook", "e1", "lab/B", t, {{"event": {{}}}})],
            state={{"k": "new"}},
        )
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert result.returncode == 9, result.stderr.decode()
    with Store.open(path, clock=clock) as store:
        loaded = store.load_snapshot("lab")
        assert loaded is not None
        assert set(loaded.printers) == {"A"}
        assert store.pending_count() == {}
        assert store.load_state("k") == "old"


# -- outbox --------------------------------------------------------------------------------


def test_commit_counts_new_deliveries_and_ignores_repeats(store: Store) -> None:
    """Enqueuing the same delivery id twice is a no-op."""
    assert store.commit(deliveries=[delivery(1), delivery(2), delivery(1)]) == 2
    assert store.commit(deliveries=[delivery(2), delivery(3)]) == 1
    assert store.pending_count() == {"hook": 3}


def test_delivered_ids_are_never_enqueued_again(store: Store, clock: FakeClock) -> None:
    """A delivery that was already delivered is not queued again by a repeated commit."""
    store.commit(deliveries=[delivery(1)])
    store.mark_delivered("d1")
    assert store.commit(deliveries=[delivery(1)]) == 0
    assert store.due("hook", clock.now()) == []


def test_due_returns_one_entry_per_key_oldest_first(store: Store, clock: FakeClock) -> None:
    """Only the oldest pending entry of each ordering key is due."""
    store.commit(
        deliveries=[
            delivery(3, key="lab/B"),
            delivery(1, key="lab/A"),
            delivery(2, key="lab/A"),
            delivery(4, key="lab/B"),
        ]
    )
    assert ids(store.due("hook", clock.now())) == ["d3", "d1"]
    store.mark_delivered("d1")
    assert ids(store.due("hook", clock.now())) == ["d3", "d2"]


def test_due_is_per_sink(store: Store, clock: FakeClock) -> None:
    """Entries for another sink with the same key neither show up nor block."""
    store.commit(deliveries=[delivery(1, sink="other"), delivery(2)])
    assert ids(store.due("hook", clock.now())) == ["d2"]
    assert ids(store.due("other", clock.now())) == ["d1"]


def test_a_rescheduled_head_blocks_its_key(store: Store, clock: FakeClock) -> None:
    """While the oldest entry of a key waits for its retry, later ones of that key wait too."""
    store.commit(deliveries=[delivery(1), delivery(2), delivery(3, key="lab/B")])
    store.reschedule("d1", due_at=T0 + timedelta(seconds=60), error="HTTP 503")
    assert ids(store.due("hook", T0 + timedelta(seconds=59))) == ["d3"]
    assert ids(store.due("hook", T0 + timedelta(seconds=60))) == ["d3", "d1"]
    entry = store.list_entries(sink="hook")[0]
    assert (entry.attempt, entry.last_error, entry.first_attempt_at) == (1, "HTTP 503", T0)


def test_next_due_at_is_the_earliest_head(store: Store) -> None:
    """The next due time ignores entries waiting behind their key's head."""
    assert store.next_due_at("hook") is None
    store.commit(deliveries=[delivery(1), delivery(2)])
    store.reschedule("d1", due_at=T0 + timedelta(seconds=30), error="x")
    assert store.next_due_at("hook") == T0 + timedelta(seconds=30)


def test_dead_letter_unblocks_the_next_entry(store: Store, clock: FakeClock) -> None:
    """A dead-lettered head lets the next entry of its key go, and keeps the response."""
    store.commit(deliveries=[delivery(1), delivery(2)])
    store.dead_letter("d1", error="HTTP 400", response='{"error":"invalid_blocks"}')
    assert ids(store.due("hook", clock.now())) == ["d2"]
    dead = store.list_entries(dead=True)
    assert ids(dead) == ["d1"]
    assert (dead[0].dead, dead[0].attempt, dead[0].response, dead[0].dead_at) == (
        True,
        1,
        '{"error":"invalid_blocks"}',
        T0,
    )
    assert store.dead_count() == {"hook": 1}
    assert store.pending_count("hook") == {"hook": 1}


async def test_replay_makes_dead_entries_due_now_with_attempts_reset(
    store: Store, clock: FakeClock
) -> None:
    """Replay moves dead entries back to pending, due now, with a fresh attempt count and age."""
    store.commit(deliveries=[delivery(1), delivery(2, key="lab/B")])
    store.reschedule("d1", due_at=T0, error="HTTP 503")
    store.dead_letter("d1", error="expired")
    store.dead_letter("d2", error="HTTP 400")
    await clock.advance(30 * 3600)
    later = clock.now()
    assert store.replay(["d1"]) == 1
    entry = store.due("hook", later)[0]
    assert (entry.delivery.id, entry.attempt, entry.dead, entry.enqueued_at) == (
        "d1",
        0,
        False,
        later,
    )
    assert store.replay(sink="hook") == 1
    assert store.dead_count("hook") == {"hook": 0}


def test_drop_deletes_dead_entries_by_id_or_sink(store: Store) -> None:
    """Drop removes selected dead entries and leaves pending ones alone."""
    store.commit(deliveries=[delivery(1), delivery(2, key="lab/B"), delivery(3, key="lab/C")])
    store.dead_letter("d1", error="x")
    store.dead_letter("d2", error="x")
    assert store.drop(["d1", "d3"]) == 1
    assert store.drop(sink="hook") == 1
    assert store.dead_count() == {}
    assert store.pending_count() == {"hook": 1}


def test_dropping_a_pending_head_makes_the_next_one_due(store: Store, clock: FakeClock) -> None:
    """Dropping a pending entry passes its key's turn to the next entry."""
    store.commit(deliveries=[delivery(1), delivery(2)])
    assert store.drop(["d1"], dead=False) == 1
    assert ids(store.due("hook", clock.now())) == ["d2"]


def test_expedite_makes_waiting_heads_due_now(store: Store, clock: FakeClock) -> None:
    """After a recovery every backed-off head of the sink is due at once."""
    store.commit(deliveries=[delivery(1), delivery(2, key="lab/B")])
    store.reschedule("d1", due_at=T0 + timedelta(minutes=5), error="x")
    assert store.expedite("hook") == 1
    assert ids(store.due("hook", clock.now())) == ["d1", "d2"]


def test_payload_round_trips_through_the_outbox(store: Store, clock: FakeClock) -> None:
    """What is queued is what comes out: ids, key, times and payload."""
    d = replace(delivery(1), payload={"event": {"id": "e1", "n": 1.5, "ü": [1, None]}})
    store.commit(deliveries=[d])
    assert store.due("hook", clock.now())[0].delivery == d


async def test_counts_can_be_read_from_another_thread(store: Store) -> None:
    """The metrics collector's thread can read counts while the loop owns the store."""
    store.commit(deliveries=[delivery(1)])
    assert await asyncio.to_thread(store.pending_count) == {"hook": 1}
