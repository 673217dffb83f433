"""Carbon DLS API v1 JSON -> the normalized model (pure, no I/O, no logging).

Field names are from carbon.md (client 0.4.17). The vendor documents almost no enum values
(only ``PRINTING`` for printers and ``finished`` for prints), so states are compared
case-insensitively, unknown ones are kept raw, and every optional field may be null or absent.
A wrong *top-level* shape raises :class:`~printfleet.errors.BadResponse`.

**Print ids.** ``/printers`` gives each printer's current print as a ``PrintRef`` (``name``,
``print_id``, ``build_uuid``, times, ``remaining_sec``; no uuid, no status) and ``/prints``
gives ``ModelPrint`` records (which also carry ``print_id``, plus ``uuid``). So that the
current print and its history record share one ``Print.id``, both use :func:`print_key`:
``print_id`` when present; else ``"<build_uuid>@<started_at as RFC 3339 UTC>"`` when both are
known (a started print whose short id has not appeared yet); else the ModelPrint ``uuid``
(queued prints, which have no ``print_id`` yet and never appear as current); else the bare
``build_uuid``. A record with none of these cannot be tracked and is skipped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from printfleet.core.model import (
    EMPTY,
    Print,
    Printer,
    PrinterStatus,
    PrintStatus,
    RawJson,
    SkippedRecord,
    Vendor,
    frozen_mapping,
    iso,
)
from printfleet.core.prints import shifted
from printfleet.sources.mapping import (
    REASON_NOT_OBJECT,
    Cached,
    Heartbeat,
    Keyed,
    MappingError,
    Record,
    RecordCache,
    as_float,
    as_int,
    as_mapping,
    as_str,
    carbon_is_offline_state,
    carbon_print_status,
    carbon_printer_status,
    clamp01,
    parse_time,
    raw_record,
    raw_text,
    records_of,
    unexpected,
)

SOURCE: Final = "carbon"  # names the vendor in BadResponse where no account name is passed

REASON_MISSING_SERIAL: Final = "missing serial"
REASON_MISSING_PRINT_ID: Final = "missing print id"

# Statuses whose operator feedback is kept as the print's message: a print of unknown status
# may have failed (the sample's failed print carries "Stopped at 31%: ..."), and the note is
# what tells a person so.
_UNSUCCESSFUL: Final = frozenset({PrintStatus.FAILED, PrintStatus.ABORTED, PrintStatus.UNKNOWN})


def print_key(
    print_id: Any, build_uuid: Any, started_at: datetime | None, uuid: Any = None
) -> str | None:
    """The ``Print.id`` for a Carbon print (see the module docstring for the order)."""
    key = as_str(print_id)
    if key is not None:
        return key
    build = as_str(build_uuid)
    if build is not None and started_at is not None:
        return f"{build}@{iso(started_at)}"
    return as_str(uuid) or build


#: One cache per Carbon source (:class:`RecordCache` of printers).
PrinterCache = RecordCache[Printer]

#: What an idle printer's record changes in between polls: ``updated_at`` (the simulator
#: moves it at every 30 s heartbeat; carbon.md §11 leaves open whether the cloud does).
HEARTBEAT: Final = Heartbeat((), ("updated_at",))


def map_printers(
    records: Any,
    *,
    source: str,
    now: datetime,
    offline_after: timedelta | None,
    cache: PrinterCache | None = None,
) -> tuple[dict[str, Printer], dict[str, Print], list[SkippedRecord]]:
    """Printers by serial from the ``printers`` records of one or more ``/printers`` pages.

    Online means ``printer_state`` is not offline-like (OFFLINE, DISCONNECTED, any case) and,
    only when ``offline_after`` is set, ``updated_at`` is at most that old (carbon.md does not
    say ``updated_at`` is a heartbeat). The current print comes from ``prints.current`` with
    progress ``elapsed / (elapsed + remaining_sec)``, ``elapsed = now - started_at``. A
    ``PrintRef`` has no outcome, so no runs are returned (``{}``): the adapter asks
    ``/prints``. A duplicate serial keeps the last record and skips the earlier one.

    ``cache`` holds the source's mappings of its last fetch: a record whose text is unchanged
    is not mapped again while its mapping holds (a started current print's progress moves
    with the time, so such a record is mapped on every fetch).

    Raises:
        BadResponse: ``records`` is not a list (or an object with a ``printers`` list).
    """
    items = records_of(records, source=source, what="printers", list_key="printers")
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    printers: Keyed[Printer] = Keyed("printer")

    def full(record: Mapping[str, Any], serial: str) -> Printer:
        return _printer(record, serial, now, offline_after)

    if cache is None:
        printers.collect(items, key="serial", missing=REASON_MISSING_SERIAL, build=full)
    else:
        cache.collect(
            printers,
            items,
            key="serial",
            missing=REASON_MISSING_SERIAL,
            now=now,
            beat=HEARTBEAT,
            full=full,
            patch=lambda known, record: _beat(known, record, now, offline_after),
            entry=lambda record, printer: _cached(record, printer, offline_after),
        )
    return printers.items, {}, printers.skipped


def _beat(
    known: Printer, record: Record, now: datetime, offline_after: timedelta | None
) -> Printer:
    """``known`` brought up to ``record``, which differs from its record only in ``updated_at``
    (a cached printer has no started print, so nothing else moves with the time)."""
    last_seen = parse_time(record.get("updated_at"))
    run = known.current_print
    if run is not None and isinstance(run.raw, RawJson):
        run = replace(run, raw=raw_record(record, "prints", "current"))
    return replace(
        known,
        last_seen_at=last_seen,
        online=_online(_status(record).get("printer_state"), last_seen, now, offline_after),
        raw=raw_record(record),
        current_print=run,
    )


def _cached(
    record: Mapping[str, Any], printer: Printer, offline_after: timedelta | None
) -> Cached[Printer] | None:
    """The cache entry of a record just mapped; ``None`` when its mapping moves with the time
    alone (a started current print). ``online`` changes at ``updated_at + offline_after``."""
    current = printer.current_print
    if current is not None and current.started_at is not None:
        return None
    text = getattr(record, "text", "")
    last_seen = printer.last_seen_at
    state_offline = carbon_is_offline_state(printer.status_raw)
    if offline_after is None or state_offline or last_seen is None:
        return Cached(text, printer)
    deadline = shifted(last_seen, offline_after)
    if printer.online:
        return Cached(text, printer, until=deadline)
    return Cached(text, printer, after=deadline)


def map_print(raw: Any) -> Print:
    """One ``/prints`` record (``ModelPrint``).

    Status (case-insensitive): queued, printing, finished as such; any other word is
    UNKNOWN with the raw kept in ``status_raw`` (no failure spelling is known, carbon.md
    §8.2, and an unknown word must never become an outcome). ``message`` is the operator's
    ``feedback_message`` on a print that is not known to be successful (UNKNOWN included).

    Raises:
        MappingError: ``raw`` is not an object or has no usable id (see :func:`print_key`).
    """
    record = as_mapping(raw)
    if record is None:
        raise MappingError(REASON_NOT_OBJECT)
    started = parse_time(record.get("started_at"))
    finished = parse_time(record.get("finished_at"))
    key = print_key(record.get("print_id"), record.get("build_uuid"), started, record.get("uuid"))
    if key is None:
        raise MappingError(REASON_MISSING_PRINT_ID)
    status_value = record.get("status")
    status = carbon_print_status(status_value)
    origin = as_mapping(record.get("origin")) or EMPTY
    config = as_mapping(record.get("config")) or EMPTY
    feedback = as_mapping(record.get("feedback")) or EMPTY
    metrics = as_mapping(record.get("metrics")) or EMPTY
    elapsed = None
    if started is not None and finished is not None and finished >= started:
        elapsed = (finished - started).total_seconds()
    return Print(
        id=key,
        name=as_str(record.get("name")) or key,
        status=status,
        status_raw=raw_text(status_value),
        printer_serial=as_str(origin.get("printer_serial")),
        progress=1.0 if status is PrintStatus.FINISHED else None,
        started_at=started,
        finished_at=finished,
        elapsed_s=elapsed,
        remaining_s=_non_negative(as_float(record.get("remaining_sec"))),
        material=as_str(config.get("resin_name")),
        message=as_str(feedback.get("feedback_message")) if status in _UNSUCCESSFUL else None,
        user=as_str(record.get("printed_by")),
        # What the print used, not the job's estimate (carbon.md §5: PrintMetrics).
        volume_ml=_non_negative(as_float(metrics.get("consumed_resin_volume_ml"))),
        raw=frozen_mapping(record),
    )


def map_prints(records: Any) -> tuple[dict[str, Print], list[SkippedRecord]]:
    """``/prints`` records by :func:`print_key`, and the records that could not be used.

    Raises:
        BadResponse: ``records`` is not a list (or an object with a ``prints`` list).
    """
    items = records_of(records, source=SOURCE, what="prints", list_key="prints")
    prints: Keyed[Print] = Keyed("print")
    for value in items:
        try:
            run = map_print(value)
        except MappingError as err:
            prints.skip(None, str(err))
            continue
        except Exception as err:  # see map_printers
            prints.skip(None, unexpected(err))
            continue
        prints.add(run.id, run)
    return prints.items, prints.skipped


# --- records -------------------------------------------------------------------------------------


def _printer(
    record: Mapping[str, Any], serial: str, now: datetime, offline_after: timedelta | None
) -> Printer:
    status = _status(record)
    state = status.get("printer_state")
    printer_status = carbon_printer_status(state)
    last_seen = parse_time(record.get("updated_at"))
    online = _online(state, last_seen, now, offline_after)
    prints = as_mapping(record.get("prints")) or EMPTY
    code = as_str(record.get("hw_type")) or "UNKNOWN"
    return Printer(
        serial=serial,
        name=as_str(record.get("alias")) or as_str(record.get("name")) or serial,
        vendor=Vendor.CARBON,
        model=code,  # no model table: hw_type is already a model name (L1, M2)
        model_code=code,
        status=printer_status,
        status_raw=raw_text(state),
        online=online,
        last_seen_at=last_seen,
        firmware=as_str(status.get("software_version")),
        current_print=_current(prints.get("current"), serial, printer_status, now, record),
        alerts=_alerts(status.get("alerts")),
        queue_length=as_int(prints.get("queue_length")),
        raw=raw_record(record),
    )


def _status(record: Mapping[str, Any]) -> Mapping[str, Any]:
    value = record.get("status")
    status = as_mapping(value)
    if status is None:
        if value is not None:
            # A status that is not an object says nothing about the printer's state: skip the
            # record rather than announce a change to UNKNOWN that did not happen.
            raise MappingError("status: not an object")
        return EMPTY
    return status


def _online(
    state: Any, last_seen: datetime | None, now: datetime, offline_after: timedelta | None
) -> bool:
    """Not in an offline-like state and, only when ``offline_after`` is set, recently seen."""
    if carbon_is_offline_state(state):
        return False
    return offline_after is None or (last_seen is not None and now - last_seen <= offline_after)


def _current(
    value: Any,
    serial: str,
    printer_status: PrinterStatus,
    now: datetime,
    printer: Mapping[str, Any] = EMPTY,
) -> Print | None:
    """The print on the printer now, from a ``PrintRef``.

    A PrintRef has no status. The print is PRINTING, or PAUSED while the printer says
    PAUSED; ``status_raw`` is ``""`` because the vendor gave no word for it.
    """
    ref = as_mapping(value)
    if ref is None:
        return None
    started = parse_time(ref.get("started_at"))
    key = print_key(ref.get("print_id"), ref.get("build_uuid"), started)
    if key is None:
        return None
    remaining = _non_negative(as_float(ref.get("remaining_sec")))
    elapsed = max(0.0, (now - started).total_seconds()) if started is not None else None
    progress = None
    if elapsed is not None and remaining is not None and elapsed + remaining > 0:
        progress = clamp01(elapsed / (elapsed + remaining))
    paused = printer_status is PrinterStatus.PAUSED
    return Print(
        id=key,
        name=as_str(ref.get("name")) or key,
        status=PrintStatus.PAUSED if paused else PrintStatus.PRINTING,
        status_raw="",
        printer_serial=serial,
        progress=progress,
        started_at=started,
        finished_at=parse_time(ref.get("finished_at")),
        elapsed_s=elapsed,
        remaining_s=remaining,
        raw=raw_record(printer, "prints", "current") if printer else frozen_mapping(ref),
    )


def _alerts(value: Any) -> tuple[str, ...]:
    """``status.alerts`` as a sorted set of strings (a lone string counts as one alert)."""
    items = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    return tuple(sorted({text for item in items if (text := as_str(item)) is not None}))


def _non_negative(value: float | None) -> float | None:
    return None if value is None else max(0.0, value)
