"""The differ: which changes between two snapshots become which events, exactly once."""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from printfleet.config import ThresholdsConfig
from printfleet.core.codec import snapshot_from_json, snapshot_to_json
from printfleet.core.diff import (
    WAITING_ALERT,
    carry_forward,
    diff,
    source_event,
    unresolved_prints,
)
from printfleet.core.events import ChangeEvent, EventType, Severity, to_cloudevent
from printfleet.core.model import (
    Material,
    Print,
    Printer,
    PrinterStatus,
    PrintStatus,
    Snapshot,
    Tank,
    Vendor,
    without_raw,
)
from printfleet.core.thresholds import DiffSettings
from printfleet.sources.formlabs_map import map_printers

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
STEP = timedelta(seconds=15)
T1 = T0 + STEP
T2 = T1 + STEP
SETTINGS = DiffSettings()

E = EventType
PS = PrintStatus


# --- builders -----------------------------------------------------------------------------


def run(
    pid: str = "p1",
    status: PrintStatus = PS.PRINTING,
    *,
    serial: str | None = None,
    progress: float | None = None,
    started_at: datetime | None = T0 - timedelta(minutes=10),
    finished_at: datetime | None = None,
    **kw: Any,
) -> Print:
    """A print run; terminal runs get a finished_at just before T1 unless told otherwise."""
    if finished_at is None and status.is_terminal:
        finished_at = T1 - timedelta(seconds=5)
    return Print(
        id=pid,
        name=f"job {pid}",
        status=status,
        status_raw=status.value,
        printer_serial=serial,
        progress=progress,
        started_at=started_at,
        finished_at=finished_at,
        **kw,
    )


def printer(
    serial: str = "F1",
    status: PrinterStatus = PrinterStatus.IDLE,
    *,
    raw_status: str | None = None,
    current: Print | None = None,
    **kw: Any,
) -> Printer:
    return Printer(
        serial=serial,
        name=f"name-{serial}",
        vendor=Vendor.FORMLABS,
        model="Form 4",
        model_code="FORM-4-0",
        status=status,
        status_raw=raw_status if raw_status is not None else status.value,
        online=kw.pop("online", True),
        current_print=current,
        **kw,
    )


def snap(*printers: Printer, at: datetime = T0, runs: Sequence[Print] = ()) -> Snapshot:
    return Snapshot(
        source="lab",
        vendor=Vendor.FORMLABS,
        taken_at=at,
        printers={p.serial: p for p in printers},
        runs={r.id: r for r in runs},
    )


def kinds(events: Sequence[ChangeEvent]) -> list[tuple[str, str]]:
    return [(e.type.value, e.subject) for e in events]


def cartridge(
    remaining: float | None, *, slot: str = "main", serial: str = "C1", **kw: Any
) -> Material:
    return Material(slot=slot, serial=serial, capacity_ml=1000.0, remaining_ml=remaining, **kw)


def cycle(
    prev: Snapshot | None, cur: Snapshot, *, now: datetime | None = None
) -> tuple[Snapshot, list[ChangeEvent]]:
    """What the poller does with a fetched snapshot: carry forward, diff, keep."""
    now = now or cur.taken_at
    cur = carry_forward(prev, cur, now, SETTINGS)
    return without_raw(cur, prev), diff(prev, cur, now, SETTINGS)


# --- table: one poll, which events --------------------------------------------------------

