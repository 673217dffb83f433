"""Hand-made print records, logged events and snapshots for the digest tests."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from printfleet.core.digest import DigestSpec, LoggedEvent
from printfleet.core.history import PrintRecord
from printfleet.core.model import Printer, PrinterStatus, Snapshot, Vendor
from printfleet.core.rules.windows import Silence

START = datetime(2026, 12, 2, 6, 30, tzinfo=UTC)  # 07:30 Berlin
END = START + timedelta(days=1)


def record(
    serial: str,
    outcome: str,
    at: datetime,
    *,
    group: str | None = "lab-a",
    source: str = "lab",
    volume: float | None = None,
    material: str | None = "Grey V5",
    n: int = 0,
) -> PrintRecord:
    return PrintRecord(
        source=source,
        serial=serial,
        printer_name=f"name-{serial}",
        group=group,
        print_id=f"{serial}-{outcome}-{at.isoformat()}-{n}",
        name="part.form",
        outcome=outcome,
        finished_at=at,
        volume_ml=volume,
        material=material,
    )


def event(kind: str, serial: str, at: datetime, source: str = "lab", **details: Any) -> LoggedEvent:
    return LoggedEvent(kind, source, serial, at, {"name": f"name-{serial}", **details})


def printer(
    serial: str,
    *,
    online: bool = True,
    group: str | None = "lab-a",
    alerts: tuple[str, ...] = (),
    name: str | None = None,
    model: str = "Form 4",
) -> Printer:
    return Printer(
        serial=serial,
        name=name or f"name-{serial}",
        vendor=Vendor.FORMLABS,
        model=model,
        model_code="FORM-4-0",
        status=PrinterStatus.IDLE if online else PrinterStatus.OFFLINE,
        status_raw="IDLE" if online else "OFFLINE",
        online=online,
        group=group,
        alerts=alerts,
    )


def snapshots(*printers: Printer, source: str = "lab") -> Mapping[str, Snapshot]:
    return {
        source: Snapshot(
            source=source,
            vendor=Vendor.FORMLABS,
            taken_at=END,
            printers={p.serial: p for p in printers},
        )
    }


def spec(match: dict[str, tuple[str, ...]] | None = None, name: str = "daily") -> DigestSpec:
    return DigestSpec(
        name=name,
        receiver="hook",
        title="Lab digest",
        match=Silence(id="digest", match=match) if match else None,
    )
