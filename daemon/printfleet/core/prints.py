"""Where a snapshot keeps a print, and the one view the differ takes of it.

A print shows up twice: live on its printer (``Printer.current_print``) and recorded in the
vendor's history (``Snapshot.runs``). The differ, :func:`~printfleet.core.diff.carry_forward`
and :func:`~printfleet.core.diff.unresolved_prints` all need the same answer to "what does this
snapshot say about print X", so the merge rule (:func:`pick`: an outcome in history wins,
otherwise the live view) and the lookup by id live here once, with the few time facts of a
print they all read.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from printfleet.core.model import Print, Printer, PrintStatus, Snapshot

__all__ = [
    "PrintIndex",
    "aware",
    "end_time",
    "expected_end",
    "has_started",
    "pick",
    "shifted",
    "start_time",
    "views_of",
    "with_serial",
    "with_verdict_of",
]

# A vendor estimate longer than this is nonsense; it must not overflow datetime arithmetic.
_MAX_SPAN_S = 60.0 * 86400


class PrintIndex:
    """Finds a print by id in one snapshot, via the printer serial it belongs to.

    Only when the serial is unknown is a print-id → printer index built (once, lazily).
    """

    __slots__ = ("_by_id", "snapshot")

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self._by_id: dict[str, Printer] | None = None

    def on_printer(self, pid: str, serial: str | None) -> Print | None:
        """The print as its printer shows it now, if it does."""
        if serial is not None:
            printer = self.snapshot.printers.get(serial)
            if printer is not None:
                cp = printer.current_print
                if cp is not None and cp.id == pid:
                    return cp
                return None
        found = self._by_print_id().get(pid)
        return found.current_print if found is not None else None

    def serial_of(self, pid: str) -> str | None:
        """The serial of the printer showing print ``pid``, if one does."""
        found = self._by_print_id().get(pid)
        return found.serial if found is not None else None

    def _by_print_id(self) -> dict[str, Printer]:
        if self._by_id is None:
            self._by_id = {
                p.current_print.id: p
                for p in self.snapshot.printers.values()
                if p.current_print is not None
            }
        return self._by_id

    def view(self, pid: str, serial: str | None) -> Print | None:
        """Everything this snapshot says about print ``pid`` (see :func:`pick`)."""
        return pick(self.on_printer(pid, serial), self.snapshot.runs.get(pid))


def pick(live: Print | None, recorded: Print | None) -> Print | None:
    """One view of a print from its printer (live) and the history (recorded).

    An outcome wins (history first: it is the vendor's record, the printer may lag); otherwise
    the live view wins, since a non-terminal history record may be stale. A person's rating
    is kept from whichever view has one: a summary record (``previous_print_run``) or an
    earlier copy does not carry it, and "not said" must not read as "unrated again".
    """
    if live is None:
        return recorded
    if recorded is not None and recorded.status.is_terminal:
        return with_verdict_of(recorded, live)
    if recorded is not None:
        return with_verdict_of(live, recorded)
    return live


def with_verdict_of(view: Print, other: Print | None) -> Print:
    """``view``, with ``other``'s verdict (note, rater) when ``view`` has none, or when both
    have one and ``other``'s was given later (a stale record must not undo a re-rating)."""
    if other is None or other.verdict is None:
        return view
    if view.verdict is not None:
        mine, theirs = aware(view.verdict_at), aware(other.verdict_at)
        if mine is None or theirs is None or theirs <= mine:
            return view
        return dataclasses.replace(
            view,
            verdict=other.verdict,
            verdict_note=other.verdict_note,
            verdict_by=other.verdict_by,
            verdict_at=other.verdict_at,
        )
    return dataclasses.replace(
        view,
        verdict=other.verdict,
        verdict_note=view.verdict_note or other.verdict_note,
        verdict_by=view.verdict_by or other.verdict_by,
        verdict_at=other.verdict_at,
    )


def views_of(snapshot: Snapshot) -> Iterator[tuple[str | None, Print]]:
    """Every print ``snapshot`` knows, once each, as ``(printer serial, merged view)``."""
    seen: set[str] = set()
    runs = snapshot.runs
    for serial, printer in snapshot.printers.items():
        cp = printer.current_print
        if cp is None:
            continue
        seen.add(cp.id)
        view = pick(cp, runs.get(cp.id))
        assert view is not None
        yield serial, view
    for rid, run in runs.items():
        if rid not in seen:
            yield run.printer_serial, run


def has_started(p: Print) -> bool:
    """Whether the print got going (being prepared or further), as far as we can tell."""
    status = p.status
    return (
        status.is_active
        or status.is_terminal
        or (status is PrintStatus.UNKNOWN and p.started_at is not None)
    )


def start_time(p: Print) -> datetime | None:
    return aware(p.started_at) or aware(p.created_at)


def end_time(p: Print) -> datetime | None:
    """When a run ended, or the best earlier time we have."""
    return aware(p.finished_at) or aware(p.started_at) or aware(p.created_at)


def expected_end(p: Print) -> datetime | None:
    """When a running print should be over: its start plus elapsed plus remaining time."""
    start = start_time(p)
    if start is None:
        return None
    span = max(0.0, p.elapsed_s or 0.0) + max(0.0, p.remaining_s or 0.0)
    return shifted(start, timedelta(seconds=min(span, _MAX_SPAN_S)))


def with_serial(p: Print, serial: str | None) -> Print:
    if p.printer_serial is not None or serial is None:
        return p
    return dataclasses.replace(p, printer_serial=serial)


# The ends of what ``datetime`` can hold, as aware UTC values (clamping targets).
_MIN = datetime.min.replace(tzinfo=UTC)
_MAX = datetime.max.replace(tzinfo=UTC)


def shifted(t: datetime, delta: timedelta) -> datetime:
    """``t + delta``, clamped to the representable range instead of raising OverflowError.

    Vendors send dates like 0001-01-01 (an unset field) or 9999-12-31; arithmetic on them
    near the ends of the range must give the nearest representable time, never crash a poll.
    """
    try:
        return t + delta
    except OverflowError:
        end = _MAX if delta > timedelta(0) else _MIN
        return end if t.tzinfo is not None else end.replace(tzinfo=None)


def aware(t: datetime | None) -> datetime | None:
    """``t`` with a zone (a vendor time without one is read as UTC, as the APIs document)."""
    if t is None or t.tzinfo is not None:
        return t
    return t.replace(tzinfo=UTC)
