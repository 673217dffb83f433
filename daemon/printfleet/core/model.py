"""The normalized fleet: what every vendor adapter produces and everything else reads.

All values are frozen and slotted so they can be shared between tasks and threads.
Vendor JSON never leaves the adapters except as the read-only ``raw`` mapping kept on
printers and prints (for rules that need a vendor field with no normalized home). ``raw``
lives as long as the events detected in its fetch: the fleet state kept between polls is
normalized only (:func:`without_raw`), since at 10,000 printers the decoded vendor JSON of
one fetch is ~100 MB. A printer's raw kept as :class:`RawJson` text is the exception: the
source keeps that very text to tell an unchanged record (:attr:`Snapshot.reused`), so it costs
nothing more, and keeping it lets an unchanged record stay the very same ``Printer`` object
from poll to poll.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any, overload

EMPTY: Mapping[str, Any] = MappingProxyType({})


def empty_mapping() -> Mapping[str, Any]:
    return EMPTY


def frozen_mapping(data: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """A read-only view of ``data`` (a shallow copy, so later mutation of the input is not seen)."""
    if not data:
        return EMPTY
    return MappingProxyType(dict(data))


class RawJson(Mapping[str, Any]):
    """A vendor record kept as the JSON text it arrived in, decoded when first read.

    At 10,000 printers the text is a fifth of the decoded objects' size, and most records
    are never read: only rules that use ``printer.raw.*`` and event envelopes decode one.
    ``path`` selects a nested object (a printer record's current print run).
    """

    __slots__ = ("_decoded", "_path", "_text")

    def __init__(self, text: str, path: tuple[str, ...] = ()) -> None:
        self._text = text
        self._path = path
        self._decoded: dict[str, Any] | None = None

    def _data(self) -> dict[str, Any]:
        # Read once into a local: another thread may :meth:`release` meanwhile.
        decoded = self._decoded
        if decoded is None:
            value: Any = json.loads(self._text)
            for key in self._path:
                value = value.get(key) if isinstance(value, dict) else None
            decoded = value if isinstance(value, dict) else {}
            self._decoded = decoded
        return decoded

    def release(self) -> None:
        """Forget the decoded objects (the text stays; the next read decodes it again)."""
        self._decoded = None

    def __getitem__(self, key: str) -> Any:
        return self._data()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data())

    def __len__(self) -> int:
        return len(self._data())

    def __repr__(self) -> str:
        return f"RawJson({len(self._text)} characters)"

    def as_dict(self) -> dict[str, Any]:
        return dict(self._data())


def plain(raw: Mapping[str, Any]) -> dict[str, Any]:
    """``raw`` as a plain dict (one decode for a :class:`RawJson`, not one per key)."""
    return raw.as_dict() if isinstance(raw, RawJson) else dict(raw)


class Vendor(StrEnum):
    FORMLABS = "formlabs"
    CARBON = "carbon"


class PrinterStatus(StrEnum):
    """Normalized printer state. The vendor's own string is kept in ``Printer.status_raw``."""

    IDLE = "IDLE"
    PRINTING = "PRINTING"
    PAUSED = "PAUSED"
    ERROR = "ERROR"
    OFFLINE = "OFFLINE"
    MAINTENANCE = "MAINTENANCE"
    UNKNOWN = "UNKNOWN"  # a vendor string we do not recognise (the raw value is kept)


class PrintStatus(StrEnum):
    """Normalized print-run state. The vendor's own string is kept in ``Print.status_raw``."""

    QUEUED = "QUEUED"
    PREPARING = "PREPARING"  # pre-print, preheat, precoat
    PRINTING = "PRINTING"  # includes post-coat
    PAUSED = "PAUSED"  # pausing or paused
    WAITING = "WAITING"  # waiting for an operator's resolution
    ABORTING = "ABORTING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    ABORTED = "ABORTED"
    UNKNOWN = "UNKNOWN"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL

    @property
    def is_active(self) -> bool:
        """On the printer now: being prepared, printing, paused or waiting for someone."""
        return self in _ACTIVE


_TERMINAL = frozenset({PrintStatus.FINISHED, PrintStatus.FAILED, PrintStatus.ABORTED})
_ACTIVE = frozenset(
    {
        PrintStatus.PREPARING,
        PrintStatus.PRINTING,
        PrintStatus.PAUSED,
        PrintStatus.WAITING,
        PrintStatus.ABORTING,
    }
)


@dataclass(frozen=True, slots=True)
class Material:
    """A resin supply: a Formlabs cartridge in a slot. ``None`` means the vendor did not say."""

    slot: str  # "main" for single-cartridge printers, else the vendor slot ("FRONT", "BACK")
    serial: str | None = None
    material: str | None = None  # vendor material code, e.g. FLGPGR05
    name: str | None = None  # display name, e.g. "Grey V5"
    capacity_ml: float | None = None
    remaining_ml: float | None = None
    is_empty: bool = False

    @property
    def remaining_ratio(self) -> float | None:
        if self.is_empty:
            return 0.0
        if self.remaining_ml is None or not self.capacity_ml:
            return None
        return max(0.0, min(1.0, self.remaining_ml / self.capacity_ml))

    def as_dict(self) -> dict[str, Any]:
        return {
            "slot": self.slot,
            "serial": self.serial,
            "material": self.material,
            "name": self.name,
            "capacity_ml": self.capacity_ml,
            "remaining_ml": self.remaining_ml,
            "remaining_ratio": self.remaining_ratio,
            "is_empty": self.is_empty,
        }


@dataclass(frozen=True, slots=True)
class Tank:
    """A resin tank (Formlabs). Wear is judged from layers printed and age since first fill."""

    serial: str | None = None
    material: str | None = None
    tank_type: str | None = None
    layers_printed: int | None = None
    first_filled_at: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "serial": self.serial,
            "material": self.material,
            "tank_type": self.tank_type,
            "layers_printed": self.layers_printed,
            "first_filled_at": iso(self.first_filled_at),
        }