PRINTING = PrinterStatus.PRINTING
IDLE = PrinterStatus.IDLE
CASES: list[Any] = [
    # printers appearing and disappearing
    pytest.param(
        snap(printer("A")),
        snap(printer("A"), printer("B"), at=T1),
        [("printer.added", "B")],
        id="printer added",
    ),
    pytest.param(
        snap(printer("A"), printer("B")),
        snap(printer("A"), at=T1),
        [("printer.removed", "B")],
        id="printer removed",
    ),
    pytest.param(
        snap(printer("B", IDLE, alerts=("old alert",), materials=(cartridge(1.0),))),
        snap(printer("B", IDLE, alerts=("old alert",), materials=(cartridge(1.0),)), at=T1),
        [],
        id="nothing changed",
    ),
    pytest.param(
        snap(printer("A", last_seen_at=T0, raw={"x": 1})),
        snap(printer("A", last_seen_at=T1, raw={"x": 2}), at=T1),
        [],
        id="only raw and last_seen_at changed",
    ),
    pytest.param(
        snap(),
        snap(printer("A", alerts=("door open",), materials=(cartridge(0.0),)), at=T1),
        [("printer.added", "A")],
        id="added printer is its own baseline",
    ),
    # status
    pytest.param(
        snap(printer("A", IDLE)),
        snap(printer("A", PrinterStatus.MAINTENANCE), at=T1),
        [("printer.status_changed", "A")],
        id="status changed",
    ),
    pytest.param(
        snap(printer("A", PrinterStatus.UNKNOWN, raw_status="CALIBRATING")),
        snap(printer("A", PrinterStatus.UNKNOWN, raw_status="DEFROSTING"), at=T1),
        [],
        id="unknown status strings differ (no flapping)",
    ),
    pytest.param(
        snap(printer("A", IDLE)),
        snap(printer("A", PrinterStatus.UNKNOWN, raw_status="CALIBRATING"), at=T1),
        [],
        id="known status to an unknown word (no flapping)",
    ),
    pytest.param(
        snap(printer("A", PrinterStatus.UNKNOWN, raw_status="CALIBRATING")),
        snap(printer("A", IDLE), at=T1),
        [("printer.status_changed", "A")],
        id="first known status after an unknown word",
    ),
    pytest.param(
        snap(printer("A", PRINTING, raw_status="PRINTING", phase="PREHEAT")),
        snap(printer("A", PRINTING, raw_status="PRINTING"), at=T1),
        [],
        id="phase changes within one status",
    ),
    pytest.param(
        snap(printer("A", PrinterStatus.UNKNOWN, raw_status="calibrating")),
        snap(printer("A", PrinterStatus.UNKNOWN, raw_status="CALIBRATING"), at=T1),
        [],
        id="unknown status differs only in case",
    ),
    # online / offline
    pytest.param(
        snap(printer("A", IDLE)),
        snap(printer("A", IDLE, online=False), at=T1),
        [("printer.offline", "A")],
        id="offline, status unchanged",
    ),
    pytest.param(
        snap(printer("A", IDLE)),
        snap(printer("A", PrinterStatus.OFFLINE, online=False), at=T1),
        [("printer.offline", "A")],
        id="offline and status OFFLINE: one event",
    ),
    pytest.param(
        snap(printer("A", PrinterStatus.OFFLINE, online=False)),
        snap(printer("A", IDLE), at=T1),
        [("printer.online", "A")],
        id="online and status out of OFFLINE: one event",
    ),
    pytest.param(
        snap(printer("A", IDLE)),
        snap(printer("A", PrinterStatus.ERROR, online=False), at=T1),
        [("printer.offline", "A"), ("printer.status_changed", "A")],
        id="offline and an unrelated status change: both",
    ),
    # alerts
    pytest.param(
        snap(printer("A", alerts=("a",))),
        snap(printer("A", alerts=("a", "oxygen shortage")), at=T1),
        [("printer.alert", "A")],
        id="alert raised",
    ),
    pytest.param(
        snap(printer("A", alerts=("a", "b"))),
        snap(printer("A", alerts=("c",)), at=T1),
        [("printer.alert", "A")] * 3,
        id="alerts cleared and raised",
    ),
    # print lifecycle
    pytest.param(
        snap(printer("A", IDLE)),
        snap(printer("A", PRINTING, current=run("p1", progress=0.01)), at=T1),
        [("print.started", "A"), ("printer.status_changed", "A")],
        id="print started",
    ),
    pytest.param(
        snap(printer("A", IDLE, current=run("p1", PS.QUEUED, started_at=None))),
        snap(printer("A", IDLE, current=run("p1", PS.PREPARING)), at=T1),
        [("print.started", "A")],
        id="queued print starts preparing",
    ),
    pytest.param(
        snap(printer("A", IDLE)),
        snap(printer("A", IDLE, current=run("p1", PS.QUEUED, started_at=None)), at=T1),
        [],
        id="queued print is not started",
    ),
    pytest.param(
        snap(printer("A", PRINTING, current=run("p1", progress=0.9))),
        snap(printer("A", IDLE), at=T1, runs=[run("p1", PS.FINISHED, serial="A")]),
        [("print.finished", "A"), ("printer.status_changed", "A")],
        id="print finished, seen in runs",
    ),
    pytest.param(
        snap(printer("A", PRINTING, current=run("p1", progress=0.9))),
        snap(printer("A", IDLE, current=run("p1", PS.FINISHED, progress=1.0)), at=T1),
        [("print.finished", "A"), ("printer.status_changed", "A")],
        id="print finished, seen on the printer",
    ),
    pytest.param(
        snap(printer("A", PRINTING, current=run("p1"))),
        snap(printer("A", PrinterStatus.ERROR, current=run("p1", PS.FAILED)), at=T1),
        [("print.failed", "A"), ("printer.status_changed", "A")],
        id="print failed",
    ),
    pytest.param(
        snap(printer("A", PRINTING, current=run("p1", PS.ABORTING))),
        snap(printer("A", IDLE, current=run("p1", PS.ABORTED)), at=T1),
        [("print.aborted", "A"), ("printer.status_changed", "A")],
        id="print aborted",
    ),
    pytest.param(
        snap(printer("A", IDLE, current=run("p1", PS.FINISHED))),
        snap(
            printer("A", IDLE, current=run("p1", PS.FINISHED)), at=T1, runs=[run("p1", PS.FINISHED)]
        ),
        [],
        id="finished print still shown and now also in runs",
    ),
    pytest.param(
        snap(printer("A", IDLE, current=run("p1", PS.FINISHED))),
        snap(printer("A", IDLE), at=T1, runs=[run("p1", PS.FAILED, serial="A")]),
        [],
        id="a later verdict on a finished print is not a second outcome",
    ),
    pytest.param(
        snap(printer("A", IDLE)),
        snap(
            printer("A", IDLE),
            at=T1,
            runs=[run("p2", PS.FINISHED, serial="A", started_at=T0 + timedelta(seconds=3))],
        ),
        [("print.started", "A"), ("print.finished", "A")],
        id="started and ended between polls (only in runs)",
    ),
    pytest.param(
        snap(printer("A", IDLE)),
        snap(printer("A", IDLE), at=T1, runs=[run("p2", PS.FAILED, serial="A")]),
        [("print.failed", "A")],
        id="history record of a print started before the last poll: outcome only",
    ),
    pytest.param(
        snap(printer("A", IDLE)),
        snap(
            printer("A", IDLE),
            at=T1,
            runs=[
                run(
                    "p2",
                    PS.FINISHED,
                    serial="A",
                    started_at=T0 - timedelta(days=3),
                    finished_at=T0 - timedelta(days=2),
                )
            ],
        ),
        [],
        id="old history record: not news",
    ),
    pytest.param(
        snap(printer("A", IDLE), runs=[run("p2", PS.FINISHED, serial="A")]),
        snap(printer("A", IDLE), at=T1, runs=[run("p2", PS.FINISHED, serial="A")]),
        [],
        id="run already terminal in previous",
    ),
    pytest.param(
        snap(printer("A", PRINTING, current=run("p1"))),
        snap(printer("A", IDLE), at=T1, runs=[run("p1", PS.FINISHED)]),
        [("print.finished", "A"), ("printer.status_changed", "A")],
        id="history record without printer serial is matched by print id",
    ),
    # pause / resume
    pytest.param(
        snap(printer("A", PRINTING, current=run("p1"))),
        snap(printer("A", PrinterStatus.PAUSED, current=run("p1", PS.PAUSED)), at=T1),
        [("print.paused", "A"), ("printer.status_changed", "A")],
        id="paused",
    ),
    pytest.param(
        snap(printer("A", PRINTING, current=run("p1", PS.PAUSED))),
        snap(printer("A", PRINTING, current=run("p1", PS.PRINTING)), at=T1),
        [("print.resumed", "A")],
        id="resumed",
    ),
    pytest.param(
        snap(printer("A", PRINTING, current=run("p1", PS.PAUSED))),
        snap(printer("A", IDLE, current=run("p1", PS.ABORTED)), at=T1),
        [("print.aborted", "A"), ("printer.status_changed", "A")],
        id="aborted while paused: no resume",
    ),
    # waiting for resolution
    pytest.param(
        snap(printer("A", PRINTING, current=run("p1"))),
        snap(printer("A", PRINTING, current=run("p1", PS.WAITING)), at=T1),
        [("printer.alert", "A")],
        id="waiting raises an alert",
    ),
    pytest.param(
        snap(printer("A", PRINTING, current=run("p1", PS.WAITING))),
        snap(printer("A", PRINTING, current=run("p1", PS.PRINTING)), at=T1),
        [("printer.alert", "A")],
        id="leaving waiting clears it",
    ),
    pytest.param(
        snap(printer("A", PRINTING, current=run("p1", PS.WAITING))),
        snap(printer("A", PrinterStatus.ERROR, current=run("p1", PS.FAILED)), at=T1),
        [("print.failed", "A"), ("printer.alert", "A"), ("printer.status_changed", "A")],
        id="waiting then failed: cleared and failed",
    ),
    pytest.param(
        snap(printer("A", PRINTING, current=run("p1"))),
        snap(
            printer("A", PRINTING, current=run("p1", PS.WAITING), alerts=(WAITING_ALERT,)),
            at=T1,
        ),
        [("printer.alert", "A")],
        id="waiting already in the vendor's alerts: one alert, not two",
    ),
    # materials
    pytest.param(
        snap(printer("A", materials=(cartridge(200.0),))),
        snap(printer("A", materials=(cartridge(100.0),)), at=T1),
        [("material.low", "A")],
        id="material crosses below the ratio",
    ),
    pytest.param(
        snap(printer("A", materials=(cartridge(100.0),))),
        snap(printer("A", materials=(cartridge(90.0),)), at=T1),
        [],
        id="material stays low",
    ),
    pytest.param(
        snap(printer("A", materials=(cartridge(100.0),))),
        snap(printer("A", materials=(cartridge(0.0, is_empty=True),)), at=T1),
        [("material.low", "A")],
        id="low material becomes empty",
    ),
    pytest.param(
        snap(printer("A", materials=(cartridge(100.0),))),
        snap(printer("A", materials=(cartridge(120.0, serial="C2"),)), at=T1),
        [("material.low", "A")],
        id="cartridge replaced by another low one",
    ),
    pytest.param(
        snap(
            printer(
                "A",
                materials=(
                    cartridge(100.0, slot="FRONT"),
                    cartridge(900.0, slot="BACK", serial="C9"),
                ),
            )
        ),
        snap(
            printer(
                "A",
                materials=(
                    cartridge(90.0, slot="FRONT"),
                    cartridge(100.0, slot="BACK", serial="C9"),
                ),
            ),
            at=T1,
        ),
        [("material.low", "A")],
        id="dual cartridge: each slot judged on its own",
    ),
    pytest.param(
        snap(printer("A", materials=(Material(slot="main", remaining_ml=None),))),
        snap(
            printer("A", materials=(Material(slot="main", remaining_ml=None, name="Grey"),)), at=T1
        ),
        [],
        id="material with unknown level",
    ),
    # tanks
    pytest.param(
        snap(printer("A", tank=Tank(serial="T1", layers_printed=74_999))),
        snap(printer("A", tank=Tank(serial="T1", layers_printed=75_010)), at=T1),
        [("tank.attention", "A")],
        id="tank reaches the layer budget",
    ),
    pytest.param(
        snap(printer("A", tank=Tank(serial="T1", layers_printed=75_010))),
        snap(printer("A", tank=Tank(serial="T1", layers_printed=75_500)), at=T1),
        [],
        id="tank already over the layer budget",
    ),
    pytest.param(
        snap(printer("A", tank=Tank(serial="T1", layers_printed=80_000))),
        snap(printer("A", tank=Tank(serial="T2", layers_printed=80_000)), at=T1),
        [("tank.attention", "A")],
        id="worn tank swapped for another worn tank",
    ),
    pytest.param(
        snap(
            printer(
                "A",
                tank=Tank(
                    serial="T1", first_filled_at=T0 - timedelta(days=365) + timedelta(seconds=5)
                ),
            )
        ),
        snap(
            printer(
                "A",
                tank=Tank(
                    serial="T1", first_filled_at=T0 - timedelta(days=365) + timedelta(seconds=5)
                ),
            ),
            at=T1,
        ),
        [("tank.attention", "A")],
        id="unchanged tank comes of age as time passes",
    ),
    pytest.param(
        snap(printer("A", tank=Tank(serial="T1", first_filled_at=T0 - timedelta(days=400)))),
        snap(printer("A", tank=Tank(serial="T1", first_filled_at=T0 - timedelta(days=400))), at=T1),
        [],
        id="tank already past its age",
    ),
    pytest.param(
        snap(printer("A", tank=Tank(serial="T1", first_filled_at=T0 + timedelta(days=30)))),
        snap(
            printer(
                "A",
                tank=Tank(serial="T1", first_filled_at=T0 + timedelta(days=30), layers_printed=5),
            ),
            at=T1,
        ),
        [],
        id="tank first filled in the future (vendor clock skew)",
    ),
]


