"""What every sink offers the outbox (which knows only this protocol), and an in-memory sink."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Protocol, Self

from printfleet.clock import Clock
from printfleet.core.delivery import Delivery
from printfleet.errors import DeliveryFailed


class Sink(Protocol):
    """A destination for deliveries: MQTT, a webhook receiver, a recording list.

    Used as ``async with sink: ...``; ``deliver`` may only be called inside that block.
    """

    @property
    def name(self) -> str:
        """The sink's name, as in ``Delivery.sink`` and the ``sink`` metric label."""
        ...

    async def deliver(self, delivery: Delivery) -> None:
        """Send one delivery, returning once the receiver accepted it.

        Raises:
            DeliveryFailed: with ``retryable`` saying whether trying again later may help and
                ``retry_after`` when the receiver said how long to wait.
        """
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


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
        self._open = False
        self._closed = False
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
        if self._closed:
            raise RuntimeError(f"sink {self._name!r} was closed and cannot be reopened")
        self._open = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._open = False
        self._closed = True

    async def deliver(self, delivery: Delivery) -> None:
        """Record ``delivery`` and succeed or fail as scripted."""
        if not self._open:
            raise RuntimeError(f"sink {self._name!r} is not open (use 'async with')")
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