@dataclass(frozen=True, slots=True)
class Print:
    """One print run (the current one on a printer, or a record from print history)."""

    id: str  # Formlabs guid, Carbon print uuid (or print_id when that is all we have)
    name: str
    status: PrintStatus
    status_raw: str
    printer_serial: str | None = None
    progress: float | None = None  # 0.0 .. 1.0
    layer: int | None = None
    layers_total: int | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    elapsed_s: float | None = None
    remaining_s: float | None = None
    # The human name ("Grey V5", "EPU 41"); a code the vendor did not name is kept as is.
    material: str | None = None
    material_code: str | None = None  # the vendor's code (Formlabs FLGPGR05; Carbon has none)
    message: str | None = None  # vendor text about the run (errors, attention)
    user: str | None = None
    # Resin the job uses, ml (Formlabs ``volume_ml``, Carbon ``metrics.consumed_resin_volume_ml``).
    volume_ml: float | None = None
    # A person's rating of the finished print (Formlabs ``print_run_success``): "SUCCESS" or
    # "FAILURE"; None while unrated (the vendor's own UNKNOWN reads as unrated).
    verdict: str | None = None
    verdict_note: str | None = None  # the note's text, when someone wrote one
    verdict_by: str | None = None  # who rated or wrote the note
    # A rating word the mapper does not know (never a verdict): for the poller to log and count
    # once per fetch. Not a fact about the print, so not part of == and not stored.
    verdict_raw: str | None = field(default=None, compare=False)
    # When the rating was given (PrintRunSuccess.created_at), as the vendor says: dates the
    # print.rated event and tells a new rating from an old one first seen. Not stored.
    verdict_at: datetime | None = field(default=None, compare=False)
    harvest_status: str | None = None  # Form Auto / Form Cell, the vendor's word as sent
    # Signed links that expire (and change on every fetch): not part of ==, fetched fresh at
    # delivery time by the sinks that show pictures.
    thumbnail_url: str | None = field(default=None, compare=False)
    photo_url: str | None = field(default=None, compare=False)
    # The vendor record as received; excluded from ==, so equality means "same normalized facts".
    raw: Mapping[str, Any] = field(default_factory=empty_mapping, compare=False, repr=False)

    def as_dict(self, *, with_raw: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "status": self.status.value,
            "status_raw": self.status_raw,
            "progress": self.progress,
            "layer": self.layer,
            "layers_total": self.layers_total,
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "elapsed_s": self.elapsed_s,
            "remaining_s": self.remaining_s,
            "material": self.material,
            "material_code": self.material_code,
            "message": self.message,
            "user": self.user,
            "volume_ml": self.volume_ml,
            "verdict": self.verdict,
            "verdict_note": self.verdict_note,
            "verdict_by": self.verdict_by,
            "harvest_status": self.harvest_status,
            "thumbnail_url": self.thumbnail_url,
            "photo_url": self.photo_url,
        }
        if with_raw:
            data["raw"] = plain(self.raw)
        return data