@pytest.mark.parametrize(("prev", "cur", "expected"), CASES)
def test_one_poll_yields_exactly_these_events(
    prev: Snapshot, cur: Snapshot, expected: list[tuple[str, str]]
) -> None:
    """Each kind of change between two snapshots yields exactly the listed events, in order."""
    _, events = cycle(prev, cur)
    assert kinds(events) == expected


# --- details of single events -------------------------------------------------------------


def test_first_snapshot_is_a_silent_baseline() -> None:
    """With nothing stored, the first snapshot announces nothing (not the whole fleet)."""
    busy = snap(
        printer("A", PRINTING, current=run("p1", progress=0.6), alerts=("x",)),
        printer("B", IDLE, materials=(cartridge(0.0),)),
        runs=[run("p9", PS.FAILED)],
    )
    assert diff(None, busy, T0, SETTINGS) == []


def test_status_change_reports_from_and_to() -> None:
    """printer.status_changed carries the normalized and raw status from→to."""
    [event] = diff(
        snap(printer("A", IDLE)),
        snap(printer("A", PrinterStatus.MAINTENANCE, raw_status="MAINTENANCE"), at=T1),
        T1,
        SETTINGS,
    )
    assert event.changes["status_raw"].before == "IDLE"
    assert event.changes["status_raw"].after == "MAINTENANCE"
    assert event.changes["status"].after is PrinterStatus.MAINTENANCE
    assert event.time == T1


def _sequence(*printers: Printer) -> list[ChangeEvent]:
    """The events of polling ``printers`` one after another, as the poller does."""
    prev: Snapshot | None = None
    events: list[ChangeEvent] = []
    for step, p in enumerate(printers):
        cur = snap(p, at=T0 + timedelta(seconds=15 * step))
        cur = carry_forward(prev, cur, cur.taken_at, SETTINGS)
        events += diff(prev, cur, cur.taken_at, SETTINGS)
        prev = cur
    return events


def test_unknown_word_and_back_to_the_same_status_says_nothing() -> None:
    """IDLE -> unknown words -> IDLE emits no printer.status_changed (no flapping)."""
    events = _sequence(
        printer("A", IDLE),
        printer("A", PrinterStatus.UNKNOWN, raw_status="CALIBRATING"),
        printer("A", PrinterStatus.UNKNOWN, raw_status="DEFROSTING"),
        printer("A", IDLE),
        printer("A", PrinterStatus.UNKNOWN, raw_status="CALIBRATING"),
        printer("A", IDLE),
    )
    assert kinds(events) == []


def test_leaving_an_unknown_word_reports_the_change_from_the_last_known_status() -> None:
    """IDLE -> unknown -> MAINTENANCE emits one IDLE -> MAINTENANCE, raw words verbatim."""
    [event] = _sequence(
        printer("A", IDLE),
        printer("A", PrinterStatus.UNKNOWN, raw_status="CALIBRATING"),
        printer("A", PrinterStatus.MAINTENANCE),
    )
    assert event.type is E.PRINTER_STATUS_CHANGED
    assert (event.changes["status"].before, event.changes["status"].after) == (
        IDLE,
        PrinterStatus.MAINTENANCE,
    )
    assert (event.changes["status_raw"].before, event.changes["status_raw"].after) == (
        "CALIBRATING",
        "MAINTENANCE",
    )


