"""How hard clients pushed the simulated vendors: request counts and the busiest second.

``printfleet simulate --stats-file FILE`` writes :func:`request_stats` on exit, so a bench
can check from the vendor's side that a daemon never sent more than a limit allows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from printfleet.simulator.gateway import RequestRecord


def busiest_window(times: Iterable[float], window_s: float = 1.0) -> int:
    """The most of ``times`` (seconds, any order) in any half-open ``window_s`` window."""
    ordered = sorted(times)
    best = start = 0
    for end, moment in enumerate(ordered):
        while ordered[start] <= moment - window_s:
            start += 1
        best = max(best, end - start + 1)
    return best


def request_stats(records: Iterable[RequestRecord]) -> dict[str, dict[str, Any]]:
    """Per vendor: ``requests``, ``by_status`` and ``max_per_second`` — the most requests
    received in any one second of real time (a sliding window, stricter than counting per
    calendar second), refused ones included, as a vendor's per-IP limit sees them."""
    by_vendor: dict[str, list[RequestRecord]] = {}
    for record in records:
        by_vendor.setdefault(record.vendor, []).append(record)
    return {
        vendor: {
            "requests": len(served),
            "by_status": dict(sorted(Counter(str(r.status) for r in served).items())),
            "max_per_second": busiest_window(r.monotonic for r in served),
            "first": min(r.monotonic for r in served),
            "last": max(r.monotonic for r in served),
        }
        for vendor, served in sorted(by_vendor.items())
    }
