"""Planning what happens next: a run's whole timeline, an idle gap, how long a result lingers.

Pure functions of a random stream. Everything is decided when a run starts (or a gap begins), so
the engine only has to replay the plan; the outcome never depends on how requests slice time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from printfleet.simulator import catalog
from printfleet.simulator.config import SimulatorConfig
from printfleet.simulator.fleet import Run, Segment
from printfleet.simulator.rng import Rng

MINUTE = 60
HOUR = 3600

# Gap actions (an idle printer's agenda); run timelines use the "seg" action instead.
GO_OFFLINE = "offline"
GO_ONLINE = "online"
MAINT_START = "maint_start"
MAINT_END = "maint_end"
START_RUN = "start"


@dataclass(frozen=True, slots=True)
class Profile:
    """How one vendor's API exposes the shared lifecycle."""

    vendor: str
    queued_phase: bool  # Formlabs shows a run as QUEUED on the printer before PREPRINT
    pauses: bool  # Carbon has no pause state in its API
    resolutions: bool  # WAITING_FOR_RESOLUTION is Formlabs vocabulary
    linger: bool  # a finished/failed run stays as current_print_run until cleared
    materials: bool  # cartridges, tanks and RESIN_LOW
    event_feed: bool  # the /events/ feed
    maintenance: bool  # the undocumented MAINTENANCE printer_state
    prequeue_probability: float  # chance a run queues its successor while printing (Carbon next)


PROFILES: dict[str, Profile] = {
    "formlabs": Profile("formlabs", True, True, True, True, True, True, False, 0.0),
    "carbon": Profile("carbon", False, False, False, False, False, False, True, 0.6),
}


@dataclass(frozen=True, slots=True)
class Odds:
    """Per-print and per-gap probabilities, taken from the config."""

    error: float
    abort: float
    pause: float
    resolution: float
    offline: float
    maintenance: float

    @classmethod
    def from_config(cls, config: SimulatorConfig) -> Odds:
        return cls(
            error=config.error_probability,
            abort=config.abort_probability,
            pause=config.pause_probability,
            resolution=config.resolution_probability,
            offline=config.offline_probability,
            maintenance=config.maintenance_probability,
        )


def print_duration(rng: Rng) -> int:
    """Printing time: log-uniform between 20 minutes and 6 hours (most jobs are short)."""
    return int(math.exp(rng.uniform(math.log(20 * MINUTE), math.log(6 * HOUR))))


def plan_run(run: Run, start: int, rng: Rng, profile: Profile, odds: Odds) -> list[Segment]:
    """The run's timeline from ``start`` to its terminal status, as consecutive segments.

    QUEUED (Formlabs) -> PREPRINT (-> PREHEAT -> PRECOAT) -> PRINTING, with optional detours
    (PAUSING -> PAUSED -> PRINTING; WAITING_FOR_RESOLUTION -> PRINTING or ERROR), ending in
    FINISHED (via POSTCOAT on Form 4), ERROR at a random point, or ABORTING -> ABORTED.
    """
    segments: list[Segment] = []
    t = start

    def add(status: str, work: int) -> None:
        segments.append(Segment(t, status, work))

    if profile.queued_phase:
        add(catalog.QUEUED, 0)
        t += rng.randint(30, 150)
    preheat = run.postcoat_s > 0  # the Form 4 family has both extra phases
    preprint = run.preprint_s * 2 // 3 if preheat else run.preprint_s
    add(catalog.PREPRINT, 0)
    t += preprint
    if preheat:
        # The rest of the pre-print time split between heating the resin and coating the
        # tank, without drawing from ``rng`` (the seeded timelines stay what they were).
        add(catalog.PREHEAT, 0)
        heat = (run.preprint_s - preprint) // 2
        t += heat
        add(catalog.PRECOAT, 0)
        t += run.preprint_s - preprint - heat

    roll = rng.random()
    fate = "finish"
    if roll < odds.error:
        fate = "error"
    elif roll < odds.error + odds.abort:
        fate = "abort"
    fate_at = int(run.print_s * rng.uniform(0.05, 0.95)) if fate != "finish" else run.print_s

    detours: list[tuple[int, str]] = []
    if profile.pauses and rng.chance(odds.pause):
        detours.append((int(run.print_s * rng.uniform(0.05, 0.9)), "pause"))
    if profile.resolutions and rng.chance(odds.resolution):
        detours.append((int(run.print_s * rng.uniform(0.05, 0.9)), "resolution"))
    detours = sorted(d for d in detours if d[0] < fate_at)

    work = 0
    add(catalog.PRINTING, 0)
    for point, kind in detours:
        t += point - work
        work = point
        if kind == "pause":
            add(catalog.PAUSING, work)
            t += rng.randint(10, 40)
            add(catalog.PAUSED, work)
            t += rng.randint(2 * MINUTE, 30 * MINUTE)
            add(catalog.PRINTING, work)
        else:
            add(catalog.WAITING_FOR_RESOLUTION, work)
            t += rng.randint(3 * MINUTE, 40 * MINUTE)
            if rng.chance(0.25):
                add(catalog.ERROR, work)
                return segments
            add(catalog.PRINTING, work)

    t += fate_at - work
    work = fate_at
    if fate == "error":
        add(catalog.ERROR, work)
    elif fate == "abort":
        add(catalog.ABORTING, work)
        t += rng.randint(20, 90)
        add(catalog.ABORTED, work)
    else:
        if run.postcoat_s:
            add(catalog.POSTCOAT, work)
            t += run.postcoat_s
        add(catalog.FINISHED, work)
    return segments


def plan_gap(start: int, rng: Rng, profile: Profile, odds: Odds) -> list[tuple[int, str]]:
    """An idle gap's agenda ending in START_RUN; maybe with an offline or maintenance spell."""
    length = int(5 * MINUTE + min(rng.expo(40 * MINUTE), 4 * HOUR))
    items: list[tuple[int, str]] = []
    end = start + length
    if rng.chance(odds.offline):
        leave = start + rng.randint(0, length // 2)
        back = leave + int(math.exp(rng.uniform(math.log(10 * MINUTE), math.log(3 * HOUR))))
        items += [(leave, GO_OFFLINE), (back, GO_ONLINE)]
        end = max(end, back + rng.randint(1 * MINUTE, 10 * MINUTE))
    elif profile.maintenance and rng.chance(odds.maintenance):
        begin = start + rng.randint(0, length // 2)
        done = begin + rng.randint(15 * MINUTE, 90 * MINUTE)
        items += [(begin, MAINT_START), (done, MAINT_END)]
        end = max(end, done + rng.randint(1 * MINUTE, 10 * MINUTE))
    items.append((end, START_RUN))
    return items


def linger_s(status: str, rng: Rng, profile: Profile) -> int:
    """How long a terminal run stays on the printer before someone clears it.

    Errors wait for an operator longer; some finished prints are cleared at once, so a poller
    can see a run vanish without ever seeing its terminal status.
    """
    if not profile.linger:
        return 0
    if status == catalog.ERROR:
        return rng.randint(5 * MINUTE, 60 * MINUTE)
    if rng.chance(0.3):
        return 0
    return rng.randint(1 * MINUTE, 15 * MINUTE)
