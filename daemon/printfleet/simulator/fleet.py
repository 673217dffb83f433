"""The simulated fleet's state: accounts, printers, print runs, consumables, vendor events.

Plain mutable records, owned by the lifecycle engine and read by the renderers, always under the
simulator's lock. Times are integer simulated seconds since the Unix epoch.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from printfleet.simulator import catalog
from printfleet.simulator.rng import Rng

# Printer phases (what the printer is doing between runs); a run's own status is in Run.status.
IDLE = "idle"
OFFLINE = "offline"
MAINTENANCE = "maintenance"
RUNNING = "running"
LINGER = "linger"  # a terminal run still shown as current_print_run until someone clears it


@dataclass(frozen=True, slots=True)
class User:
    """A Formlabs ``BasicUser``."""

    id: int
    username: str
    first_name: str
    last_name: str

    @property
    def email(self) -> str:
        return f"{self.username}@example.com"


@dataclass(frozen=True, slots=True)
class Group:
    """A Formlabs ``PrinterGroup`` / ``Workgroup``."""

    id: str
    name: str
    created_at: int
    has_fleet_control: bool


@dataclass(slots=True, eq=False)
class Segment:
    """One stretch of a run's planned timeline; ``work`` is printing seconds done at ``start``."""

    start: int
    status: str
    work: int


@dataclass(slots=True, eq=False)
class Run:
    """One print job, from queue to its terminal state. Vendor-neutral; renderers add the dress."""

    seq: int
    guid: str
    print_id: str
    build_uuid: str
    name: str
    printer_serial: str
    machine_type_id: str
    material: str
    material_name: str
    layer_count: int
    layer_thickness_mm: float
    volume_ml: float
    preprint_s: int
    print_s: int
    postcoat_s: int
    user: User
    group: Group | None
    firmware: str
    tank: str | None
    cartridges: tuple[str, ...]
    dual: bool
    created_at: int
    status: str = catalog.QUEUED
    started_at: int | None = None
    finished_at: int | None = None
    message: str | None = None
    timeline: list[Segment] = field(default_factory=list)
    seg_index: int = 0
    verdict: str | None = None
    verdict_at: int | None = None
    note: str | None = None  # Formlabs PrintRunNote text, shown note_delay_s after the run ends
    note_delay_s: int = 0
    legacy: bool = False  # Formlabs: rendered in the 0.8.0 shape (with probably_finished)
    form_auto: str | None = None  # Formlabs: serial of the Form Auto that harvests this run
    harvest: str | None = None  # Formlabs harvest_status once the run ended (Form Auto only)

    @property
    def estimated_s(self) -> int:
        return self.preprint_s + self.print_s + self.postcoat_s

    @property
    def terminal(self) -> bool:
        return self.status in catalog.TERMINAL

    def segment_at(self, t: int) -> Segment | None:
        """The timeline segment in force at ``t`` (None before the run starts)."""
        if not self.timeline:
            return None
        index = bisect_right([s.start for s in self.timeline], t) - 1
        return self.timeline[index] if index >= 0 else None

    def work_at(self, t: int) -> int:
        """Printing seconds done by ``t`` (pauses, pre-print and post-coat add none)."""
        seg = self.timeline[self.seg_index] if self.timeline else None
        if seg is None or seg.start > t:
            seg = self.segment_at(t)
        if seg is None:
            return 0
        if seg.status == catalog.PRINTING:
            return min(self.print_s, seg.work + (t - seg.start))
        return seg.work

    def remaining_at(self, t: int) -> int:
        """Estimated seconds until done, as a printer would report it at ``t``."""
        if self.status == catalog.FINISHED:
            return 0
        seg = self.segment_at(t)
        status = seg.status if seg else self.status
        if status in (catalog.QUEUED, catalog.PREPRINT, catalog.PREHEAT, catalog.PRECOAT):
            pre_end = (self.started_at or t) + self.preprint_s
            pre_left = max(0, pre_end - t) if self.started_at is not None else self.preprint_s
            return pre_left + self.print_s + self.postcoat_s
        if status == catalog.POSTCOAT and seg is not None:
            return max(0, seg.start + self.postcoat_s - t)
        return max(0, self.print_s - self.work_at(t)) + self.postcoat_s


@dataclass(slots=True, eq=False)
class Cartridge:
    """A Formlabs resin cartridge (``CartridgeReadOnly`` / ``Cartridge``)."""

    serial: str
    material: str
    display_name: str
    machine_type_id: str
    manufacture_date: int
    lot_number: str
    mechanical_version: str
    created_at: int
    connected_group: str | None
    inside_printer: str = ""
    slot: str | None = None
    initial_volume_ml: float = 1000.0
    volume_dispensed_ml: float = 0.0
    dispense_count: int | None = None
    write_count: int = 1
    last_print_date: int | None = None
    last_modified: int = 0
    low_reported: bool = False

    @property
    def remaining_ml(self) -> float:
        return self.initial_volume_ml - self.volume_dispensed_ml