def test_the_last_known_status_survives_the_state_store() -> None:
    """A restart while a printer reads UNKNOWN still remembers the status before it."""
    prev = snap(printer("A", IDLE))
    unknown = carry_forward(
        prev, snap(printer("A", PrinterStatus.UNKNOWN, raw_status="X"), at=T1), T1, SETTINGS
    )
    stored = snapshot_from_json(snapshot_to_json(unknown))
    assert stored.printers["A"].known_status is IDLE
    later = T1 + timedelta(seconds=15)
    back = carry_forward(stored, snap(printer("A", IDLE), at=later), later, SETTINGS)
    assert diff(stored, back, later, SETTINGS) == []


def test_formlabs_phase_sequence_emits_one_start_and_no_status_flapping() -> None:
    """A print through QUEUED, PREPRINT/FILLING, PREHEAT, PRECOAT, PRINTING, PAUSING, PAUSED,
    POSTCOAT to FINISHED emits one print.started and only real status changes."""

    def fetched(word: str, run_word: str | None) -> Printer:
        run_record = (
            None
            if run_word is None
            else {"guid": "g1", "name": "job", "status": run_word, "print_started_at": None}
        )
        record = {
            "serial": "A",
            "machine_type_id": "FORM-4-0",
            "printer_status": {
                "status": word,
                "last_pinged_at": T0.isoformat(),
                "current_print_run": run_record,
            },
            "tank_status": {"tank": {"serial": "T1"}},
        }
        printers, _, _ = map_printers(
            [record], source="lab", now=T0, offline_after=timedelta(days=365)
        )
        return printers["A"]

    steps = [
        ("IDLE", None),
        ("IDLE", "QUEUED"),
        ("FILLING", "PREPRINT"),
        ("PREHEAT", "PREHEAT"),
        ("PRINTING", "PRECOAT"),
        ("PRINTING", "PRINTING"),
        ("PAUSING", "PAUSING"),
        ("PAUSED", "PAUSED"),
        ("PRINTING", "PRINTING"),
        ("WAITING_FOR_RESOLUTION", "WAITING_FOR_RESOLUTION"),
        ("PRINTING", "PRINTING"),
        ("POSTCOAT", "POSTCOAT"),
        ("IDLE", "FINISHED"),
        ("IDLE", None),
    ]
    events = _sequence(*(fetched(w, r) for w, r in steps))
    status_changes = [
        (e.changes["status"].before, e.changes["status"].after)
        for e in events
        if e.type is E.PRINTER_STATUS_CHANGED
    ]
    assert status_changes == [
        (IDLE, PRINTING),
        (PRINTING, PrinterStatus.PAUSED),
        (PrinterStatus.PAUSED, PRINTING),
        (PRINTING, IDLE),
    ]
    assert [e.type for e in events].count(E.PRINT_STARTED) == 1
    assert [e.type for e in events].count(E.PRINT_FINISHED) == 1
    assert not [e for e in events if e.type in (E.PRINT_FAILED, E.PRINT_ABORTED)]


def test_offline_event_carries_the_status_change_it_covers() -> None:
    """A printer going offline with status OFFLINE reports both facts in one event."""
    [event] = diff(
        snap(printer("A", IDLE)),
        snap(printer("A", PrinterStatus.OFFLINE, online=False), at=T1),
        T1,
        SETTINGS,
    )
    assert event.type is E.PRINTER_OFFLINE
    assert event.severity is Severity.WARNING
    assert {k: (c.before, c.after) for k, c in event.changes.items()} == {
        "online": (True, False),
        "status": (IDLE, PrinterStatus.OFFLINE),
        "status_raw": ("IDLE", "OFFLINE"),
    }


@pytest.mark.parametrize(
    ("before", "after", "state", "severity"),
    [
        pytest.param((), ("oxygen shortage",), "raised", Severity.WARNING, id="raised"),
        pytest.param(("oxygen shortage",), (), "cleared", Severity.INFO, id="cleared"),
    ],
)
def test_alert_details_and_severity(
    before: tuple[str, ...], after: tuple[str, ...], state: str, severity: Severity
) -> None:
    """An alert event names the alert and whether it was raised (warning) or cleared (info)."""
    [event] = diff(
        snap(printer("A", alerts=before)), snap(printer("A", alerts=after), at=T1), T1, SETTINGS
    )
    assert dict(event.details) == {"alert": "oxygen shortage", "state": state}
    assert event.severity is severity


def test_waiting_alert_names_the_print() -> None:
    """The waiting-for-resolution alert carries the print that waits."""
    [event] = diff(
        snap(printer("A", PRINTING, current=run("p1"))),
        snap(printer("A", PRINTING, current=run("p1", PS.WAITING)), at=T1),
        T1,
        SETTINGS,
    )
    assert dict(event.details) == {"alert": WAITING_ALERT, "state": "raised"}
    assert event.print is not None
    assert event.print.id == "p1"


def test_material_low_details() -> None:
    """material.low names the slot, remaining ml and ratio."""
    [event] = diff(
        snap(printer("A", materials=(cartridge(200.0, slot="FRONT"),))),
        snap(printer("A", materials=(cartridge(100.0, slot="FRONT"),)), at=T1),
        T1,
        SETTINGS,
    )
    assert event.details["slot"] == "FRONT"
    assert event.details["remaining_ml"] == 100.0
    assert event.details["ratio"] == pytest.approx(0.1)
    assert event.details["empty"] is False
    assert event.printer is not None
    assert event.printer.serial == "A"


def test_material_low_by_ml_threshold() -> None:
    """With material_low_ml set, falling below that many ml is low even at a high ratio."""
    by_ml = DiffSettings(material_low_ratio=0.0, material_low_ml=300.0)
    events = diff(
        snap(printer("A", materials=(cartridge(350.0),))),
        snap(printer("A", materials=(cartridge(250.0),)), at=T1),
        T1,
        by_ml,
    )
    assert kinds(events) == [("material.low", "A")]


def test_material_low_rearms_after_refill() -> None:
    """Low, refilled, low again: two events with distinct ids."""
    levels = [500.0, 100.0, 90.0, 1000.0, 100.0]
    prev: Snapshot | None = None
    seen: list[ChangeEvent] = []
    for i, ml in enumerate(levels):
        prev, events = cycle(prev, snap(printer("A", materials=(cartridge(ml),)), at=T0 + i * STEP))
        seen += events
    assert kinds(seen) == [("material.low", "A")] * 2
    assert seen[0].id != seen[1].id


