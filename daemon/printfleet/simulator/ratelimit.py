"""Sliding-window rate limits (the log-of-timestamps scheme DRF's throttles use).

Refused requests are not logged, so a client that waits ``Retry-After`` always gets through.
"""

from __future__ import annotations

import math
from collections import deque


class SlidingWindow:
    """At most ``limit`` requests per key in any ``window_s`` seconds."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self._log: dict[str, deque[float]] = {}

    def acquire(self, key: str, now: float) -> int | None:
        """Count one request at ``now``; None if allowed, else whole seconds until one is."""
        log = self._log.setdefault(key, deque())
        horizon = now - self.window_s
        while log and log[0] <= horizon:
            log.popleft()
        if len(log) >= self.limit:
            return max(1, math.ceil(log[0] - horizon))
        log.append(now)
        return None
