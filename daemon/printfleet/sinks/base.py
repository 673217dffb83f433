"""What every sink offers the outbox, which knows only this protocol."""

from __future__ import annotations

from types import TracebackType
from typing import Protocol, Self

from printfleet.core.delivery import Delivery


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
