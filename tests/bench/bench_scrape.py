"""Benchmark: ``/metrics`` scrape time at 10,000 and 100,000 printers over real HTTP.

Targets: < 250 ms at 10,000 printers, < 1 s at 100,000 (a default Prometheus scrape times out
at 10 s). Between scrapes the poller stand-in moves a tenth of the printers on (a changed
print progress) and, as the identity contract of unchanged records says, hands the other
nine tenths on as the very same ``Printer`` objects; as in the daemon, each new view goes
through ``Metrics.track_fleet`` (three ``printfleet_prints_total`` series per printer) and
``HealthServer.view_changed`` (the pre-render after a poll, timed on its own here). The
scrape is timed end to end (request, transfer, gzip decode), plain and with
``Accept-Encoding: gzip`` as Prometheus sends; the median of several is reported, plus the
first (cold cache) scrape, a scrape that has to render a poll's changes itself (no
pre-render), and at 10,000 printers prometheus_client's own ``generate_latest``.

:func:`scrape_seconds` is the timing of one scrape, for other benchmarks.

Run: ``python -m tests.bench.bench_scrape``.
"""

from __future__ import annotations

import http.client
import statistics
import sys
import time
import zlib
from datetime import UTC, datetime
from typing import Any, NamedTuple
from urllib.parse import urlsplit

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
from printfleet.metrics.exposition import exposition_blocks, gzip_body
from printfleet.metrics.fleet import FleetCollector
from printfleet.metrics.observer import Metrics

SIZES = (10_000, 100_000)
SCRAPES = 5
TARGETS_MS = {10_000: 250.0, 100_000: 1000.0}
T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
STATUSES = (PrinterStatus.PRINTING, PrinterStatus.IDLE, PrinterStatus.PRINTING, PrinterStatus.ERROR)


class Poller:
    """Stands in for the poller: the current view, replaced whole after each poll.

    Each poll makes new snapshots in which a tenth of the printers (printing ones, a
    different tenth each time) are new objects with a changed progress, and the others the
    previous objects.
    """

    def __init__(self, printers: int, sources: int = 4) -> None:
        self.poll = 0
        per_source = printers // sources
        self.ranges = {
            f"site{s}": range(s * per_source, (s + 1) * per_source) for s in range(sources)
        }
        self.printers = {
            name: {p.serial: p for p in (_printer(i, 0) for i in numbers)}
            for name, numbers in self.ranges.items()
        }
        self.view = self._view()

    def next(self) -> None:
        self.poll += 1
        for name, numbers in self.ranges.items():
            printers = dict(self.printers[name])
            # Printing printers are the even-numbered ones; a fifth of them is a tenth.
            for i in numbers[(self.poll % 5) * 2 :: 10]:
                printer = _printer(i, self.poll)
                printers[printer.serial] = printer
            self.printers[name] = printers
        self.view = self._view()

    def _view(self) -> FleetView:
        snapshots = {
            name: Snapshot(source=name, vendor=Vendor.FORMLABS, taken_at=T0, printers=printers)
            for name, printers in self.printers.items()
        }
        return FleetView(
            snapshots=snapshots,
            health={name: AccountHealth(up=True, last_success_at=T0) for name in snapshots},
        )

    def __call__(self) -> FleetView:
        return self.view


def _printer(i: int, poll: int) -> Printer:
    status = STATUSES[i % len(STATUSES)]
    printing = status is PrinterStatus.PRINTING
    progress = ((i % 90) + poll % 10) / 100  # a new value at each poll that remakes it
    vendor = Vendor.FORMLABS if i % 3 else Vendor.CARBON
    return Printer(
        serial=f"SN{i:06d}",
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
            layer=i % 400 + poll,
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


class Scrape(NamedTuple):
    seconds: float  # request to the whole body, decoded
    decode_seconds: float  # of which decoding the gzip body
    body: bytes  # decoded
    wire_bytes: int  # as sent


def scrape(url: str, gzip: bool) -> Scrape:
    """One ``GET url``, timed as a scraper sees it: request, the whole body, its decoding.

    With ``gzip`` the request says ``Accept-Encoding: gzip`` (as Prometheus sends) and the
    answer must be gzip-encoded. The stdlib client reads the body as it comes; httpx, measured
    here first, spends more time decoding a 100 MB body in Python than the server takes to
    send it.
    """
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=60)
    try:
        start = time.perf_counter()
        connection.request(
            "GET", parts.path or "/", headers={"Accept-Encoding": "gzip" if gzip else "identity"}
        )
        response = connection.getresponse()
        raw = response.read()
        received = time.perf_counter()
        encoded = response.getheader("Content-Encoding") == "gzip"
        body = zlib.decompress(raw, wbits=31) if encoded else raw
        end = time.perf_counter()
    finally:
        connection.close()
    if response.status != 200 or encoded is not gzip or not body:
        raise RuntimeError(f"unexpected answer from {url}: {response.status} {response.headers}")
    return Scrape(end - start, end - received, body, len(raw))


