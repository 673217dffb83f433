"""The simulator's clock: a caller's time source, or real time scaled by ``speed``.

Tests pass their own ``now`` callable (a fake clock shared with the daemon) and nothing moves until
they move it. Without one, simulated time starts at ``start`` and runs ``speed`` times faster
than the monotonic real clock (``speed=60``: one real second is one simulated minute).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Literal


class SimClock:
    """What time it is in the simulation, and on the clock that judges protocol deadlines."""

    def __init__(
        self,
        source: Callable[[], datetime] | None,
        *,
        start: datetime,
        speed: float,
        protocol: Literal["simulated", "wall"] = "simulated",
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = source
        self._start = start
        self._speed = speed
        self._protocol = protocol
        self._monotonic = monotonic
        self._origin = monotonic()
        self._shift = 0.0  # seconds added by advance_to() to the scaled clock
        self._floor: datetime | None = None  # advance_to() target under a caller's source

    def now(self) -> datetime:
        """The current simulated instant (aware UTC), never before an ``advance_to`` target."""
        if self._source is None:
            elapsed = (self._monotonic() - self._origin) * self._speed + self._shift
            return self._start + timedelta(seconds=elapsed)
        current = self._source()
        if current.tzinfo is None:
            raise ValueError("the simulator's `now` callable must return timezone-aware datetimes")
        if self._floor is not None and current < self._floor:
            return self._floor
        return current

    def advance_to(self, target: datetime) -> None:
        """Jump forward to ``target`` (no-op if already past it).

        The scaled clock keeps running from there; a caller's source is held at ``target`` until
        it catches up, so simulator and caller agree again afterwards.
        """
        current = self.now()
        if target <= current:
            return
        if self._source is None:
            self._shift += (target - current).total_seconds()
        else:
            self._floor = target

    def protocol_time(self, now: datetime) -> float:
        """Epoch seconds on the clock judging tokens, JWT ``exp``, cursors and rate limits."""
        return now.timestamp() if self._protocol == "simulated" else time.time()


def utc(moment: datetime) -> datetime:
    """``moment`` as aware UTC (naive values are taken to be UTC)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
