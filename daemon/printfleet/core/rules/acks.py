"""Acknowledgements: "we know, stop repeating" for alerts that are firing now.

An :class:`Ack` (``printfleet ack RULE [match…]``) covers the firing conditions of one rule whose
notification fields (:func:`~printfleet.core.rules.windows.silence_fields`) its ``match``
accepts **and that were already firing when it was made**. A covered condition sends no more
``repeat`` notifications; its resolved notice still goes out. A firing that starts after the
ack (another printer, or the same alert firing again after it resolved) is not covered: it
notifies and repeats as usual. So an ack never hides news, only reminders.

``until resolved`` (``ends_at`` is ``None``) lasts until the covered alerts resolve; with a
duration the reminders come back when it ends if the alert is still firing (as with
Alertmanager's or PagerDuty's timed acknowledgements).

Acks are kept in the state store under ``"acks"`` beside the ad-hoc silences and read the
same way (:func:`acks_from_state`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from fnmatch import fnmatchcase
from types import MappingProxyType
from typing import Any

from printfleet.core.model import iso
from printfleet.core.rules.names import parse_time, required_time
from printfleet.core.rules.windows import check_match_fields

#: The state store key of the acks (a JSON list of :meth:`Ack.as_dict`).
ACKS_KEY = "acks"


@dataclass(frozen=True, slots=True)
class Ack:
    """One acknowledgement of the firing alerts of ``rule`` that ``match`` accepts."""

    id: str
    rule: str
    created_at: datetime
    match: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))
    #: ``None``: until the covered alerts resolve.
    ends_at: datetime | None = None
    comment: str = ""
    created_by: str = ""

    def __post_init__(self) -> None:
        check_match_fields(self.match)
        if self.created_at.tzinfo is None:
            raise ValueError("created_at needs a UTC offset")
        if self.ends_at is not None and self.ends_at <= self.created_at:
            raise ValueError("ends_at must be after created_at")
        object.__setattr__(self, "match", MappingProxyType(dict(self.match)))

    @property
    def until_resolved(self) -> bool:
        return self.ends_at is None

    def expired(self, now: datetime) -> bool:
        """Whether a timed ack has ended (an ``until resolved`` one ends with its alerts)."""
        return self.ends_at is not None and now >= self.ends_at

    def covers(
        self, rule: str, firing_since: datetime, fields: Mapping[str, str | None], now: datetime
    ) -> bool:
        """Whether a condition of ``rule`` firing since ``firing_since`` is acknowledged."""
        if rule != self.rule or firing_since > self.created_at or self.expired(now):
            return False
        for key, globs in self.match.items():
            value = fields.get(key)
            if value is None or not any(fnmatchcase(value, g) for g in globs):
                return False
        return True

    def describe(self) -> str:
        """``rule=offline serial=Form4-*`` (how ``silence list`` and ``ack list`` show it)."""
        matchers = " ".join(f"{k}={','.join(v)}" for k, v in self.match.items())
        return f"rule={self.rule}" + (f" {matchers}" if matchers else "")

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "rule": self.rule,
            "match": {k: list(v) for k, v in self.match.items()},
            "created_at": iso(self.created_at),
            "ends_at": iso(self.ends_at),
            "comment": self.comment,
            "created_by": self.created_by,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Ack:
        """The inverse of :meth:`as_dict`.

        Raises:
            KeyError, TypeError, ValueError: a field is missing or invalid.
        """
        match = {
            str(k): (v,) if isinstance(v, str) else tuple(str(g) for g in v)
            for k, v in dict(data.get("match") or {}).items()
        }
        return cls(
            id=str(data["id"]),
            rule=str(data["rule"]),
            created_at=required_time(data["created_at"]),
            match=match,
            ends_at=parse_time(data.get("ends_at")),
            comment=str(data.get("comment") or ""),
            created_by=str(data.get("created_by") or ""),
        )


def acks_from_state(value: Any) -> tuple[Ack, ...]:
    """Acks as stored under :data:`ACKS_KEY` (junk entries skipped, never raised)."""
    if not isinstance(value, list):
        return ()
    result: list[Ack] = []
    for item in value:
        if not isinstance(item, Mapping):
            continue
        try:
            result.append(Ack.from_dict(item))
        except (KeyError, TypeError, ValueError):
            continue
    return tuple(result)
