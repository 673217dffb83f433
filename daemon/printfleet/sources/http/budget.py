"""The request budget of one source, kept on our side so the vendor never has to say 429.

Vendors publish request caps (Formlabs per hour and per second, Carbon per 10 s); a source
spends from a :class:`RequestBudget` before each request, waits (bounded) when it is empty,
and pauses entirely after a 429. Times are the injected clock's monotonic seconds, so tests
drive the windows with a fake clock.

Some caps are not per account but per calling IP (Formlabs: 100 requests/s), so every source
of one vendor host shares them: a :class:`HostLimit` (one per vendor and host, from
:class:`HostLimits`) hands out send times first come, first served on top of each source's
own budget.
"""

from __future__ import annotations

import weakref
from collections import deque
from collections.abc import Iterator, Sequence

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

    def booked(self) -> tuple[float, ...]:
        """The times spent or booked that still count (oldest first)."""
        return tuple(self._spent)

    def next_slot(self, now: float) -> float:
        """The earliest time at or after ``now`` when one more request fits, counting
        requests already booked for later (see :meth:`HostLimit.reserve`)."""
        self._expire(now)
        if len(self._spent) < self.limit:
            return now
        # Booked times only ever grow, so the ``limit``-th newest decides the next free one.
        return max(now, self._spent[-self.limit] + self.window_s)


class HostLimit:
    """A requests-per-second cap shared by every source that calls one vendor host.

    Sources *reserve* a send time instead of polling for room: each reservation is booked at
    once at the earliest time that keeps the window within its limit, so waiters are served in
    the order they asked (no source starves, and no crowd wakes at the same instant to race
    for one free place). A reservation abandoned by a cancelled request stays booked: it wastes
    one place for one window, which is the safe direction.

    Booked times are also at least ``1 / rate`` apart. The window alone would let a full
    window's worth go at once whenever it frees up; the vendor counts when requests *arrive*,
    and network jitter can then shift a burst sent at the end of one window into the next
    one (twice the limit in a second, as the vendor sees it). Paced, a delay of ``d``
    seconds moves at most ``d * rate`` requests across a window's edge.

    The first tenth of a window's limit goes unpaced (a poll's few requests, a test on a
    clock nobody advances): the same tenth is all a burst can push across an edge, and the
    vendor's limit is a tenth above ours (90 of 100/s).

    Bookings are a plan; :meth:`claim` checks the real send time against what was really
    sent. An event loop that stalls wakes every overdue sender at once: their plan says
    "fine", the real clock says "a burst". A claim that would break the limit (or follow
    the previous send much sooner than the spacing) is refused and its sender books again.

    ``brake`` stops new sends for a while (a 429 said the host is throttling us); reservations
    made later start after it, earlier ones that fall inside it are re-made by their owners.
    """

    def __init__(self, clock: Clock, rate: float, *, vendor: str, host: str) -> None:
        self._clock = clock
        self.vendor = vendor
        self.host = host
        self._window = WindowLimit.per_second(rate)
        self.rate = rate
        self._braked_until = 0.0
        self._next_free = 0.0  # the last booked time plus the spacing
        self._sent = WindowLimit.per_second(rate)  # real send times (claims)
        self._last_sent = float("-inf")
        self._burst = max(1, int(rate / 10))

    def __repr__(self) -> str:
        return f"HostLimit({self.vendor}, {self.host}, {self.rate:g}/s)"

    @property
    def window_s(self) -> float:
        return self._window.window_s

    def set_rate(self, rate: float) -> None:
        """Change the cap (a source built from a newer config); bookings so far still count."""
        if rate == self.rate:
            return
        self._window = _moved(self._window, rate)
        self._sent = _moved(self._sent, rate)
        self.rate = rate
        self._burst = max(1, int(rate / 10))

    def brake_remaining(self) -> float:
        """Seconds left of a brake (0 when none)."""
        return max(0.0, self._braked_until - self._clock.monotonic())

    def brake(self, seconds: float) -> None:
        """Book nothing to start before ``seconds`` from now (never shortens a brake)."""
        self._braked_until = max(self._braked_until, self._clock.monotonic() + max(0.0, seconds))

    def reserve(self, max_wait: float) -> float | None:
        """Book one send; return the seconds to wait for it (0: send now).

        ``None`` (nothing booked) when the booked time would be more than ``max_wait`` away:
        the caller gives up instead of joining a queue it would not outlast.
        """
        now = self._clock.monotonic()
        start = max(now, self._braked_until)
        if _used(self._window, now) >= self._burst:
            start = max(start, self._next_free)
        slot = self._window.next_slot(start)
        wait = slot - now
        if wait > max(0.0, max_wait):
            return None
        self._window.spend(slot)
        self._next_free = slot + 1.0 / self.rate
        return wait

    def claim(self) -> bool:
        """Send now on a booking that is due: ``False`` (book again) when sending now would
        put more than the limit into one window of real send times, would follow the last
        send by less than half the spacing, or falls into a brake."""
        now = self._clock.monotonic()
        if (
            self._sent.wait(now) > 0
            or (_used(self._sent, now) >= self._burst and now - self._last_sent < 0.5 / self.rate)
            or self.brake_remaining() > 0
        ):
            return False
        self._sent.spend(now)
        self._last_sent = now
        return True


