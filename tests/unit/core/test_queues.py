"""Job queues: queue.backlog (raised once, re-armed), queue.empty, and the printer blocked
while jobs wait (a printer.alert raised and cleared like the others)."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta

import pytest

from printfleet.core.alerts import (
    ALERT_BLOCKED_WITH_QUEUE,
    ALERT_CAMERA_DISCONNECTED,
    ALERT_NEEDS_CONFIRMATION,
    ALERT_NOT_READY,
)
from printfleet.core.codec import snapshot_from_json, snapshot_to_json
from printfleet.core.diff import diff
from printfleet.core.events import EventType, Severity, to_cloudevent
from printfleet.core.model import (
    Print,
    Printer,
    PrinterStatus,
    PrintStatus,
    Queue,
    Snapshot,
    Vendor,
)
from printfleet.core.queues import (
    MAX_QUEUE_ITEMS,
    apply_queues,
    carbon_queues,
    is_backlogged,
    queue_events,
)
from printfleet.core.thresholds import DiffSettings
from printfleet.sinks.mqtt.topics import state_payload

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
STEP = timedelta(minutes=5)
SETTINGS = DiffSettings(queue_backlog_items=10, queue_backlog_age=timedelta(hours=2))
GROUP = "3f6c2a1e-8b4d-4f7a-9c2e-5d1b7e9a0c43"


def printer(serial: str = "F1", *alerts: str, online: bool = True, run: Print | None = None):  # type: ignore[no-untyped-def]
    return Printer(
        serial=serial,
        name=serial,
        vendor=Vendor.FORMLABS,
        model="Form 4",
        model_code="FORM-4-0",
        status=PrinterStatus.IDLE,
        status_raw="IDLE",
        online=online,
        alerts=tuple(sorted(alerts)),
        current_print=run,
    )


def queue(items: int, *, at: datetime = T0, oldest: timedelta | None = None) -> Queue:
    return Queue(
        key=GROUP,
        name="Prototyping Lab",
        items=items,
        printers=("F1", "F2"),
        oldest_at=at - oldest if oldest is not None else None,
        as_of=at,
    )


def snap(at: datetime, *printers: Printer, queues: tuple[Queue, ...] = ()) -> Snapshot:
    return apply_queues(
        Snapshot(
            source="lab",
            vendor=Vendor.FORMLABS,
            taken_at=at,
            printers={p.serial: p for p in printers},
            queues={q.key: q for q in queues},
        )
    )


def kinds(events: list) -> list[str]:  # type: ignore[type-arg]
    return [e.type.value for e in events]


# --- backlog ------------------------------------------------------------------------------


def test_backlog_by_count_is_raised_once_and_rearmed_below_the_threshold() -> None:
    counts = [3, 10, 12, 11, 9, 14]
    snaps = [
        snap(T0 + i * STEP, queues=(queue(n, at=T0 + i * STEP),)) for i, n in enumerate(counts)
    ]
    raised = [
        i for i in range(1, len(snaps)) if kinds(queue_events(snaps[i - 1], snaps[i], SETTINGS))
    ]
    # 3 -> 10 raises; 12 and 11 stay backlogged (silent); 9 re-arms; 14 raises again.
    assert raised == [1, 5]
    event = queue_events(snaps[0], snaps[1], SETTINGS)[0]
    assert event.type is EventType.QUEUE_BACKLOG
    assert event.subject == GROUP
    assert event.severity is Severity.WARNING
    assert event.details["reason"] == "items"
    assert event.details["queue"]["group"] == GROUP
    assert event.details["queue"]["items"] == 10
    assert event.printer is None  # a group's queue is no one printer's


def test_backlog_by_age_uses_the_time_the_queue_was_read() -> None:
    young = queue(2, at=T0, oldest=timedelta(hours=1, minutes=59))
    old = queue(2, at=T0 + STEP, oldest=timedelta(hours=2, minutes=4))
    events = queue_events(snap(T0, queues=(young,)), snap(T0 + STEP, queues=(old,)), SETTINGS)
    assert kinds(events) == ["queue.backlog"]
    assert events[0].details["reason"] == "age"
    assert events[0].details["queue"]["oldest_at"] == "2026-11-23T08:01:00Z"
    # A queue carried unchanged (not read again) does not age past what was seen.
    later = snap(T0 + 10 * STEP, queues=(young,))
    assert queue_events(snap(T0, queues=(young,)), later, SETTINGS) == []
    assert not is_backlogged(young, SETTINGS)


def test_an_empty_queue_is_never_backlogged_however_old_its_timestamp() -> None:
    assert not is_backlogged(queue(0, oldest=timedelta(days=3)), SETTINGS)


def test_a_new_queue_that_is_already_backlogged_is_announced() -> None:
    events = queue_events(snap(T0), snap(T0 + STEP, queues=(queue(25),)), SETTINGS)
    assert kinds(events) == ["queue.backlog"]


def test_event_ids_are_stable_for_the_same_pair_and_differ_per_occurrence() -> None:
    a, b, c = (
        snap(T0 + i * STEP, queues=(queue(n, at=T0 + i * STEP),)) for i, n in enumerate((1, 10, 10))
    )
    first = queue_events(a, b, SETTINGS)
    assert [e.id for e in first] == [e.id for e in queue_events(a, b, SETTINGS)]
    again = queue_events(c, dataclasses.replace(b, taken_at=T0 + 3 * STEP), SETTINGS)
    assert again == []  # still backlogged
    d = snap(T0 + 4 * STEP, queues=(queue(2, at=T0 + 4 * STEP),))
    e = snap(T0 + 5 * STEP, queues=(queue(11, at=T0 + 5 * STEP),))
    second = queue_events(d, e, SETTINGS)
    assert first[0].id != second[0].id


# --- empty --------------------------------------------------------------------------------


def test_empty_when_a_queue_goes_from_jobs_to_none() -> None:
    a = snap(T0, queues=(queue(2),))
    b = snap(T0 + STEP, queues=(queue(0, at=T0 + STEP),))
    events = queue_events(a, b, SETTINGS)
    assert kinds(events) == ["queue.empty"]
    assert events[0].details["queue"]["items"] == 0
    assert to_cloudevent(events[0])["data"]["queue"]["group"] == GROUP
    # Staying empty, and a queue that disappears, say nothing.
    c = snap(T0 + 2 * STEP, queues=(queue(0, at=T0 + 2 * STEP),))
    assert queue_events(b, c, SETTINGS) == []
    assert queue_events(a, snap(T0 + STEP), SETTINGS) == []


def test_first_snapshot_is_a_silent_baseline() -> None:
    assert queue_events(None, snap(T0, queues=(queue(50),)), SETTINGS) == []


def test_diff_includes_queue_events() -> None:
    a = snap(T0, printer("F1"), queues=(queue(1),))
    b = snap(T0 + STEP, printer("F1"), queues=(queue(0, at=T0 + STEP),))
    assert kinds(diff(a, b, T0 + STEP, SETTINGS)) == ["queue.empty"]


# --- carbon -------------------------------------------------------------------------------


def test_carbon_queues_are_per_printer_capped_and_carry_the_printer() -> None:
    carbon = dataclasses.replace(printer("C1"), vendor=Vendor.CARBON, queue_length=10**9)
    idle = dataclasses.replace(printer("C2"), vendor=Vendor.CARBON, queue_length=None)
    queues = carbon_queues([carbon, idle], T0)
    assert list(queues) == ["C1"]
    assert queues["C1"].items == MAX_QUEUE_ITEMS
    assert queues["C1"].printers == ("C1",)
    before = Snapshot("f", Vendor.CARBON, T0, {"C1": carbon}, queues={})
    before = dataclasses.replace(before, queues={"C1": dataclasses.replace(queues["C1"], items=1)})
    after = Snapshot("f", Vendor.CARBON, T0 + STEP, {"C1": carbon}, queues=queues)
    events = queue_events(before, after, SETTINGS)
    assert kinds(events) == ["queue.backlog"]
    assert events[0].printer is carbon
    assert events[0].subject == "C1"


# --- blocked with jobs queued ---------------------------------------------------------------


def alert_events(events: list) -> list[tuple[str, str]]:  # type: ignore[type-arg]
    return [
        (e.details["alert"], e.details["state"])
        for e in events
        if e.type is EventType.PRINTER_ALERT
    ]


def test_blocked_with_jobs_queued_is_raised_with_details_and_cleared() -> None:
    ok = snap(T0, printer("F1"), queues=(queue(3),))
    blocked = snap(T0 + STEP, printer("F1", ALERT_NEEDS_CONFIRMATION), queues=(queue(3),))
    still = snap(T0 + 2 * STEP, printer("F1", ALERT_NEEDS_CONFIRMATION), queues=(queue(4),))
    cleared = snap(T0 + 3 * STEP, printer("F1"), queues=(queue(4),))
    raised = diff(ok, blocked, T0 + STEP, SETTINGS)
    assert alert_events(raised) == [
        (ALERT_BLOCKED_WITH_QUEUE, "raised"),
        (ALERT_NEEDS_CONFIRMATION, "raised"),
    ]
    event = next(e for e in raised if e.details["alert"] == ALERT_BLOCKED_WITH_QUEUE)
    assert event.details["blocking"] == [ALERT_NEEDS_CONFIRMATION]
    assert event.details["queued"] == 3
    assert event.severity is Severity.WARNING
    assert alert_events(diff(blocked, still, T0 + 2 * STEP, SETTINGS)) == []  # raised once
    assert alert_events(diff(still, cleared, T0 + 3 * STEP, SETTINGS)) == [
        (ALERT_BLOCKED_WITH_QUEUE, "cleared"),
        (ALERT_NEEDS_CONFIRMATION, "cleared"),
    ]


def test_blocked_clears_when_the_queue_empties() -> None:
    blocked = snap(T0, printer("F1", ALERT_NEEDS_CONFIRMATION), queues=(queue(1),))
    empty = snap(
        T0 + STEP, printer("F1", ALERT_NEEDS_CONFIRMATION), queues=(queue(0, at=T0 + STEP),)
    )
    events = diff(blocked, empty, T0 + STEP, SETTINGS)
    assert alert_events(events) == [(ALERT_BLOCKED_WITH_QUEUE, "cleared")]
    assert "queue.empty" in kinds(events)


def test_not_blocked_without_jobs_or_without_a_blocking_alert() -> None:
    idle = snap(T0, printer("F1", ALERT_NEEDS_CONFIRMATION), queues=(queue(0),))
    assert ALERT_BLOCKED_WITH_QUEUE not in idle.printers["F1"].alerts
    camera = snap(T0, printer("F1", ALERT_CAMERA_DISCONNECTED), queues=(queue(5),))
    assert ALERT_BLOCKED_WITH_QUEUE not in camera.printers["F1"].alerts
    outside = snap(T0, printer("F9", ALERT_NEEDS_CONFIRMATION), queues=(queue(5),))
    assert ALERT_BLOCKED_WITH_QUEUE not in outside.printers["F9"].alerts


@pytest.mark.parametrize(
    ("status", "blocked"),
    [(PrintStatus.PRINTING, False), (PrintStatus.PREPARING, False), (PrintStatus.WAITING, True)],
)
def test_a_busy_printer_is_not_blocked_but_one_waiting_for_resolution_is(
    status: PrintStatus, blocked: bool
) -> None:
    job = Print(id="p1", name="bracket", status=status, status_raw=status.value)
    busy = snap(T0, printer("F1", ALERT_NOT_READY, run=job), queues=(queue(5),))
    assert (ALERT_BLOCKED_WITH_QUEUE in busy.printers["F1"].alerts) is blocked


def test_an_offline_printer_is_not_blocked() -> None:
    gone = snap(T0, printer("F1", ALERT_NEEDS_CONFIRMATION, online=False), queues=(queue(5),))
    assert ALERT_BLOCKED_WITH_QUEUE not in gone.printers["F1"].alerts


def test_apply_queues_is_idempotent_and_keeps_identity_when_unchanged() -> None:
    s = snap(T0, printer("F1", ALERT_NEEDS_CONFIRMATION), printer("F2"), queues=(queue(5),))
    assert apply_queues(s) is s
    assert s.printers["F1"].alerts == (ALERT_BLOCKED_WITH_QUEUE, ALERT_NEEDS_CONFIRMATION)


def test_carbon_printer_blocked_by_its_own_queue_length() -> None:
    c = dataclasses.replace(
        printer("C1", ALERT_NEEDS_CONFIRMATION), vendor=Vendor.CARBON, queue_length=2
    )
    s = Snapshot("f", Vendor.CARBON, T0, {"C1": c}, queues=carbon_queues([c], T0))
    assert ALERT_BLOCKED_WITH_QUEUE in apply_queues(s).printers["C1"].alerts


# --- persistence --------------------------------------------------------------------------


def test_queues_round_trip_through_the_codec_and_old_snapshots_read_without_them() -> None:
    s = snap(T0, printer("F1"), queues=(queue(4, oldest=timedelta(minutes=30)),))
    assert snapshot_from_json(snapshot_to_json(s)) == s
    assert snapshot_from_json(snapshot_to_json(s)).queues == s.queues
    old = snapshot_to_json(s)
    del old["queues"]
    assert snapshot_from_json(old).queues == {}


def test_thresholds_are_validated() -> None:
    with pytest.raises(ValueError, match="queue_backlog_items"):
        DiffSettings(queue_backlog_items=0)
    with pytest.raises(ValueError, match="queue_backlog_age"):
        DiffSettings(queue_backlog_age=timedelta(0))


def test_formlabs_printers_carry_their_group_queue_length_into_the_retained_state() -> None:
    s = snap(T0, printer("F1"), printer("F9"), queues=(queue(3),))
    assert s.printers["F1"].queue_length == 3
    assert s.printers["F9"].queue_length is None  # in no Fleet Control group
    state = json.loads(state_payload(s.printers["F1"]))
    assert state["queue_length"] == 3
    gone = snap(T0 + STEP, s.printers["F1"])
    assert gone.printers["F1"].queue_length is None
    # Carbon's own queue_length is the vendor's and stays as sent.
    c = dataclasses.replace(printer("C1"), vendor=Vendor.CARBON, queue_length=2)
    carbon = Snapshot("f", Vendor.CARBON, T0, {"C1": c}, queues={})
    assert apply_queues(carbon).printers["C1"].queue_length == 2
