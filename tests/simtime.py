"""Run asyncio tasks in simulated time: real I/O while fake time stands still.

A :class:`SimDriver` owns a :class:`DrivenClock` (a :class:`~printfleet.testing.FakeClock` that
knows which tasks are parked in ``sleep``) and the tasks it spawned. :meth:`SimDriver.run_until`
repeats two steps until the target time:

1. wait, in *real* time and bounded, until every driven task is parked in ``clock.sleep`` (or
   done) — meanwhile real HTTP to the simulator, which shares the clock (``now=clock.now``),
   happens at one frozen simulated instant;
2. advance the clock to the earliest pending deadline, waking exactly the sleepers due then.

Waiting is event driven (a park signals the driver), never a busy loop: the simulator's server
threads live in this process and need the GIL while we wait for their answers.

Usage::

    clock = DrivenClock(start)
    driver = SimDriver(clock)
    driver.spawn(poller.run(), name="lab")
    await driver.run_until(clock.now() + timedelta(hours=24))
    await driver.aclose()

:func:`run_fleet` packages the common case: a simulated Formlabs account watched by the real
source and poller for a span of simulated time, returning ground truth, detections and the
simulator's request log (used by ``tests/integration/test_simulated_day.py`` and
``tests/bench/bench_scheduler.py``).

The driver needs no change to :class:`FakeClock`: :class:`DrivenClock` only wraps ``sleep``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from pydantic import SecretStr

from printfleet.config import SourceConfig
from printfleet.core.events import ChangeEvent
from printfleet.core.polling import PollPolicy
from printfleet.core.thresholds import DiffSettings
from printfleet.observe import NullObserver
from printfleet.poller import Cycle, SourcePoller
from printfleet.simulator import GroundTruthEvent, RequestRecord, Simulator, SimulatorConfig
from printfleet.sources.factory import make_source
from printfleet.testing import FakeClock


class DriverStuck(AssertionError):
    """A driven task neither parked in ``clock.sleep`` nor finished within the real-time bound."""


class DrivenClock(FakeClock):
    """A :class:`FakeClock` that tracks which tasks are parked in :meth:`sleep`.

    Only sleeps of positive length count: ``sleep(0)`` yields once and returns by itself, so a
    task in it is still running at the current instant.
    """

    def __init__(self, start: datetime | None = None) -> None:
        super().__init__(start)
        self._parked: dict[asyncio.Task[Any], int] = {}
        self._signal: asyncio.Event | None = None

    async def sleep(self, seconds: float) -> None:
        task = asyncio.current_task()
        if seconds <= 0 or task is None:
            await super().sleep(seconds)
            return
        self._parked[task] = self._parked.get(task, 0) + 1
        if self._signal is not None:
            self._signal.set()
        try:
            await super().sleep(seconds)
        finally:
            left = self._parked[task] - 1
            if left:
                self._parked[task] = left
            else:
                del self._parked[task]

    def is_parked(self, task: asyncio.Task[Any]) -> bool:
        """Whether ``task`` is waiting in :meth:`sleep` for the fake time to move."""
        return task in self._parked

    @property
    def parked_count(self) -> int:
        """How many tasks are parked in :meth:`sleep`."""
        return len(self._parked)

    def park_signal(self) -> asyncio.Event:
        """A cleared event that the next park sets (created on first use, inside the loop)."""
        if self._signal is None:
            self._signal = asyncio.Event()
        self._signal.clear()
        return self._signal


class SimDriver:
    """Runs tasks in simulated time on a :class:`DrivenClock` (see the module docstring).

    Args:
        clock: the clock every driven task (and the simulator) uses.
        step_timeout: real seconds a step may wait for all tasks to park before
            :class:`DriverStuck` is raised (a hung request or a task blocked on something
            other than the clock).
    """

    def __init__(self, clock: DrivenClock, *, step_timeout: float = 30.0) -> None:
        self.clock = clock
        self.step_timeout = step_timeout
        self.tasks: list[asyncio.Task[Any]] = []
        self.steps = 0
        self.real_seconds = 0.0

    def spawn(
        self, coro: Coroutine[Any, Any, Any], *, name: str | None = None
    ) -> asyncio.Task[Any]:
        """Start ``coro`` as a driven task."""
        task = asyncio.create_task(coro, name=name)
        self.tasks.append(task)
        return task

    async def run_until(self, moment: datetime | float) -> None:
        """Advance simulated time to ``moment`` (a datetime, or the clock's monotonic seconds).

        Every sleeper due at or before ``moment`` is woken in deadline order, each time only
        after all driven tasks have parked again. Returns with the clock at ``moment`` and
        every task parked (or done).

        Raises:
            DriverStuck: a task did not park within ``step_timeout`` real seconds.
            BaseException: whatever a driven task died of (re-raised at once).
        """
        clock = self.clock
        target = (
            moment
            if isinstance(moment, int | float)
            else clock.monotonic() + (moment - clock.now()).total_seconds()
        )
        started = time.perf_counter()
        try:
            while True:
                await self.settle()
                deadline = clock.next_deadline
                if deadline is None or deadline > target:
                    break
                self.steps += 1
                await clock.run_until(deadline)
            await clock.run_until(target)
            await self.settle()
        finally:
            self.real_seconds += time.perf_counter() - started

    async def settle(self) -> None:
        """Wait (real time, bounded) until every driven task is parked or done."""
        deadline = time.perf_counter() + self.step_timeout
        while True:
            signal = self.clock.park_signal()
            for _ in range(3):  # let just-woken tasks reach their next await
                await asyncio.sleep(0)
            self._raise_failures()
            running = [t for t in self.tasks if not t.done() and not self.clock.is_parked(t)]
            if not running:
                return
            left = deadline - time.perf_counter()
            if left <= 0:
                names = ", ".join(t.get_name() for t in running)
                raise DriverStuck(
                    f"tasks not parked in clock.sleep after {self.step_timeout:.0f} real seconds "
                    f"at simulated {self.clock.now().isoformat()}: {names}"
                )
            waiter = asyncio.ensure_future(signal.wait())
            try:
                await asyncio.wait(
                    [waiter, *running], timeout=left, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                waiter.cancel()

    def _raise_failures(self) -> None:
        for task in self.tasks:
            if task.done() and not task.cancelled():
                error = task.exception()
                if error is not None:
                    raise error

    async def aclose(self) -> None:
        """Cancel every driven task and wait for them to finish."""
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


# --------------------------------------------------------------------------------------------
# One Formlabs account of the simulator, watched by the real source and poller


#: Simulated start of every fleet run: fixed, so a seed always replays the same day.
START = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)
FORMLABS_PRINTERS = "/developer/v1/printers/"


@dataclass(frozen=True, slots=True)
class Detection:
    """An event printfleet produced, and the simulated time of the poll cycle that produced it."""

    seen_at: datetime
    event: ChangeEvent


class CountingObserver(NullObserver):
    """Counts poll cycles and the failed ones (a refusal by our own limiter is one)."""

    def __init__(self) -> None:
        self.polls = 0
        self.failed_polls = 0

    def poll_done(self, source: str, seconds: float, ok: bool) -> None:
        self.polls += 1
        self.failed_polls += not ok


@dataclass(slots=True)
class FleetRun:
    """Everything one simulated run produced, for scoring."""

    start: datetime
    end: datetime
    truth: list[GroundTruthEvent]
    detections: list[Detection]
    requests: list[RequestRecord]
    polls: int
    failed_polls: int
    steps: int
    real_seconds: float
    cartridges: list[dict[str, Any]] = field(default_factory=list)

    def printer_polls(self) -> int:
        """How many ``GET /printers/`` the simulator served."""
        return sum(1 for r in self.requests if r.path.startswith(FORMLABS_PRINTERS))

    def max_requests_per_hour(self) -> tuple[int, datetime | None]:
        """The most requests in any sliding hour ``(t - 1h, t]``, and the ``t`` where it is."""
        times = sorted(r.time for r in self.requests)
        best, at, lo = 0, None, 0
        for hi, t in enumerate(times):
            while times[lo] <= t - timedelta(hours=1):
                lo += 1
            if hi - lo + 1 > best:
                best, at = hi - lo + 1, t
        return best, at


async def run_fleet(
    *,
    printers: int,
    seed: int,
    span: timedelta,
    policy: PollPolicy,
    budget_per_hour: int | None = None,
    offline_after: timedelta = timedelta(minutes=5),
    start: datetime = START,
    fixed_interval: float | None = None,
    inventory: bool = False,
    simulator: dict[str, Any] | None = None,
) -> FleetRun:
    """Run a simulated Formlabs fleet for ``span`` of simulated time under the real poller.

    The simulator (``printers`` Formlabs printers, ``seed``) and the daemon share one
    :class:`DrivenClock`; the source is built by the real ``make_source`` from a
    ``SourceConfig``, so the budget is the one a user would configure.

    Args:
        fixed_interval: poll every this many seconds whatever the policy says (the same poll
            cycle, history and lookups included: only the scheduler is replaced).
        inventory: after the run (and after ``requests`` was taken), read every cartridge
            record from the simulator's ``/cartridges/`` into :attr:`FleetRun.cartridges`.
    """
    clock = DrivenClock(start)
    detections: list[Detection] = []
    observer = CountingObserver()

    async def handle(cycle: Cycle) -> None:
        seen = clock.now()
        detections.extend(Detection(seen, event) for event in cycle.events)

    config = SimulatorConfig(
        formlabs_printers=printers,
        carbon_printers=0,
        vendors=("formlabs",),
        seed=seed,
        **(simulator or {}),
    )
    with Simulator(config, now=clock.now) as sim:
        async with httpx.AsyncClient() as client:
            source = make_source(
                SourceConfig(
                    name="lab",
                    vendor="formlabs",
                    client_id=sim.formlabs_client_id,
                    client_secret=SecretStr(sim.formlabs_client_secret),
                    base_url=sim.formlabs_url,
                    budget_per_hour=budget_per_hour,
                ),
                client=client,
                clock=clock,
                offline_after=offline_after,
                observer=observer,
            )
            poller = SourcePoller(
                source,
                handle=handle,
                clock=clock,
                policy=policy,
                diff_settings=DiffSettings(),
                observer=observer,
            )
            driver = SimDriver(clock)
            if fixed_interval is None:
                driver.spawn(poller.run(), name="poller:lab")
            else:
                driver.spawn(_fixed(poller, clock, fixed_interval), name="fixed:lab")
            try:
                await driver.run_until(start + span)
            finally:
                await driver.aclose()
                await source.aclose()
        truth = sim.ground_truth
        requests = sim.requests
        cartridges = await _cartridges(sim) if inventory else []
    return FleetRun(
        start=start,
        end=start + span,
        truth=truth,
        detections=detections,
        requests=requests,
        polls=observer.polls,
        failed_polls=observer.failed_polls,
        steps=driver.steps,
        real_seconds=driver.real_seconds,
        cartridges=cartridges,
    )


async def _fixed(poller: SourcePoller, clock: DrivenClock, interval: float) -> None:
    """The baseline scheduler: one poll cycle every ``interval`` seconds, nothing adaptive."""
    while True:
        await poller.poll_once()
        await clock.sleep(interval)


async def _cartridges(sim: Simulator) -> list[dict[str, Any]]:
    """Every cartridge record of the account, read over the simulator's own API."""
    base = f"{sim.formlabs_url}/developer/v1"
    async with httpx.AsyncClient() as client:
        token = await client.post(
            f"{base}/o/token/",
            data={
                "grant_type": "client_credentials",
                "client_id": sim.formlabs_client_id,
                "client_secret": sim.formlabs_client_secret,
            },
        )
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        records: list[dict[str, Any]] = []
        url: str | None = f"{base}/cartridges/?per_page=100"
        while url:
            page = (await client.get(url, headers=headers)).json()
            records.extend(page["results"])
            url = page["next"]
    return records
