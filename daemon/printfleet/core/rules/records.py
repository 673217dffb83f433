"""The engine's working records: one event occurrence, one condition, one group batch.

Mutable and private to the rule package: the engine keeps them in its tables and
:mod:`~printfleet.core.rules.state` turns them into JSON-able data and back. They live apart from
the engine so that both can read them without importing each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from printfleet.core.rules.names import event_names, split_source


@dataclass(slots=True)
class Cond:
    """A rule waiting (``pending``) or ``firing`` for one subject; engine-private, mutable."""

    rule: str
    source: str
    subject: str
    type: str
    disc: str
    phase: Literal["pending", "firing"]
    since: datetime
    due: datetime | None
    event: Mapping[str, Any]
    notified: bool = False
    repeats: int = 0
    seq: int = -1

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        return (self.rule, self.source, self.subject, self.type, self.disc)


@dataclass(slots=True)
class Batch:
    """Notifications of one rule and group key waiting ``group_wait`` to go out together."""

    rule: str
    status: Literal["firing", "resolved"]
    values: tuple[str, ...]
    due: datetime
    event: Mapping[str, Any]  # the first member's event (the payload's ``event``)
    render: Mapping[str, Any]  # the event its wording is rendered from (the firing one)
    status_id: str
    members: list[tuple[str, str, str]] = field(default_factory=list)  # source, subject, name
    seq: int = -1

    @property
    def key(self) -> tuple[str, str, tuple[str, ...]]:
        return (self.rule, self.status, self.values)


class Occurrence:
    """One event with its names built lazily (only when some rule needs them)."""

    __slots__ = ("_names", "data", "event", "id", "source", "subject", "type")

    def __init__(self, event: Mapping[str, Any]) -> None:
        self.event = event
        data = event.get("data")
        self.data: Mapping[str, Any] = data if isinstance(data, Mapping) else {}
        self.type = str(event.get("type") or "")
        self.id = str(event.get("id") or "")
        self.source = split_source(event.get("source"))[0]
        self.subject = str(event.get("subject") or "")
        self._names: dict[str, Any] | None = None

    @property
    def names(self) -> dict[str, Any]:
        if self._names is None:
            self._names = event_names(self.event)
        return self._names

    @property
    def disc(self) -> str:
        return str(self.data.get("alert") or "") if self.type == "printer.alert" else ""
