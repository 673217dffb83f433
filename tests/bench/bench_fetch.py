"""Benchmark: what one fetch costs against the simulator, per vendor and fleet size.

Prints, for 100 and 10,000 printers per vendor, the HTTP requests one ``fetch_printers`` sends
(and, for scale planning, one Formlabs ``fetch_inventory``), then the wall time and the peak
Python heap (tracemalloc) of one full ``fetch_printers`` of 10,000 printers per vendor.

The simulator runs in a child process so that its own allocations and CPU are not measured;
its rate limits are raised so that repeated runs measure the fetch, not the vendor's budget.

Run alone with ``python -m tests.bench.bench_fetch`` (about a minute); ``make bench`` collects
:func:`run` (no baseline: these are the figures behind the request budgets).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from datetime import timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
import structlog
from pydantic import SecretStr

from printfleet.clock import SystemClock
from printfleet.sources.carbon import CarbonSource
from printfleet.sources.factory import load_carbon_secrets
from printfleet.sources.formlabs import FormlabsSource
from printfleet.sources.http.budget import RequestBudget

SIZES = (100, 10_000)
#: Warnings still show; the per-source "source.authenticated" lines do not.
QUIET_LOG = structlog.wrap_logger(
    structlog.PrintLogger(file=sys.stderr),
    wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
)
TIMED_RUNS = 3


class CountingObserver:
    """Counts requests by endpoint label (the Observer seam)."""

    def __init__(self) -> None:
        self.requests: dict[str, int] = {}

    def api_request(self, source: str, endpoint: str, code: str, seconds: float) -> None:
        self.requests[endpoint] = self.requests.get(endpoint, 0) + 1

    def total(self) -> int:
        return sum(self.requests.values())

    def reset(self) -> None:
        self.requests.clear()

    def record_skipped(self, source: str, kind: str) -> None:
        pass

    def poll_done(self, source: str, seconds: float, ok: bool) -> None:
        pass

    def event_emitted(self, event: Any) -> None:
        pass

    def rule_matched(self, rule: str) -> None:
        pass

    def delivery_done(self, sink: str, result: str) -> None:
        pass


def serve(printers: int, secrets_path: str, pipe: Connection) -> None:
    """Child process: run a simulator with ``printers`` per vendor until told to stop."""
    from printfleet.simulator import Simulator, SimulatorConfig

    config = SimulatorConfig(
        formlabs_printers=printers,
        carbon_printers=printers,
        seed=3,
        speed=1.0,
        protocol_clock="wall",
        formlabs_hourly_limit=10_000_000,
        formlabs_per_second_limit=10_000_000,
        carbon_limit_per_10s=10_000_000,
    )
    with Simulator(config) as sim:
        sim.write_carbon_secrets(secrets_path)
        pipe.send(
            {
                "formlabs_url": sim.formlabs_url,
                "carbon_url": sim.carbon_url,
                "client_id": sim.formlabs_client_id,
                "client_secret": sim.formlabs_client_secret,
            }
        )
        pipe.recv()  # wait for "stop"


def formlabs_source(
    info: dict[str, str], client: httpx.AsyncClient, observer: CountingObserver
) -> FormlabsSource:
    clock = SystemClock()
    return FormlabsSource(
        name="bench",
        client_id=info["client_id"],
        client_secret=SecretStr(info["client_secret"]),
        client=client,
        clock=clock,
        offline_after=timedelta(minutes=5),
        base_url=info["formlabs_url"],
        observer=observer,
        budget=RequestBudget.formlabs(clock, per_hour=1_000_000, per_second=1_000_000),
        log=QUIET_LOG,
    )


def carbon_source(
    info: dict[str, str], secrets: Path, client: httpx.AsyncClient, observer: CountingObserver
) -> CarbonSource:
    client_id, key = load_carbon_secrets(secrets)
    return CarbonSource(
        name="bench",
        client_id=client_id,
        private_key=key,
        client=client,
        clock=SystemClock(),
        base_url=info["carbon_url"],
        observer=observer,
        log=QUIET_LOG,
        # A fresh budget per source: the default 100 per 10 s is what one 10k fetch uses up.
    )


async def measure(fetch: Callable[[], Awaitable[Any]]) -> tuple[float, float]:
    """Seconds (median of TIMED_RUNS) and tracemalloc peak MiB of one more run."""
    times = []
    for _ in range(TIMED_RUNS):
        started = time.perf_counter()
        await fetch()
        times.append(time.perf_counter() - started)
    tracemalloc.start()
    await fetch()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return statistics.median(times), peak / 2**20


async def bench_size(printers: int, info: dict[str, str], secrets: Path) -> dict[str, Any]:
    """Request counts per fetch for one fleet size; at 10k also time and peak heap."""
    figures: dict[str, Any] = {"printers": printers}
    async with httpx.AsyncClient(timeout=120) as client:
        observer = CountingObserver()
        fl = formlabs_source(info, client, observer)
        snapshot = await fl.fetch_printers()
        figures["formlabs_first"] = observer.total()
        observer.reset()
        await fl.fetch_printers()
        figures["formlabs_printers"] = observer.total()
        figures["formlabs_seen"] = len(snapshot.printers)
        observer.reset()
        inventory = await fl.fetch_inventory()
        figures["formlabs_inventory"] = observer.total()
        figures["formlabs_inventory_by"] = dict(sorted(observer.requests.items()))
        figures["tanks"], figures["cartridges"] = len(inventory.tanks), len(inventory.cartridges)
        observer.reset()
        cb = carbon_source(info, secrets, client, observer)
        snapshot = await cb.fetch_printers()
        figures["carbon_printers"] = observer.total()
        figures["carbon_seen"] = len(snapshot.printers)
        if printers >= 10_000:

            async def carbon_fetch() -> Any:
                # A new source each run: its own 100-per-10s budget starts full.
                return await carbon_source(info, secrets, client, observer).fetch_printers()

            figures["formlabs_time"] = await measure(fl.fetch_printers)
            figures["carbon_time"] = await measure(carbon_fetch)
    return figures


def describe(f: dict[str, Any]) -> list[str]:
    """The human-readable lines ``main`` prints for one fleet size."""
    n = f["printers"]
    lines = [
        f"formlabs {n:>6} printers: fetch_printers = {f['formlabs_printers']} request(s) "
        f"({f['formlabs_first']} on the first, incl. the token); {f['formlabs_seen']} printers",
        f"formlabs {n:>6} printers: fetch_inventory = {f['formlabs_inventory']} requests "
        f"{f['formlabs_inventory_by']}; {f['tanks']} tanks, {f['cartridges']} cartridges",
        f"carbon   {n:>6} printers: fetch_printers = {f['carbon_printers']} request(s); "
        f"{f['carbon_seen']} printers",
    ]
    for vendor in ("formlabs", "carbon"):
        if f"{vendor}_time" in f:
            seconds, peak = f[f"{vendor}_time"]
            lines.append(
                f"{vendor:<8} {n:>6} printers: one fetch_printers {seconds:.2f} s (median of "
                f"{TIMED_RUNS}), peak Python heap {peak:.0f} MiB"
            )
    return lines


def collect() -> list[dict[str, Any]]:
    """Figures for every size in :data:`SIZES`, each against its own simulator process."""
    context = multiprocessing.get_context("spawn")
    results = []
    for printers in SIZES:
        with tempfile.TemporaryDirectory() as tmp:
            secrets = Path(tmp) / "secrets.json"
            parent, child = context.Pipe()
            process = context.Process(target=serve, args=(printers, str(secrets), child))
            process.start()
            try:
                info = parent.recv()
                results.append(asyncio.run(bench_size(printers, info, secrets)))
            finally:
                parent.send("stop")
                process.join(timeout=30)
    return results


def run() -> list[dict[str, Any]]:
    """Rows for ``make bench``: requests per fetch per size, time and heap of a 10k fetch."""
    rows: list[dict[str, Any]] = []
    for f in collect():
        n = f"{f['printers']:,} printers"
        rows += [
            {
                "name": f"Formlabs fetch_printers requests, {n}",
                "value": f["formlabs_printers"],
                "unit": "requests",
                "note": f"{f['formlabs_first']} on the first fetch (token request included); "
                f"{f['formlabs_seen']:,} printers seen",
            },
            {
                "name": f"Formlabs fetch_inventory requests, {n}",
                "value": f["formlabs_inventory"],
                "unit": "requests",
                "note": f"{f['formlabs_inventory_by']}; {f['tanks']:,} tanks, "
                f"{f['cartridges']:,} cartridges",
            },
            {
                "name": f"Carbon fetch_printers requests, {n}",
                "value": f["carbon_printers"],
                "unit": "requests",
                "note": f"{f['carbon_seen']:,} printers seen",
            },
        ]
        for vendor, label in (("formlabs", "Formlabs"), ("carbon", "Carbon")):
            if f"{vendor}_time" in f:
                seconds, peak = f[f"{vendor}_time"]
                rows += [
                    {
                        "name": f"{label} fetch_printers time, {n}",
                        "value": seconds,
                        "unit": "s",
                        "note": f"median of {TIMED_RUNS}; simulator in a child process, "
                        "its rate limits raised",
                    },
                    {
                        "name": f"{label} fetch_printers peak Python heap, {n}",
                        "value": peak,
                        "unit": "MiB",
                        "note": "tracemalloc peak of one more fetch",
                    },
                ]
    return [{"baseline": None, "baseline_value": None, "ratio": None, **row} for row in rows]


def main() -> int:
    print(f"python {sys.version.split()[0]}; simulator in a child process", flush=True)
    for figures in collect():
        for line in describe(figures):
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
