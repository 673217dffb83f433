"""print.rated: a person's verdict on an ended print, announced once, hours after the outcome."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from printfleet.core.alerts import ALERT_PARTS_ON_PLATFORM
from printfleet.core.codec import snapshot_from_json, snapshot_to_json
from printfleet.core.diff import carry_forward, diff
from printfleet.core.events import ChangeEvent, EventType, Severity
from printfleet.core.model import (
    Print,
    Printer,
    PrinterStatus,
    PrintStatus,
    Snapshot,
    Vendor,
    without_raw,
)
from printfleet.core.thresholds import DiffSettings

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
STEP = timedelta(minutes=1)
SETTINGS = DiffSettings()
PS = PrintStatus
RATED = EventType.PRINT_RATED


def run(
    status: PrintStatus = PS.FINISHED, *, pid: str = "p1", verdict: str | None = None, **kw: Any
) -> Print:
    return Print(
        id=pid,
        name=f"job {pid}",
        status=status,
        status_raw=status.value,
        started_at=T0 - timedelta(hours=2),
        finished_at=T0 - timedelta(minutes=1) if status.is_terminal else None,
        verdict=verdict,
        **kw,
    )


def printer(current: Print | None = None, **kw: Any) -> Printer:
    return Printer(
        serial="F1",
        name="Form Nimble",
        vendor=Vendor.FORMLABS,
        model="Form 4",
        model_code="FORM-4-0",
        status=PrinterStatus.IDLE,
        status_raw="IDLE",
        online=True,
        current_print=current,
        **kw,
    )


def snap(at: datetime, current: Print | None = None, runs: Sequence[Print] = ()) -> Snapshot:
    return Snapshot(
        source="lab",
        vendor=Vendor.FORMLABS,
        taken_at=at,
        printers={"F1": printer(current)},
        runs={r.id: dataclasses.replace(r, printer_serial="F1") for r in runs},
    )


def play(*snapshots: Snapshot, stored: bool = False) -> list[ChangeEvent]:
    """Poll the snapshots in order as the poller does (carry forward, diff, keep); with
    ``stored`` each kept snapshot goes through the store's codec first."""
    prev: Snapshot | None = None
    events: list[ChangeEvent] = []
    for cur in snapshots:
        cur = carry_forward(prev, cur, cur.taken_at, SETTINGS)
        events += diff(prev, cur, cur.taken_at, SETTINGS)
        prev = without_raw(cur, prev)
        if stored:
            prev = snapshot_from_json(snapshot_to_json(prev))
    return events


def rated(events: Sequence[ChangeEvent]) -> list[ChangeEvent]:
    return [e for e in events if e.type is RATED]


def at(n: int) -> datetime:
    return T0 + n * STEP


# --- the event ---------------------------------------------------------------------------


def test_a_rating_hours_after_the_outcome_is_announced_once() -> None:
    """Finished (unrated) on the printer, then rated while still there: one print.rated with
    the verdict, the note, who, and what the machine said."""
    done = run()
    good = run(verdict="SUCCESS", verdict_note="clean", verdict_by="mara")
    events = play(
        snap(at(0), run(PS.PRINTING)),
        snap(at(1), done),
        snap(at(180), done),
        snap(at(181), good),
        snap(at(182), good),
    )
    assert [e.type for e in events] == [EventType.PRINT_FINISHED, RATED]
    event = events[-1]
    assert dict(event.details) == {
        "verdict": "SUCCESS",
        "note": "clean",
        "by": "mara",
        "machine_outcome": "finished",
    }
    assert (event.subject, event.severity, event.time) == ("F1", Severity.INFO, at(181))
    assert event.print is not None
    assert event.print.verdict == "SUCCESS"
    assert event.changes["verdict"].before is None
    assert event.changes["verdict"].after == "SUCCESS"


