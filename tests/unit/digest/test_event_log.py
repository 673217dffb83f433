"""The event log the digests read: written in the poll commit, queried by period, pruned."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from printfleet.core.digest import LoggedEvent, logged_events
from printfleet.core.events import ChangeEvent, EventType, Severity
from printfleet.core.model import Printer, PrinterStatus, Vendor
from printfleet.store import Store
from printfleet.testing import FakeClock

T0 = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture
def clock_start() -> datetime:
    return T0


def ev(kind: str, subject: str, hours: float, **details: object) -> LoggedEvent:
    return LoggedEvent(kind, "lab", subject, T0 + timedelta(hours=hours), details)


def test_events_by_period_and_the_last_one_before(store: Store) -> None:
    store.commit(
        events=[
            ev("printer.offline", "A", -5),
            ev("printer.online", "A", -3, note="x"),
            ev("printer.offline", "B", -2),
            ev("material.low", "B", -1),
            ev("printer.online", "B", 1),
            ev("printer.offline", "A", 2),
        ]
    )
    inside = store.logged_events(since=T0, until=T0 + timedelta(hours=2))
    assert [(e.type, e.subject) for e in inside] == [("printer.online", "B")]
    before = store.last_logged_events(
        before=T0, types=["printer.offline", "printer.online", "printer.removed"]
    )
    assert sorted((e.subject, e.type) for e in before) == [
        ("A", "printer.online"),
        ("B", "printer.offline"),
    ]
    assert next(e for e in before if e.subject == "A").details == {"note": "x"}


async def test_rows_older_than_35_days_are_pruned(store: Store, clock: FakeClock) -> None:
    store.commit(events=[ev("printer.offline", "A", 0)])
    await clock.advance(36 * 86400)
    store.commit(events=[ev("printer.online", "A", 36 * 24)])
    later = clock.now() + timedelta(seconds=1)
    everything = store.logged_events(since=T0 - timedelta(days=1), until=later)
    assert [e.type for e in everything] == ["printer.online"]


def test_only_the_types_digests_need_are_logged_with_printer_labels() -> None:
    printer = Printer(
        serial="F4-1",
        name="Beaver",
        vendor=Vendor.FORMLABS,
        model="Form 4",
        model_code="FORM-4-0",
        status=PrinterStatus.OFFLINE,
        status_raw="OFFLINE",
        online=False,
        group="lab-a",
    )

    def change(kind: EventType, **details: object) -> ChangeEvent:
        return ChangeEvent(
            id=kind.value,
            type=kind,
            source="lab",
            vendor=Vendor.FORMLABS,
            subject="F4-1",
            time=T0,
            severity=Severity.INFO,
            printer=printer,
            details=details,
        )

    rows = logged_events(
        [
            change(EventType.PRINTER_OFFLINE),
            change(EventType.PRINT_PROGRESS, milestone=0.5),
            change(EventType.MATERIAL_LOW, slot="main", remaining_ml=12.0, nested={"x": 1}),
        ]
    )
    assert [r.type for r in rows] == ["printer.offline", "material.low"]
    assert rows[1].details == {
        "slot": "main",
        "remaining_ml": 12.0,
        "name": "Beaver",
        "group": "lab-a",
    }


class _NoRules:
    matches: dict[str, int] = {}

    def process(self, event: object, now: datetime, *, trace: object = None) -> list[object]:
        return []

    def tick(self, now: datetime, *, trace: object = None) -> list[object]:
        return []

    def next_deadline(self) -> None:
        return None

    def state(self) -> dict[str, object]:
        return {}


async def test_the_poll_commit_writes_the_events_digests_need(store: Store) -> None:
    from printfleet.core.fleet import AccountHealth
    from printfleet.core.model import Snapshot
    from printfleet.pipeline import Pipeline
    from printfleet.poller import Cycle

    printer = Printer(
        serial="F4-1",
        name="Beaver",
        vendor=Vendor.FORMLABS,
        model="Form 4",
        model_code="FORM-4-0",
        status=PrinterStatus.OFFLINE,
        status_raw="OFFLINE",
        online=False,
    )
    offline = ChangeEvent(
        id="e1",
        type=EventType.PRINTER_OFFLINE,
        source="lab",
        vendor=Vendor.FORMLABS,
        subject="F4-1",
        time=T0,
        severity=Severity.WARNING,
        printer=printer,
    )
    snapshot = Snapshot(
        source="lab", vendor=Vendor.FORMLABS, taken_at=T0, printers={"F4-1": printer}
    )
    pipeline = Pipeline(store=store, rules=_NoRules(), clock=FakeClock(T0), mqtt_prefix=None)
    await pipeline.handle(
        Cycle(source="lab", snapshot=snapshot, events=(offline,), health=AccountHealth(), state={})
    )
    (row,) = store.logged_events(since=T0, until=T0 + timedelta(seconds=1))
    assert (row.type, row.subject, row.details["name"]) == ("printer.offline", "F4-1", "Beaver")
