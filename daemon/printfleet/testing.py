"""Test doubles printfleet ships for its own tests and for anyone embedding it, as httpx ships
``MockTransport``: a clock that moves only when told, and a sink that records what it is given.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Self, TypeVar

from printfleet.clock import Clock
from printfleet.core.delivery import Delivery
from printfleet.errors import DeliveryFailed
from printfleet.lifecycle import Lifecycle

T = TypeVar("T")


class FakeClock:
    """A clock that moves only when a test calls :meth:`advance` (or :meth:`run_until`).

    ``sleep`` parks the caller until the fake time reaches its deadline; ``advance``
    wakes every sleeper whose deadline has passed, in deadline order, and lets the
    event loop run them before returning.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._start = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._elapsed = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> datetime:
        return self._start + timedelta(seconds=self._elapsed)

    def monotonic(self) -> float:
        return self._elapsed

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._elapsed + seconds, next(self._seq), future))
        await future

    @property
    def next_deadline(self) -> float | None:
        """Monotonic time of the earliest pending sleeper, if any."""
        self._drop_cancelled()
        return self._sleepers[0][0] if self._sleepers else None

    def _drop_cancelled(self) -> None:
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, waking sleepers in deadline order."""
        target = self._elapsed + seconds
        while True:
            await _settle()
            self._drop_cancelled()
            if not self._sleepers or self._sleepers[0][0] > target:
                break
            deadline, _, future = heapq.heappop(self._sleepers)
            self._elapsed = max(self._elapsed, deadline)
            if not future.done():
                future.set_result(None)
        self._elapsed = target
        await _settle()

    async def run_until(self, deadline: float) -> None:
        """Advance to the absolute monotonic time ``deadline``."""
        await self.advance(max(0.0, deadline - self._elapsed))

    async def drive(self, work: Awaitable[T], *, max_steps: int = 1_000_000) -> T:
        """Run ``work`` to completion, jumping to each sleeper's deadline whenever nothing
        else is ready (so retries, backoffs and budget waits take no real time)."""
        task = asyncio.ensure_future(work)
        for _ in range(max_steps):
            await asyncio.sleep(0)
            if task.done():
                return task.result()
            deadline = self.next_deadline
            if deadline is not None:
                await self.run_until(deadline)
        task.cancel()
        raise RuntimeError(f"not finished after {max_steps} scheduling steps")


async def _settle(rounds: int = 5) -> None:
    """Let ready tasks run so that work triggered by a wake-up gets scheduled."""
    for _ in range(rounds):
        await asyncio.sleep(0)


#: What a scripted attempt does: ``None`` succeeds, a ``DeliveryFailed`` is raised.
Outcome = DeliveryFailed | None


@dataclass(frozen=True, slots=True)
class Attempt:
    """One call of :meth:`RecordingSink.deliver` and how it ended (``ok`` or ``failed``)."""

    delivery: Delivery
    at: datetime | None
    monotonic: float | None
    outcome: str


class RecordingSink:
    """An in-memory sink for tests and ``printfleet rules test``: records what it is given.

    Args:
        name: the sink name.
        script: outcomes of the next calls, in order (``None`` = success, a ``DeliveryFailed``
            is raised); once used up every call succeeds.
        fail: decides the outcome per delivery instead (consulted after ``script`` is used up).
        clock: when given, each attempt records the clock's time, and ``latency`` seconds are
            slept on it before the outcome (so tests can overlap deliveries without real time).
        latency: simulated time one delivery takes.
    """

    def __init__(
        self,
        name: str = "recording",
        *,
        script: Iterable[Outcome] = (),
        fail: Callable[[Delivery], Outcome] | None = None,
        clock: Clock | None = None,
        latency: float = 0.0,
    ) -> None:
        self._name = name
        self._script: deque[Outcome] = deque(script)
        self._fail = fail
        self._clock = clock
        self._latency = latency
        self._life = Lifecycle(f"sink {name!r}")
        self.attempts: list[Attempt] = []
        self.in_flight = 0
        self.max_in_flight = 0

    @property
    def name(self) -> str:
        return self._name

    @property
    def delivered(self) -> list[Delivery]:
        """Deliveries that succeeded, in the order they were accepted."""
        return [a.delivery for a in self.attempts if a.outcome == "ok"]

    def add_script(self, *outcomes: Outcome) -> None:
        """Append outcomes for the next calls."""
        self._script.extend(outcomes)

    async def __aenter__(self) -> Self:
        self._life.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._life.close()

    async def deliver(self, delivery: Delivery) -> None:
        """Record ``delivery`` and succeed or fail as scripted."""
        self._life.check_open()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            at = self._clock.now() if self._clock else None
            mono = self._clock.monotonic() if self._clock else None
            if self._clock is not None and self._latency > 0:
                await self._clock.sleep(self._latency)
            if self._script:
                outcome = self._script.popleft()
            else:
                outcome = self._fail(delivery) if self._fail is not None else None
            self.attempts.append(Attempt(delivery, at, mono, "ok" if outcome is None else "failed"))
            if outcome is not None:
                raise outcome
        finally:
            self.in_flight -= 1
