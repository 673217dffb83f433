"""Formlabs Dashboard Developer API JSON -> the normalized model (pure, no I/O, no logging).

Field names and enums are from formlabs.md (spec 0.8.1). The vendor calls the API a beta and
its strict generated client rejects what the server really sends (``current_print_run:
null``), so everything here reads defensively: unknown strings are kept raw, nulls and type
drift read as "not said", and only a record without an object shape or its key is skipped.
A wrong *top-level* shape raises :class:`~printfleet.errors.BadResponse`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final

# Alerts: short, stable strings (rules and `printer.alert` events match on them); named in
# core.alerts and re-exported here for the adapters' tests.
from printfleet.core.alerts import (
    ALERT_BUILD_PLATFORM_DIRTY,
    ALERT_BUILD_PLATFORM_MISSING,
    ALERT_CAMERA_DISCONNECTED,
    ALERT_HARVEST_ABORTED,
    ALERT_HARVEST_FAILED,
    ALERT_NEEDS_CONFIRMATION,
    ALERT_NOT_READY,
    ALERT_PARTS_ON_PLATFORM,
    ALERT_TANK_MISSING,
    ALERT_TANK_MIXER_MISSING,
    ALERT_WAITING_FOR_RESOLUTION,
)
from printfleet.core.feed import FeedKind, FeedRecord
from printfleet.core.model import (
    EMPTY,
    Material,
    Print,
    Printer,
    PrintStatus,
    RawJson,
    SkippedRecord,
    Tank,
    Vendor,
    frozen_mapping,
)
from printfleet.core.pictures import check_picture_url, picture_url
from printfleet.core.prints import shifted
from printfleet.sources.base import Inventory
from printfleet.sources.mapping import (
    REASON_NOT_OBJECT,
    Cached,
    Heartbeat,
    Keyed,
    MappingError,
    Record,
    RecordCache,
    as_bool,
    as_float,
    as_int,
    as_mapping,
    as_str,
    clamp01,
    formlabs_is_resin_printer,
    formlabs_print_status,
    formlabs_printer_phase,
    formlabs_printer_status,
    model_name,
    parse_time,
    raw_record,
    raw_text,
    records_of,
    unexpected,
)

SOURCE: Final = "formlabs"  # names the vendor in BadResponse where no account name is passed

REASON_MISSING_SERIAL: Final = "missing serial"
REASON_MISSING_GUID: Final = "missing guid"

#: Material codes Formlabs documents with their names (formlabs.md §6.3/§6.6 and
#: formlabs-samples.json, where each code appears beside its ``display_name``/``material_name``).
#: Only these: a name is never guessed from a code. Other codes get their names from the
#: vendor's own fields, in the record or elsewhere in the same fetch (:func:`name_materials`).
FORMLABS_MATERIAL_NAMES: Final[Mapping[str, str]] = {
    "FLGPBK05": "Black V5",
    "FLGPCL05": "Clear V5",
    "FLGPGR05": "Grey V5",
}

#: Slot of a cartridge whose printer has one (``cartridge_slot`` absent or empty).
MAIN_SLOT: Final = "main"


# (printer_status key, vendor value, alert) for the attention states of formlabs.md §7.
_ATTENTION: Final = (
    ("ready_to_print", "READY_TO_PRINT_NEEDS_CONFIRMATION", ALERT_NEEDS_CONFIRMATION),
    ("build_platform_contents", "BUILD_PLATFORM_CONTENTS_MISSING", ALERT_BUILD_PLATFORM_MISSING),
    (
        "build_platform_contents",
        "BUILD_PLATFORM_CONTENTS_CONFIRMED_DIRTY",
        ALERT_BUILD_PLATFORM_DIRTY,
    ),
    ("tank_mixer_state", "TANK_MIXER_STATE_MISSING", ALERT_TANK_MIXER_MISSING),
    ("camera_status", "DISCONNECTED", ALERT_CAMERA_DISCONNECTED),
    # Raised at once, as the printer says it: the parts of the last job are still on the
    # platform. Whether that is news after 5 minutes or 2 hours is the rule's `for`.
    (
        "build_platform_contents",
        "BUILD_PLATFORM_CONTENTS_POST_PRINT",
        ALERT_PARTS_ON_PLATFORM,
    ),
)

#: ``ready_to_print`` while the printer cannot take a job. Printers send it all through a
#: print too (formlabs-samples.json: a PRINTING Form 4 says NOT_READY), so it is an alert
#: only while no run is active: otherwise every print would raise and clear it.
_NOT_READY: Final = "READY_TO_PRINT_NOT_READY"

#: Form Auto / Form Cell ``harvest_status`` of the current run that need a person.
_HARVEST_ALERTS: Final[Mapping[str, str]] = {
    "FORM_CELL_HARVEST_FAILED": ALERT_HARVEST_FAILED,
    "FORM_CELL_HARVEST_ABORTED": ALERT_HARVEST_ABORTED,
}

#: ``print_run_success.print_run_success`` words that are a person's verdict. ``UNKNOWN`` is
#: the vendor's "not rated"; any other word is not ours to guess (kept in ``verdict_raw``).
VERDICTS: Final = frozenset({"SUCCESS", "FAILURE"})
_UNRATED: Final = "UNKNOWN"


class MappedPrinter:
    """One ``/printers/`` record as mapped: the printer and the run its
    ``previous_print_run`` describes, before and after material naming (which depends on the
    whole fetch, so it is redone when the fetch's names differ from the ones it used)."""

    __slots__ = ("named", "named_run", "names", "printer", "run")

    def __init__(self, printer: Printer, run: Print | None) -> None:
        self.printer = printer
        self.run = run
        self.named = printer
        self.named_run = run
        self.names: Mapping[str, str] | None = None  # the names ``named`` was made with


#: One cache per Formlabs source (:class:`RecordCache` of :class:`MappedPrinter`).
PrinterCache = RecordCache[MappedPrinter]

#: What an idle printer's record changes in at each ping (every 30 s in the simulator):
#: ``last_pinged_at`` and ``current_temperature``, which nothing is mapped from.
HEARTBEAT: Final = Heartbeat(("printer_status",), ("last_pinged_at", "current_temperature"))


def map_printers(
    body: Any,
    *,
    source: str,
    now: datetime,
    offline_after: timedelta,
    cache: PrinterCache | None = None,
) -> tuple[dict[str, Printer], dict[str, Print], list[SkippedRecord]]:
    """Printers by serial, the runs their ``previous_print_run`` describe, and skipped records.

    Args:
        body: the ``/printers/`` records: a JSON array, or a 0.1.0-style page object whose
            ``results`` holds them.
        source: the account name, for :class:`BadResponse`.
        now: the adapter's best estimate of the server's clock.
        offline_after: a printer is online when ``last_pinged_at`` is at most this old (one
            in the future counts as online; a null one never does).
        cache: the source's mappings of its last fetch: a record whose text is unchanged
            (and whose ``online`` still holds at ``now``) is not mapped again, its printer is
            the very object of the last fetch (``cache.reused`` counts them).

    Runs come only from a ``previous_print_run`` that has a guid and a status (it is often
    ``{}``). A duplicate serial keeps the last record and skips the earlier one.

    Raises:
        BadResponse: ``body`` is not a list of records.
    """
    records = records_of(body, source=source, what="printers", list_key="results")
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    printers: Keyed[MappedPrinter] = Keyed("printer")
    runs: dict[str, MappedPrinter] = {}  # by run id: the record whose run it is

    def full(record: Mapping[str, Any], serial: str) -> MappedPrinter:
        printer = _printer(record, serial, now, offline_after)
        return MappedPrinter(printer, _previous_run(record.get("previous_print_run"), serial))

    def seen(mapped: MappedPrinter) -> None:
        if mapped.run is not None:  # only once the printer itself mapped
            runs[mapped.run.id] = mapped

    def build(record: Mapping[str, Any], serial: str) -> MappedPrinter:
        mapped = full(record, serial)
        seen(mapped)
        return mapped

    if cache is None:
        printers.collect(records, key="serial", missing=REASON_MISSING_SERIAL, build=build)
    else:
        cache.collect(
            printers,
            records,
            key="serial",
            missing=REASON_MISSING_SERIAL,
            now=now,
            beat=HEARTBEAT,
            full=full,
            patch=lambda known, record: _beat(known, record, now, offline_after),
            entry=lambda record, mapped: _cached(record, mapped, offline_after),
            seen=seen,
        )
    names = material_names(m.printer for m in printers.items.values())
    for mapped in printers.items.values():
        _name(mapped, names)
    for mapped in runs.values():
        _name(mapped, names)
    result = {serial: m.named for serial, m in printers.items.items()}
    named_runs: dict[str, Print] = {}
    for key, mapped in runs.items():
        run = mapped.named_run
        if run is not None and run.id == key:
            named_runs[key] = run
    return result, named_runs, printers.skipped


def _name(mapped: MappedPrinter, names: Mapping[str, str]) -> None:
    """Name ``mapped``'s materials from this fetch's ``names``, unless done with equal ones."""
    if mapped.names is names or mapped.names == names:
        mapped.names = names
        return
    mapped.names = names
    mapped.named = _named_printer(mapped.printer, names)
    run = mapped.run
    mapped.named_run = name_material(run, names) if run is not None else None


def _beat(
    known: MappedPrinter, record: Record, now: datetime, offline_after: timedelta
) -> MappedPrinter:
    """``known`` brought up to ``record``, which differs from its record only in
    :data:`HEARTBEAT`'s fields: the heartbeat, ``online`` at ``now`` and the raw text."""
    last_seen = parse_time(_status_block(record, "printer_status").get("last_pinged_at"))
    online = _online(last_seen, now, offline_after)
    raw = raw_record(record)

    def beat(printer: Printer) -> Printer:
        run = printer.current_print
        if run is not None and isinstance(run.raw, RawJson):
            run = replace(run, raw=raw_record(record, "printer_status", "current_print_run"))
        return replace(printer, last_seen_at=last_seen, online=online, raw=raw, current_print=run)

    mapped = MappedPrinter(beat(known.printer), known.run)
    if known.names is not None:  # named with this fetch's names or not, _name decides
        mapped.names = known.names
        mapped.named = mapped.printer if known.named is known.printer else beat(known.named)
        mapped.named_run = known.named_run
    return mapped


def _online(last_seen: datetime | None, now: datetime, offline_after: timedelta) -> bool:
    return last_seen is not None and now - last_seen <= offline_after


def _cached(
    record: Mapping[str, Any], mapped: MappedPrinter, offline_after: timedelta
) -> Cached[MappedPrinter]:
    """The cache entry of a record just mapped: ``online`` is the one fact that changes with
    the time alone, at ``last_pinged_at + offline_after``."""
    text = getattr(record, "text", "")
    last_seen = mapped.printer.last_seen_at
    if last_seen is None:
        return Cached(text, mapped)
    deadline = shifted(last_seen, offline_after)
    if mapped.printer.online:
        return Cached(text, mapped, until=deadline)
    return Cached(text, mapped, after=deadline)


def material_names(printers: Iterable[Printer]) -> dict[str, str]:
    """Code -> name as the vendor said it in this fetch: cartridges' ``display_name`` and runs'
    ``material_name`` (a ``previous_print_run`` carries only the code), over the documented
    :data:`FORMLABS_MATERIAL_NAMES`."""
    names = dict(FORMLABS_MATERIAL_NAMES)
    for printer in printers:
        for material in printer.materials:
            if material.material and material.name:
                names[material.material] = material.name
        run = printer.current_print
        if run is not None and run.material_code and run.material != run.material_code:
            names[run.material_code] = run.material or run.material_code
    return names


def name_material(run: Print, names: Mapping[str, str]) -> Print:
    """``run`` with its material named from ``names`` when it only had the code."""
    code = run.material_code
    if code is None or run.material != code or code not in names:
        return run
    return replace(run, material=names[code])


def unnamed_materials(runs: Iterable[Print]) -> set[str]:
    """The material codes among ``runs`` that no vendor field or documented table named."""
    return {r.material_code for r in runs if r.material_code and r.material == r.material_code}


def _named_printer(printer: Printer, names: Mapping[str, str]) -> Printer:
    run = printer.current_print
    if run is None:
        return printer
    named = name_material(run, names)
    return printer if named is run else replace(printer, current_print=named)


def map_print(raw: Any) -> Print:
    """One print run (``PrintRunWithFleetControlData`` or ``MyPrintRunReadOnly``).

    Raises:
        MappingError: ``raw`` is not an object or has no ``guid``.
    """
    return _print(raw, None)


def map_prints(records: Any) -> tuple[dict[str, Print], list[SkippedRecord]]:
    """``/prints/`` results by guid, and the records that could not be used.

    Raises:
        BadResponse: ``records`` is not a list (or a page object with ``results``).
    """
    items = records_of(records, source=SOURCE, what="prints", list_key="results")
    prints: Keyed[Print] = Keyed("print")
    for value in items:
        try:
            run = _print(value, None)
        except MappingError as err:
            prints.skip(_key_of(value, "guid"), str(err))
            continue
        except Exception as err:  # see map_printers
            prints.skip(_key_of(value, "guid"), unexpected(err))
            continue
        prints.add(run.id, run)
    return prints.items, prints.skipped


def map_events(records: Any) -> tuple[dict[str, Print], list[SkippedRecord], datetime | None]:
    """Runs from ``/events/`` results, skipped events, and the newest ``created_at`` seen.

    Each event's nested ``print_run`` is the run's current state; when several events name
    one guid, the run from the event with the latest ``created_at`` wins (on a tie or an
    unreadable time, the later event in the list). An event with a null or empty
    ``print_run`` (resin, registration, group events) is not about a print and yields no run;
    one whose ``print_run`` is present but unusable is skipped. Events are not required to
    have an ``id`` here: the mapper yields runs, keyed by guid. The newest time covers every
    event object, including skipped ones, so the ``date__gt`` watermark still advances.

    Raises:
        BadResponse: ``records`` is not a list (or a page object with ``results``).
    """
    items = records_of(records, source=SOURCE, what="events", list_key="results")
    best: dict[str, tuple[datetime, Print]] = {}
    skipped: list[SkippedRecord] = []
    newest: datetime | None = None
    for value in items:
        event = as_mapping(value)
        if event is None:
            skipped.append(SkippedRecord("event", None, REASON_NOT_OBJECT))
            continue
        event_id = as_str(event.get("id"))
        try:
            created = parse_time(event.get("created_at"))
            if created is not None and (newest is None or created > newest):
                newest = created
            run_value = event.get("print_run")
            if run_value is None or run_value == {}:
                continue
            run = _print(run_value, as_str(event.get("printer")))
        except MappingError as err:
            skipped.append(SkippedRecord("event", event_id, f"print_run: {err}"))
            continue
        except Exception as err:  # see map_printers
            skipped.append(SkippedRecord("event", event_id, unexpected(err)))
            continue
        order = created or _EPOCH
        kept = best.get(run.id)
        if kept is None or order >= kept[0]:
            best[run.id] = (order, run)
    return {guid: run for guid, (_, run) in best.items()}, skipped, newest


def map_inventory(tanks: Any, cartridges: Any) -> Inventory:
    """Every tank and cartridge of the account (``/tanks/`` and ``/cartridges/`` results).

    ``location`` maps each item's serial to the serial of the printer it is in (``""`` when
    in none). Inventory cartridges have no slot (``slot == ""``): the printer records say
    which slot holds what.

    Raises:
        BadResponse: either argument is not a list (or a page object with ``results``).
    """
    tank_records = records_of(tanks, source=SOURCE, what="tanks", list_key="results")
    cartridge_records = records_of(cartridges, source=SOURCE, what="cartridges", list_key="results")
    location: dict[str, str] = {}
    tank_items: Keyed[Tank] = Keyed("tank")
    for value in tank_records:
        record = as_mapping(value)
        serial = as_str(record.get("serial")) if record is not None else None
        if record is None or serial is None:
            tank_items.skip(None, REASON_NOT_OBJECT if record is None else REASON_MISSING_SERIAL)
            continue
        tank_items.add(serial, _tank_from(record))
        location[serial] = as_str(record.get("inside_printer")) or ""
    cartridge_items: Keyed[Material] = Keyed("cartridge")
    for value in cartridge_records:
        record = as_mapping(value)
        serial = as_str(record.get("serial")) if record is not None else None
        if record is None or serial is None:
            cartridge_items.skip(
                None, REASON_NOT_OBJECT if record is None else REASON_MISSING_SERIAL
            )
            continue
        cartridge_items.add(serial, _cartridge(record, ""))
        location[serial] = as_str(record.get("inside_printer")) or ""
    return Inventory(
        tanks=tuple(tank_items.items.values()),
        cartridges=tuple(cartridge_items.items.values()),
        location=frozen_mapping(location),
        skipped=(*tank_items.skipped, *cartridge_items.skipped),
    )


# --- records -------------------------------------------------------------------------------------

_EPOCH: Final = datetime.min.replace(tzinfo=UTC)


def _printer(
    record: Mapping[str, Any], serial: str, now: datetime, offline_after: timedelta
) -> Printer:
    status = _status_block(record, "printer_status")
    status_value = status.get("status")
    last_seen = parse_time(status.get("last_pinged_at"))
    code = as_str(record.get("machine_type_id")) or "UNKNOWN"
    run_value = status.get("current_print_run")
    current = _current_run(run_value, serial, record)
    tank = _tank(record.get("tank_status"))
    alerts = {alert for key, value, alert in _ATTENTION if status.get(key) == value}
    run = as_mapping(run_value)
    if run is not None and run.get("status") == "WAITING_FOR_RESOLUTION":
        alerts.add(ALERT_WAITING_FOR_RESOLUTION)
    if status.get("ready_to_print") == _NOT_READY and (
        current is None or not current.status.is_active
    ):
        alerts.add(ALERT_NOT_READY)
    harvest = _HARVEST_ALERTS.get(current.harvest_status or "") if current is not None else None
    if harvest is not None:
        alerts.add(harvest)
    if tank is None and formlabs_is_resin_printer(code):
        alerts.add(ALERT_TANK_MISSING)
    # Only a run we track (it has a guid) may set the printer's status: one we cannot name
    # would make a printer PRINTING with no print to show for it.
    run_status = run.get("status") if run is not None and current is not None else None
    printer_status = formlabs_printer_status(status_value, run_status)
    return Printer(
        serial=serial,
        name=as_str(record.get("alias")) or serial,
        vendor=Vendor.FORMLABS,
        model=model_name(code),
        model_code=code,
        status=printer_status,
        status_raw=raw_text(status_value),
        phase=formlabs_printer_phase(status_value, run_status, printer_status),
        online=_online(last_seen, now, offline_after),
        last_seen_at=last_seen,
        group=_group_name(record.get("group")),
        firmware=as_str(record.get("firmware_version")),
        location=as_str(record.get("location")),
        current_print=current,
        materials=_materials(record.get("cartridge_status")),
        tank=tank,
        alerts=tuple(sorted(alerts)),
        ready_to_print=as_str(status.get("ready_to_print")),
        build_platform_contents=as_str(status.get("build_platform_contents")),
        raw=raw_record(record),
    )


def _status_block(record: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """The record's status object; absent or null reads as "not said".

    Raises:
        MappingError: the status is there but not an object. Such a record says nothing about
            the printer's state or heartbeat; reading it as "offline, status unknown" would
            announce changes that did not happen, so the record is skipped instead.
    """
    value = record.get(key)
    if value is None:
        return EMPTY
    status = as_mapping(value)
    if status is None:
        raise MappingError(f"{key}: not an object")
    return status


def _current_run(value: Any, serial: str, printer: Mapping[str, Any]) -> Print | None:
    """The run on the printer now; ``None`` when there is none or it has no guid."""
    if as_mapping(value) is None:
        return None
    try:
        raw = raw_record(printer, "printer_status", "current_print_run")
        return _print(value, serial, raw)
    except MappingError:  # a run we cannot track; the printer record still keeps it in raw
        return None


def _previous_run(value: Any, serial: str) -> Print | None:
    run = as_mapping(value)
    if run is None or as_str(run.get("status")) is None:
        return None  # usually {} (formlabs.md §6.1: contents unspecified)
    try:
        return _print(run, serial)
    except MappingError:
        return None


def _print(value: Any, printer_serial: str | None, raw: Mapping[str, Any] | None = None) -> Print:
    """``value`` as a print run; ``raw`` is what it keeps as ``raw`` (default: ``value``)."""
    record = as_mapping(value)
    if record is None:
        raise MappingError(REASON_NOT_OBJECT)
    guid = as_str(record.get("guid"))
    if guid is None:
        raise MappingError(REASON_MISSING_GUID)
    status_value = record.get("status")
    status = formlabs_print_status(status_value)
    layer = as_int(record.get("currently_printing_layer"))
    layers_total = as_int(record.get("layer_count"))
    elapsed_ms = as_float(record.get("elapsed_duration_ms"))
    estimated_ms = as_float(record.get("estimated_duration_ms"))
    verdict, verdict_raw = _verdict(record.get("print_run_success"))
    rating = as_mapping(record.get("print_run_success"))
    verdict_at = parse_time(rating.get("created_at")) if verdict and rating is not None else None
    note = as_mapping(record.get("note"))
    note_text = as_str(note.get("note")) if note is not None else None
    note_by = _user(note.get("author")) if note is not None else None
    return Print(
        id=guid,
        name=as_str(record.get("name")) or guid,
        status=status,
        status_raw=raw_text(status_value),
        printer_serial=as_str(record.get("printer")) or printer_serial,
        progress=_progress(status, layer, layers_total, elapsed_ms, estimated_ms),
        layer=layer,
        layers_total=layers_total,
        created_at=parse_time(record.get("created_at")),
        started_at=parse_time(record.get("print_started_at")),
        finished_at=parse_time(record.get("print_finished_at")),
        elapsed_s=_seconds(elapsed_ms),
        remaining_s=_seconds(as_float(record.get("estimated_time_remaining_ms"))),
        material=_material_name(record),
        material_code=as_str(record.get("material")),
        message=as_str(record.get("message")),
        user=_user(record.get("user")),
        thumbnail_url=picture_url(_thumbnail_value(record)),
        photo_url=picture_url(record.get("post_print_photo_url")),
        volume_ml=_non_negative(as_float(record.get("volume_ml"))),
        verdict=verdict,
        verdict_note=note_text,
        # The API names no rater (PrintRunSuccess has no user): the note's author is the one
        # person it names about the outcome, so it stands for "by" when there is a note.
        verdict_by=note_by,
        verdict_raw=verdict_raw,
        verdict_at=verdict_at,
        harvest_status=as_str(record.get("harvest_status")),
        raw=frozen_mapping(record) if raw is None else raw,
    )


def _thumbnail_value(record: Mapping[str, Any]) -> Any:
    thumbnail = as_mapping(record.get("print_thumbnail"))
    return thumbnail.get("thumbnail") if thumbnail is not None else None


def rejected_pictures(runs: Iterable[Print]) -> dict[tuple[str, str], int]:
    """How many picture links of ``runs`` were dropped, by (vendor field, reason).

    The mapper stays pure, so its source reports these (once per field and reason); the
    links themselves are never part of the report (they carry a signature).
    """
    counts: dict[tuple[str, str], int] = {}
    for run in runs:
        # A link kept was accepted: only a missing one may have been dropped, and only then is
        # the vendor record read (a printer's is text, decoded on first read).
        if run.thumbnail_url is None:
            reason = check_picture_url(_thumbnail_value(run.raw))[1]
            if reason is not None:
                key = ("print_thumbnail.thumbnail", reason)
                counts[key] = counts.get(key, 0) + 1
        if run.photo_url is None:
            reason = check_picture_url(run.raw.get("post_print_photo_url"))[1]
            if reason is not None:
                key = ("post_print_photo_url", reason)
                counts[key] = counts.get(key, 0) + 1
    return counts


def _verdict(value: Any) -> tuple[str | None, str | None]:
    """``(verdict, unknown word)`` from a ``PrintRunSuccess``.

    Null, absent, not an object, no word, or ``UNKNOWN`` read as unrated ``(None, None)``.
    A word other than SUCCESS/FAILURE is never a verdict: ``(None, word)``, for the poller
    to log and count (``printfleet_unknown_status_total{field="print_run_success"}``).
    """
    rating = as_mapping(value)
    if rating is None:
        return None, None
    word = rating.get("print_run_success")
    if not isinstance(word, str):
        return None, None if word is None else raw_text(word) or None
    word = word.strip()
    if word in VERDICTS:
        return word, None
    if word == _UNRATED or not word:
        return None, None
    return None, word


def _non_negative(value: float | None) -> float | None:
    return None if value is None else max(0.0, value)


def _material_name(record: Mapping[str, Any]) -> str | None:
    """The run's material as a person calls it: ``material_name``, else the documented name of
    its ``material`` code, else the code itself (kept, never guessed)."""
    code = as_str(record.get("material"))
    return (
        as_str(record.get("material_name"))
        or (FORMLABS_MATERIAL_NAMES.get(code) if code else None)
        or code
    )


def _progress(
    status: PrintStatus,
    layer: int | None,
    layers_total: int | None,
    elapsed_ms: float | None,
    estimated_ms: float | None,
) -> float | None:
    """Layers done over layers total, else elapsed over estimated time (formlabs.md §7)."""
    if status is PrintStatus.FINISHED:
        return 1.0
    if layer is not None and layers_total is not None and layers_total > 0:
        return clamp01(layer / layers_total)
    if elapsed_ms is not None and estimated_ms is not None and estimated_ms > 0:
        return clamp01(elapsed_ms / estimated_ms)
    return None


def _seconds(milliseconds: float | None) -> float | None:
    return None if milliseconds is None else max(0.0, milliseconds / 1000)


def _user(value: Any) -> str | None:
    user = as_mapping(value)
    return as_str(user.get("username")) if user is not None else as_str(value)


def _group_name(value: Any) -> str | None:
    group = as_mapping(value)
    return as_str(group.get("name")) if group is not None else None


def _key_of(value: Any, key: str) -> str | None:
    record = as_mapping(value)
    return as_str(record.get(key)) if record is not None else None


# --- consumables ---------------------------------------------------------------------------------


def _materials(value: Any) -> tuple[Material, ...]:
    """Cartridges from ``cartridge_status``: an object, a list of them, null, or (reported by
    a third party) a list of serial strings. Slots are unique per printer: an absent or
    empty ``cartridge_slot`` is ``"main"``, and a slot seen twice gets its list position
    appended (``"main-2"``) so per-slot metrics never collide."""
    entries = value if isinstance(value, list) else [value]
    materials: list[Material] = []
    used: set[str] = set()
    for position, entry in enumerate(entries, start=1):
        material = _material_entry(entry)
        if material is None:
            continue
        slot = material.slot
        suffix = position
        while slot in used:
            slot = f"{material.slot}-{suffix}"
            suffix += 1
        used.add(slot)
        materials.append(material if slot == material.slot else replace(material, slot=slot))
    return tuple(materials)


def _material_entry(entry: Any) -> Material | None:
    if isinstance(entry, str):  # only text is taken as a bare serial, never a stray number
        return Material(slot=MAIN_SLOT, serial=entry) if entry.strip() else None
    status = as_mapping(entry)
    if status is None:
        return None
    slot = as_str(status.get("cartridge_slot")) or MAIN_SLOT
    if "cartridge" not in status:
        # A bare CartridgeReadOnly without the PrinterCartridgeStatus wrapper.
        return _cartridge(status, slot) if "serial" in status else None
    inner = status.get("cartridge")
    cartridge = as_mapping(inner)
    if cartridge is not None:
        return _cartridge(cartridge, slot)
    serial = as_str(inner)
    return Material(slot=slot, serial=serial) if serial is not None else None


def _cartridge(cartridge: Mapping[str, Any], slot: str) -> Material:
    capacity = as_float(cartridge.get("initial_volume_ml"))
    dispensed = as_float(cartridge.get("volume_dispensed_ml"))
    remaining = None
    if capacity is not None and dispensed is not None:
        # Rounded to 1 µl so float noise (1000.0 - 912.6) does not reach payloads.
        remaining = round(max(0.0, capacity - dispensed), 3)
    return Material(
        slot=slot,
        serial=as_str(cartridge.get("serial")),
        material=as_str(cartridge.get("material")),
        name=as_str(cartridge.get("display_name")),
        capacity_ml=capacity,
        remaining_ml=remaining,
        is_empty=as_bool(cartridge.get("is_empty")) or False,
    )


def _tank(tank_status: Any) -> Tank | None:
    """The installed tank from ``tank_status`` (``{tank, last_modified}``); ``None`` when
    absent. A bare serial string in place of the tank object is accepted too."""
    status = as_mapping(tank_status)
    if status is None:
        return None
    inner = status.get("tank")
    tank = as_mapping(inner)
    if tank is not None:
        return _tank_from(tank)
    serial = as_str(inner)
    return Tank(serial=serial) if serial is not None else None


def _tank_from(tank: Mapping[str, Any]) -> Tank:
    layers = as_int(tank.get("layers_printed"))
    if layers is None:
        layers = as_int(tank.get("layer_count"))
    return Tank(
        serial=as_str(tank.get("serial")),
        material=as_str(tank.get("material")),
        tank_type=as_str(tank.get("tank_type")),
        layers_printed=layers,
        first_filled_at=parse_time(tank.get("first_fill_date")),
    )


# -- the event feed as a witness (formlabs.md §6.7, §6.10, §7) -----------------------------

#: Feed types printfleet reports itself (the same events the differ makes).
FEED_KINDS: Final[Mapping[str, FeedKind]] = {
    "RESIN_LOW": FeedKind.MATERIAL_LOW,
    "PRINT_PAUSED": FeedKind.PAUSED,
    "PRINT_RESUMED": FeedKind.RESUMED,
    # Told by the nested print run (print.*), the printer list (printer.added/removed) or
    # the run's WAITING_FOR_RESOLUTION status (printer.alert): never twice.
    "PRINT_START": FeedKind.COVERED,
    "PRINT_FINISHED": FeedKind.COVERED,
    "PRINT_ABORTED": FeedKind.COVERED,
    "PRINT_ERROR": FeedKind.COVERED,
    "MANY_PRINT_ERRORS": FeedKind.COVERED,
    "PRINT_RESOLUTION_REQUEST": FeedKind.COVERED,
    "PRINT_RESOLUTION": FeedKind.COVERED,
    "PRINTER_REGISTERED": FeedKind.COVERED,
    "PRINTER_DEREGISTERED": FeedKind.COVERED,
}
#: Documented types with no printfleet event of their own: passed on as ``vendor.event``
#: without the "unmapped type" warning (formlabs.md §6.10 lists them; the list is open).
FEED_DOCUMENTED_OTHER: Final = frozenset(
    {
        "PRINTING_REPORT",
        "GROUP_INVITATION",
        "AUTO_ADD_USER_TO_GROUP",
        "USER_REMOVED_FROM_GROUP",
        "YEAR_IN_REVIEW_EMAIL",
        "REMOTE_JOB_EXPIRED",
        "PRINT_NOTIFICATION",
        "FUSE_EMAIL_VOTING",
        "PASSWORD_RESET",
    }
)
#: Vendor text caps (the feed is outside input): longer values are cut, never refused.
FEED_TYPE_CHARS: Final = 64
FEED_LABEL_CHARS: Final = 120
FEED_MESSAGE_CHARS: Final = 500
FEED_ID_CHARS: Final = 64


def map_feed(records: Any) -> list[FeedRecord]:
    """Feed records from ``/events/`` results (the same list :func:`map_events` reads).

    A record without an ``id``, a ``type`` or a readable ``created_at`` cannot be deduplicated
    or placed in time and is left out (:func:`map_events` already reports unreadable ones).
    Every type the adapter does not know is kept raw (``known=False``) and becomes
    ``vendor.event``: never mapped to an outcome.

    Raises:
        BadResponse: ``records`` is not a list (or a page object with ``results``).
    """
    items = records_of(records, source=SOURCE, what="events", list_key="results")
    found: list[FeedRecord] = []
    for value in items:
        event = as_mapping(value)
        if event is None:
            continue
        ident = as_str(event.get("id"))
        kind_raw = event.get("type")
        try:
            created = parse_time(event.get("created_at"))
        except Exception:  # a time nobody can read: skipped like a keyless record
            created = None
        if ident is None or not isinstance(kind_raw, str) or not kind_raw or created is None:
            continue
        code = kind_raw[:FEED_TYPE_CHARS]
        kind = FEED_KINDS.get(code)
        known = kind is not None or code in FEED_DOCUMENTED_OTHER
        run = as_mapping(event.get("print_run"))
        found.append(
            FeedRecord(
                id=ident[:FEED_ID_CHARS],
                type=code,
                kind=kind or FeedKind.OTHER,
                created_at=created,
                type_label=_cut(event.get("type_label"), FEED_LABEL_CHARS),
                message=_cut(event.get("message"), FEED_MESSAGE_CHARS),
                printer_serial=as_str(event.get("printer")),
                print_id=as_str(run.get("guid")) if run is not None else None,
                cartridge=as_str(event.get("cartridge")),
                tank=as_str(event.get("tank")),
                known=known,
            )
        )
    return found


def _cut(value: Any, limit: int) -> str:
    return value[:limit] if isinstance(value, str) else ""
