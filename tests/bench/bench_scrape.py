"""Benchmark: ``/metrics`` scrape time at 10,000 printers over real HTTP (target < 250 ms).

Each scrape sees a fresh ``FleetView`` as the poller would produce it: new printer objects,
most equal to the previous poll's, 10% with a changed print progress; as in the daemon, the
view goes through ``Metrics.track_fleet``, so every printer has its three
``printfleet_prints_total`` series (~30,000 lines more). The scrape is timed
end to end with httpx (request, render, gzip, transfer, decode); the median of several
scrapes is reported, plus the first (cold cache) scrape and, for comparison, prometheus_client's
own ``generate_latest`` on the same registry.

Run: ``python -m tests.bench.bench_scrape``.
"""

from __future__ import annotations

import statistics
import sys
import time
from datetime import UTC, datetime
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, generate_latest

from printfleet.core.fleet import AccountHealth, FleetView
from printfleet.core.model import (
    Material,
    Print,
    Printer,
    PrinterStatus,
    PrintStatus,
    Snapshot,
    Vendor,
)
from printfleet.health import HealthServer
from printfleet.metrics.fleet import FleetCollector
from printfleet.metrics.observer import Metrics

PRINTERS = 10_000
SCRAPES = 7
TARGET_MS = 250.0
T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
STATUSES = (PrinterStatus.PRINTING, PrinterStatus.IDLE, PrinterStatus.PRINTING, PrinterStatus.ERROR)


def _printer(i: int, poll: int) -> Printer:
    status = STATUSES[i % len(STATUSES)]
    printing = status is PrinterStatus.PRINTING
    # 10% of the printing ones moved on since the last poll.
    progress = ((i % 90) + (poll if i % 10 == 0 else 0)) / 100
    vendor = Vendor.FORMLABS if i % 3 else Vendor.CARBON
    return Printer(
        serial=f"SN{i:05d}",
        name=f"Printer {i}",
        vendor=vendor,
        model="Form 4" if vendor is Vendor.FORMLABS else "M2",
        model_code="FORM-4-0",
        status=status,
        status_raw=status.value,
        online=status is not PrinterStatus.ERROR,
        group=f"Group {i % 20}",
        firmware="1.9.2",
        current_print=Print(
            id=f"guid-{i}",
            name=f"job-{i}",
            status=PrintStatus.PRINTING,
            status_raw="PRINTING",
            progress=min(progress, 1.0),
            layer=i % 400,
            layers_total=400,
            remaining_s=float(i % 7200),
        )
        if printing
        else None,
        materials=(
            (
                Material(slot="FRONT", capacity_ml=1000, remaining_ml=float(i % 1000)),
                Material(slot="BACK", capacity_ml=1000, remaining_ml=500.0),
            )
            if vendor is Vendor.FORMLABS
            else ()
        ),
    )


def _view(poll: int, sources: int = 4) -> FleetView:
    per_source = PRINTERS // sources
    snapshots = {}
    for s in range(sources):
        name = f"site{s}"
        printers = {
            p.serial: p
            for p in (_printer(i, poll) for i in range(s * per_source, (s + 1) * per_source))
        }
        snapshots[name] = Snapshot(
            source=name, vendor=Vendor.FORMLABS, taken_at=T0, printers=printers
        )
    return FleetView(
        snapshots=snapshots,
        health={name: AccountHealth(up=True, last_success_at=T0) for name in snapshots},
    )


class Poller:
    """Stands in for the poller: the current view, replaced whole between scrapes."""

    def __init__(self) -> None:
        self.poll = 0
        self.view = _view(0)

    def next(self) -> None:
        self.poll += 1
        self.view = _view(self.poll)

    def __call__(self) -> FleetView:
        return self.view


def run() -> list[dict[str, Any]]:
    """Scrape a 10,000-printer fleet over HTTP several times; return the result rows."""
    poller = Poller()
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.track_fleet(poller.view)
    registry.register(FleetCollector(poller))
    server = HealthServer("127.0.0.1:0", registry, ready=lambda: (True, ""))
    server.start()
    timings: list[float] = []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.bound_port}", timeout=60) as http:
            size = 0
            for _ in range(SCRAPES + 1):
                poller.next()
                metrics.track_fleet(poller.view)  # what the daemon does with each new view
                start = time.perf_counter()
                response = http.get("/metrics")
                timings.append((time.perf_counter() - start) * 1000)
                response.raise_for_status()
                size = len(response.content)
                lines = response.text.count("\n")
    finally:
        server.stop()
    cold, warm = timings[0], timings[1:]
    poller.next()
    start = time.perf_counter()
    generate_latest(registry)
    stock_ms = (time.perf_counter() - start) * 1000
    median = statistics.median(warm)
    return [
        {
            "name": f"/metrics scrape, {PRINTERS} printers, median of {SCRAPES}",
            "value": round(median, 1),
            "unit": "ms",
            "baseline": "target",
            "baseline_value": TARGET_MS,
            "ratio": round(TARGET_MS / median, 3),
            "target": f"< {TARGET_MS:g} ms",
        },
        {
            "name": "/metrics scrape, first (cold cache)",
            "value": round(cold, 1),
            "unit": "ms",
            "baseline": "target",
            "baseline_value": TARGET_MS,
            "ratio": round(TARGET_MS / cold, 3),
        },
        {
            "name": f"stock generate_latest, render only ({lines} lines, {size >> 20} MiB)",
            "value": round(stock_ms, 1),
            "unit": "ms",
            "baseline": "our scrape median",
            "baseline_value": round(median, 1),
            "ratio": round(stock_ms / median, 3),
        },
    ]


def _print_table(rows: list[dict[str, Any]]) -> None:
    columns = ("name", "value", "unit", "baseline", "baseline_value", "ratio")
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in rows:
        print("  ".join(str(row[c]).ljust(w) for c, w in zip(columns, widths, strict=True)))


if __name__ == "__main__":
    results = run()
    _print_table(results)
    ok = results[0]["value"] < TARGET_MS
    print(f"target: median < {TARGET_MS:.0f} ms: {'met' if ok else 'MISSED'}")
    sys.exit(0 if ok else 1)
