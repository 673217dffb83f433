"""The print_history table: written in the poll's commit, once per print, rated later."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from printfleet.core.delivery import Delivery
from printfleet.core.events import ChangeEvent, EventType, Severity
from printfleet.core.fleet import AccountHealth
from printfleet.core.history import HistoryTotal, PrintRecord, Rating
from printfleet.core.model import Print, Printer, PrinterStatus, PrintStatus, Snapshot, Vendor
from printfleet.core.rules.engine import Decision
from printfleet.errors import StoreError
from printfleet.pipeline import Pipeline
from printfleet.poller import Cycle
from printfleet.store import FILENAME, Store
from printfleet.testing import FakeClock

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def record(print_id: str, *, at: datetime = T0, source: str = "lab", **kw: Any) -> PrintRecord:
    fields: dict[str, Any] = {
        "source": source,
        "serial": "F1",
        "printer_name": "Bob",
        "group": "Lab A",
        "print_id": print_id,
        "name": f"job {print_id}",
        "outcome": "finished",
        "finished_at": at,
        "started_at": at - timedelta(hours=2),
        "duration_s": 7200.0,
        "material": "Grey V5",
        "volume_ml": 12.5,
    }
    fields.update(kw)
    return PrintRecord(**fields)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / FILENAME, clock=FakeClock(T0)) as opened:
        yield opened


def test_records_round_trip_oldest_first(store: Store) -> None:
    late = record("p2", at=T0 + timedelta(hours=1), verdict="SUCCESS", verdict_by="ana")
    early = record("p1", group=None, started_at=None, duration_s=None, volume_ml=None)
    store.commit(history=[late, early])
    assert store.print_history() == [early, late]


def test_the_same_print_twice_is_one_record_and_the_first_stands(store: Store) -> None:
    """A re-detected outcome (crash after the commit, restart) must not count twice."""
    first = record("p1")
    store.commit(history=[first])
    store.commit(history=[replace(first, outcome="failed", volume_ml=99.0)])
    assert store.print_history() == [first]


def test_same_print_id_in_two_sources_is_two_records(store: Store) -> None:
    store.commit(history=[record("p1"), record("p1", source="other")])
    assert [r.source for r in store.print_history()] == ["lab", "other"]


def test_a_rating_updates_the_record_and_a_rating_of_nothing_is_ignored(store: Store) -> None:
    store.commit(history=[record("p1")])
    store.commit(
        history=[
            Rating(source="lab", print_id="p1", verdict="FAILURE", note="warped", by="bo"),
            Rating(source="lab", print_id="unknown", verdict="SUCCESS"),
        ]
    )
    (only,) = store.print_history()
    assert (only.verdict, only.verdict_note, only.verdict_by) == ("FAILURE", "warped", "bo")
    store.commit(history=[Rating(source="lab", print_id="p1", verdict="SUCCESS")])
    (only,) = store.print_history()
    assert (only.verdict, only.verdict_note, only.verdict_by) == ("SUCCESS", None, None)


def test_filters_since_inclusive_until_exclusive_and_source(store: Store) -> None:
    hours = [record(f"p{h}", at=T0 + timedelta(hours=h)) for h in range(5)]
    store.commit(history=[*hours, record("x", source="other", at=T0 + timedelta(hours=2))])
    window = store.print_history(since=T0 + timedelta(hours=1), until=T0 + timedelta(hours=3))
    assert [(r.source, r.print_id) for r in window] == [
        ("lab", "p1"),
        ("lab", "p2"),
        ("other", "x"),
    ]
    assert [r.print_id for r in store.print_history(source="other")] == ["x"]
    assert [r.print_id for r in store.print_history(since=T0 + timedelta(hours=4))] == ["p4"]


def test_iterating_in_batches_gives_the_same_records_in_the_same_order(store: Store) -> None:
    """Keyset paging: ties of finished_at (one poll's outcomes) are neither lost nor repeated."""
    same_time = [record(f"t{n}", source=("a", "b")[n % 2]) for n in range(7)]
    later = [record(f"l{n}", at=T0 + timedelta(minutes=n)) for n in range(5)]
    store.commit(history=[*later, *same_time])
    everything = store.print_history()
    assert len(everything) == 12
    for batch in (1, 2, 3, 5, 12, 100):
        assert list(store.iter_print_history(batch=batch)) == everything
    lab = store.print_history(source="lab", since=T0 + timedelta(minutes=1))
    assert (
        list(store.iter_print_history(source="lab", since=T0 + timedelta(minutes=1), batch=2))
        == lab
    )
    assert [r.print_id for r in lab] == ["l1", "l2", "l3", "l4"]


def test_totals_sum_new_records_only(store: Store) -> None:
    """history_totals is what summing print_history gives; a record written twice counts once."""
    records = [
        record("a", volume_ml=30.0),
        record("b", volume_ml=12.5),
        record("c", volume_ml=None),
        record("d", material=None, volume_ml=4.0),
        record("e", outcome="failed", volume_ml=99.0),
        record("f", serial="F2"),
        record("g", source="other"),
    ]
    store.commit(history=records)
    store.commit(history=records[:3])  # re-detected: ignored, totals unchanged
    assert store.history_totals("lab") == [
        HistoryTotal("lab", "F1", "failed", "Grey V5", prints=1, volume_ml=99.0, with_volume=1),
        HistoryTotal("lab", "F1", "finished", None, prints=1, volume_ml=4.0, with_volume=1),
        HistoryTotal("lab", "F1", "finished", "Grey V5", prints=3, volume_ml=42.5, with_volume=2),
        HistoryTotal("lab", "F2", "finished", "Grey V5", prints=1, volume_ml=12.5, with_volume=1),
    ]
    assert [t.prints for t in store.history_totals("other")] == [1]
    assert store.history_totals("nobody") == []


def test_vendor_text_with_a_lone_surrogate_is_stored(store: Store) -> None:
    """Vendor names are arbitrary JSON strings; one UTF-8 cannot encode must not fail a poll."""
    store.commit(history=[record("p1", name="job \ud800", printer_name="\udfff")])
    (only,) = store.print_history()
    assert only.name.startswith("job ")


def test_history_and_snapshot_commit_together_or_not_at_all(store: Store) -> None:
    """A history write that fails takes the poll's snapshot down with it (one transaction)."""
    side = sqlite3.connect(store.path)
    side.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON print_history BEGIN SELECT RAISE(ABORT, 'no'); END"
    )
    side.close()
    snap = Snapshot(source="lab", vendor=Vendor.FORMLABS, taken_at=T0, printers={})
    with pytest.raises(StoreError):
        store.commit(snapshot=snap, history=[record("p1")])
    assert store.load_snapshot("lab") is None
    assert store.print_history() == []


