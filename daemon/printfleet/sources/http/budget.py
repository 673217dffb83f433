"""The request budget of one source, kept on our side so the vendor never has to say 429.

Vendors publish request caps (Formlabs per hour and per second, Carbon per 10 s); a source
spends from a :class:`RequestBudget` before each request, waits (bounded) when it is empty,
and pauses entirely after a 429. Times are the injected clock's monotonic seconds, so tests
drive the windows with a fake clock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from printfleet.clock import Clock
from printfleet.sources.base import BudgetStatus

_EPSILON = 1e-6


class WindowLimit:
    """At most ``limit`` requests in any ``window_s`` seconds.

    A token bucket whose tokens come back exactly ``window_s`` after they were spent (a sliding
    log). Unlike a refilling bucket that starts full, it can never let ``2 * limit`` requests
    through in one window, whether the vendor counts in fixed or in sliding windows.
    """

    __slots__ = ("_spent", "limit", "window_s")

    def __init__(self, limit: int, window_s: float) -> None:
        if limit < 1 or window_s <= 0:
            raise ValueError("a window limit needs limit >= 1 and window_s > 0")
        self.limit = limit
        self.window_s = window_s
        self._spent: deque[float] = deque()

    @classmethod
    def per_second(cls, rate: float) -> WindowLimit:
        """A cap of ``rate`` requests per second (fractional rates become a longer window)."""
        if rate <= 0:
            raise ValueError("rate must be positive")
        limit = max(1, int(rate))
        return cls(limit, limit / rate)

    def _expire(self, now: float) -> None:
        horizon = now - self.window_s + _EPSILON
        while self._spent and self._spent[0] <= horizon:
            self._spent.popleft()

    def remaining(self, now: float) -> int:
        self._expire(now)
        return self.limit - len(self._spent)

    def wait(self, now: float) -> float:
        """Seconds until one more request fits (0 when it fits now)."""
        self._expire(now)
        if len(self._spent) < self.limit:
            return 0.0
        return max(0.0, self._spent[0] + self.window_s - now)

    def spend(self, now: float) -> None:
        self._spent.append(now)


class RequestBudget:
    """The request budget of one source: one or more :class:`WindowLimit` plus a 429 pause.

    The first limit is the *primary* one reported by :meth:`status` (Formlabs: the hourly
    budget; Carbon: the 10-second window). Times are the injected clock's monotonic seconds.
    """

    def __init__(self, clock: Clock, limits: Sequence[WindowLimit]) -> None:
        if not limits:
            raise ValueError("a request budget needs at least one limit")
        self._clock = clock
        self._limits = tuple(limits)
        self._paused_until: float | None = None

    @classmethod
    def formlabs(
        cls, clock: Clock, *, per_hour: int = 1350, per_second: float = 10.0
    ) -> RequestBudget:
        """Formlabs: ``per_hour`` (default 90% of the documented 1500/h) and a per-second cap."""
        return cls(clock, [WindowLimit(per_hour, 3600.0), WindowLimit.per_second(per_second)])

    @classmethod
    def carbon(cls, clock: Clock, *, per_10s: int = 90) -> RequestBudget:
        """Carbon: ``per_10s`` requests per 10 s (default 90: 90% of the lower documented cap)."""
        return cls(clock, [WindowLimit(per_10s, 10.0)])

    def pause_remaining(self) -> float:
        """Seconds left of a 429 pause (0 when not paused)."""
        if self._paused_until is None:
            return 0.0
        left = self._paused_until - self._clock.monotonic()
        if left <= 0:
            self._paused_until = None
            return 0.0
        return left

    def pause(self, seconds: float) -> None:
        """Send nothing for ``seconds`` (a 429 said so); never shortens a longer pause."""
        until = self._clock.monotonic() + max(0.0, seconds)
        if self._paused_until is None or until > self._paused_until:
            self._paused_until = until

    def wait(self) -> float:
        """Seconds until the next request fits every limit (ignoring a pause)."""
        now = self._clock.monotonic()
        return max(limit.wait(now) for limit in self._limits)

    def spend(self) -> None:
        now = self._clock.monotonic()
        for limit in self._limits:
            limit.spend(now)

    def status(self) -> BudgetStatus:
        primary = self._limits[0]
        now = self._clock.monotonic()
        self.pause_remaining()
        return BudgetStatus(
            remaining=float(primary.remaining(now)),
            capacity=float(primary.limit),
            window_s=primary.window_s,
            paused_until=self._paused_until,
        )