@pytest.mark.parametrize(
    ("tank_before", "tank_after", "reason"),
    [
        pytest.param(
            Tank(serial="T", layers_printed=1),
            Tank(serial="T", layers_printed=75_000),
            "layers",
            id="layers",
        ),
        pytest.param(
            Tank(serial="T", first_filled_at=T0 - timedelta(days=365) + timedelta(seconds=1)),
            Tank(serial="T", first_filled_at=T0 - timedelta(days=365) + timedelta(seconds=1)),
            "age",
            id="age",
        ),
    ],
)
def test_tank_attention_reason(tank_before: Tank, tank_after: Tank, reason: str) -> None:
    """tank.attention says why: the layer budget or the age."""
    [event] = diff(
        snap(printer("A", tank=tank_before)),
        snap(printer("A", tank=tank_after), at=T1),
        T1,
        SETTINGS,
    )
    assert event.details["reason"] == reason
    assert event.details["tank"] == "T"


def test_tank_attention_id_is_once_per_tank_and_reason() -> None:
    """The same tank crossing the same limit again (e.g. swapped out and back) repeats its id."""
    worn = Tank(serial="T", layers_printed=80_000)
    fresh = Tank(serial="U", layers_printed=0)
    [first] = diff(
        snap(printer("A", tank=fresh)), snap(printer("A", tank=worn), at=T1), T1, SETTINGS
    )
    [again] = diff(
        snap(printer("A", tank=fresh), at=T2),
        snap(printer("A", tank=worn), at=T2 + STEP),
        T2,
        SETTINGS,
    )
    assert first.id == again.id


# --- print lifecycle across polls ---------------------------------------------------------


def test_started_then_finished_between_polls_in_time_order() -> None:
    """A print seen only as a finished history record yields started, then finished, by time."""
    started = T0 + timedelta(seconds=2)
    finished = T0 + timedelta(seconds=9)
    events = diff(
        snap(printer("A", IDLE)),
        snap(
            printer("A", IDLE),
            at=T1,
            runs=[run("p2", PS.FINISHED, serial="A", started_at=started, finished_at=finished)],
        ),
        T1,
        SETTINGS,
    )
    assert [(e.type, e.time) for e in events] == [
        (E.PRINT_STARTED, started),
        (E.PRINT_FINISHED, finished),
    ]


def test_finished_is_announced_once_while_the_print_stays_on_the_printer() -> None:
    """A finished print shown on the printer for many polls is announced once."""
    prev, events = cycle(None, snap(printer("A", PRINTING, current=run("p1", progress=0.95))))
    seen = list(events)
    for i in range(1, 6):
        done = run("p1", PS.FINISHED, progress=1.0)
        runs = [run("p1", PS.FINISHED, serial="A")] if i >= 3 else []
        prev, events = cycle(
            prev, snap(printer("A", IDLE, current=done), at=T0 + i * STEP, runs=runs)
        )
        seen += events
    assert Counter(e.type for e in seen)[E.PRINT_FINISHED] == 1


def test_print_that_leaves_without_outcome_is_resolved_once_history_has_it() -> None:
    """A print gone from its printer without an outcome is looked up and finished exactly once."""
    prev, _ = cycle(None, snap(printer("A", PRINTING, current=run("p1", progress=0.9))))
    cur = snap(printer("A", IDLE), at=T1)
    lost = unresolved_prints(prev, cur)
    assert [(p.id, p.printer_serial) for p in lost] == [("p1", "A")]
    prev, events = cycle(prev, cur)  # history not fetched yet: nothing to say, not forgotten
    assert kinds(events) == [("printer.status_changed", "A")]
    assert "p1" in prev.runs
    cur = snap(printer("A", IDLE), at=T2, runs=[run("p1", PS.FINISHED, serial="A")])
    assert unresolved_prints(prev, cur) == []
    prev, events = cycle(prev, cur)
    assert kinds(events) == [("print.finished", "A")]
    for i in range(3, 8):
        prev, events = cycle(
            prev,
            snap(printer("A", IDLE), at=T0 + i * STEP, runs=[run("p1", PS.FINISHED, serial="A")]),
        )
        assert events == []


def test_progress_milestones_once_each_highest_when_several() -> None:
    """Milestones are told once per print; several crossed in one poll yield only the highest."""
    progress = [0.1, 0.3, 0.35, 0.8, 0.9, 0.99]
    prev: Snapshot | None = None
    milestones: list[float] = []
    for i, value in enumerate(progress):
        prev, events = cycle(
            prev, snap(printer("A", PRINTING, current=run("p1", progress=value)), at=T0 + i * STEP)
        )
        milestones += [e.details["milestone"] for e in events if e.type is E.PRINT_PROGRESS]
    assert milestones == [0.25, 0.75]


def test_milestone_ids_repeat_when_progress_regresses() -> None:
    """A milestone crossed again after a re-estimate keeps its id, so receivers can dedupe."""
    events: list[ChangeEvent] = []
    prev: Snapshot | None = None
    for i, value in enumerate([0.1, 0.3, 0.2, 0.3]):
        prev, new = cycle(
            prev, snap(printer("A", PRINTING, current=run("p1", progress=value)), at=T0 + i * STEP)
        )
        events += new
    ids = [e.id for e in events if e.type is E.PRINT_PROGRESS]
    assert len(ids) == 2
    assert ids[0] == ids[1]


def test_no_progress_after_terminal() -> None:
    """A print that finishes in the same poll as it would cross milestones gets only its outcome."""
    events = diff(
        snap(printer("A", PRINTING, current=run("p1", progress=0.1))),
        snap(printer("A", PRINTING, current=run("p1", PS.FINISHED, progress=1.0)), at=T1),
        T1,
        SETTINGS,
    )
    assert kinds(events) == [("print.finished", "A")]


def test_print_first_seen_midway_reports_started_and_its_milestone() -> None:
    """A print first seen at 60% (e.g. started while stopped) is started, then at 50%."""
    events = diff(
        snap(printer("A", IDLE)),
        snap(printer("A", IDLE, current=run("p1", progress=0.6)), at=T1),
        T1,
        SETTINGS,
    )
    assert [(e.type, e.details.get("milestone")) for e in events] == [
        (E.PRINT_STARTED, None),
        (E.PRINT_PROGRESS, 0.5),
    ]


def test_stale_history_record_does_not_drive_pause_or_progress() -> None:
    """A non-terminal history record of a lost print says nothing until it has an outcome."""
    prev, _ = cycle(
        None, snap(printer("A", PrinterStatus.PAUSED, current=run("p1", PS.PAUSED, progress=0.4)))
    )
    cur = snap(printer("A", IDLE), at=T1, runs=[run("p1", PS.PRINTING, serial="A", progress=0.9)])
    _, events = cycle(prev, cur)
    assert kinds(events) == [("printer.status_changed", "A")]


def test_removed_then_readded_printer() -> None:
    """A printer removed and added back yields removed, then added, with distinct ids."""
    prev, e1 = cycle(None, snap(printer("A"), printer("B")))
    prev, e2 = cycle(prev, snap(printer("A"), at=T1))
    prev, e3 = cycle(prev, snap(printer("A"), printer("B"), at=T2))
    assert kinds(e1 + e2 + e3) == [("printer.removed", "B"), ("printer.added", "B")]
    assert e2[0].id != e3[0].id
    assert e2[0].printer is not None
    assert e2[0].printer.serial == "B"


