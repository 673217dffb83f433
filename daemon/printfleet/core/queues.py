"""Job queues: the backlog and empty events, and the printer blocked while jobs wait.

Pure, like the differ it extends: everything is judged from two snapshots.

* ``queue.backlog`` is a condition, raised when a queue *becomes* backlogged (``items >=
  queue_backlog_items``, or its oldest job waited ``queue_backlog_age`` or longer) and re-armed
  once it is no longer backlogged. The state lives in the snapshots themselves (``previous``'s
  queue was or was not backlogged), so a restart neither repeats nor loses it. A queue seen for
  the first time (a new group, or the first queue fetch after an upgrade) is judged against
  "not backlogged": a backlog is news even if it is old.
* ``queue.empty`` when a queue goes from some jobs to none. A queue that disappears (group
  deleted, Fleet Control switched off) says nothing: no data is not an empty queue.
* The age of the oldest job is judged at :attr:`Queue.as_of` (when the queue was read), not
  at a later snapshot: Formlabs queues are fetched less often than printer state and carried
  in between, and a carried queue must not grow older than what was seen.
* The costly silent state of a farm, a printer that cannot start its next job while jobs wait
  for it, is a *printer alert* (:data:`~printfleet.core.alerts.ALERT_BLOCKED_WITH_QUEUE`)
  that :func:`apply_queues` derives into ``Printer.alerts`` before the diff; the differ's
  usual alert raise/clear then announces it, once, with :func:`blocked_details`.

Event ids: ``event_id(source, queue key, type, previous.taken_at)``, the occurrence mark the
differ uses for recurring changes, so the same pair of snapshots always yields the same ids.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Final

from printfleet.core.alerts import (
    ALERT_BLOCKED_WITH_QUEUE,
    ALERT_WAITING_FOR_RESOLUTION,
    BLOCKING_ALERTS,
)
from printfleet.core.events import DEFAULT_SEVERITY, ChangeEvent, EventType, Severity, event_id
from printfleet.core.model import (
    Printer,
    PrintStatus,
    Queue,
    Snapshot,
    Vendor,
    frozen_mapping,
    iso,
)
from printfleet.core.thresholds import DiffSettings

__all__ = [
    "MAX_QUEUE_ITEMS",
    "apply_queues",
    "blocked_details",
    "carbon_queues",
    "is_backlogged",
    "queue_events",
    "queued_for",
]

#: A queue counts at most this many jobs. Vendor counts are untrusted input; no farm queues
#: more, and a bounded number keeps metrics, payloads and the stored snapshot bounded.
MAX_QUEUE_ITEMS: Final = 10_000

_BLOCKING_FOLDED: Final = frozenset(a.casefold() for a in BLOCKING_ALERTS)
_BUSY: Final = frozenset({PrintStatus.PREPARING, PrintStatus.PRINTING, PrintStatus.ABORTING})


def carbon_queues(printers: Iterable[Printer], as_of: datetime) -> dict[str, Queue]:
    """One queue per Carbon printer that reports ``queue_length``, keyed by its serial.

    A Carbon queue belongs to one printer (``prints.queue_length``); keying it by serial makes
    the event subject and metric label the printer's, which is what an operator looks for.
    The vendor gives no job times here, so ``oldest_at`` is unknown and only the count can
    make a backlog.
    """
    queues: dict[str, Queue] = {}
    for printer in printers:
        length = printer.queue_length
        if length is None:
            continue
        queues[printer.serial] = Queue(
            key=printer.serial,
            name=printer.name,
            items=max(0, min(length, MAX_QUEUE_ITEMS)),
            printers=(printer.serial,),
            as_of=as_of,
        )
    return queues


def queued_for(snapshot: Snapshot) -> dict[str, int]:
    """Jobs waiting for each printer: its group's queue, or its own (the largest if several)."""
    waiting: dict[str, int] = {}
    for queue in snapshot.queues.values():
        for serial in queue.printers:
            if queue.items > waiting.get(serial, 0):
                waiting[serial] = queue.items
    return waiting


def _blocking(printer: Printer) -> list[str]:
    """The blocking alerts ``printer`` shows (a print waiting for resolution counts too).

    None while it is offline (its alerts are stale; ``printer.offline`` says so already) or
    busy with a print (Formlabs reads "not ready to print" all through a print: a printer
    working on a job is not what keeps the queue waiting).
    """
    run = printer.current_print
    if not printer.online or (run is not None and run.status in _BUSY):
        return []
    found = [a for a in printer.alerts if a.casefold() in _BLOCKING_FOLDED]
    if (
        run is not None
        and run.status is PrintStatus.WAITING
        and ALERT_WAITING_FOR_RESOLUTION not in found
    ):
        found.append(ALERT_WAITING_FOR_RESOLUTION)
    return sorted(found)


