"""CPU per printer record polled, by stage: what one poll of a busy fleet costs per record.

:func:`measure` runs a simulator fleet (half Formlabs, half Carbon, in a child process so its
own work is not counted, rate limits raised, moving 3 times real time) and polls each source
every 15 simulated seconds (the default base interval; the simulated printers ping every 30 s)
with the real sources, pollers, pipeline and SQLite store in this process (no MQTT or webhook
sinks, no rules: those cost per event, not per record). After warm-up polls (the first is the
silent baseline), several successive polls of both sources are timed, stage by stage:

- ``decode``: JSON text to objects (the per-record decoder and page ``loads``);
- ``map``: vendor records to printers (``map_printers``, less the decoding it drives);
- ``diff``: carry-forward, queues, the differ, the feed reconcile, ``without_raw``;
- ``publish``: ``Pipeline.handle`` (deliveries, the store commit, the fleet view);
- ``http``: the rest of the fetches (the HTTP client, token, history and queue reads);
- ``other``: the rest of the poll cycle;
- ``cpu_total``: the sum, this thread's CPU time (``time.thread_time``) over the whole timed
  polls (the simulator's rendering, in its own process, not counted).

Logging is set to warnings (the daemon's info lines per event are not counted).

Each value is µs per printer record polled (records = printers read per fetch, summed over
the timed polls), plus ``records``, ``reused`` (the share of records not mapped again, 0..1;
``reused_formlabs`` and ``reused_carbon`` per vendor) and ``polls``. The stage timers wrap
module functions, so their own overhead (a µs or so per record, in ``decode``) is included.

Run alone with ``python -m tests.bench.record_cost [printers]`` (default 10,000: about a
minute).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar

import httpx
import structlog
from pydantic import SecretStr

import printfleet.pipeline as pipeline_module
import printfleet.poller as poller_module
from printfleet.clock import SystemClock
from printfleet.core.polling import PollPolicy
from printfleet.core.thresholds import DiffSettings
from printfleet.observe import NullObserver
from printfleet.pipeline import Pipeline
from printfleet.poller import Cycle, SourcePoller
from printfleet.sources import carbon_map, formlabs_map, mapping
from printfleet.sources.carbon import CarbonSource
from printfleet.sources.factory import load_carbon_secrets
from printfleet.sources.formlabs import FormlabsSource
from printfleet.sources.http import client as client_module
from printfleet.sources.http.budget import RequestBudget
from printfleet.store import Store

#: Simulated seconds per real second; with POLL_GAP_S, each source is polled every 15
#: simulated seconds (the default base interval) while the fleet pings every 30 s.
SPEED = 3.0
WARMUP_POLLS = 2
TIMED_POLLS = 4
#: Real seconds between the starts of two polls of the same source (at least).
POLL_GAP_S = 5.0
STAGES = ("decode", "map", "diff", "publish", "http", "other")
QUIET_LOG = structlog.wrap_logger(
    structlog.PrintLogger(file=sys.stderr),
    wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR),
)

F = TypeVar("F", bound=Callable[..., Any])


class _Stages:
    """Exclusive CPU time of this thread per stage: entering a stage pauses the one it was
    entered from. Thread CPU, not wall time: the machine may be shared, and waiting for the
    simulator's answers costs the daemon nothing."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self.current = "other"
        self.mark = time.thread_time()
        self.active = False

    def enter(self, stage: str) -> str:
        now = time.thread_time()
        if self.active:
            self.seconds[self.current] += now - self.mark
        self.mark = now
        previous, self.current = self.current, stage
        return previous

    def leave(self, previous: str) -> None:
        now = time.thread_time()
        if self.active:
            self.seconds[self.current] += now - self.mark
        self.mark = now
        self.current = previous

    def sync(self, stage: str, fn: F) -> F:
        def timed(*args: Any, **kwargs: Any) -> Any:
            previous = self.enter(stage)
            try:
                return fn(*args, **kwargs)
            finally:
                self.leave(previous)

        return timed  # type: ignore[return-value]

    def coro(self, stage: str, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
        async def timed(*args: Any, **kwargs: Any) -> Any:
            previous = self.enter(stage)
            try:
                return await fn(*args, **kwargs)
            finally:
                self.leave(previous)

        return timed


@contextmanager
def _instrumented(stages: _Stages) -> Iterator[None]:
    """Wrap the module functions each stage consists of; restore them afterwards."""
    patches: list[tuple[Any, str, str, bool]] = [
        (mapping, "_record", "decode", False),
        (client_module, "loads", "decode", False),
        (formlabs_map, "map_printers", "map", False),
        (carbon_map, "map_printers", "map", False),
        (poller_module, "carry_forward", "diff", False),
        (poller_module, "apply_queues", "diff", False),
        (poller_module, "diff", "diff", False),
        (poller_module, "reconcile", "diff", False),
        (poller_module, "without_raw", "diff", False),
        (pipeline_module.Pipeline, "handle", "publish", True),
        (FormlabsSource, "fetch_printers", "http", True),
        (FormlabsSource, "fetch_runs", "http", True),
        (FormlabsSource, "fetch_queues", "http", True),
        (CarbonSource, "fetch_printers", "http", True),
        (CarbonSource, "fetch_runs", "http", True),
    ]
    saved = [(owner, name, getattr(owner, name)) for owner, name, _, _ in patches]
    try:
        for owner, name, stage, is_coro in patches:
            fn = getattr(owner, name)
            setattr(owner, name, stages.coro(stage, fn) if is_coro else stages.sync(stage, fn))
        yield
    finally:
        for owner, name, fn in saved:
            setattr(owner, name, fn)


class _NoRules:
    """The pipeline's rule engine, with no rules (rules cost per event, not per record)."""

    matches: dict[str, int] = {}

    def process(self, event: dict[str, Any], now: Any, *, trace: Any = None) -> list[Any]:
        return []

    def tick(self, now: Any, *, trace: Any = None) -> list[Any]:
        return []

    def next_deadline(self) -> None:
        return None

    def state(self) -> dict[str, Any]:
        return {}


def _serve(printers: int, secrets_path: str, pipe: Connection) -> None:
    """Child process: a simulator with ``printers`` split between the vendors, until stopped."""
    from printfleet.simulator import Simulator, SimulatorConfig

    config = SimulatorConfig(
        formlabs_printers=printers // 2,
        carbon_printers=printers - printers // 2,
        seed=3,
        speed=SPEED,
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


class _Counting:
    """Printer records polled (and reused) per cycle; read off the cycles so that the same
    measurement runs on code without ``Snapshot.reused`` (counted as 0 there)."""

    def __init__(self) -> None:
        self.records: dict[str, int] = {}
        self.reused: dict[str, int] = {}

    def cycle(self, cycle: Cycle) -> None:
        if cycle.snapshot is not None:
            name = cycle.source
            self.records[name] = self.records.get(name, 0) + len(cycle.snapshot.printers)
            reused = getattr(cycle.snapshot, "reused", 0)
            self.reused[name] = self.reused.get(name, 0) + reused


async def _measure(info: dict[str, str], secrets: Path, workdir: Path) -> dict[str, float]:
    clock = SystemClock()
    counting = _Counting()
    store = Store.open(workdir / "state.db", clock=clock)
    pipeline = Pipeline(store=store, rules=_NoRules(), clock=clock, mqtt_prefix="printfleet")
    client_id, key = load_carbon_secrets(secrets)
    async with httpx.AsyncClient(timeout=120) as client:
        sources = [
            FormlabsSource(
                name="formlabs",
                client_id=info["client_id"],
                client_secret=SecretStr(info["client_secret"]),
                client=client,
                clock=clock,
                offline_after=timedelta(minutes=5),
                base_url=info["formlabs_url"],
                budget=RequestBudget.formlabs(clock, per_hour=10_000_000, per_second=1_000_000),
                log=QUIET_LOG,
            ),
            CarbonSource(
                name="carbon",
                client_id=client_id,
                private_key=key,
                client=client,
                clock=clock,
                base_url=info["carbon_url"],
                budget=RequestBudget.carbon(clock, per_10s=10_000_000),
                log=QUIET_LOG,
            ),
        ]

        async def handle(cycle: Cycle) -> None:
            counting.cycle(cycle)
            await pipeline.handle(cycle)

        pollers = [
            SourcePoller(
                source,
                handle=handle,
                clock=clock,
                policy=PollPolicy(),
                diff_settings=DiffSettings(),
                observer=NullObserver(),
            )
            for source in sources
        ]
        stages = _Stages()
        with _instrumented(stages):
            cpu = 0.0
            for index in range(WARMUP_POLLS + TIMED_POLLS):
                timed = index >= WARMUP_POLLS
                started = time.perf_counter()
                if timed and index == WARMUP_POLLS:
                    counting.records, counting.reused = {}, {}
                for poller in pollers:
                    stages.active = timed
                    stages.enter("other")
                    cpu_before = time.thread_time()
                    await poller.poll_once()
                    cpu += time.thread_time() - cpu_before if timed else 0.0
                    stages.leave("other")
                    stages.active = False
                await asyncio.sleep(max(0.0, POLL_GAP_S - (time.perf_counter() - started)))
    store.close()
    records = max(1, sum(counting.records.values()))
    result = {stage: stages.seconds[stage] * 1e6 / records for stage in STAGES}
    result["cpu_total"] = cpu * 1e6 / records
    result["records"] = float(records)
    result["reused"] = sum(counting.reused.values()) / records
    for name, count in counting.records.items():
        result[f"reused_{name}"] = counting.reused.get(name, 0) / max(1, count)
    result["polls"] = float(TIMED_POLLS)
    return result


def measure(printers: int) -> dict[str, float]:
    """µs of CPU per printer record polled, by stage (see the module docstring), for a fleet
    of ``printers`` (half Formlabs, half Carbon) served by a simulator in a child process.

    The child is spawned: a script calling this must do so under ``if __name__ ==
    "__main__":``. Takes about a minute at 10,000 printers (the simulator's start included).
    """
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    try:
        return _in_child_simulator(printers)
    finally:
        structlog.configure(**saved)


def _in_child_simulator(printers: int) -> dict[str, float]:
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        secrets = workdir / "secrets.json"
        parent, child = context.Pipe()
        process = context.Process(target=_serve, args=(printers, str(secrets), child))
        process.start()
        try:
            info = parent.recv()
            return asyncio.run(_measure(info, secrets, workdir))
        finally:
            parent.send("stop")
            process.join(timeout=30)


def main() -> None:
    printers = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    result = measure(printers)
    print(f"{printers:,} printers, {int(result['records']):,} records over {TIMED_POLLS} polls")
    for name in (*STAGES, "cpu_total"):
        print(f"  {name:<9} {result[name]:8.1f} µs/record")
    for name in ("reused", "reused_formlabs", "reused_carbon"):
        print(f"  {name:<15} {result.get(name, 0.0) * 100:5.1f} %")


if __name__ == "__main__":
    main()