def test_readded_printer_does_not_restart_its_print() -> None:
    """A printer that vanishes mid-print and comes back does not announce the print again."""
    printing = printer("B", PRINTING, current=run("p1", progress=0.3))
    prev, _ = cycle(None, snap(printing))
    prev, e2 = cycle(prev, snap(at=T1))
    prev, e3 = cycle(
        prev, snap(dataclasses.replace(printing, current_print=run("p1", progress=0.4)), at=T2)
    )
    assert kinds(e2 + e3) == [("printer.removed", "B"), ("printer.added", "B")]


# --- outages, restarts, skew --------------------------------------------------------------


def test_api_outage_then_equal_snapshot_yields_nothing() -> None:
    """Polls that failed produce no snapshot; the next equal snapshot yields no events."""
    fleet = (
        printer("A", PRINTING, current=run("p1", progress=0.4)),
        printer("B", IDLE, online=False),
    )
    prev, _ = cycle(None, snap(*fleet))
    # ... several failed fetches: the poller never calls diff, prev stays as it was ...
    _, events = cycle(prev, snap(*fleet, at=T0 + timedelta(minutes=20)))
    assert events == []


def test_api_outage_then_real_differences_yield_exactly_those() -> None:
    """After an outage only the real differences are reported, and no printer goes offline."""
    prev, _ = cycle(
        None, snap(printer("A", PRINTING, current=run("p1", progress=0.4)), printer("B", IDLE))
    )
    later = T0 + timedelta(minutes=20)
    cur = snap(
        printer("A", IDLE),
        printer("B", IDLE),
        at=later,
        runs=[run("p1", PS.FINISHED, serial="A", finished_at=later - timedelta(minutes=5))],
    )
    _, events = cycle(prev, cur)
    assert kinds(events) == [("print.finished", "A"), ("printer.status_changed", "A")]


def _store(snapshot: Snapshot) -> Snapshot:
    """What the state store does across a restart."""
    return snapshot_from_json(json.loads(json.dumps(snapshot_to_json(snapshot))))


def test_restart_from_stored_snapshot_does_not_repeat_finished() -> None:
    """After a restart, a print finished before the stop is not announced again."""
    prev, _ = cycle(None, snap(printer("A", PRINTING, current=run("p1"))))
    prev, events = cycle(
        prev, snap(printer("A", IDLE), at=T1, runs=[run("p1", PS.FINISHED, serial="A")])
    )
    assert [e.type for e in events].count(E.PRINT_FINISHED) == 1
    restored = _store(prev)
    after_restart = T1 + timedelta(minutes=30)
    cur = snap(printer("A", IDLE), at=after_restart, runs=[run("p1", PS.FINISHED, serial="A")])
    _, events = cycle(restored, cur)
    assert events == []


def test_restart_reports_what_happened_while_stopped_once() -> None:
    """A print that finished while the daemon was stopped is announced once after restart."""
    prev, _ = cycle(None, snap(printer("A", PRINTING, current=run("p1", progress=0.5))))
    stored = _store(prev)
    restart = T0 + timedelta(hours=10)  # longer than run_retention: still reported
    cur = snap(
        printer("A", IDLE),
        at=restart,
        runs=[run("p1", PS.FINISHED, serial="A", finished_at=T0 + timedelta(hours=1))],
    )
    prev, events = cycle(stored, cur)
    assert kinds(events) == [("print.finished", "A"), ("printer.status_changed", "A")]
    _, events = cycle(_store(prev), dataclasses.replace(cur, taken_at=restart + STEP))
    assert events == []


def test_vendor_times_in_the_future_are_not_believed() -> None:
    """An outcome stamped after the snapshot was taken is dated at the snapshot instead."""
    future = T1 + timedelta(hours=3)
    [event] = diff(
        snap(printer("A", PRINTING, current=run("p1"))),
        snap(printer("A", PRINTING, current=run("p1", PS.FINISHED, finished_at=future)), at=T1),
        T1,
        SETTINGS,
    )
    assert event.time == T1


def test_skewed_finish_before_start_keeps_order() -> None:
    """A finish time before the start time (skewed vendor clocks) never puts the outcome first."""
    events = diff(
        snap(printer("A", IDLE)),
        snap(
            printer("A", IDLE),
            at=T1,
            runs=[
                run(
                    "p2",
                    PS.ABORTED,
                    serial="A",
                    started_at=T0 + timedelta(seconds=8),
                    finished_at=T0 + timedelta(seconds=4),
                )
            ],
        ),
        T1,
        SETTINGS,
    )
    assert [e.type for e in events] == [E.PRINT_STARTED, E.PRINT_ABORTED]
    assert events[0].time <= events[1].time


def test_naive_vendor_times_are_read_as_utc() -> None:
    """A vendor time without a zone neither crashes the differ nor sorts wrongly."""
    naive_start = (T0 + timedelta(seconds=2)).replace(tzinfo=None)
    events = diff(
        snap(printer("A", IDLE)),
        snap(
            printer("A", IDLE),
            at=T1,
            runs=[run("p2", PS.FINISHED, serial="A", started_at=naive_start, finished_at=None)],
        ),
        T1,
        SETTINGS,
    )
    assert [e.type for e in events] == [E.PRINT_STARTED, E.PRINT_FINISHED]
    assert events[0].time == T0 + timedelta(seconds=2)


# --- ids and order ------------------------------------------------------------------------


def _busy_pair() -> tuple[Snapshot, Snapshot]:
    prev = snap(
        printer("B", PRINTING, current=run("p1", progress=0.2)),
        printer("A", IDLE, alerts=("x",)),
        printer("C", IDLE, materials=(cartridge(300.0),)),
    )
    cur = snap(
        printer("B", IDLE, current=run("p1", PS.FINISHED)),
        printer("A", PRINTING, current=run("p2", progress=0.6), alerts=("y",)),
        printer("C", IDLE, materials=(cartridge(10.0),), online=False),
        at=T1,
    )
    return prev, cur


def test_same_pair_gives_identical_events() -> None:
    """Re-running diff on the same pair yields the same events with the same ids."""
    prev, cur = _busy_pair()
    assert diff(prev, cur, T1, SETTINGS) == diff(prev, cur, T1 + timedelta(minutes=5), SETTINGS)


def test_ids_survive_a_crash_before_the_snapshot_was_stored() -> None:
    """The same change seen against the same stored snapshot later keeps its id."""
    prev, cur = _busy_pair()
    first = {(e.type, e.subject): e.id for e in diff(prev, cur, T1, SETTINGS)}
    later = dataclasses.replace(cur, taken_at=T1 + timedelta(minutes=1))
    again = {(e.type, e.subject): e.id for e in diff(prev, later, later.taken_at, SETTINGS)}
    assert first == again


def test_ids_are_unique_within_a_diff() -> None:
    """No two events of one diff share an id."""
    prev, cur = _busy_pair()
    ids = [e.id for e in diff(prev, cur, T1, SETTINGS)]
    assert len(ids) == len(set(ids)) > 5