@dataclass(frozen=True, slots=True)
class Printer:
    """One printer as seen in one successful fetch."""

    serial: str
    name: str  # alias where set, else the vendor's name, else the serial
    vendor: Vendor
    model: str  # human model name, e.g. "Form 4" (the raw code when unknown)
    model_code: str
    status: PrinterStatus
    status_raw: str
    # Online per the vendor's own signal (Formlabs last_pinged_at fresh; Carbon state), judged
    # by the adapter at fetch time. Never False because of an API failure: then there is no
    # snapshot at all.
    online: bool
    last_seen_at: datetime | None = field(default=None, compare=False)
    group: str | None = None
    firmware: str | None = None
    location: str | None = None
    current_print: Print | None = None
    materials: tuple[Material, ...] = ()
    tank: Tank | None = None
    # Open vendor alerts (Carbon status.alerts, Formlabs attention states), sorted, deduplicated.
    alerts: tuple[str, ...] = ()
    # Jobs waiting for this printer: Carbon its own prints.queue_length; Formlabs the jobs in
    # its Fleet Control group's queue (core.queues.apply_queues; None outside one).
    queue_length: int | None = None
    # Formlabs ``ready_to_print`` and ``build_platform_contents``, the vendor's words as sent.
    ready_to_print: str | None = None
    build_platform_contents: str | None = None
    # The vendor's finer word for what the printer is doing when ``status`` is coarser: an
    # undocumented printer word (``FILLING``), or the running print's phase (``PREHEAT``,
    # ``POSTCOAT``, ``PAUSING``, ``ABORTING``, ``WAITING_FOR_RESOLUTION``). None when the
    # normalized status says it all.
    phase: str | None = None
    # The last status other than UNKNOWN this printer was seen in, kept while it reads UNKNOWN
    # (``carry_forward`` fills it) so a word we do not know never produces a status change
    # back to where it was. None while ``status`` is known, or before any known status.
    known_status: PrinterStatus | None = None
    raw: Mapping[str, Any] = field(default_factory=empty_mapping, compare=False, repr=False)

    @property
    def settled_status(self) -> PrinterStatus | None:
        """``status``, or while it is UNKNOWN the last known one (None if there was none)."""
        return self.status if self.status is not PrinterStatus.UNKNOWN else self.known_status

    def as_dict(self, *, with_raw: bool = False) -> dict[str, Any]:
        """The normalized printer JSON used in events and the MQTT state topic."""
        data: dict[str, Any] = {
            "serial": self.serial,
            "name": self.name,
            "vendor": self.vendor.value,
            "model": self.model,
            "model_code": self.model_code,
            "status": self.status.value,
            "status_raw": self.status_raw,
            "phase": self.phase,
            "online": self.online,
            "last_seen_at": iso(self.last_seen_at),
            "group": self.group,
            "firmware": self.firmware,
            "location": self.location,
            "alerts": list(self.alerts),
            "queue_length": self.queue_length,
            "ready_to_print": self.ready_to_print,
            "build_platform_contents": self.build_platform_contents,
            "materials": [m.as_dict() for m in self.materials],
            "tank": self.tank.as_dict() if self.tank else None,
        }
        if with_raw:
            data["raw"] = plain(self.raw)
        return data


@dataclass(frozen=True, slots=True)
class SkippedRecord:
    """A vendor record that could not be understood: logged, counted, and left out."""

    kind: str  # "printer", "print", "event", "tank", "cartridge"
    record_id: str | None  # the serial/guid if it could be read at all
    reason: str


