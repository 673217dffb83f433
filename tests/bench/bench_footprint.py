"""Footprint: RSS and CPU of an idling ``printfleet run`` with 100 printers.

Its own processes (:mod:`tests.bench.fleetrun`): today's simulator in a child process (one
Formlabs and one Carbon account of 50 printers, real vendor rate limits, speed 1), a mosquitto
broker (MQTT with Home Assistant discovery on, as a typical install has it) and the daemon
under test (the shipped log-only rule packs, metrics served, no webhook receivers). Only the
daemon's own process is measured, from ``/proc/<pid>``: warm-up until ``/readyz`` answers 200
plus :data:`SETTLE_S`, then for :data:`WINDOW_S` of wall time CPU % = (utime + stime) delta /
wall, RSS = the highest ``VmRSS`` sampled each second, peak = ``VmHWM`` at the end.

Targets: <= 80 MB RSS and <= 1 % CPU (MB = 10^6 bytes, stricter than MiB). The baseline column
is the target itself (ratio = target / value, > 1x means within target). The 10,000-printer
footprint, now against 7be2331's, is in :mod:`tests.bench.bench_scale`.

Run alone with ``python -m tests.bench.bench_footprint``; ``make bench`` collects :func:`run`.
"""

from __future__ import annotations

from typing import Any

from tests.bench.fleetrun import compare, today
from tests.bench.simfleet import FleetShape
from tests.mosquitto import mosquitto_binary

PRINTERS = 100
SETTLE_S = 10.0
WINDOW_S = 40.0
RSS_TARGET_MB = 80.0
CPU_TARGET = 1.0


def run() -> list[dict[str, Any]]:
    """Rows for ``make bench``: idle RSS, peak RSS and CPU of the daemon at 100 printers."""
    mqtt = (
        "MQTT with HA discovery to a local mosquitto"
        if mosquitto_binary()
        else "MQTT off (mosquitto not installed)"
    )
    shape = FleetShape(1, PRINTERS // 2, 1, PRINTERS // 2)
    fp = compare(shape, [today()], settle_s=SETTLE_S, window_s=WINDOW_S, ready_timeout_s=120)[
        "today"
    ]
    if isinstance(fp, Exception):
        raise fp
    if not fp.ready:
        raise RuntimeError(f"not ready after {fp.ready_s:.0f} s")
    requests = ", ".join(f"{v} {n}" for v, n in fp.sim_requests.items())
    note = (
        f"{shape.describe()} at simulator speed 1, {mqtt}, shipped log-only rule packs; ready "
        f"{fp.ready_s:.1f} s after exec, measured {fp.window_s:.0f} s from {SETTLE_S:.0f} s "
        f"later; API requests in the window: {requests}; daemon warnings (whole run): "
        f"{fp.warnings}"
    )
    label = f"{PRINTERS:,} printers"
    target = f"<= {RSS_TARGET_MB:.0f} MB"
    return [
        {
            "name": f"daemon idle RSS, {label}",
            "value": fp.rss_mb,
            "unit": "MB",
            "baseline": "target",
            "baseline_value": RSS_TARGET_MB,
            "ratio": RSS_TARGET_MB / fp.rss_mb,
            "target": target,
            "note": note,
        },
        {
            "name": f"daemon peak RSS (VmHWM), {label}",
            "value": fp.hwm_mb,
            "unit": "MB",
            "baseline": "target",
            "baseline_value": RSS_TARGET_MB,
            "ratio": RSS_TARGET_MB / fp.hwm_mb,
            "target": target,
        },
        {
            "name": f"daemon idle CPU, {label}",
            "value": fp.cpu_percent,
            "unit": "% of a core",
            "baseline": "target",
            "baseline_value": CPU_TARGET,
            "ratio": CPU_TARGET / fp.cpu_percent if fp.cpu_percent > 0 else None,
            "target": f"<= {CPU_TARGET:g} %",
        },
    ]


if __name__ == "__main__":
    for row in run():
        print(f"{row['name']}: {row['value']:.2f} {row['unit']} (target {row['target'] or '-'})")
        if row.get("note"):
            print(f"  note: {row['note']}")
