"""Capped exponential backoff with jitter: the one formula every retry in printfleet uses.

Sources retrying a 5xx, outbox workers retrying a delivery and the MQTT supervisor
reconnecting all wait ``backoff(attempt, ...)`` seconds; a server's own ``Retry-After`` is read
by the one :func:`parse_retry_after`. The random source is always passed in,
so tests seed it and no caller shares the global ``random`` state.

Pure: no clock, no I/O.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
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


#: The longest wait a server's ``Retry-After`` can impose (vendors and receivers alike): an
#: hour. Longer, infinite or far-future values are clamped, so no reply can park a source or
#: a sink until the next restart.
MAX_RETRY_AFTER_S = 3600.0


def parse_retry_after(
    value: str | None, now: datetime, *, cap: float = MAX_RETRY_AFTER_S
) -> float | None:
    """Seconds to wait per a ``Retry-After`` value (delta-seconds or an HTTP-date), within
    ``[0, cap]``; ``None`` when absent or unreadable (including NaN). A date without a zone is
    read as GMT, as RFC 9110 writes them."""
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - now).total_seconds()
    return clamp_wait(seconds, cap=cap)


def clamp_wait(seconds: float, *, cap: float = MAX_RETRY_AFTER_S) -> float | None:
    """``seconds`` within ``[0, cap]``; ``None`` for NaN."""
    if math.isnan(seconds):
        return None
    return min(cap, max(0.0, seconds))
