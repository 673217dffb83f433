"""Byte sizes as people write them in config files (``"256MiB"``, ``"64KiB"``, ``"1GB"``).

The one parser of printfleet's size limits, the sibling of :mod:`printfleet.core.durations`.
Pure: no clock, no I/O.
"""

from __future__ import annotations

import re
from typing import Final

#: Units in the two systems people mean: 1024-based (IEC ``KiB``) and 1000-based (SI ``kB``);
#: ``B`` alone is bytes. Case does not matter ("64kib", "64KB"): the ``i`` is what tells the
#: two systems apart, never the case.
_UNITS: Final = {
    "b": 1,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
}
_SIZE: Final = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*")
_HINT: Final = (
    "write a number and a unit (B, KiB, MiB, GiB: 1024-based; kB, MB, GB: 1000-based), "
    "e.g. '64KiB', '256MiB', '1GB', or a whole number of bytes"
)
#: Larger than any limit anyone means (1 PiB); keeps arithmetic on sizes ordinary.
_MAX_BYTES: Final = 1024**5


def parse_size(value: object) -> int:
    """Bytes from ``"256MiB"``, ``"64KiB"``, ``"1GB"``, ``"512B"``, ``"1.5MiB"`` or an int.

    Raises:
        ValueError: naming the accepted forms (also for booleans, floats, negative or
            zero-unit-less nonsense, and sizes above 1 PiB).
    """
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"a size must be text such as '64KiB' or a number of bytes; {_HINT}")
    if isinstance(value, int):
        return _checked(value, value)
    match = _SIZE.fullmatch(value)
    if match is None:
        raise ValueError(f"invalid size {value!r}; {_HINT}")
    number, unit = match.groups()
    factor = _UNITS.get(unit.lower() if unit else "b")
    if factor is None:
        raise ValueError(f"unknown unit {unit!r} in size {value!r}; {_HINT}")
    if "." in number and factor == 1:
        raise ValueError(f"a number of bytes must be whole, not {value!r}; {_HINT}")
    return _checked(round(float(number) * factor) if "." in number else int(number) * factor, value)


def _checked(size: int, value: object) -> int:
    if size < 0:
        raise ValueError(f"sizes cannot be negative ({value!r}); {_HINT}")
    if size > _MAX_BYTES:
        raise ValueError(f"size {value!r} is larger than 1 PiB; {_HINT}")
    return size


def format_size(size: int) -> str:
    """``size`` bytes the way a config file would say it: ``256MiB``, ``64KiB``, ``1000B``."""
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"
