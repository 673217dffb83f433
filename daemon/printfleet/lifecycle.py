"""The open → closed lifecycle every resource of printfleet follows (STYLE rule 5).

A source's HTTP helper, the webhook and MQTT sinks and the recording test sink are each opened
once with ``async with`` and, once closed, refuse use with a message naming them.
"""

from __future__ import annotations

from enum import Enum


class State(Enum):
    NEW = "new"
    OPEN = "open"
    CLOSED = "closed"


class Lifecycle:
    """Where one resource is in its life, and the errors for using it at the wrong time.

    Args:
        what: how messages name the resource, e.g. ``"webhook sink 'ops'"``.
    """

    __slots__ = ("_state", "_what")

    def __init__(self, what: str) -> None:
        self._what = what
        self._state = State.NEW

    @property
    def is_open(self) -> bool:
        return self._state is State.OPEN

    @property
    def is_closed(self) -> bool:
        return self._state is State.CLOSED

    def open(self) -> None:
        """Mark the resource open; a closed one cannot be reopened."""
        if self._state is State.CLOSED:
            raise RuntimeError(f"{self._what} was closed and cannot be reopened")
        self._state = State.OPEN

    def close(self) -> None:
        """Mark the resource closed (idempotent)."""
        self._state = State.CLOSED

    def check_open(self) -> None:
        """Raise unless the resource is open (entered and not yet closed)."""
        if self._state is State.CLOSED:
            raise RuntimeError(f"{self._what} is closed")
        if self._state is State.NEW:
            raise RuntimeError(f"{self._what} is not open (use 'async with')")

    def check_not_closed(self) -> None:
        """Raise if the resource was closed (for resources usable before ``async with``)."""
        if self._state is State.CLOSED:
            raise RuntimeError(f"{self._what} is closed")