def apply_queues(snapshot: Snapshot) -> Snapshot:
    """``snapshot`` with each printer's queue facts derived from ``snapshot.queues``:

    * :data:`ALERT_BLOCKED_WITH_QUEUE` on every printer that shows a blocking alert while
      jobs wait for it, and off every other printer;
    * on Formlabs, ``Printer.queue_length`` = the jobs in its Fleet Control group's queue
      (None outside one), so the printer's retained MQTT state and event payloads say what
      waits for it, as Carbon's own ``queue_length`` does.

    Idempotent, and the same object when nothing changes (the unchanged-printer fast paths
    downstream compare by identity).
    """
    waiting = queued_for(snapshot)
    derive_length = snapshot.vendor is Vendor.FORMLABS
    changed: dict[str, Printer] | None = None
    for serial, printer in snapshot.printers.items():
        blocked = waiting.get(serial, 0) > 0 and bool(_blocking(printer))
        has = ALERT_BLOCKED_WITH_QUEUE in printer.alerts
        length = waiting.get(serial) if derive_length else printer.queue_length
        if blocked == has and length == printer.queue_length:
            continue
        alerts = printer.alerts
        if blocked and not has:
            alerts = tuple(sorted({*printer.alerts, ALERT_BLOCKED_WITH_QUEUE}))
        elif has and not blocked:
            alerts = tuple(a for a in printer.alerts if a != ALERT_BLOCKED_WITH_QUEUE)
        if changed is None:
            changed = dict(snapshot.printers)
        changed[serial] = dataclasses.replace(printer, alerts=alerts, queue_length=length)
    if changed is None:
        return snapshot
    return dataclasses.replace(snapshot, printers=frozen_mapping(changed))


def blocked_details(printer: Printer, snapshot: Snapshot) -> dict[str, Any]:
    """What a ``blocked with jobs queued`` alert event carries besides text and state."""
    return {"blocking": _blocking(printer), "queued": queued_for(snapshot).get(printer.serial, 0)}


def is_backlogged(queue: Queue, settings: DiffSettings) -> bool:
    """Whether ``queue`` has too many jobs, or its oldest job waited too long (at ``as_of``)."""
    if queue.items <= 0:
        return False
    if queue.items >= settings.queue_backlog_items:
        return True
    oldest, as_of = queue.oldest_at, queue.as_of
    if oldest is None or as_of is None or oldest.tzinfo is None or as_of.tzinfo is None:
        return False
    return as_of - oldest >= settings.queue_backlog_age


def queue_events(
    previous: Snapshot | None, current: Snapshot, settings: DiffSettings
) -> list[ChangeEvent]:
    """``queue.backlog`` and ``queue.empty`` from ``previous`` to ``current`` (by queue key)."""
    if previous is None:
        return []
    mark = iso(previous.taken_at)
    events: list[ChangeEvent] = []
    before: Mapping[str, Queue] = previous.queues
    for key, queue in current.queues.items():
        old = before.get(key)
        if old is queue:
            continue
        if is_backlogged(queue, settings) and not (
            old is not None and is_backlogged(old, settings)
        ):
            reason = "items" if queue.items >= settings.queue_backlog_items else "age"
            events.append(_event(EventType.QUEUE_BACKLOG, current, queue, mark, reason=reason))
        if old is not None and old.items > 0 and queue.items == 0:
            events.append(_event(EventType.QUEUE_EMPTY, current, queue, mark))
    return events


def _event(
    kind: EventType, snapshot: Snapshot, queue: Queue, mark: str, *, reason: str | None = None
) -> ChangeEvent:
    details: dict[str, Any] = {"queue": queue.as_dict()}
    if reason is not None:
        details["reason"] = reason
    # A Carbon queue is one printer's: the event carries that printer (its topic, its labels).
    printer = snapshot.printers.get(queue.key) if queue.printers == (queue.key,) else None
    return ChangeEvent(
        id=event_id(snapshot.source, queue.key, kind.value, mark),
        type=kind,
        source=snapshot.source,
        vendor=snapshot.vendor,
        subject=queue.key,
        time=snapshot.taken_at,
        severity=DEFAULT_SEVERITY.get(kind, Severity.INFO),
        printer=printer,
        details=frozen_mapping(details),
    )
