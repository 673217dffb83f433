"""When a digest is due: ``"Mon-Fri 07:30 Europe/Berlin"`` as points in UTC time.

The day and time grammar is the silences' (:func:`printfleet.core.rules.windows.parse_times`);
a trailing IANA zone name is optional (the default is ``[rules] timezone``). Times are wall
clock in that zone, so a 07:30 digest stays at 07:30 local across DST changes: its UTC time
moves by an hour instead. A local time that does not exist on a spring-forward day (02:30 in
Europe/Berlin on the last Sunday of March) falls an hour later; one that exists twice in
autumn is taken the first time, so it is never due twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo

from printfleet.core.rules.windows import parse_times, zone

#: How far back :meth:`DigestSchedule.latest` looks; one week holds every weekly point.
_LOOKBACK_DAYS = 8


def split_zone(text: str, default: str) -> tuple[str, str]:
    """``("Mon-Fri 07:30", "Europe/Berlin")`` from ``"Mon-Fri 07:30 Europe/Berlin"``; a text
    without a zone gets ``default``. A zone is the last word when it is not the time."""
    words = text.split()
    if len(words) >= 2 and ":" not in words[-1]:
        return " ".join(words[:-1]), words[-1]
    return text.strip(), default


@dataclass(frozen=True, slots=True)
class DigestSchedule:
    """Weekly points in time (``minutes`` since Monday 00:00) in ``timezone``."""

    text: str
    timezone: str = "UTC"
    minutes: tuple[int, ...] = field(init=False, repr=False, compare=False)
    tz: tzinfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "minutes", parse_times(self.text))
        object.__setattr__(self, "tz", zone(self.timezone))

    @classmethod
    def parse(cls, text: str, default_timezone: str = "UTC") -> DigestSchedule:
        """From ``"Mon-Fri 07:30 Europe/Berlin"`` (zone optional).

        Raises:
            ValueError: a bad day, time or zone, saying which forms are accepted.
        """
        points, timezone = split_zone(text, default_timezone)
        return cls(points, timezone)

    def latest(self, now: datetime) -> datetime:
        """The last point at or before ``now`` (UTC)."""
        today = now.astimezone(self.tz).date()
        return max(t for t in self._around(today) if t <= now)

    def next_after(self, moment: datetime) -> datetime:
        """The first point strictly after ``moment`` (UTC)."""
        today = moment.astimezone(self.tz).date()
        return min(t for t in self._around(today) if t > moment)

    def previous(self, point: datetime) -> datetime:
        """The point before ``point``: where the period ending at ``point`` starts."""
        return self.latest(point - timedelta(microseconds=1))

    def _around(self, today: date) -> list[datetime]:
        points: list[datetime] = []
        for offset in range(-_LOOKBACK_DAYS, _LOOKBACK_DAYS + 1):
            day = today + timedelta(days=offset)
            for minute in self.minutes:
                if minute // 1440 != day.weekday():
                    continue
                local = datetime.combine(day, time(), tzinfo=self.tz)
                wall = local.replace(hour=(minute % 1440) // 60, minute=minute % 60)
                # Round-tripping through UTC resolves a wall time that does not exist (spring
                # forward) to the real instant it names; fold=0 takes the first of two.
                points.append(wall.astimezone(UTC))
        return points
