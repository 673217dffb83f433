"""What every vendor source offers the poller (the poller knows only this protocol)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from printfleet.core.feed import FeedRecord
from printfleet.core.model import (
    Material,
    Print,
    Queue,
    SkippedRecord,
    Snapshot,
    Tank,
    Vendor,
    empty_mapping,
)


@dataclass(frozen=True, slots=True)
class PrintLookup:
    """A print that left its printer without us seeing how it ended: ask the history."""

    printer_serial: str
    print_id: str
    created_at: datetime | None = None
    started_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class RunBatch:
    """Print runs learned from the vendor's history (and lookups), keyed by print id.

    ``watermark`` is the ``since`` to pass next time so nothing is missed and little is repeated.
    ``feed`` holds the vendor's event-feed entries read with the history (oldest first; empty
    for vendors without a feed), the second witness of :mod:`printfleet.core.feed`.
    """

    runs: Mapping[str, Print] = field(default_factory=empty_mapping)
    skipped: tuple[SkippedRecord, ...] = ()
    watermark: datetime | None = None
    feed: tuple[FeedRecord, ...] = ()


@dataclass(frozen=True, slots=True)
class Inventory:
    """Every tank and cartridge tied to the account, including spares in no printer."""

    tanks: tuple[Tank, ...] = ()
    cartridges: tuple[Material, ...] = ()
    # Serial of the printer each item is in ("" when in none), keyed by the item's serial.
    location: Mapping[str, str] = field(default_factory=empty_mapping)
    skipped: tuple[SkippedRecord, ...] = ()


@dataclass(frozen=True, slots=True)
class QueueBatch:
    """Job queues read from a vendor's queue endpoints, keyed by :attr:`Queue.key`.

    ``requests`` is what reading them cost (the poller stretches the queue interval with it).
    """

    queues: Mapping[str, Queue] = field(default_factory=empty_mapping)
    skipped: tuple[SkippedRecord, ...] = ()
    requests: int = 0


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """How much of the vendor's request budget is left (for metrics and the scheduler)."""

    remaining: float  # requests available right now without waiting
    capacity: float  # size of the budget window
    window_s: float  # length of the budget window in seconds
    paused_until: float | None = None  # monotonic time a 429 told us to wait until


class Source(Protocol):
    """One vendor account.

    Every ``fetch_*`` raises :class:`~printfleet.errors.AuthFailed`,
    :class:`~printfleet.errors.RateLimited`, :class:`~printfleet.errors.SourceUnavailable` or
    :class:`~printfleet.errors.BadResponse`; a malformed *record* is never an exception (it is
    logged, counted and listed in ``skipped``).
    """

    @property
    def name(self) -> str: ...

    @property
    def vendor(self) -> Vendor: ...

    async def fetch_printers(self) -> Snapshot:
        """All printers with their live state and current print (``runs`` holds what the
        printer records themselves say about recently ended prints, e.g. Formlabs
        ``previous_print_run``)."""
        ...

    async def fetch_runs(
        self, *, since: datetime | None = None, lookups: Sequence[PrintLookup] = ()
    ) -> RunBatch:
        """Print runs that changed since ``since`` (none when ``None``) plus the ``lookups``."""
        ...

    async def fetch_inventory(self) -> Inventory:
        """Tanks and cartridges (empty for vendors without them)."""
        ...

    async def fetch_queues(self) -> QueueBatch | None:
        """Job queues from endpoints of their own (Formlabs Fleet Control groups), or ``None``
        when the printer fetch already carries them in ``Snapshot.queues`` (Carbon)."""
        ...

    def budget(self) -> BudgetStatus:
        """The request budget right now (no I/O)."""
        ...

    async def aclose(self) -> None:
        """Release connections. The source cannot be used afterwards."""
        ...
