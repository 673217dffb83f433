"""core.history: the record an outcome event makes, and the rating a print.rated event carries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from printfleet.core.diff import diff
from printfleet.core.events import ChangeEvent, EventType, Severity
from printfleet.core.history import (
    PrintRecord,
    Rating,
    history_changes,
    rating_from_event,
    record_from_event,
)
from printfleet.core.model import Print, Printer, PrinterStatus, PrintStatus, Snapshot, Vendor
from printfleet.core.thresholds import DiffSettings

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def run(status: PrintStatus = PrintStatus.FINISHED, **kw: Any) -> Print:
    fields: dict[str, Any] = {
        "id": "p1",
        "name": "bracket v3",
        "status": status,
        "status_raw": status.value,
        "printer_serial": "F1",
        "started_at": T0,
        "finished_at": T0 + timedelta(hours=3),
        "material": "Grey V5",
        "volume_ml": 42.5,
    }
    fields.update(kw)
    return Print(**fields)


def printer(**kw: Any) -> Printer:
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
        **kw,
    )


def event(
    kind: EventType, the_print: Print | None, *, details: dict[str, Any] | None = None
) -> ChangeEvent:
    return ChangeEvent(
        id="e1",
        type=kind,
        source="lab",
        vendor=Vendor.FORMLABS,
        subject="F1",
        time=T0 + timedelta(hours=4),
        severity=Severity.INFO,
        printer=printer(),
        print=the_print,
        details=details or {},
    )


def test_a_finished_event_makes_a_full_record() -> None:
    record = record_from_event(event(EventType.PRINT_FINISHED, run(elapsed_s=10_000.0)))
    assert record == PrintRecord(
        source="lab",
        serial="F1",
        printer_name="Bob",
        group="Lab A",
        print_id="p1",
        name="bracket v3",
        outcome="finished",
        finished_at=T0 + timedelta(hours=3),
        started_at=T0,
        duration_s=10_000.0,  # the vendor's elapsed time wins over end minus start
        material="Grey V5",
        volume_ml=42.5,
    )


@pytest.mark.parametrize(
    ("kind", "outcome"),
    [
        (EventType.PRINT_FINISHED, "finished"),
        (EventType.PRINT_FAILED, "failed"),
        (EventType.PRINT_ABORTED, "aborted"),
    ],
)
def test_each_outcome_is_named_by_the_event_type(kind: EventType, outcome: str) -> None:
    record = record_from_event(event(kind, run()))
    assert record is not None
    assert record.outcome == outcome
    assert record.duration_s == 3 * 3600.0  # no elapsed time: end minus start


def test_without_vendor_times_the_event_time_is_the_end_and_duration_unknown() -> None:
    record = record_from_event(
        event(EventType.PRINT_FAILED, run(started_at=None, finished_at=None))
    )
    assert record is not None
    assert (record.finished_at, record.started_at, record.duration_s) == (
        T0 + timedelta(hours=4),
        None,
        None,
    )


def test_nonsense_numbers_are_unknown_not_stored() -> None:
    """A negative duration (skewed clocks) or volume, or NaN, is not a fact worth summing."""
    record = record_from_event(
        event(
            EventType.PRINT_FINISHED,
            run(started_at=T0 + timedelta(hours=5), volume_ml=float("nan")),
        )
    )
    assert record is not None
    assert (record.duration_s, record.volume_ml) == (None, None)


def test_naive_vendor_times_are_utc() -> None:
    naive = datetime(2026, 11, 23, 13, 0)  # what a vendor may send
    record = record_from_event(event(EventType.PRINT_FINISHED, run(finished_at=naive)))
    assert record is not None
    assert record.finished_at == naive.replace(tzinfo=UTC)


def test_a_verdict_known_at_outcome_time_is_recorded_and_odd_words_are_not() -> None:
    rated = record_from_event(
        event(EventType.PRINT_FINISHED, run(verdict="FAILURE", verdict_note="warped"))
    )
    odd = record_from_event(event(EventType.PRINT_FINISHED, run(verdict="UNKNOWN")))
    assert rated is not None
    assert odd is not None
    assert (rated.verdict, rated.verdict_note) == ("FAILURE", "warped")
    assert odd.verdict is None


def test_other_events_make_no_record() -> None:
    assert record_from_event(event(EventType.PRINT_STARTED, run(PrintStatus.PRINTING))) is None
    assert record_from_event(event(EventType.PRINT_FINISHED, None)) is None
    assert rating_from_event(event(EventType.PRINT_FINISHED, run())) is None


def test_a_rating_takes_the_event_data_over_the_print_fields() -> None:
    rated = event(
        EventType.PRINT_RATED,
        run(verdict="FAILURE"),
        details={"verdict": "SUCCESS", "note": "fine after all", "by": "ana@example.com"},
    )
    assert rating_from_event(rated) == Rating(
        source="lab", print_id="p1", verdict="SUCCESS", note="fine after all", by="ana@example.com"
    )
    from_print = event(EventType.PRINT_RATED, run(verdict="FAILURE", verdict_by="bo"))
    assert rating_from_event(from_print) == Rating(
        source="lab", print_id="p1", verdict="FAILURE", note=None, by="bo"
    )


def test_history_changes_of_a_real_diff() -> None:
    """What the differ emits for a print finishing between polls becomes one record."""
    settings = DiffSettings()
    printing = run(PrintStatus.PRINTING, finished_at=None)
    before = Snapshot(
        source="lab",
        vendor=Vendor.FORMLABS,
        taken_at=T0 + timedelta(hours=2),
        printers={"F1": printer(current_print=printing)},
    )
    after = Snapshot(
        source="lab",
        vendor=Vendor.FORMLABS,
        taken_at=T0 + timedelta(hours=4),
        printers={"F1": printer(current_print=run())},
    )
    events = diff(before, after, after.taken_at, settings)
    changes = history_changes(events)
    assert [type(c) for c in changes] == [PrintRecord]
    record = changes[0]
    assert isinstance(record, PrintRecord)
    assert (record.print_id, record.outcome, record.volume_ml) == ("p1", "finished", 42.5)
