"""Time as a collaborator: the real clock for production, a fake one for tests.

Everything that waits or reads the time takes a ``Clock``, so tests can run hours of
simulated time in milliseconds without sleeping.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import Protocol, TypeVar

T = TypeVar("T")


class Clock(Protocol):
    """What printfleet needs to know about time."""

    def now(self) -> datetime:
        """The current wall-clock time, timezone-aware UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (cancellable)."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


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


def parse_duration(text: object) -> timedelta:
    """Parse ``"90s"``, ``"5m"``, ``"1h30m"``, ``"2d"``, ``"250ms"`` or a number of seconds.

    Raises:
        ValueError: with a message saying which forms are accepted (also for booleans, tables,
            lists, NaN, infinity and durations too long to represent).
    """
    if isinstance(text, timedelta):
        return text
    hint = "write a number and a unit (ms, s, m, h, d, w), e.g. '30s', '5m', '1h30m'"
    if isinstance(text, bool) or not isinstance(text, str | int | float):
        raise ValueError(f"a duration must be text such as '30s' or a number of seconds; {hint}")
    if isinstance(text, int | float):
        return _seconds(float(text), text, hint)
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
    rest = text.strip().lower()
    if not rest:
        raise ValueError(f"empty duration; {hint}")
    total = 0.0
    while rest:
        number = ""
        while rest and (rest[0].isdigit() or rest[0] == "."):
            number, rest = number + rest[0], rest[1:]
        unit = ""
        while rest and rest[0].isalpha():
            unit, rest = unit + rest[0], rest[1:]
        rest = rest.lstrip()
        if not number or unit not in units:
            raise ValueError(f"invalid duration {text!r}; {hint}")
        try:
            total += float(number) * units[unit]
        except ValueError:
            raise ValueError(f"invalid number in duration {text!r}") from None
    return _seconds(total, text, hint)


# timedelta's limit is 999,999,999 days; nobody means a longer interval.
_MAX_SECONDS = 100 * 365 * 86400.0


def _seconds(value: float, text: object, hint: str) -> timedelta:
    if math.isnan(value):
        raise ValueError(f"{text!r} is not a duration; {hint}")
    if value < 0:
        raise ValueError("durations cannot be negative")
    if value > _MAX_SECONDS:
        raise ValueError(f"duration {text!r} is longer than 100 years; {hint}")
    return timedelta(seconds=value)


class ScaledClock:
    """Real time sped up ``speed`` times from ``start`` (the demo and the simulator share one).

    ``sleep(s)`` waits ``s / speed`` real seconds, so a daemon polling every 15 s of scaled time
    polls four times a real second at speed 60, and the simulated fleet moves just as fast.
    """

    def __init__(self, speed: float, start: datetime | None = None) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self._start = start or datetime.now(UTC)
        self._t0 = time.monotonic()

    def now(self) -> datetime:
        return self._start + timedelta(seconds=self.monotonic())

    def monotonic(self) -> float:
        return (time.monotonic() - self._t0) * self.speed

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.speed)