@dataclass(slots=True, eq=False)
class Tank:
    """A Formlabs resin tank (``TankReadOnly`` / ``Tank``)."""

    serial: str
    material: str | None
    display_name: str
    tank_type: str | None
    manufacture_date: int
    lot_number: str
    mechanical_version: str
    created_at: int
    connected_group: str | None
    inside_printer: str = ""
    layers_printed: int | None = None
    print_time_ms: int | None = None
    first_fill_date: int | None = None
    write_count: int = 1
    last_print_date: int | None = None
    last_modified: int = 0
    has_gif: bool = True


@dataclass(slots=True, eq=False)
class VendorEvent:
    """A Formlabs ``UserEventReadOnly`` record (the ``/events/`` feed)."""

    id: int
    created_at: int
    type: str
    printer: str | None
    run: Run | None
    tank: str | None
    cartridge: str | None
    group: Group | None
    message: str


@dataclass(slots=True, eq=False)
class Printer:
    """One simulated printer of either vendor."""

    key: int  # fleet-wide ordinal: scheduling tie-breaker, so equal-time transitions stay ordered
    vendor: str
    account: Account
    serial: str
    name: str
    alias: str | None
    model: catalog.Model
    material: str
    material_name: str
    location: str | None
    group: Group | None
    hb_phase: int
    rng: Rng
    phase: str = IDLE
    online: bool = True
    frozen_obs: int = 0
    changed_at: int = 0
    run: Run | None = None
    next_run: Run | None = None
    last_run: Run | None = None
    cartridges: list[Cartridge] = field(default_factory=list)
    tank: Tank | None = None
    alerts: tuple[str, ...] = ()
    agenda: deque[tuple[int, str, int]] = field(default_factory=deque)
    seq: int = 0
    version: int = 0
    cache: tuple[tuple[object, ...], bytes] | None = None  # (render key, rendered JSON)
    # Formlabs single-cartridge printer sending cartridge_status as a one-element list.
    cartridge_list: bool = False
    # Formlabs: a spell of READY_TO_PRINT_NOT_READY in an idle gap (no job can start).
    not_ready: bool = False

    def touch(self, t: int, *, visible: bool = True) -> None:
        """Record a change (drops cached JSON); ``visible`` changes also move last_modified."""
        self.version += 1
        if visible:
            self.changed_at = t

    def cached_json(self, key: tuple[object, ...], render: Callable[[], bytes]) -> bytes:
        """``render()``'s JSON, reused until the printer changes or ``key`` differs."""
        full = (self.version, *key)
        if self.cache is None or self.cache[0] != full:
            self.cache = (full, render())
        return self.cache[1]

    def observed_at(self, now: int, heartbeat_s: int) -> int:
        """When the cloud last heard from the printer: its last heartbeat or pushed change.

        Live fields (layers, elapsed, remaining, ``last_pinged_at``, ``updated_at``) are sampled at
        this instant, so rendered JSON only changes on heartbeats and transitions.
        """
        if not self.online:
            return self.frozen_obs
        tick = now - ((now - self.hb_phase) % heartbeat_s)
        return max(tick, self.changed_at)


@dataclass(frozen=True, slots=True)
class QueueItem:
    """A Formlabs Fleet Control queue item (``DeveloperAPIMyCloudQueueItems``)."""

    id: str
    name: str
    volume_ml: float
    material_name: str
    created_at: int
    username: str
    machine_types: tuple[str, ...]


@dataclass(slots=True, eq=False)
class Account:
    """One vendor account (one set of credentials) and everything it owns."""

    vendor: str
    name: str
    client_id: str
    secret: str  # Formlabs client secret, or Carbon PEM private key
    public_pem: bytes = b""
    printers: dict[str, Printer] = field(default_factory=dict)
    runs: list[Run] = field(default_factory=list)
    runs_by_printer: dict[str, list[Run]] = field(default_factory=dict)
    events: list[VendorEvent] = field(default_factory=list)
    event_times: list[int] = field(default_factory=list)
    cartridges: list[Cartridge] = field(default_factory=list)
    tanks: list[Tank] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)
    users: list[User] = field(default_factory=list)
    # Fleet Control queues by group id, oldest item first (simulator.queues).
    queues: dict[str, list[QueueItem]] = field(default_factory=dict)
    queue_rng: Rng | None = None
    membership_version: int = 0
    sorted_cache: tuple[int, list[Printer]] | None = None

    def add_run(self, run: Run) -> None:
        """Publish a run in the account's history (kept in ``created_at`` order)."""
        self.runs.append(run)
        self.runs_by_printer.setdefault(run.printer_serial, []).append(run)

    def printers_by_name(self) -> list[Printer]:
        """Printers sorted by name (Carbon's ``/printers`` order), cached per membership change."""
        if self.sorted_cache is None or self.sorted_cache[0] != self.membership_version:
            ordered = sorted(self.printers.values(), key=lambda p: p.name)
            self.sorted_cache = (self.membership_version, ordered)
        return self.sorted_cache[1]
