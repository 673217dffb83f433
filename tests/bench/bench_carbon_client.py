"""One full fetch of 10,000+ Carbon prints: printfleet's CarbonSource vs the vendor's client.

Both page the same simulated ``GET /v1/prints`` with the same query (the five statuses
printfleet asks for, ``sort=finished_at``, ``finished_after``, ``limit=100``, cursor
pagination) and keep every print in memory:

- printfleet: ``CarbonSource.fetch_runs(since=...)`` over a shared ``httpx.AsyncClient`` (as the
  daemon holds one), mapping records to normalized ``Print`` values.
- baseline: ``carbon3d-client`` 0.4.17, the vendor's generated Python client, used as the
  vendor's examples show (``PrintsApi(ApiClient(Configuration(host, access_token=<JWT>)))``,
  the JWT minted with PyJWT RS256 from ``secrets.json``), following ``next_cursor``.

Each side mints its token inside the timed fetch. Time is the median of three fetches after a
warm-up; memory is the tracemalloc peak of one more fetch (Python heap allocated by the fetch).
The simulator runs in a child process (rate limit raised, fleet frozen: speed 1e-6) so its
CPU and memory are not counted; it serves the same ~10k records to both. A "floor" (bare httpx
GET + ``json.loads`` of every page) shows how much of either time is the server's.

Run alone with ``python -m tests.bench.bench_carbon_client``; ``make bench`` collects
:func:`run`. The baseline needs ``pip install carbon3d-client==0.4.17``; without it the row
says so and printfleet's figures are still reported.
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import jwt
import structlog

from printfleet.clock import SystemClock
from printfleet.core.model import iso as iso_z
from printfleet.sources.carbon import PAGE_LIMIT, PRINT_STATUSES, CarbonSource
from printfleet.sources.factory import load_carbon_secrets
from printfleet.sources.http.budget import RequestBudget

#: A frozen fleet of this many printers that ran for HISTORY_HOURS holds 10,000+ finished prints
#: (26 h held 10,243 until the session-4 simulator changes moved it to 8,940).
CARBON_PRINTERS = 1_000
HISTORY_HOURS = 30
SEED = 7
TARGET_PRINTS = 10_000
TIMED_RUNS = 3
SINCE = datetime(2000, 1, 1, tzinfo=UTC)  # before any simulated print: the whole history
BASELINE = "carbon3d-client 0.4.17 (vendor SDK, urllib3)"
#: Warnings and errors still show; the per-fetch "source.authenticated" debug line does not.
QUIET_LOG = structlog.wrap_logger(
    structlog.PrintLogger(file=sys.stderr),
    wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
)


def serve(secrets_path: str, pipe: Connection) -> None:
    """Child process: a Carbon simulator with HISTORY_HOURS of history, frozen, until "stop"."""
    from printfleet.simulator import Simulator, SimulatorConfig

    now = datetime.now(UTC)
    config = SimulatorConfig(
        formlabs_printers=0,
        carbon_printers=CARBON_PRINTERS,
        vendors=("carbon",),
        seed=SEED,
        speed=1e-6,  # nothing moves while we measure: every fetch sees the same records
        start=now - timedelta(hours=HISTORY_HOURS),
        protocol_clock="wall",  # JWT exp and cursor expiry judged on real time
        carbon_limit_per_10s=10_000_000,
    )
    with Simulator(config) as sim:
        sim.advance_to(now)
        sim.write_carbon_secrets(secrets_path)
        pipe.send({"carbon_url": sim.carbon_url})
        pipe.recv()


# -- printfleet -------------------------------------------------------------------------------


async def printfleet_fetch(client: httpx.AsyncClient, url: str, secrets: Path) -> int:
    """One ``fetch_runs`` from scratch (new source: new JWT, full budget); prints fetched."""
    client_id, key = load_carbon_secrets(secrets)
    clock = SystemClock()
    source = CarbonSource(
        name="bench",
        client_id=client_id,
        private_key=key,
        client=client,
        clock=clock,
        base_url=url,
        budget=RequestBudget.carbon(clock, per_10s=1_000_000),
        log=QUIET_LOG,
    )
    batch = await source.fetch_runs(since=SINCE)
    return len(batch.runs)


async def floor_fetch(client: httpx.AsyncClient, url: str, secrets: Path) -> int:
    """The same pages with nothing but a GET and ``json.loads`` each: the server's share."""
    data = json.loads(secrets.read_text())
    token = jwt.encode(
        {"iss": data["client_id"], "exp": int(time.time() + 300)},
        data["client_secret"],
        algorithm="RS256",
    )
    query: list[tuple[str, str]] = [
        *(("status", s) for s in PRINT_STATUSES),
        ("sort", "finished_at"),
        ("limit", str(PAGE_LIMIT)),
        ("finished_after", iso_z(SINCE)),
    ]
    count, cursor = 0, ""
    while True:
        params = [*query, ("cursor", cursor)] if cursor else query
        response = await client.get(
            f"{url}/prints", params=tuple(params), headers={"Authorization": f"Bearer {token}"}
        )
        body = json.loads(response.content)
        count += len(body["prints"])
        cursor = body.get("next_cursor") or ""
        if not cursor:
            return count


# -- the vendor's client ----------------------------------------------------------------------