@dataclass(frozen=True, slots=True)
class Queue:
    """A job queue waiting for printers: a Formlabs Fleet Control group's, or one Carbon
    printer's own (``prints.queue_length``).

    ``key`` is what the queue is known by in ``Snapshot.queues``, event subjects and metric
    labels: the Formlabs group id, or the Carbon printer serial (a Carbon queue belongs to one
    printer). ``items`` is the number of queued jobs (capped by the adapter); ``oldest_at`` the
    creation time of the oldest one (None when the vendor does not say: Carbon). ``as_of`` is
    when the queue was read: it is fetched less often than printer state and carried between
    fetches, so the age of its oldest job is judged at ``as_of``, not at a later snapshot.
    """

    key: str
    name: str
    items: int
    printers: tuple[str, ...] = ()  # serials of the printers that take jobs from this queue
    oldest_at: datetime | None = None
    as_of: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "group": self.key,
            "name": self.name,
            "items": self.items,
            "oldest_at": iso(self.oldest_at),
            "printers": list(self.printers),
            "as_of": iso(self.as_of),
        }


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything one source knew at one moment.

    ``printers`` is keyed by serial. ``runs`` holds recently updated print runs from the
    vendor's print history keyed by print id; the differ uses them to learn the outcome of a
    print that left the printer between two polls. ``runs_complete`` says whether ``runs``
    was refreshed in this fetch (history is fetched less often than printer state).
    ``queues`` holds the job queues keyed by :attr:`Queue.key` (Formlabs Fleet Control
    groups, fetched every ``[poll] queue_interval`` and carried in between; Carbon printers'
    own queues, read with every printer fetch).
    """

    source: str
    vendor: Vendor
    taken_at: datetime
    printers: Mapping[str, Printer]
    runs: Mapping[str, Print] = field(default_factory=empty_mapping)
    skipped: tuple[SkippedRecord, ...] = field(default=(), compare=False)
    queues: Mapping[str, Queue] = field(default_factory=empty_mapping)
    #: Printer records of this fetch not mapped again: their JSON text equalled the previous
    #: fetch's (their ``Printer`` is the previous fetch's own object), or differed only in
    #: heartbeat fields (the previous ``Printer`` with its heartbeat and ``online`` updated).
    reused: int = field(default=0, compare=False)

    def as_dict(self, *, with_raw: bool = False) -> dict[str, Any]:
        return {
            "source": self.source,
            "vendor": self.vendor.value,
            "taken_at": iso(self.taken_at),
            "printers": [
                {
                    **p.as_dict(with_raw=with_raw),
                    "current_print": (
                        p.current_print.as_dict(with_raw=with_raw) if p.current_print else None
                    ),
                }
                for p in self.printers.values()
            ],
            "runs": [r.as_dict(with_raw=with_raw) for r in self.runs.values()],
            "queues": [q.as_dict() for q in self.queues.values()],
            "skipped": [
                {"kind": s.kind, "id": s.record_id, "reason": s.reason} for s in self.skipped
            ],
        }


def without_raw(snapshot: Snapshot, previous: Snapshot | None = None) -> Snapshot:
    """``snapshot`` as kept between polls: no vendor records on its printers and prints.

    A printer equal to its version in ``previous`` (same ``last_seen_at`` too) is
    ``previous``'s own object, so an unchanged fleet allocates nothing and whoever caches by
    identity (MQTT, metrics) sees at once that nothing changed. Raw kept as :class:`RawJson`
    text stays (see the module docstring), its decoded objects released.
    """
    before: Mapping[str, Printer] = previous.printers if previous is not None else EMPTY
    printers: dict[str, Printer] = {}
    for serial, printer in snapshot.printers.items():
        old = before.get(serial)
        if old is printer:
            kept = printer
        elif old is not None and old == printer and old.last_seen_at == printer.last_seen_at:
            kept = old
        else:
            kept = printer_without_raw(printer)
        _release(kept)
        printers[serial] = kept
    runs = {
        key: run if not run.raw else replace(run, raw=EMPTY) for key, run in snapshot.runs.items()
    }
    return replace(
        snapshot,
        printers=MappingProxyType(printers),
        runs=MappingProxyType(runs) if runs else EMPTY,
    )


def printer_without_raw(printer: Printer) -> Printer:
    """``printer`` (and its current print) without decoded vendor records (:class:`RawJson`
    text is kept: the source holds that text anyway)."""
    current = printer.current_print
    if current is not None and _decoded_raw(current.raw):
        current = replace(current, raw=EMPTY)
    if not _decoded_raw(printer.raw) and current is printer.current_print:
        return printer
    raw = printer.raw if type(printer.raw) is RawJson else EMPTY
    return replace(printer, raw=raw, current_print=current)


def _decoded_raw(raw: Mapping[str, Any]) -> bool:
    return type(raw) is not RawJson and raw is not EMPTY and bool(raw)


def _release(printer: Printer) -> None:
    raw = printer.raw
    if type(raw) is RawJson:
        raw.release()
    current = printer.current_print
    if current is not None and type(current.raw) is RawJson:
        current.raw.release()


@overload
def iso(value: datetime) -> str: ...
@overload
def iso(value: None) -> None: ...
def iso(value: datetime | None) -> str | None:
    """RFC 3339 in UTC with a ``Z``, seconds precision unless there are fractions.

    A naive ``value`` is taken to be UTC already. The one ISO formatter of printfleet: events,
    query strings, tables and the CLI all write times with it.
    """
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().removesuffix("+00:00") + "Z"
