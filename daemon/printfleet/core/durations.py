"""Durations as people write them in config and rule files, and as messages show them.

The one parser (``"1h30m"`` → ``timedelta``) and the one formatter (``2h 05m``) of printfleet.
Pure: no clock, no I/O.
"""

from __future__ import annotations

import math
from datetime import timedelta


def parse_duration(text: object) -> timedelta:
    """Parse ``"90s"``, ``"5m"``, ``"1h30m"``, ``"2d"``, ``"250ms"`` or a number of seconds.

    Raises:
        ValueError: with a message saying which forms are accepted (also for booleans, tables,
            lists, NaN, infinity and durations too long to represent).
    """
    if isinstance(text, timedelta):
        return text
    hint = "write a number and a unit (ms, s, m, h, d, w), e.g. '30s', '5m', '1h30m'"
    if isinstance(text, bool) or not isinstance(text, str | int | float):
        raise ValueError(f"a duration must be text such as '30s' or a number of seconds; {hint}")
    if isinstance(text, int | float):
        return _seconds(float(text), text, hint)
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
    rest = text.strip().lower()
    if not rest:
        raise ValueError(f"empty duration; {hint}")
    total = 0.0
    while rest:
        number = ""
        while rest and (rest[0].isdigit() or rest[0] == "."):
            number, rest = number + rest[0], rest[1:]
        unit = ""
        while rest and rest[0].isalpha():
            unit, rest = unit + rest[0], rest[1:]
        rest = rest.lstrip()
        if not number or unit not in units:
            raise ValueError(f"invalid duration {text!r}; {hint}")
        try:
            total += float(number) * units[unit]
        except ValueError:
            raise ValueError(f"invalid number in duration {text!r}") from None
    return _seconds(total, text, hint)


# timedelta's limit is 999,999,999 days; nobody means a longer interval.
_MAX_SECONDS = 100 * 365 * 86400.0


def _seconds(value: float, text: object, hint: str) -> timedelta:
    if math.isnan(value):
        raise ValueError(f"{text!r} is not a duration; {hint}")
    if value < 0:
        raise ValueError("durations cannot be negative")
    if value > _MAX_SECONDS:
        raise ValueError(f"duration {text!r} is longer than 100 years; {hint}")
    return timedelta(seconds=value)


def format_duration(seconds: float) -> str:
    """Human form of a duration: ``2h 05m``, ``4m 10s``, ``12s`` (the one formatter)."""
    whole = max(0, round(seconds))
    hours, rem = divmod(whole, 3600)
    minutes, secs = divmod(rem, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"