def test_events_ordered_by_printer_then_time() -> None:
    """Events come sorted by printer serial, then time."""
    prev, cur = _busy_pair()
    events = diff(prev, cur, T1, SETTINGS)
    assert [e.subject for e in events] == sorted(e.subject for e in events)
    for a, b in itertools.pairwise(events):
        if a.subject == b.subject:
            assert a.time <= b.time


def test_print_event_id_does_not_depend_on_the_record_naming_its_printer() -> None:
    """An outcome has one id whether or not the history record names the printer."""
    prev = snap(printer("A", PRINTING, current=run("p1")))
    named = diff(
        prev,
        snap(printer("A", IDLE), at=T1, runs=[run("p1", PS.FINISHED, serial="A")]),
        T1,
        SETTINGS,
    )
    anonymous = diff(
        prev, snap(printer("A", IDLE), at=T1, runs=[run("p1", PS.FINISHED)]), T1, SETTINGS
    )
    assert [e.id for e in named] == [e.id for e in anonymous]


def test_events_encode_as_cloudevents() -> None:
    """Every event the differ makes encodes to a JSON CloudEvent naming printer and print."""
    prev, cur = _busy_pair()
    for event in diff(prev, cur, T1, SETTINGS):
        envelope = json.loads(json.dumps(to_cloudevent(event)))
        assert envelope["subject"] == event.subject
        assert envelope["data"]["printer"]["serial"] == event.subject


# --- carry_forward and unresolved_prints --------------------------------------------------


@pytest.mark.parametrize(
    ("prev", "cur", "carried"),
    [
        pytest.param(
            snap(printer("A", IDLE, current=run("p1", PS.FINISHED))),
            snap(printer("A", PRINTING, current=run("p2")), at=T1),
            {"p1"},
            id="recent outcome leaves the printer: kept",
        ),
        pytest.param(
            snap(
                printer("A", IDLE),
                runs=[run("p1", PS.FINISHED, finished_at=T0 - timedelta(hours=7))],
            ),
            snap(printer("A", IDLE), at=T1),
            set(),
            id="outcome older than run_retention: dropped",
        ),
        pytest.param(
            snap(printer("A", PRINTING, current=run("p1", elapsed_s=60.0, remaining_s=600.0))),
            snap(printer("A", IDLE), at=T1),
            {"p1"},
            id="lost active print: kept for lookup",
        ),
        pytest.param(
            snap(printer("A", PRINTING, current=run("p1", started_at=None))),
            snap(printer("A", IDLE), at=T1),
            set(),
            id="lost print with no vendor times: not carried",
        ),
        pytest.param(
            snap(printer("A", IDLE, current=run("p1", PS.QUEUED, started_at=None, created_at=T0))),
            snap(printer("A", IDLE), at=T1),
            set(),
            id="queued print that left: not carried",
        ),
        pytest.param(
            snap(printer("A", PRINTING, current=run("p1"))),
            snap(printer("A", PRINTING, current=run("p1", progress=0.5)), at=T1),
            set(),
            id="still on its printer: nothing to carry",
        ),
    ],
)
def test_carry_forward_keeps_what_is_needed(
    prev: Snapshot, cur: Snapshot, carried: set[str]
) -> None:
    """carry_forward adds exactly the recent outcomes and lost prints to the runs."""
    result = carry_forward(prev, cur, cur.taken_at, SETTINGS)
    assert set(result.runs) - set(cur.runs) == carried


def test_carry_forward_newer_data_wins() -> None:
    """A run present in the current snapshot is not overwritten by the previous one."""
    prev = snap(printer("A", IDLE), runs=[run("p1", PS.PRINTING, serial="A", progress=0.5)])
    fresh = run("p1", PS.PRINTING, serial="A", progress=0.7)
    result = carry_forward(prev, snap(printer("A", IDLE), at=T1, runs=[fresh]), T1, SETTINGS)
    assert result.runs["p1"] == fresh


def test_carry_forward_keeps_terminal_final() -> None:
    """A stale record saying a finished print is printing does not undo the outcome."""
    prev = snap(printer("A", IDLE), runs=[run("p1", PS.FINISHED, serial="A")])
    cur = snap(printer("A", IDLE), at=T1, runs=[run("p1", PS.PRINTING, serial="A")])
    result = carry_forward(prev, cur, T1, SETTINGS)
    assert result.runs["p1"].status is PS.FINISHED


def test_carry_forward_fills_in_printer_serial() -> None:
    """Prints carried from a printer remember which printer they were on."""
    prev = snap(printer("A", PRINTING, current=run("p1")))
    result = carry_forward(prev, snap(printer("A", IDLE), at=T1), T1, SETTINGS)
    assert result.runs["p1"].printer_serial == "A"


def test_carry_forward_without_previous_is_identity() -> None:
    """With nothing stored, the current snapshot is returned as it is."""
    cur = snap(printer("A"))
    assert carry_forward(None, cur, T0, SETTINGS) is cur


@pytest.mark.parametrize(
    ("prev", "cur", "lost"),
    [
        pytest.param(
            snap(printer("A", PRINTING, current=run("p1"))),
            snap(printer("A", IDLE), at=T1),
            ["p1"],
            id="left its printer",
        ),
        pytest.param(
            snap(printer("A", PRINTING, current=run("p1"))),
            snap(at=T1),
            ["p1"],
            id="its printer was removed",
        ),
        pytest.param(
            snap(printer("A", PRINTING, current=run("p1"))),
            snap(printer("A", IDLE), at=T1, runs=[run("p1", PS.FAILED)]),
            [],
            id="outcome visible in runs",
        ),
        pytest.param(
            snap(printer("A", PRINTING, current=run("p1"))),
            snap(printer("A", IDLE, current=run("p1", PS.FINISHED)), at=T1),
            [],
            id="outcome visible on the printer",
        ),
        pytest.param(
            snap(printer("A", PRINTING, current=run("p1"))),
            snap(printer("A", IDLE), at=T1, runs=[run("p1", PS.PRINTING)]),
            ["p1"],
            id="only a non-terminal record in runs",
        ),
        pytest.param(
            snap(printer("A", IDLE), runs=[run("p1", PS.PRINTING, serial="A")]),
            snap(printer("A", IDLE), at=T1),
            ["p1"],
            id="carried-forward lost print still lost",
        ),
        pytest.param(
            snap(printer("A", IDLE, current=run("p1", PS.QUEUED))),
            snap(printer("A", IDLE), at=T1),
            [],
            id="queued print is not active",
        ),
        pytest.param(
            None,
            snap(printer("A", IDLE)),
            [],
            id="no previous snapshot",
        ),
    ],
)
def test_unresolved_prints(prev: Snapshot | None, cur: Snapshot, lost: list[str]) -> None:
    """unresolved_prints lists active prints that left their printer with no outcome in sight."""
    assert [p.id for p in unresolved_prints(prev, cur)] == lost


