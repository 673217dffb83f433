"""When each source polls first: all at once for a few, spread over one interval for many.

Hundreds of accounts starting together would ask their vendor for hundreds of tokens and
printer lists in the same second (and queue for the shared per-host limit for long). Spread
out, they poll at the same pace as they will from then on.
"""

from __future__ import annotations

#: Up to this many sources all start at once (a demo, a test, a small shop).
SPREAD_ABOVE = 10


def start_delays(count: int, interval_s: float) -> list[float]:
    """Seconds before the first poll of each of ``count`` sources, in config order.

    ``<= SPREAD_ABOVE`` sources: all ``0``. More: source ``i`` waits ``interval_s * i /
    count``, so the first starts at once and the last a little under one interval later.
    """
    if count <= SPREAD_ABOVE or interval_s <= 0:
        return [0.0] * count
    return [interval_s * i / count for i in range(count)]