def scrape_seconds(url: str, gzip: bool) -> float:
    """Seconds for one scrape of ``url`` (a ``/metrics`` address), decoding included; see
    :func:`scrape`."""
    return scrape(url, gzip).seconds


def _ms(seconds: list[float]) -> float:
    return round(statistics.median(seconds) * 1000, 1)


def _row(name: str, value: float, target: float | None = None, unit: str = "ms") -> dict[str, Any]:
    if target is None:
        return {"name": name, "value": value, "unit": unit, "baseline": None, "ratio": None}
    return {
        "name": name,
        "value": value,
        "unit": "ms",
        "baseline": "target",
        "baseline_value": target,
        "ratio": round(target / value, 3),
        "target": f"< {target:g} ms",
    }


def run_size(printers: int) -> list[dict[str, Any]]:
    """Scrape a fleet of ``printers`` over HTTP several times; return the result rows."""
    poller = Poller(printers)
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.track_fleet(poller.view)
    registry.register(FleetCollector(poller))
    server = HealthServer("127.0.0.1:0", registry, ready=lambda: (True, ""))
    server.start()
    plain: list[float] = []
    gzipped: list[float] = []
    decode: list[float] = []
    server_work: list[float] = []
    prerender: list[float] = []
    target = TARGETS_MS[printers]
    try:
        url = f"http://127.0.0.1:{server.bound_port}/metrics"
        cold = scrape(url, gzip=True)
        for _ in range(SCRAPES):
            poller.next()
            metrics.track_fleet(poller.view)  # what the daemon does with each new view
            start = time.perf_counter()
            server.prerender()  # what view_changed() has the render thread do
            prerender.append(time.perf_counter() - start)
            start = time.perf_counter()
            gzip_body(exposition_blocks(registry))  # what a gzip scrape makes, sent or not
            server_work.append(time.perf_counter() - start)
            zipped = scrape(url, gzip=True)
            gzipped.append(zipped.seconds)
            decode.append(zipped.decode_seconds)
            plain.append(scrape_seconds(url, gzip=False))
        poller.next()
        metrics.track_fleet(poller.view)
        unprepared = scrape_seconds(url, gzip=True)
    finally:
        server.stop()
    label = f"{printers} printers"
    rows = [
        _row(f"/metrics scrape gzip, {label}, median of {SCRAPES}", _ms(gzipped), target),
        _row(f"  of which gzip decoding in the client, {label}", _ms(decode)),
        _row(f"/metrics scrape plain, {label}, median of {SCRAPES}", _ms(plain), target),
        _row(f"server work per gzip scrape, in-process, {label}", _ms(server_work)),
        _row(f"pre-render after a poll (10% changed), {label}", _ms(prerender)),
        _row(f"scrape gzip right after a poll, no pre-render, {label}", _ms([unprepared])),
        _row(f"first scrape, gzip (cold cache), {label}", _ms([cold.seconds])),
        _row(f"body plain, {label}", round(len(cold.body) / 1e6, 2), unit="MB"),
        _row(f"body gzip, {label}", round(cold.wire_bytes / 1e6, 2), unit="MB"),
    ]
    if printers <= 10_000:
        start = time.perf_counter()
        generate_latest(registry)
        rows.append(
            _row(f"stock generate_latest, render only, {label}", _ms([time.perf_counter() - start]))
        )
    return rows


def run() -> list[dict[str, Any]]:
    """Every row, at each fleet size."""
    return [row for printers in SIZES for row in run_size(printers)]


def _print_table(rows: list[dict[str, Any]]) -> None:
    columns = ("name", "value", "unit", "baseline_value", "ratio")
    cells = [[str(r.get(c) or "") for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))


if __name__ == "__main__":
    results = run()
    _print_table(results)
    missed = [r["name"] for r in results if "target" in r and r["value"] >= r["baseline_value"]]
    print("targets:", "MISSED " + "; ".join(missed) if missed else "met")
    sys.exit(1 if missed else 0)
