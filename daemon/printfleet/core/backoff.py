"""Capped exponential backoff with jitter: the one formula every retry in printfleet uses.

Sources retrying a 5xx, outbox workers retrying a delivery and the MQTT supervisor
reconnecting all wait ``backoff(attempt, ...)`` seconds. The random source is always passed in,
so tests seed it and no caller shares the global ``random`` state.

Pure: no clock, no I/O.
"""

from __future__ import annotations

import random
from typing import Literal

Jitter = Literal["full", "half", "up"]


def backoff(
    attempt: int,
    *,
    base: float,
    cap: float,
    rng: random.Random,
    jitter: Jitter = "full",
) -> float:
    """Seconds to wait before retry number ``attempt`` (1 = the first retry).

    The ceiling is ``min(cap, base * 2 ** (attempt - 1))``. ``jitter`` spreads it:

    - ``"full"``: ``uniform(0, ceiling)`` (AWS' "full jitter": best for many clients);
    - ``"half"``: ``uniform(ceiling / 2, ceiling)`` (never retries almost at once);
    - ``"up"``: ``min(cap, ceiling * uniform(1, 1.5))`` (never shorter than the ceiling).
    """
    ceiling = min(cap, base * 2.0 ** min(max(attempt - 1, 0), 62))
    if jitter == "full":
        return rng.uniform(0.0, ceiling)
    if jitter == "half":
        return ceiling * rng.uniform(0.5, 1.0)
    return min(cap, ceiling * rng.uniform(1.0, 1.5))
