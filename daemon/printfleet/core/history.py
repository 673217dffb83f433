"""Print history: one record per print that reached an outcome, for reports and digests.

The pipeline writes a record in the same store transaction as the poll that saw the outcome
(so it is counted once, across restarts), and updates it when a person rates the print.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Final

from printfleet.core.events import ChangeEvent, EventType
from printfleet.core.prints import aware


@dataclass(frozen=True, slots=True)
class PrintRecord:
    """A print that finished, failed or was aborted, as the history export and digests see it."""

    source: str
    serial: str  # printer serial
    printer_name: str
    group: str | None
    print_id: str
    name: str
    outcome: str  # "finished", "failed" or "aborted" (the event type's second word)
    finished_at: datetime  # the vendor's time, else when printfleet saw the outcome
    started_at: datetime | None = None
    duration_s: float | None = None
    material: str | None = None
    volume_ml: float | None = None  # resin used; None when the vendor did not say
    verdict: str | None = None  # "SUCCESS" / "FAILURE" once a person rated it
    verdict_note: str | None = None
    verdict_by: str | None = None


#: The event types that end a print, and the ``outcome`` word each records.
OUTCOMES: Final[Mapping[EventType, str]] = MappingProxyType(
    {
        EventType.PRINT_FINISHED: "finished",
        EventType.PRINT_FAILED: "failed",
        EventType.PRINT_ABORTED: "aborted",
    }
)
#: The verdict words a rating may carry; anything else is stored as no verdict.
VERDICTS: Final = frozenset({"SUCCESS", "FAILURE"})


@dataclass(frozen=True, slots=True)
class Rating:
    """A person rated a print (a ``print.rated`` event): sets the verdict of its record."""

    source: str
    print_id: str
    verdict: str | None
    note: str | None = None
    by: str | None = None


@dataclass(frozen=True, slots=True)
class HistoryTotal:
    """Prints of one printer with one outcome and material, summed over the whole history
    (what the print and resin counters start from after a restart)."""

    source: str
    serial: str
    outcome: str
    material: str | None
    prints: int
    volume_ml: float  # summed over the prints with a known volume
    with_volume: int  # how many of the prints had one


#: What one poll changes in the history, applied in order in the poll's commit.
HistoryChange = PrintRecord | Rating


def record_from_event(event: ChangeEvent) -> PrintRecord | None:
    """The history record of an outcome event (``None`` for any other event, or without a print).

    ``finished_at`` is the vendor's end time, else the event's time (when printfleet saw the
    outcome); ``duration_s`` is the vendor's elapsed time, else end minus start.
    """
    outcome = OUTCOMES.get(event.type)
    run = event.print
    if outcome is None or run is None:
        return None
    printer = event.printer
    finished = aware(run.finished_at) or aware(event.time) or event.time
    started = aware(run.started_at)
    duration = run.elapsed_s
    if duration is None and started is not None:
        duration = (finished - started).total_seconds()
    if duration is not None and not (math.isfinite(duration) and duration >= 0):
        duration = None  # a skewed clock or a vendor's nonsense: unknown rather than negative
    volume = run.volume_ml
    if volume is not None and not (math.isfinite(volume) and volume >= 0):
        volume = None
    return PrintRecord(
        source=event.source,
        serial=printer.serial if printer is not None else (run.printer_serial or event.subject),
        printer_name=printer.name if printer is not None else event.subject,
        group=printer.group if printer is not None else None,
        print_id=run.id,
        name=run.name,
        outcome=outcome,
        finished_at=finished,
        started_at=started,
        duration_s=duration,
        material=run.material,
        volume_ml=volume,
        verdict=run.verdict if run.verdict in VERDICTS else None,
        verdict_note=run.verdict_note,
        verdict_by=run.verdict_by,
    )


def rating_from_event(event: ChangeEvent) -> Rating | None:
    """The rating a ``print.rated`` event carries (its ``verdict``/``note``/``by`` data, else
    the print's own verdict fields); ``None`` for other events or without a print."""
    run = event.print
    if event.type is not EventType.PRINT_RATED or run is None:
        return None
    details = event.details
    verdict = details.get("verdict", run.verdict)
    note = details.get("note", run.verdict_note)
    by = details.get("by", run.verdict_by)
    return Rating(
        source=event.source,
        print_id=run.id,
        verdict=verdict if verdict in VERDICTS else None,
        note=note if isinstance(note, str) else None,
        by=by if isinstance(by, str) else None,
    )


def history_changes(events: Iterable[ChangeEvent]) -> list[HistoryChange]:
    """What a poll's events change in the print history, in event order."""
    changes: list[HistoryChange] = []
    for event in events:
        change: HistoryChange | None = record_from_event(event) or rating_from_event(event)
        if change is not None:
            changes.append(change)
    return changes