@pytest.mark.parametrize(
    ("status", "verdict", "severity", "outcome"),
    [
        (PS.FINISHED, "FAILURE", Severity.WARNING, "finished"),  # the costly surprise
        (PS.FINISHED, "SUCCESS", Severity.INFO, "finished"),
        (PS.FAILED, "FAILURE", Severity.INFO, "failed"),  # already known bad
        (PS.ABORTED, "FAILURE", Severity.INFO, "aborted"),
        (PS.FAILED, "SUCCESS", Severity.INFO, "failed"),
    ],
)
def test_severity_is_warning_only_when_a_finished_print_is_rated_failure(
    status: PrintStatus, verdict: str, severity: Severity, outcome: str
) -> None:
    events = rated(play(snap(at(0), run(status)), snap(at(1), run(status, verdict=verdict))))
    assert [(e.severity, e.details["machine_outcome"]) for e in events] == [(severity, outcome)]


def test_rating_seen_in_history_runs_counts_as_well() -> None:
    """A print long gone from its printer, rated in a history record (lookups, events)."""
    events = rated(
        play(
            snap(at(0), runs=[run()]),
            snap(at(60), runs=[run(verdict="FAILURE", verdict_by="lena")]),
        )
    )
    assert [(e.details["verdict"], e.details["by"], e.subject) for e in events] == [
        ("FAILURE", "lena", "F1")
    ]


def test_a_print_first_seen_already_ended_and_rated_gets_outcome_then_rating() -> None:
    """Late history (a lookup after a gap): the outcome is news, and so is its rating."""
    events = play(
        snap(at(0), run(PS.PRINTING)),
        snap(at(1), runs=[run(verdict="FAILURE")]),
    )
    assert [e.type for e in events] == [EventType.PRINT_FINISHED, RATED]
    assert events[1].severity is Severity.WARNING


# --- never twice, never from nothing ------------------------------------------------------


def test_no_event_for_a_print_already_rated_at_the_first_snapshot() -> None:
    """The first snapshot is a silent baseline, ratings included."""
    good = run(verdict="SUCCESS")
    assert play(snap(at(0), good), snap(at(1), good)) == []


def test_no_event_for_an_old_rated_print_on_a_new_printer() -> None:
    """A printer added with an old rated print shows printer.added only."""
    first = Snapshot(source="lab", vendor=Vendor.FORMLABS, taken_at=at(0), printers={})
    old = dataclasses.replace(run(verdict="SUCCESS"), finished_at=at(0) - timedelta(days=2))
    events = play(first, snap(at(1), old))
    assert [e.type for e in events] == [EventType.PRINTER_ADDED]


def test_unrated_and_unknown_prints_never_get_one() -> None:
    events = play(snap(at(0), run()), snap(at(1), run()), snap(at(2), run(verdict=None)))
    assert rated(events) == []


def test_a_summary_record_without_the_rating_does_not_unrate_or_re_rate() -> None:
    """Cleared from the printer, the print is in previous_print_run, whose summary carries no
    rating: the rating stays known (carried), so seeing it again is not news."""
    good = run(verdict="SUCCESS", verdict_note="ok")
    summary = run()  # the same print as previous_print_run shows it: no rating
    events = play(
        snap(at(0), run()),
        snap(at(1), good),
        snap(at(2), runs=[summary]),
        snap(at(3), runs=[summary]),
        snap(at(4), runs=[good]),  # a lookup shows the full record again
        snap(at(5), good),
    )
    assert len(rated(events)) == 1


def test_the_rating_survives_the_store_round_trip() -> None:
    """Stored between every poll (a restart each time): still one event."""
    good = run(verdict="FAILURE", verdict_note="warped", verdict_by="kim")
    events = play(
        snap(at(0), run()),
        snap(at(1), good),
        snap(at(2), good),
        snap(at(3), runs=[run()]),
        snap(at(4), runs=[good]),
        stored=True,
    )
    assert len(rated(events)) == 1


