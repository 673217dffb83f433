"""Silences and their weekly schedules: when a notification is dropped instead of sent.

Silences drop notifications (counted in :attr:`~printfleet.core.rules.engine.RuleEngine.counters`);
they never affect the plain event stream on MQTT, which is not rule-driven.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta, tzinfo
from fnmatch import fnmatchcase
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from printfleet.core.model import iso
from printfleet.core.rules.names import parse_time, typo_hint

#: Keys a silence's ``match`` may test, each against a glob.
SILENCE_FIELDS: tuple[str, ...] = (
    "source",
    "vendor",
    "subject",
    "serial",
    "name",
    "group",
    "model",
    "type",
    "severity",
    "rule",
)

_WEEK = 7 * 1440
_TIME = r"(\d{1,2}):(\d{2})"
_SPAN_RE = re.compile(rf"^([A-Za-z]+)\s+{_TIME}\s*-\s*([A-Za-z]+)\s+{_TIME}$")
_DAILY_RE = re.compile(rf"^(?:(.+?)\s+)?{_TIME}\s*-\s*{_TIME}$")
_SCHEDULE_HELP = (
    "write e.g. 'Sat 00:00-Mon 06:00' (one span), 'Mon-Fri 22:00-06:00' (each of those days, "
    "may cross midnight), '22:00-06:00' (every day) or 'Mon,Wed 12:00-13:00'"
)
_POINT_RE = re.compile(rf"^(?:(.+?)\s+)?{_TIME}$")
_POINT_HELP = "write e.g. 'Mon-Fri 07:30', '07:30' (every day) or 'Mon,Thu 18:00'"


_FULL_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _day(word: str) -> int:
    text = word.strip().lower()
    for index, full in enumerate(_FULL_DAYS):
        if len(text) >= 3 and full.startswith(text):
            return index
    raise ValueError(f"unknown day '{word.strip()}'; use Mon, Tue, Wed, Thu, Fri, Sat, Sun")


def _minutes(hours: str, minutes: str) -> int:
    h, m = int(hours), int(minutes)
    if m > 59 or h > 24 or (h == 24 and m != 0):
        raise ValueError(f"invalid time '{hours}:{minutes}'; use 00:00 to 24:00")
    return h * 60 + m


def _day_set(text: str) -> list[int]:
    words = text.strip().lower()
    if words in ("daily", "every day", "everyday", "*"):
        return list(range(7))
    if words == "weekdays":
        return list(range(5))
    if words == "weekends":
        return [5, 6]
    days: list[int] = []
    for part in text.split(","):
        if "-" in part:
            first, last = (_day(p) for p in part.split("-", 1))
            days.extend((first + i) % 7 for i in range((last - first) % 7 + 1))
        else:
            days.append(_day(part))
    return days


def parse_schedule(text: str) -> tuple[tuple[int, int], ...]:
    """Weekly windows as ``(start, end)`` minutes since Monday 00:00, end exclusive.

    Windows crossing midnight or the week's end are split so every pair has start < end.

    Raises:
        ValueError: saying which forms are accepted.
    """
    raw: list[tuple[int, int]] = []
    text = text.strip()
    if match := _SPAN_RE.match(text):
        d1, h1, m1, d2, h2, m2 = match.groups()
        start = _day(d1) * 1440 + _minutes(h1, m1)
        end = _day(d2) * 1440 + _minutes(h2, m2)
        raw.append((start, end if end > start else end + _WEEK))
    elif match := _DAILY_RE.match(text):
        days_text, h1, m1, h2, m2 = match.groups()
        t1, t2 = _minutes(h1, m1), _minutes(h2, m2)
        for day in _day_set(days_text) if days_text else range(7):
            start = day * 1440 + t1
            raw.append((start, day * 1440 + t2 if t2 > t1 else day * 1440 + t2 + 1440))
    else:
        raise ValueError(f"invalid schedule '{text}'; {_SCHEDULE_HELP}")
    windows: list[tuple[int, int]] = []
    for start, end in raw:
        if end > _WEEK:
            windows.append((start, _WEEK))
            windows.append((0, end - _WEEK))
        else:
            windows.append((start, end))
    return tuple(sorted(windows))


def parse_times(text: str) -> tuple[int, ...]:
    """Weekly points in time as minutes since Monday 00:00, sorted: ``'Mon-Fri 07:30'``,
    ``'07:30'`` (every day), ``'Mon,Thu 18:00'``; the day words of :func:`parse_schedule`.

    The digests' schedules; the same day and time grammar as silence windows, one time
    instead of a span.

    Raises:
        ValueError: saying which forms are accepted.
    """
    text = text.strip()
    match = _POINT_RE.match(text)
    if match is None:
        raise ValueError(f"invalid schedule '{text}'; {_POINT_HELP}")
    days_text, hours, minutes = match.groups()
    minute = _minutes(hours, minutes)
    if minute == 1440:
        raise ValueError(f"invalid time '{hours}:{minutes}'; use 00:00 to 23:59")
    days = _day_set(days_text) if days_text else range(7)
    return tuple(sorted({day * 1440 + minute for day in days}))


def zone(name: str) -> tzinfo:
    """The IANA time zone ``name``.

    Raises:
        ValueError: naming an example of a valid zone.
    """
    return _zone(name)


def _zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone '{name}'; use an IANA name such as 'Europe/Berlin' or 'UTC'"
        ) from None


@dataclass(frozen=True, slots=True)
class Silence:
    """Drops matching notifications while active.

    Active when inside ``starts_at``..``ends_at`` (each optional) and, if ``schedule`` is given,
    inside one of its weekly windows in ``timezone`` (wall-clock time, so DST moves with it).
    ``match`` maps fields of :data:`SILENCE_FIELDS` to globs (any glob may match); an empty
    ``match`` silences everything. With ``hold`` what it silences is not dropped but kept by
    the engine and sent as one summary per receiver when the silence ends (quiet hours).
    """

    id: str
    match: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))
    schedule: tuple[str, ...] = ()
    timezone: str = "UTC"
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    comment: str = ""
    origin: str = ""
    created_by: str = ""
    hold: bool = False
    windows: tuple[tuple[int, int], ...] = field(init=False, repr=False, compare=False)
    tz: tzinfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_match_fields(self.match)
        for when in (self.starts_at, self.ends_at):
            if when is not None and when.tzinfo is None:
                raise ValueError("starts_at/ends_at need a UTC offset, e.g. 2026-12-24T18:00:00Z")
        if self.starts_at and self.ends_at and self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        object.__setattr__(self, "match", MappingProxyType(dict(self.match)))
        object.__setattr__(
            self, "windows", tuple(w for text in self.schedule for w in parse_schedule(text))
        )
        object.__setattr__(self, "tz", _zone(self.timezone))

    def active(self, now: datetime) -> bool:
        """Whether the silence is in force at ``now``."""
        if self.starts_at is not None and now < self.starts_at:
            return False
        if self.ends_at is not None and now >= self.ends_at:
            return False
        if not self.windows:
            return True
        local = now.astimezone(self.tz)
        minute = local.weekday() * 1440 + local.hour * 60 + local.minute
        return any(start <= minute < end for start, end in self.windows)

    def expired(self, now: datetime) -> bool:
        """Whether the silence can never be active again."""
        return self.ends_at is not None and now >= self.ends_at

    def ends_after(self, now: datetime) -> datetime | None:
        """When a silence active at ``now`` stops being active (``now`` if it is not active;
        ``None`` if it never ends). Adjacent windows (a span split at the week's end, or
        ``Sat 00:00-24:00`` next to ``Sun 00:00-24:00``) count as one.
        """
        if not self.active(now):
            return now
        end = self.ends_at
        if not self.windows:
            return end
        local = now.astimezone(self.tz).replace(second=0, microsecond=0)
        monday = datetime.combine(
            local.date() - timedelta(days=local.weekday()), time(0), tzinfo=self.tz
        )
        minute = local.weekday() * 1440 + local.hour * 60 + local.minute
        # At most one jump per window and one week wrap: a schedule covering the whole week
        # never ends.
        for _ in range(len(self.windows) + 2):
            current = next((w for w in self.windows if w[0] <= minute % _WEEK < w[1]), None)
            if current is None:
                # Wall-clock arithmetic (DST moves with it, as in :meth:`active`).
                when = (monday + timedelta(minutes=minute)).astimezone(UTC)
                return when if end is None or when < end else end
            minute += current[1] - minute % _WEEK
        return end

    def matches(self, fields: Mapping[str, str | None]) -> bool:
        """Whether every matcher accepts the corresponding field of a notification."""
        for key, globs in self.match.items():
            value = fields.get(key)
            if value is None or not any(fnmatchcase(value, g) for g in globs):
                return False
        return True

    def as_dict(self) -> dict[str, Any]:
        """JSON form (how ad-hoc silences are stored)."""
        return {
            "id": self.id,
            "match": {k: list(v) for k, v in self.match.items()},
            "schedule": list(self.schedule),
            "timezone": self.timezone,
            "starts_at": iso(self.starts_at),
            "ends_at": iso(self.ends_at),
            "comment": self.comment,
            "origin": self.origin,
            "created_by": self.created_by,
            "hold": self.hold,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Silence:
        """The inverse of :meth:`as_dict`.

        Raises:
            ValueError: when a field is missing or invalid.
        """
        match = {
            str(k): (v,) if isinstance(v, str) else tuple(str(g) for g in v)
            for k, v in dict(data.get("match") or {}).items()
        }
        return cls(
            id=str(data["id"]),
            match=match,
            schedule=tuple(str(s) for s in data.get("schedule") or ()),
            timezone=str(data.get("timezone") or "UTC"),
            starts_at=parse_time(data.get("starts_at")),
            ends_at=parse_time(data.get("ends_at")),
            comment=str(data.get("comment") or ""),
            origin=str(data.get("origin") or "adhoc"),
            created_by=str(data.get("created_by") or ""),
            hold=data.get("hold") is True,
        )


def silence_fields(names: Mapping[str, Any], rule: str, severity: str) -> dict[str, str | None]:
    """What a silence's ``match`` sees of one notification: :data:`SILENCE_FIELDS` as text."""
    printer = names.get("printer")
    if not isinstance(printer, Mapping):
        printer = {}
    subject = names.get("subject")
    return {
        "source": _opt(names.get("source")),
        "vendor": _opt(names.get("vendor")),
        "subject": _opt(subject),
        "serial": _opt(printer.get("serial") or subject),
        "name": _opt(printer.get("name")),
        "group": _opt(printer.get("group")),
        "model": _opt(printer.get("model")),
        "type": _opt(names.get("type")),
        "severity": severity,
        "rule": rule,
    }


def _opt(value: object) -> str | None:
    return None if value is None else str(value)


def check_match_fields(match: Mapping[str, object]) -> None:
    """Raise ``ValueError`` naming the first key of ``match`` that no silence (or ack) can
    match on, with a did-you-mean and the fields there are."""
    unknown = sorted(set(match) - set(SILENCE_FIELDS))
    if unknown:
        hint = typo_hint(unknown[0], SILENCE_FIELDS)
        raise ValueError(
            f"unknown match field '{unknown[0]}'; {hint}use {', '.join(SILENCE_FIELDS)}"
        )