def vendor_fetcher(url: str, secrets: Path) -> Callable[[], int]:
    """A fetch with carbon3d-client as the vendor's README shows it; raises ImportError."""
    import carbon3d  # type: ignore[import-untyped, import-not-found, unused-ignore]

    config = carbon3d.Configuration(host=url)
    api = carbon3d.PrintsApi(carbon3d.ApiClient(config))

    def fetch() -> int:
        data = json.loads(secrets.read_text())
        config.access_token = jwt.encode(
            {"iss": data["client_id"], "exp": int(time.time() + 5 * 60)},
            data["client_secret"],
            algorithm="RS256",
        )
        prints: dict[str, Any] = {}
        cursor = None
        while True:
            kwargs: dict[str, Any] = {"cursor": cursor} if cursor else {}
            page = api.get_prints(
                limit=PAGE_LIMIT,
                status=list(PRINT_STATUSES),
                sort=["finished_at"],
                finished_after=iso_z(SINCE),
                **kwargs,
            )
            for record in page.prints or ():
                prints[record.uuid] = record  # uuid: the vendor's de-duplication advice
            cursor = page.next_cursor
            if not cursor:
                return len(prints)

    return fetch


# -- measuring --------------------------------------------------------------------------------


class Figures(NamedTuple):
    seconds: float  # wall, median of TIMED_RUNS
    cpu_s: float  # this process's CPU (the client's share), median of TIMED_RUNS
    peak_mib: float  # tracemalloc peak of one more fetch
    prints: int


def _measure(
    fetch: Callable[[], int], *, timed_runs: int = TIMED_RUNS, warm: bool = True
) -> Figures:
    """Figures of ``fetch`` (after one untimed warm-up call when ``warm``)."""
    prints = fetch() if warm else 0
    walls, cpus = [], []
    for _ in range(timed_runs):
        wall, cpu = time.perf_counter(), time.process_time()
        prints = fetch()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    tracemalloc.start()
    try:
        fetch()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return Figures(statistics.median(walls), statistics.median(cpus), peak / 2**20, prints)


def _measure_httpx(url: str, secrets: Path) -> tuple[Figures, Figures]:
    """printfleet's fetch and the bare-httpx floor, on one loop and one shared client."""
    loop = asyncio.new_event_loop()
    try:
        client = httpx.AsyncClient(timeout=120)

        def ours() -> int:
            return loop.run_until_complete(printfleet_fetch(client, url, secrets))

        def floor() -> int:
            return loop.run_until_complete(floor_fetch(client, url, secrets))

        try:
            return _measure(ours), _measure(floor, timed_runs=1, warm=False)
        finally:
            loop.run_until_complete(client.aclose())
    finally:
        loop.close()


def run() -> list[dict[str, Any]]:
    """Rows for ``make bench``: one 10k-print fetch, printfleet vs the vendor's SDK."""
    context = multiprocessing.get_context("spawn")
    unavailable = ""
    theirs: Figures | None = None
    with tempfile.TemporaryDirectory() as tmp:
        secrets = Path(tmp) / "secrets.json"
        parent, child = context.Pipe()
        process = context.Process(target=serve, args=(str(secrets), child), daemon=True)
        process.start()
        try:
            url = parent.recv()["carbon_url"]
            ours, floor = _measure_httpx(url, secrets)
            try:
                theirs = _measure(vendor_fetcher(url, secrets))
            except ImportError as err:
                unavailable = f"carbon3d-client is not installed ({err})"
        finally:
            parent.send("stop")
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    if ours.prints < TARGET_PRINTS:
        raise AssertionError(f"the simulator served {ours.prints} prints, not {TARGET_PRINTS:,}+")
    pages = -(-floor.prints // PAGE_LIMIT)
    note = (
        f"{ours.prints:,} prints in {pages} pages of {PAGE_LIMIT}, same query both sides, from a "
        f"frozen {CARBON_PRINTERS:,}-printer simulator in a child process; median of "
        f"{TIMED_RUNS} after a warm-up; peak = tracemalloc peak of one more fetch. Floor (bare "
        f"httpx GET + json.loads of the same pages, one run): {floor.seconds:.2f} s wall, "
        f"{floor.cpu_s:.2f} s client CPU, {floor.peak_mib:.1f} MiB. Wall time is mostly the "
        "simulator's (~27 ms a page) and moves with machine load; client CPU is the steadier "
        "comparison"
    )
    if theirs is not None:
        note += f"; carbon3d-client fetched {theirs.prints:,} prints"
        if theirs.prints != ours.prints:
            note += " (counts differ!)"
    else:
        note += f"; baseline unavailable: {unavailable}"
    baseline = BASELINE if theirs is not None else f"{BASELINE}: unavailable"
    name = f"Carbon /prints full fetch, {ours.prints // 1000}k prints"

    def row(label: str, unit: str, ours_value: float, theirs_value: float | None) -> dict[str, Any]:
        return {
            "name": f"{name}: {label}",
            "value": ours_value,
            "unit": unit,
            "baseline": baseline,
            "baseline_value": theirs_value,
            "ratio": theirs_value / ours_value if theirs_value is not None else None,
            "target": "> 1x",
        }

    return [
        {**row("wall time", "s", ours.seconds, theirs and theirs.seconds), "note": note},
        row("client CPU", "s", ours.cpu_s, theirs and theirs.cpu_s),
        row("peak Python heap", "MiB", ours.peak_mib, theirs and theirs.peak_mib),
    ]


if __name__ == "__main__":
    for row in run():
        base = row["baseline_value"]
        ratio = row["ratio"]
        print(
            f"{row['name']}: {row['value']:.2f} {row['unit']} vs "
            + (f"{base:.2f} {row['unit']} ({ratio:.2f}x)" if base is not None else "—")
        )
        if row.get("note"):
            print(f"  note: {row['note']}")
