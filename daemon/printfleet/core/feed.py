"""The vendor's event feed as a second witness of what polling sees (pure, no I/O).

Polling compares two snapshots, so a change that is undone between them (a pause and its
resume, a cartridge that runs low and is swapped) leaves no trace in either. The vendor's
feed (Formlabs ``/events/``) records such changes when they happen. This module turns feed
records into the same :class:`ChangeEvent` types the differ makes and deduplicates the two
witnesses, so each real change is reported once, by whichever saw it first.

Dedupe is by memory, not by id: the differ's ids are keyed by the poll window
("first seen after snapshot X"), which the feed cannot know, and the feed's ids are the
vendor's, which the poll cannot know. So :class:`WitnessMemory` keeps, per source:

* per print, the last pause-state change reported (``paused``/``resumed``, who saw it, when).
  A print cannot pause twice without resuming in between, so a second ``paused`` is the
  same real pause seen by the other witness; a feed record older than the last change
  reported is old news the poll already told. Poll times are the snapshot time (the change
  happened in the window before it); feed times are the vendor's ``created_at``.
* per (printer, cartridge), that a ``material.low`` was reported for it and at which level
  (1 low, 2 empty). The feed's ``RESIN_LOW`` is a "low"; the poll's later "empty" for the
  same cartridge is a new change and still reported.
* the vendor ids of feed records already handled (a re-read page repeats nothing).

The memory is persisted with each cycle (poller state key ``feed:<source>``), so a restart
keeps it; its entries expire (:data:`PRINT_MEMORY`, :data:`MATERIAL_MEMORY`) and are
capped in number.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from printfleet.core.events import (
    DEFAULT_SEVERITY,
    ChangeEvent,
    EventType,
    Severity,
    event_id,
)
from printfleet.core.model import Material, Print, Printer, Snapshot, frozen_mapping, iso
from printfleet.core.prints import aware


class FeedKind(StrEnum):
    """What a feed record means to printfleet (decided by the vendor's adapter)."""

    MATERIAL_LOW = "material_low"
    PAUSED = "paused"
    RESUMED = "resumed"
    #: Already reported from another record (the nested print run, the printer list):
    #: print start/finish/error, printer registered, resolution requests. Dropped here.
    COVERED = "covered"
    #: Nothing printfleet maps: passed on as ``vendor.event``.
    OTHER = "other"


WITNESS_POLL = "poll"
WITNESS_FEED = "feed"

#: How long the pause state of a print is remembered after its last change.
PRINT_MEMORY = timedelta(days=3)
#: How long a cartridge's reported low level is remembered (the poll's threshold and the
#: vendor's may be days apart on a slowly used cartridge).
MATERIAL_MEMORY = timedelta(days=60)
#: Upper bounds on the memory (oldest entries go first): bounded state whatever the vendor sends.
MAX_PRINTS = 2000
MAX_CARTRIDGES = 2000
MAX_SEEN_IDS = 5000

_PAUSE_TYPES = (EventType.PRINT_PAUSED, EventType.PRINT_RESUMED)


@dataclass(frozen=True, slots=True)
class FeedRecord:
    """One vendor feed entry, normalized by the adapter (texts already length-capped)."""

    id: str
    type: str  # the vendor's code, e.g. RESIN_LOW
    kind: FeedKind
    created_at: datetime
    type_label: str = ""
    message: str = ""
    printer_serial: str | None = None
    print_id: str | None = None
    cartridge: str | None = None
    tank: str | None = None
    #: Whether the vendor documents this type (an undocumented one is logged and counted).
    known: bool = True

    def as_vendor_event(self) -> dict[str, Any]:
        """The ``vendor_event`` data of a ``vendor.event``."""
        return {
            "id": self.id,
            "type": self.type,
            "type_label": self.type_label,
            "message": self.message,
            "created_at": iso(self.created_at),
        }


@dataclass(slots=True)
class _PauseState:
    kind: str  # "paused" | "resumed"
    witness: str
    at: datetime


@dataclass(slots=True)
class _LowState:
    level: int
    witness: str
    at: datetime


@dataclass(slots=True)
class WitnessMemory:
    """What each witness already reported (see the module doc); JSON via to/from_state."""

    prints: dict[str, _PauseState] = field(default_factory=dict)
    cartridges: dict[str, _LowState] = field(default_factory=dict)
    seen: dict[str, datetime] = field(default_factory=dict)

    @classmethod
    def from_state(cls, state: Any) -> WitnessMemory:
        """Read back :meth:`to_state`; anything unreadable is forgotten, never fatal."""
        memory = cls()
        if not isinstance(state, Mapping):
            return memory
        for key, value in _items(state.get("prints")):
            try:
                memory.prints[key] = _PauseState(
                    str(value[0]), str(value[1]), datetime.fromisoformat(value[2])
                )
            except (TypeError, ValueError, IndexError, KeyError):
                continue
        for key, value in _items(state.get("cartridges")):
            try:
                memory.cartridges[key] = _LowState(
                    int(value[0]), str(value[1]), datetime.fromisoformat(value[2])
                )
            except (TypeError, ValueError, IndexError, KeyError):
                continue
        for key, value in _items(state.get("seen")):
            try:
                memory.seen[key] = datetime.fromisoformat(value)
            except (TypeError, ValueError):
                continue
        return memory

    def to_state(self) -> dict[str, Any]:
        return {
            "prints": {k: [v.kind, v.witness, v.at.isoformat()] for k, v in self.prints.items()},
            "cartridges": {
                k: [v.level, v.witness, v.at.isoformat()] for k, v in self.cartridges.items()
            },
            "seen": {k: v.isoformat() for k, v in self.seen.items()},
        }

    def copy(self) -> WitnessMemory:
        return WitnessMemory(
            {k: replace(v) for k, v in self.prints.items()},
            {k: replace(v) for k, v in self.cartridges.items()},
            dict(self.seen),
        )

    def prune(self, now: datetime) -> None:
        """Forget what is too old to matter, then the oldest beyond the caps."""
        self.prints = _bounded(
            {k: v for k, v in self.prints.items() if v.at > now - PRINT_MEMORY},
            MAX_PRINTS,
            lambda v: v.at,
        )
        self.cartridges = _bounded(
            {k: v for k, v in self.cartridges.items() if v.at > now - MATERIAL_MEMORY},
            MAX_CARTRIDGES,
            lambda v: v.at,
        )
        self.seen = _bounded(
            {k: v for k, v in self.seen.items() if v > now - PRINT_MEMORY},
            MAX_SEEN_IDS,
            lambda v: v,
        )


def _items(value: Any) -> Iterable[tuple[str, Any]]:
    if isinstance(value, Mapping):
        return ((str(k), v) for k, v in value.items())
    return ()


def _bounded(data: dict[str, Any], limit: int, when: Any) -> dict[str, Any]:
    if len(data) <= limit:
        return data
    newest = sorted(data.items(), key=lambda kv: when(kv[1]))[-limit:]
    return dict(newest)


def _cartridge_key(serial: str, cartridge: str | None) -> str:
    return f"{serial}\x1f{cartridge or ''}"


@dataclass(frozen=True, slots=True)
class Reconciled:
    """The cycle's events (poll- and feed-seen, deduplicated) and the memory after them."""

    events: list[ChangeEvent]
    memory: WitnessMemory
    suppressed: int = 0


def reconcile(
    poll_events: Sequence[ChangeEvent],
    records: Sequence[FeedRecord],
    memory: WitnessMemory,
    *,
    previous: Snapshot | None,
    current: Snapshot,
    now: datetime,
) -> Reconciled:
    """Merge the differ's events with the feed's records, each real change once.

    Poll events are judged first (in the same cycle they carry the fuller picture, and their
    ids stay what they were before the feed was read); then feed records in vendor order
    (``created_at``, then id). The input ``memory`` is not changed.
    """
    mem = memory.copy()
    out: list[ChangeEvent] = []
    suppressed = 0
    for event in poll_events:
        kept = _poll(event, mem)
        if kept is None:
            suppressed += 1
        else:
            out.append(kept)
    feed_out: list[ChangeEvent] = []
    for record in sorted(records, key=lambda r: (r.created_at, _id_order(r.id))):
        if record.id in mem.seen:
            continue
        mem.seen[record.id] = record.created_at
        if record.kind is FeedKind.COVERED:
            continue
        made = _feed(record, mem, previous=previous, current=current)
        if made is None:
            suppressed += 1
        else:
            feed_out.append(made)
    mem.prune(now)
    if feed_out:
        # Same order as the differ's: per printer, by time (stable, so vendor order holds).
        out = sorted([*out, *feed_out], key=lambda e: (e.subject, e.time))
    return Reconciled(out, mem, suppressed)


def _id_order(ident: str) -> tuple[int, int | str]:
    return (0, int(ident)) if ident.isdigit() else (1, ident)


def _with_witness(event: ChangeEvent, witness: str) -> ChangeEvent:
    return replace(event, details=frozen_mapping({**event.details, "witness": witness}))


def _poll(event: ChangeEvent, mem: WitnessMemory) -> ChangeEvent | None:
    if event.type in _PAUSE_TYPES:
        pid = event.print.id if event.print is not None else ""
        kind = "paused" if event.type is EventType.PRINT_PAUSED else "resumed"
        last = mem.prints.get(pid)
        if last is not None and last.kind == kind:
            return None  # the feed told this one already (a print cannot pause twice in a row)
        mem.prints[pid] = _PauseState(kind, WITNESS_POLL, event.time)
        return _with_witness(event, WITNESS_POLL)
    if event.type is EventType.MATERIAL_LOW:
        level = 2 if event.details.get("empty") else 1
        key = _cartridge_key(event.subject, event.details.get("cartridge"))
        low = mem.cartridges.get(key)
        if low is not None and low.level >= level:
            return None
        mem.cartridges[key] = _LowState(level, WITNESS_POLL, event.time)
        return _with_witness(event, WITNESS_POLL)
    return event


def _feed(
    record: FeedRecord, mem: WitnessMemory, *, previous: Snapshot | None, current: Snapshot
) -> ChangeEvent | None:
    serial = record.printer_serial or ""
    printer = current.printers.get(serial) or (
        previous.printers.get(serial) if previous is not None else None
    )
    # Never later than the snapshot: a vendor clock running ahead must not reorder events.
    t = min(aware(record.created_at) or current.taken_at, current.taken_at)
    base = {"witness": WITNESS_FEED, "vendor_event": record.as_vendor_event()}
    if record.kind in (FeedKind.PAUSED, FeedKind.RESUMED):
        pid = record.print_id or ""
        kind = "paused" if record.kind is FeedKind.PAUSED else "resumed"
        last = mem.prints.get(pid)
        if last is not None and (last.kind == kind or last.at >= t):
            return None  # reported already, or older than the last change reported
        mem.prints[pid] = _PauseState(kind, WITNESS_FEED, t)
        etype = EventType.PRINT_PAUSED if kind == "paused" else EventType.PRINT_RESUMED
        return _event(
            etype,
            record,
            current,
            printer,
            t,
            key=pid or serial,
            run=_run(pid, printer, current, previous),
            details=base,
        )
    if record.kind is FeedKind.MATERIAL_LOW:
        key = _cartridge_key(serial, record.cartridge)
        if key in mem.cartridges:
            return None
        mem.cartridges[key] = _LowState(1, WITNESS_FEED, t)
        found = _cartridge(record.cartridge, printer, previous, serial)
        return _event(
            EventType.MATERIAL_LOW,
            record,
            current,
            printer,
            t,
            key=serial,
            details={
                "slot": found.slot if found else None,
                "remaining_ml": found.remaining_ml if found else None,
                "ratio": found.remaining_ratio if found else None,
                "empty": False,
                "material": (found.name or found.material) if found else None,
                "cartridge": record.cartridge,
                **base,
            },
            severity=Severity.WARNING,
        )
    return _event(
        EventType.VENDOR_EVENT,
        record,
        current,
        printer,
        t,
        key=serial or current.source,
        run=_run(record.print_id, printer, current, previous) if record.print_id else None,
        details=base,
        severity=Severity.INFO,
    )


def _event(
    etype: EventType,
    record: FeedRecord,
    current: Snapshot,
    printer: Printer | None,
    t: datetime,
    *,
    key: str,
    details: Mapping[str, Any],
    run: Print | None = None,
    severity: Severity | None = None,
) -> ChangeEvent:
    return ChangeEvent(
        # Keyed like the differ's (print id for print events), told apart by the vendor id.
        id=event_id(current.source, key, etype.value, WITNESS_FEED, record.id),
        type=etype,
        source=current.source,
        vendor=current.vendor,
        subject=record.printer_serial or current.source,
        time=t,
        severity=severity or DEFAULT_SEVERITY.get(etype, Severity.INFO),
        printer=printer,
        print=run,
        details=frozen_mapping(details),
    )


def _run(
    pid: str | None, printer: Printer | None, current: Snapshot, previous: Snapshot | None
) -> Print | None:
    if not pid:
        return None
    if (
        printer is not None
        and printer.current_print is not None
        and printer.current_print.id == pid
    ):
        return printer.current_print
    run = current.runs.get(pid)
    if run is None and previous is not None:
        run = previous.runs.get(pid)
        if run is None:
            old = previous.printers.get(printer.serial) if printer is not None else None
            if old is not None and old.current_print is not None and old.current_print.id == pid:
                run = old.current_print
    return run


def _cartridge(
    serial: str | None, printer: Printer | None, previous: Snapshot | None, host: str
) -> Material | None:
    """The cartridge as last seen in its printer (now, or before a swap)."""
    if serial is None:
        return None
    candidates: list[Printer] = [printer] if printer is not None else []
    if previous is not None and host in previous.printers:
        candidates.append(previous.printers[host])
    for p in candidates:
        for m in p.materials:
            if m.serial == serial:
                return m
    return None