# --- source events, settings --------------------------------------------------------------


def test_source_event_is_stable_and_severe() -> None:
    """source.* events get a stable id per sequence and the default severity."""
    make: Callable[[int | str], ChangeEvent] = lambda seq: source_event(  # noqa: E731
        E.SOURCE_AUTH_FAILED,
        source="lab",
        vendor=Vendor.FORMLABS,
        time=T0,
        details={"error": "auth"},
        sequence=seq,
    )
    assert make(1).id == make(1).id != make(2).id
    assert make(1).severity is Severity.CRITICAL
    assert make(1).subject == "lab"
    assert dict(make(1).details) == {"error": "auth"}


def test_source_event_rejects_printer_kinds() -> None:
    """source_event only makes source.* events."""
    with pytest.raises(ValueError, match="not a source event"):
        source_event(E.PRINTER_ADDED, source="lab", vendor=Vendor.CARBON, time=T0)


def test_settings_from_config() -> None:
    """DiffSettings reads the [thresholds] section without the core importing pydantic."""
    config = ThresholdsConfig(progress_milestones=(0.9, 0.1), tank_max_layers=10)
    got = DiffSettings.from_config(config, run_retention=timedelta(hours=1))
    assert got.milestones == (0.1, 0.9)
    assert got.tank_max_layers == 10
    assert got.run_retention == timedelta(hours=1)


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param({"milestones": (0.5, 1.0)}, id="milestone 1.0"),
        pytest.param({"material_low_ratio": 1.5}, id="ratio above 1"),
        pytest.param({"material_low_ml": -1.0}, id="negative ml"),
        pytest.param({"tank_max_layers": 0}, id="zero layers"),
        pytest.param({"tank_max_age": timedelta(0)}, id="zero age"),
        pytest.param({"run_retention": timedelta(seconds=-1)}, id="negative retention"),
    ],
)
def test_settings_reject_out_of_range_values(bad: dict[str, Any]) -> None:
    """Out-of-range settings are refused when made, not discovered mid-diff."""
    with pytest.raises(ValueError, match=r"\S"):
        DiffSettings(**bad)


# --- property: a whole life of polls never repeats a print's start or outcome -------------

_BEFORE = [PS.QUEUED]
_DURING = [PS.PREPARING, PS.PRINTING, PS.PAUSED, PS.WAITING, PS.ABORTING, PS.UNKNOWN]
_AFTER = [PS.FINISHED, PS.FAILED, PS.ABORTED]


@st.composite
def print_lives(draw: st.DrawFn) -> list[list[tuple[str, PrintStatus, float, bool]]]:
    """Per poll, per printer: which print shows and how, moving forward through its life."""
    polls = draw(st.integers(min_value=2, max_value=12))
    lives: list[list[tuple[str, PrintStatus, float, bool]]] = [[] for _ in range(polls)]
    for serial in ("A", "B"):
        for n in range(draw(st.integers(min_value=1, max_value=3))):
            pid = f"{serial}{n}"
            stage = 0
            for poll in range(polls):
                stage = min(2, stage + draw(st.integers(min_value=0, max_value=1)))
                status = draw(st.sampled_from([_BEFORE, _DURING, _AFTER][stage]))
                where = draw(st.sampled_from(["printer", "runs", "both", "gone"]))
                progress = draw(st.floats(min_value=0, max_value=1))
                if where in ("printer", "both"):
                    lives[poll].append((pid, status, progress, True))
                if where in ("runs", "both"):
                    lives[poll].append((pid, status, progress, False))
    return lives


@settings(max_examples=200, deadline=None)
@given(print_lives())
def test_no_print_starts_or_ends_twice(
    lives: list[list[tuple[str, PrintStatus, float, bool]]],
) -> None:
    """However prints appear, vanish and move to history, each starts and ends at most once."""
    prev: Snapshot | None = None
    seen: list[ChangeEvent] = []
    for i, shown in enumerate(lives):
        at = T0 + i * STEP
        current: dict[str, Print] = {}
        runs: list[Print] = []
        for pid, status, progress, on_printer in shown:
            record = run(
                pid,
                status,
                serial=pid[0],
                progress=progress,
                started_at=T0,
                finished_at=at if status.is_terminal else None,
            )
            if on_printer:
                current.setdefault(pid[0], record)
            else:
                runs.append(record)
        fleet = [printer(s, current=current.get(s)) for s in ("A", "B")]
        prev, events = cycle(prev, snap(*fleet, at=at, runs=runs))
        seen += events
        if i % 4 == 3:
            prev = _store(prev)  # restarts along the way change nothing
    counts = Counter((e.type, e.print.id) for e in seen if e.print is not None)
    for (kind, pid), n in counts.items():
        if kind in (E.PRINT_STARTED, E.PRINT_FINISHED, E.PRINT_FAILED, E.PRINT_ABORTED):
            assert n == 1, (kind, pid)
    outcomes = Counter(
        e.print.id
        for e in seen
        if e.print is not None and e.type in (E.PRINT_FINISHED, E.PRINT_FAILED, E.PRINT_ABORTED)
    )
    assert all(n == 1 for n in outcomes.values())


# --- what is kept between polls -------------------------------------------------------------


def test_events_carry_the_vendor_record_the_kept_state_does_not() -> None:
    record = {"serial": "F1", "status_message": "Resin tank missing"}
    job_record = {"guid": "p1", "layer": 12}
    before = snap(printer(current=run(progress=0.1)))
    after = snap(
        printer(current=run(progress=0.3, raw=job_record), raw=record, alerts=("TANK",)), at=T1
    )
    kept, events = cycle(before, after)
    alert = next(e for e in events if e.type is E.PRINTER_ALERT)
    assert alert.printer is not None
    assert dict(alert.printer.raw) == record
    data = to_cloudevent(alert)["data"]
    assert data["printer"]["raw"]["status_message"] == "Resin tank missing"
    assert not kept.printers["F1"].raw
    current = kept.printers["F1"].current_print
    assert current is not None
    assert not current.raw
    assert current.progress == 0.3


def test_an_unchanged_printer_is_the_previous_object() -> None:
    seen = T0 - timedelta(seconds=30)
    first, _ = cycle(None, snap(printer("F1", last_seen_at=seen), printer("F2", raw={"a": 1})))
    again = snap(
        printer("F1", last_seen_at=seen, raw={"ping": 1}),
        printer("F2", raw={"a": 2}, status=PrinterStatus.PRINTING),
        at=T1,
    )
    kept, _ = cycle(first, again)
    assert kept.printers["F1"] is first.printers["F1"]
    assert kept.printers["F2"] is not first.printers["F2"]
    assert kept.printers["F2"].status is PrinterStatus.PRINTING
    assert not kept.printers["F2"].raw
    newer = snap(printer("F1", last_seen_at=T1), printer("F2", status=PrinterStatus.PRINTING))
    latest, _ = cycle(kept, newer)
    assert latest.printers["F1"].last_seen_at == T1