def test_a_changed_rating_is_a_new_event_with_a_new_id() -> None:
    events = rated(
        play(
            snap(at(0), run()),
            snap(at(1), run(verdict="SUCCESS")),
            snap(at(2), run(verdict="SUCCESS")),
            snap(at(3), run(verdict="FAILURE", verdict_note="cracked on removal")),
        )
    )
    assert [e.details["verdict"] for e in events] == ["SUCCESS", "FAILURE"]
    assert events[0].id != events[1].id
    assert events[1].changes["verdict"].before == "SUCCESS"


def test_a_note_edited_after_the_rating_is_not_a_new_rating() -> None:
    events = rated(
        play(
            snap(at(0), run()),
            snap(at(1), run(verdict="SUCCESS")),
            snap(at(2), run(verdict="SUCCESS", verdict_note="added later")),
        )
    )
    assert len(events) == 1


def test_the_id_is_stable_for_the_same_rating() -> None:
    """Re-running the diff, or seeing the rating first in history then live, repeats the id."""
    prev = snap(at(0), run())
    first = rated(play(prev, snap(at(1), run(verdict="SUCCESS"))))
    again = rated(play(prev, snap(at(2), runs=[run(verdict="SUCCESS")])))
    assert [e.id for e in first] == [e.id for e in again]


def test_the_event_is_dated_when_the_rating_was_given() -> None:
    given = at(150)
    good = run(verdict="SUCCESS", verdict_at=given)
    assert [e.time for e in rated(play(snap(at(0), run()), snap(at(181), good)))] == [given]
    # A rating time ahead of the snapshot is not believed; one before the print ended neither.
    ahead = run(verdict="SUCCESS", verdict_at=at(9))
    assert [e.time for e in rated(play(snap(at(0), run()), snap(at(2), ahead)))] == [at(2)]
    early = run(verdict="SUCCESS", verdict_at=T0 - timedelta(hours=3))
    assert early.finished_at is not None
    events = rated(play(snap(at(0), run()), snap(at(2), early)))
    assert [e.time for e in events] == [early.finished_at]


def test_an_old_rating_first_seen_is_not_news() -> None:
    """A state kept before ratings were read (or a record that showed none) then the full
    record: a rating given days ago is not announced; one given since is."""
    old = run(verdict="FAILURE", verdict_at=T0 - timedelta(days=2))
    assert rated(play(snap(at(0), run()), snap(at(1), old))) == []
    fresh = run(verdict="FAILURE", verdict_at=T0 - timedelta(hours=1))
    assert len(rated(play(snap(at(0), run()), snap(at(1), fresh)))) == 1


def test_a_stale_record_does_not_undo_a_re_rating() -> None:
    """Rated FAILURE, re-rated SUCCESS on the printer; an older history record (the events
    feed) still says FAILURE: the later rating stands, no second FAILURE."""
    failure = run(verdict="FAILURE", verdict_at=at(1))
    success = run(verdict="SUCCESS", verdict_at=at(3))
    events = rated(
        play(
            snap(at(0), run()),
            snap(at(2), failure),
            snap(at(4), success),
            snap(at(5), success, runs=[failure]),
        )
    )
    assert [e.details["verdict"] for e in events] == ["FAILURE", "SUCCESS"]


# --- parts on the platform: the existing alert machinery -----------------------------------


def test_parts_on_platform_raises_and_clears_a_printer_alert() -> None:
    def with_alerts(n: int, *alerts: str) -> Snapshot:
        base = snap(at(n))
        p = dataclasses.replace(base.printers["F1"], alerts=alerts)
        return dataclasses.replace(base, printers={"F1": p})

    events = play(with_alerts(0), with_alerts(1, ALERT_PARTS_ON_PLATFORM), with_alerts(90))
    assert [(e.type, e.details["alert"], e.details["state"]) for e in events] == [
        (EventType.PRINTER_ALERT, ALERT_PARTS_ON_PLATFORM, "raised"),
        (EventType.PRINTER_ALERT, ALERT_PARTS_ON_PLATFORM, "cleared"),
    ]
