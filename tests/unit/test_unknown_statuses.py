"""What the poller reports as unknown status words (``poller.unknown_statuses``)."""

from __future__ import annotations

from datetime import UTC, datetime

from printfleet.core.model import (
    Print,
    Printer,
    PrinterStatus,
    PrintStatus,
    Snapshot,
    Vendor,
    frozen_mapping,
)
from printfleet.poller import unknown_statuses

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def run(pid: str, status: PrintStatus, raw: str) -> Print:
    return Print(id=pid, name=pid, status=status, status_raw=raw)


def test_unknown_words_of_printers_and_prints_are_reported_cut_to_40_chars() -> None:
    """UNKNOWN with a raw word is reported per record, the word cut to 40 characters;
    known statuses and statuses the vendor left out (raw "") are not."""
    printer = Printer(
        serial="A",
        name="A",
        vendor=Vendor.CARBON,
        model="L1",
        model_code="L1",
        status=PrinterStatus.UNKNOWN,
        status_raw="STANDBY",
        online=True,
        current_print=run("p0", PrintStatus.UNKNOWN, ""),
    )
    snapshot = Snapshot(
        source="factory",
        vendor=Vendor.CARBON,
        taken_at=T0,
        printers=frozen_mapping({"A": printer}),
        runs=frozen_mapping(
            {
                "p1": run("p1", PrintStatus.UNKNOWN, "complete"),
                "p2": run("p2", PrintStatus.UNKNOWN, "y" * 300),
                "p3": run("p3", PrintStatus.FINISHED, "finished"),
            }
        ),
    )
    assert unknown_statuses(snapshot) == [
        ("printer.status", "STANDBY"),
        ("print.status", "complete"),
        ("print.status", "y" * 40),
    ]
