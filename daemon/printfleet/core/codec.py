"""Snapshots to plain JSON-ready dicts and back, losslessly (the state store's format).

``snapshot_from_json(snapshot_to_json(s)) == s`` for every snapshot, and the fields that
``==`` ignores (``last_seen_at``, ``skipped``; ``raw`` when asked for) survive too. Datetimes
are RFC 3339 strings, enums their contract strings, tuples lists, mappings objects keyed as in
the snapshot. The format is versioned (``"format": 1``); reading is tolerant of keys that older
stored data lacks (they take the model's defaults) and of unknown status strings (they become
``UNKNOWN`` with the raw string kept), so an upgrade never makes a stored snapshot unreadable.

This is deliberately not ``Snapshot.as_dict``: that one shapes event payloads (derived fields
like ``remaining_ratio``, printers as a list); this one is the storage format and must round-trip.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypeVar

from printfleet.core.model import (
    Material,
    Print,
    Printer,
    PrinterStatus,
    PrintStatus,
    Queue,
    SkippedRecord,
    Snapshot,
    Tank,
    Vendor,
    frozen_mapping,
    iso,
    plain,
)

FORMAT = 1

__all__ = [
    "FORMAT",
    "material_from_json",
    "material_to_json",
    "print_from_json",
    "print_to_json",
    "printer_from_json",
    "printer_to_json",
    "queue_from_json",
    "queue_to_json",
    "snapshot_from_json",
    "snapshot_to_json",
    "tank_from_json",
    "tank_to_json",
]


# --- encoding -----------------------------------------------------------------------------


def snapshot_to_json(snapshot: Snapshot, *, with_raw: bool = False) -> dict[str, Any]:
    """``snapshot`` as a JSON-ready dict; vendor ``raw`` records only when ``with_raw``."""
    return {
        "format": FORMAT,
        "source": snapshot.source,
        "vendor": snapshot.vendor.value,
        "taken_at": iso(snapshot.taken_at),
        "printers": {
            key: printer_to_json(p, with_raw=with_raw) for key, p in snapshot.printers.items()
        },
        "runs": {key: print_to_json(r, with_raw=with_raw) for key, r in snapshot.runs.items()},
        "skipped": [
            {"kind": s.kind, "record_id": s.record_id, "reason": s.reason} for s in snapshot.skipped
        ],
        "queues": {key: queue_to_json(q) for key, q in snapshot.queues.items()},
    }


def queue_to_json(queue: Queue) -> dict[str, Any]:
    """One job queue (a Formlabs group's or a Carbon printer's)."""
    return {
        "key": queue.key,
        "name": queue.name,
        "items": queue.items,
        "printers": list(queue.printers),
        "oldest_at": iso(queue.oldest_at),
        "as_of": iso(queue.as_of),
    }


def printer_to_json(printer: Printer, *, with_raw: bool = False) -> dict[str, Any]:
    """One printer, including its current print, materials and tank."""
    data: dict[str, Any] = {
        "serial": printer.serial,
        "name": printer.name,
        "vendor": printer.vendor.value,
        "model": printer.model,
        "model_code": printer.model_code,
        "status": printer.status.value,
        "status_raw": printer.status_raw,
        "phase": printer.phase,
        "known_status": printer.known_status.value if printer.known_status else None,
        "online": printer.online,
        "last_seen_at": iso(printer.last_seen_at),
        "group": printer.group,
        "firmware": printer.firmware,
        "location": printer.location,
        "current_print": (
            print_to_json(printer.current_print, with_raw=with_raw)
            if printer.current_print is not None
            else None
        ),
        "materials": [material_to_json(m) for m in printer.materials],
        "tank": tank_to_json(printer.tank) if printer.tank is not None else None,
        "alerts": list(printer.alerts),
        "queue_length": printer.queue_length,
        "ready_to_print": printer.ready_to_print,
        "build_platform_contents": printer.build_platform_contents,
    }
    if with_raw:
        data["raw"] = plain(printer.raw)
    return data


def print_to_json(run: Print, *, with_raw: bool = False) -> dict[str, Any]:
    """One print run."""
    data: dict[str, Any] = {
        "id": run.id,
        "name": run.name,
        "status": run.status.value,
        "status_raw": run.status_raw,
        "printer_serial": run.printer_serial,
        "progress": run.progress,
        "layer": run.layer,
        "layers_total": run.layers_total,
        "created_at": iso(run.created_at),
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "elapsed_s": run.elapsed_s,
        "remaining_s": run.remaining_s,
        "material": run.material,
        "material_code": run.material_code,
        "message": run.message,
        "user": run.user,
        "volume_ml": run.volume_ml,
        "verdict": run.verdict,
        "verdict_note": run.verdict_note,
        "verdict_by": run.verdict_by,
        "harvest_status": run.harvest_status,
    }
    if with_raw:
        data["raw"] = plain(run.raw)
    return data


def material_to_json(material: Material) -> dict[str, Any]:
    """One resin supply (cartridge)."""
    return {
        "slot": material.slot,
        "serial": material.serial,
        "material": material.material,
        "name": material.name,
        "capacity_ml": material.capacity_ml,
        "remaining_ml": material.remaining_ml,
        "is_empty": material.is_empty,
    }


def tank_to_json(tank: Tank) -> dict[str, Any]:
    """One resin tank."""
    return {
        "serial": tank.serial,
        "material": tank.material,
        "tank_type": tank.tank_type,
        "layers_printed": tank.layers_printed,
        "first_filled_at": iso(tank.first_filled_at),
    }


# --- decoding -----------------------------------------------------------------------------


def snapshot_from_json(data: Mapping[str, Any]) -> Snapshot:
    """The snapshot ``data`` describes (as written by :func:`snapshot_to_json`).

    Raises:
        ValueError: a required key (``source``, ``vendor``, ``taken_at``, a printer's
            ``serial``, a print's ``id``) is missing or a value has the wrong shape.
    """
    printers_data = data.get("printers") or {}
    printers: dict[str, Printer] = {}
    if isinstance(printers_data, Mapping):
        for key, value in printers_data.items():
            printers[str(key)] = printer_from_json(value)
    else:  # a list, as in Snapshot.as_dict(): key by serial
        for value in printers_data:
            printer = printer_from_json(value)
            printers[printer.serial] = printer
    runs_data = data.get("runs") or {}
    runs: dict[str, Print] = {}
    if isinstance(runs_data, Mapping):
        for key, value in runs_data.items():
            runs[str(key)] = print_from_json(value)
    else:
        for value in runs_data:
            run = print_from_json(value)
            runs[run.id] = run
    skipped = tuple(
        SkippedRecord(
            kind=str(s.get("kind", "")),
            record_id=s.get("record_id", s.get("id")),
            reason=str(s.get("reason", "")),
        )
        for s in data.get("skipped") or ()
    )
    queues_data = data.get("queues") or {}  # absent in snapshots stored before queues existed
    queues: dict[str, Queue] = {}
    for value in queues_data.values() if isinstance(queues_data, Mapping) else queues_data:
        queue = queue_from_json(value)
        queues[queue.key] = queue
    return Snapshot(
        source=str(_required(data, "source", "snapshot")),
        vendor=_vendor(_required(data, "vendor", "snapshot")),
        taken_at=_required_dt(data, "taken_at", "snapshot"),
        printers=frozen_mapping(printers),
        runs=frozen_mapping(runs),
        skipped=skipped,
        queues=frozen_mapping(queues),
    )


def queue_from_json(data: Mapping[str, Any]) -> Queue:
    """The queue ``data`` describes (see :func:`queue_to_json`)."""
    return Queue(
        key=str(_required(data, "key", "queue")),
        name=str(_get(data, "name", data["key"])),
        items=int(_get(data, "items", 0)),
        printers=tuple(str(s) for s in data.get("printers") or ()),
        oldest_at=_dt(data.get("oldest_at")),
        as_of=_dt(data.get("as_of")),
    )


def printer_from_json(data: Mapping[str, Any]) -> Printer:
    """The printer ``data`` describes (see :func:`printer_to_json`)."""
    serial = str(_required(data, "serial", "printer"))
    status = _enum(PrinterStatus, data.get("status"))
    current = data.get("current_print")
    tank = data.get("tank")
    return Printer(
        serial=serial,
        name=str(_get(data, "name", serial)),
        vendor=_vendor(_required(data, "vendor", "printer")),
        model=str(_get(data, "model", "")),
        model_code=str(_get(data, "model_code", _get(data, "model", ""))),
        status=status,
        status_raw=str(_get(data, "status_raw", _get(data, "status", status.value))),
        online=bool(_get(data, "online", True)),
        last_seen_at=_dt(data.get("last_seen_at")),
        group=data.get("group"),
        firmware=data.get("firmware"),
        location=data.get("location"),
        current_print=print_from_json(current) if current is not None else None,
        materials=tuple(material_from_json(m) for m in data.get("materials") or ()),
        tank=tank_from_json(tank) if tank is not None else None,
        alerts=tuple(str(a) for a in data.get("alerts") or ()),
        queue_length=data.get("queue_length"),
        ready_to_print=data.get("ready_to_print"),
        build_platform_contents=data.get("build_platform_contents"),
        phase=data.get("phase"),
        known_status=(
            _enum(PrinterStatus, data["known_status"]) if data.get("known_status") else None
        ),
        raw=frozen_mapping(data.get("raw")),
    )


def print_from_json(data: Mapping[str, Any]) -> Print:
    """The print run ``data`` describes (see :func:`print_to_json`)."""
    run_id = str(_required(data, "id", "print"))
    status = _enum(PrintStatus, data.get("status"))
    return Print(
        id=run_id,
        name=str(_get(data, "name", "")),
        status=status,
        status_raw=str(_get(data, "status_raw", _get(data, "status", status.value))),
        printer_serial=data.get("printer_serial"),
        progress=data.get("progress"),
        layer=data.get("layer"),
        layers_total=data.get("layers_total"),
        created_at=_dt(data.get("created_at")),
        started_at=_dt(data.get("started_at")),
        finished_at=_dt(data.get("finished_at")),
        elapsed_s=data.get("elapsed_s"),
        remaining_s=data.get("remaining_s"),
        material=data.get("material"),
        material_code=data.get("material_code"),
        message=data.get("message"),
        user=data.get("user"),
        volume_ml=data.get("volume_ml"),
        verdict=data.get("verdict"),
        verdict_note=data.get("verdict_note"),
        verdict_by=data.get("verdict_by"),
        harvest_status=data.get("harvest_status"),
        raw=frozen_mapping(data.get("raw")),
    )


def material_from_json(data: Mapping[str, Any]) -> Material:
    """The material ``data`` describes (see :func:`material_to_json`)."""
    return Material(
        slot=str(_get(data, "slot", "main")),
        serial=data.get("serial"),
        material=data.get("material"),
        name=data.get("name"),
        capacity_ml=data.get("capacity_ml"),
        remaining_ml=data.get("remaining_ml"),
        is_empty=bool(_get(data, "is_empty", False)),
    )


def tank_from_json(data: Mapping[str, Any]) -> Tank:
    """The tank ``data`` describes (see :func:`tank_to_json`)."""
    return Tank(
        serial=data.get("serial"),
        material=data.get("material"),
        tank_type=data.get("tank_type"),
        layers_printed=data.get("layers_printed"),
        first_filled_at=_dt(data.get("first_filled_at")),
    )


# --- helpers ------------------------------------------------------------------------------


def _get(data: Mapping[str, Any], key: str, default: Any) -> Any:
    """``data[key]``, or ``default`` when the key is missing or null (older stored data)."""
    value = data.get(key)
    return default if value is None else value


def _required(data: Mapping[str, Any], key: str, what: str) -> Any:
    value = data.get(key)
    if value is None:
        raise ValueError(f"stored {what} has no {key!r}")
    return value


def _required_dt(data: Mapping[str, Any], key: str, what: str) -> datetime:
    value = _dt(_required(data, key, what))
    assert value is not None  # _required rejected None
    return value


def _dt(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value))
    except ValueError as err:
        raise ValueError(f"not an RFC 3339 time: {value!r}") from err


def _vendor(value: Any) -> Vendor:
    try:
        return Vendor(str(value))
    except ValueError as err:
        raise ValueError(f"unknown vendor {value!r}") from err


_E = TypeVar("_E", PrinterStatus, PrintStatus)


def _enum(kind: type[_E], value: Any) -> _E:
    """``kind(value)``, or ``UNKNOWN`` for a missing or unrecognised string."""
    try:
        return kind(str(value))
    except ValueError:
        return kind("UNKNOWN")