def _used(limit: WindowLimit, now: float) -> int:
    """Requests spent or booked in ``limit``'s current window."""
    return limit.limit - limit.remaining(now)


def _moved(limit: WindowLimit, rate: float) -> WindowLimit:
    """A window limit at ``rate`` holding what ``limit`` counted so far."""
    fresh = WindowLimit.per_second(rate)
    for moment in limit.booked():
        fresh.spend(moment)
    return fresh


class HostLimits:
    """The :class:`HostLimit` of each (vendor, host) in one process, made on first use.

    :meth:`shared` gives the one registry of a clock, so every source built with that clock
    (at start-up or later) shares its host's limit without being handed a registry.
    """

    _by_clock: weakref.WeakKeyDictionary[Clock, HostLimits] = weakref.WeakKeyDictionary()

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._limits: dict[tuple[str, str], HostLimit] = {}

    @classmethod
    def shared(cls, clock: Clock) -> HostLimits:
        """The registry of ``clock`` (one per clock, so tests with fake clocks stay apart)."""
        found = cls._by_clock.get(clock)
        if found is None:
            found = cls._by_clock[clock] = cls(clock)
        return found

    def get(self, vendor: str, host: str, rate: float) -> HostLimit | None:
        """The limit of ``vendor`` at ``host`` at ``rate`` requests/s; ``None`` when 0 (off)."""
        if rate <= 0:
            return None
        key = (vendor, host)
        limit = self._limits.get(key)
        if limit is None:
            limit = self._limits[key] = HostLimit(self._clock, rate, vendor=vendor, host=host)
        else:
            limit.set_rate(rate)
        return limit

    def __iter__(self) -> Iterator[HostLimit]:
        return iter(list(self._limits.values()))


class RequestBudget:
    """The request budget of one source: one or more :class:`WindowLimit` plus a 429 pause.

    The first limit is the *primary* one reported by :meth:`status` (Formlabs: the hourly
    budget; Carbon: the 10-second window). Times are the injected clock's monotonic seconds.
    """

    def __init__(
        self, clock: Clock, limits: Sequence[WindowLimit], *, host: HostLimit | None = None
    ) -> None:
        if not limits:
            raise ValueError("a request budget needs at least one limit")
        self._clock = clock
        self._limits = tuple(limits)
        self._paused_until: float | None = None
        self.host = host
        """The limit this source shares with every source of its vendor host (or none)."""

    @classmethod
    def formlabs(
        cls,
        clock: Clock,
        *,
        per_hour: int = 1350,
        per_second: float = 10.0,
        host: HostLimit | None = None,
    ) -> RequestBudget:
        """Formlabs: ``per_hour`` (default 90% of the documented 1500/h) and a per-second cap."""
        return cls(
            clock, [WindowLimit(per_hour, 3600.0), WindowLimit.per_second(per_second)], host=host
        )

    @classmethod
    def carbon(
        cls, clock: Clock, *, per_10s: int = 90, host: HostLimit | None = None
    ) -> RequestBudget:
        """Carbon: ``per_10s`` requests per 10 s (default 90: 90% of the lower documented cap)."""
        return cls(clock, [WindowLimit(per_10s, 10.0)], host=host)

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