def test_a_fresh_database_has_the_table_and_an_older_one_gains_it(tmp_path: Path) -> None:
    path = tmp_path / FILENAME
    with Store.open(path):
        pass
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE print_history")
    conn.execute("DROP TABLE print_totals")
    conn.execute("DROP TABLE event_log")  # migration 3, after print history
    conn.execute("PRAGMA user_version = 1")  # as printfleet 0.x before print history
    conn.close()
    with Store.open(path) as reopened:
        reopened.commit(history=[record("p1")])
        assert len(reopened.print_history()) == 1


# -- through the pipeline ---------------------------------------------------------------------


class _NoRules:
    """A rule set with no rules (the rule engine is not what these tests are about)."""

    matches: Mapping[str, int] = {}

    def process(
        self, event: dict[str, Any], now: datetime, *, trace: list[Decision] | None = None
    ) -> list[Delivery]:
        return []

    def tick(self, now: datetime, *, trace: list[Decision] | None = None) -> list[Delivery]:
        return []

    def next_deadline(self) -> datetime | None:
        return None

    def state(self) -> dict[str, Any]:
        return {}


def _printer(current: Print) -> Printer:
    return Printer(
        serial="F1",
        name="Bob",
        vendor=Vendor.FORMLABS,
        model="Form 4",
        model_code="FORM-4-0",
        status=PrinterStatus.IDLE,
        status_raw="IDLE",
        online=True,
        group="Lab A",
        current_print=current,
    )


def _cycle(kind: EventType, run: Print, **details: Any) -> Cycle:
    printer = _printer(run)
    event = ChangeEvent(
        id=f"{kind.value}-{run.id}",
        type=kind,
        source="lab",
        vendor=Vendor.FORMLABS,
        subject="F1",
        time=T0 + timedelta(hours=4),
        severity=Severity.INFO,
        printer=printer,
        print=run,
        details=details,
    )
    snapshot = Snapshot(
        source="lab", vendor=Vendor.FORMLABS, taken_at=event.time, printers={"F1": printer}
    )
    return Cycle(source="lab", snapshot=snapshot, events=(event,), health=AccountHealth(), state={})


async def test_the_pipeline_records_outcomes_once_and_applies_ratings(store: Store) -> None:
    pipeline = Pipeline(store=store, rules=_NoRules(), clock=FakeClock(T0), mqtt_prefix=None)
    done = Print(
        id="p1",
        name="bracket",
        status=PrintStatus.FINISHED,
        status_raw="FINISHED",
        started_at=T0,
        finished_at=T0 + timedelta(hours=3),
        volume_ml=30.0,
        material="Grey V5",
    )
    await pipeline.handle(_cycle(EventType.PRINT_FINISHED, done))
    await pipeline.handle(_cycle(EventType.PRINT_FINISHED, done))  # re-detected after a restart
    (only,) = store.print_history()
    assert (only.print_id, only.serial, only.group, only.volume_ml, only.duration_s) == (
        "p1",
        "F1",
        "Lab A",
        30.0,
        3 * 3600.0,
    )
    assert only.verdict is None
    await pipeline.handle(
        _cycle(
            EventType.PRINT_RATED,
            replace(done, verdict="FAILURE"),
            verdict="FAILURE",
            note="supports",
            by="ana",
            machine_outcome="finished",
        )
    )
    (only,) = store.print_history()
    assert (only.verdict, only.verdict_note, only.verdict_by) == ("FAILURE", "supports", "ana")
