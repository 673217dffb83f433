"""Containment: a crashing poll, delivery or task is logged, counted and survived, never fatal."""

from __future__ import annotations

import asyncio
import itertools
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import structlog
from prometheus_client import CollectorRegistry

from printfleet.core.delivery import Delivery
from printfleet.core.events import EventType
from printfleet.core.model import Printer, PrinterStatus, Snapshot, Vendor, frozen_mapping
from printfleet.core.polling import PollPolicy
from printfleet.core.prints import expected_end, shifted
from printfleet.core.thresholds import DiffSettings
from printfleet.metrics.observer import Metrics
from printfleet.outbox import OutboxWorker
from printfleet.poller import Cycle, SourcePoller
from printfleet.sources.base import BudgetStatus, Inventory, PrintLookup, RunBatch
from printfleet.sources.formlabs import _lookup_windows
from printfleet.store import Store
from printfleet.supervisor import supervise
from printfleet.testing import FakeClock

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def printer(serial: str) -> Printer:
    return Printer(
        serial=serial,
        name=serial,
        vendor=Vendor.FORMLABS,
        model="Form 4",
        model_code="FORM-4-0",
        status=PrinterStatus.IDLE,
        status_raw="IDLE",
        online=True,
    )


class ScriptedSource:
    """A source answering each fetch_printers with the next scripted snapshot or exception."""

    def __init__(self, clock: FakeClock, script: list[Snapshot | BaseException]) -> None:
        self._clock = clock
        self._script = script

    @property
    def name(self) -> str:
        return "lab"

    @property
    def vendor(self) -> Vendor:
        return Vendor.FORMLABS

    async def fetch_printers(self) -> Snapshot:
        answer = self._script.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async def fetch_runs(self, *, since: datetime | None = None, lookups: Any = ()) -> RunBatch:
        return RunBatch()

    async def fetch_inventory(self) -> Inventory:
        return Inventory()

    async def fetch_queues(self) -> None:
        return None

    def budget(self) -> BudgetStatus:
        return BudgetStatus(remaining=100.0, capacity=100.0, window_s=3600.0)

    async def aclose(self) -> None:
        pass


def snapshot(clock: FakeClock, *serials: str) -> Snapshot:
    return Snapshot(
        source="lab",
        vendor=Vendor.FORMLABS,
        taken_at=clock.now(),
        printers=frozen_mapping({s: printer(s) for s in serials}),
    )


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


async def test_an_unexpected_exception_fails_only_that_poll_as_bad_response() -> None:
    """A RecursionError in one poll is poll.crashed + source.unreachable (bad_response), the last
    good snapshot is kept, the next poll comes after the normal delay and recovers cleanly."""
    clock = FakeClock(T0)
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.track_tasks(["lab"], ["poll:lab"])
    cycles: list[Cycle] = []

    async def handle(cycle: Cycle) -> None:
        cycles.append(cycle)

    source = ScriptedSource(
        clock, [snapshot(clock, "A", "B"), RecursionError("maximum recursion depth exceeded")]
    )
    policy = PollPolicy(interval=timedelta(seconds=15))
    poller = SourcePoller(
        source,
        handle=handle,
        clock=clock,
        policy=policy,
        diff_settings=DiffSettings(),
        observer=metrics,
    )
    await poller.poll_once()
    assert sample(registry, "printfleet_poll_failures_total", source="lab", error="crashed") == 0
    with structlog.testing.capture_logs() as logs:
        delay = await poller.poll_once()

    crashed = [e for e in logs if e["event"] == "poll.crashed"]
    assert len(crashed) == 1
    assert crashed[0]["error_type"] == "RecursionError"
    assert crashed[0]["message"] == "maximum recursion depth exceeded"
    assert [e["error"] for e in logs if e["event"] == "source.down"] == ["bad_response"]
    failed = cycles[-1]
    assert failed.snapshot is None
    assert [e.type for e in failed.events] == [EventType.SOURCE_UNREACHABLE]
    assert poller.health.last_error == "bad_response"
    assert delay == 15.0
    assert poller.previous is not None
    assert set(poller.previous.printers) == {"A", "B"}
    assert sample(registry, "printfleet_poll_failures_total", source="lab", error="crashed") == 1
    assert (
        sample(registry, "printfleet_poll_failures_total", source="lab", error="bad_response") == 0
    )

    source._script.append(snapshot(clock, "A", "B"))
    await poller.poll_once()
    assert [e.type for e in cycles[-1].events] == [EventType.SOURCE_RECOVERED]


async def test_a_pipeline_crash_leaves_the_poller_as_before_the_poll() -> None:
    """When the pipeline raises on a cycle, its changes are not taken as seen: the next poll
    reports them again (nothing detected is lost) and the outage is announced once."""
    clock = FakeClock(T0)
    seen: list[Cycle] = []
    successful_cycles = 0

    async def handle(cycle: Cycle) -> None:
        nonlocal successful_cycles
        if cycle.snapshot is not None:
            successful_cycles += 1
        if successful_cycles == 2 and cycle.snapshot is not None:
            raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")
        seen.append(cycle)

    source = ScriptedSource(
        clock, [snapshot(clock, "A"), snapshot(clock, "A", "B"), snapshot(clock, "A", "B")]
    )
    poller = SourcePoller(
        source, handle=handle, clock=clock, policy=PollPolicy(), diff_settings=DiffSettings()
    )
    await poller.poll_once()
    await poller.poll_once()  # the pipeline crashes on "B added"
    assert [e.type for e in seen[-1].events] == [EventType.SOURCE_UNREACHABLE]
    await poller.poll_once()
    kinds = [(e.type, e.subject) for e in seen[-1].events]
    assert (EventType.PRINTER_ADDED, "B") in kinds
    assert (EventType.SOURCE_RECOVERED, "lab") in kinds


async def test_a_crashing_task_is_restarted_with_capped_backoff() -> None:
    """A task that keeps dying is logged as task.crashed, counted and restarted after 1 s, 2 s,
    4 s ... at most 60 s; when it finally returns, the supervisor returns."""
    clock = FakeClock(T0)
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    runs: list[float] = []

    async def flaky() -> None:
        runs.append(clock.monotonic())
        if len(runs) < 9:
            raise ValueError("Publish topic is too long")

    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(
            supervise("mqtt", flaky, clock=clock, observer=metrics, rng=random.Random(1))
        )
        await clock.drive(task)

    gaps = [b - a for a, b in itertools.pairwise(runs)]
    assert len(runs) == 9
    for attempt, gap in enumerate(gaps, start=1):
        ceiling = min(60.0, 2.0 ** (attempt - 1))
        assert ceiling - 1e-6 <= gap <= min(60.0, ceiling * 1.5) + 1e-6
    crashes = [e for e in logs if e["event"] == "task.crashed"]
    assert len(crashes) == 8
    assert crashes[0]["task"] == "mqtt"
    assert crashes[0]["error_type"] == "ValueError"
    assert crashes[0]["message"] == "Publish topic is too long"
    assert crashes[0]["restart_in"] == pytest.approx(gaps[0], abs=0.001)
    assert sample(registry, "printfleet_task_restarts_total", task="mqtt") == 8


async def test_cancelling_a_supervised_task_stops_it() -> None:
    """Shutdown (cancellation) is not a crash: no restart, no task.crashed."""
    clock = FakeClock(T0)
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(supervise("poll:lab", forever, clock=clock))
        await asyncio.wait_for(started.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert not [e for e in logs if e["event"] == "task.crashed"]


@pytest.mark.parametrize(
    ("when", "delta"),
    [
        (datetime.min.replace(tzinfo=UTC), -timedelta(minutes=1)),
        (datetime.max.replace(tzinfo=UTC), timedelta(days=60)),
    ],
)
def test_date_arithmetic_at_the_ends_of_the_range_clamps(when: datetime, delta: timedelta) -> None:
    """0001-01-01 minus a minute and 9999-12-31 plus 60 days give the range's end, not an error."""
    assert shifted(when, delta) == when


def test_a_print_created_at_year_one_does_not_break_the_history_lookup() -> None:
    """The lookup window of a vanished print created 0001-01-01 (the crash seen) is year one."""
    year_one = datetime(1, 1, 1, tzinfo=UTC)
    windows = _lookup_windows([PrintLookup("Form4-A", "p1", created_at=year_one)])
    assert windows == {"Form4-A": datetime.min.replace(tzinfo=UTC)}


def test_a_print_started_at_the_end_of_time_has_an_expected_end() -> None:
    """A running print started 9999-12-31 with hours remaining ends at datetime.max, no error."""
    from printfleet.core.model import Print, PrintStatus

    run = Print(
        id="p1",
        name="x",
        status=PrintStatus.PRINTING,
        status_raw="PRINTING",
        started_at=datetime(9999, 12, 31, 23, tzinfo=UTC),
        remaining_s=7200.0,
    )
    assert expected_end(run) == datetime.max.replace(tzinfo=UTC)


class CrashingSink:
    """A sink whose deliver raises a non-DeliveryFailed exception (a sink bug)."""

    name = "hook"

    def __init__(self) -> None:
        self.calls = 0

    async def __aenter__(self) -> CrashingSink:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def deliver(self, delivery: Delivery) -> None:
        self.calls += 1
        raise KeyError("printer")


async def test_a_crashing_sink_fails_the_delivery_and_retries_it(
    store: Store, clock: FakeClock
) -> None:
    """A sink raising KeyError logs delivery.crashed; the entry is rescheduled, not lost, and
    the worker keeps running."""
    sink = CrashingSink()
    worker = OutboxWorker(store, sink, clock=clock, rng=random.Random(0), idle_poll=3600.0)
    store.commit(
        deliveries=[
            Delivery(
                id="d1",
                sink="hook",
                event_id="e1",
                key="lab/A",
                created_at=clock.now(),
                payload={"event": {"id": "e1", "type": "print.finished"}},
            )
        ]
    )
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(worker.run())
        await asyncio.wait_for(worker.wait_idle(), 5)
        assert sink.calls == 1
        await clock.advance(2.0)  # past the first retry's backoff (at most 1 s)
        await asyncio.wait_for(worker.wait_idle(), 5)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert sink.calls == 2
    crashed = [e for e in logs if e["event"] == "delivery.crashed"]
    assert crashed[0]["error_type"] == "KeyError"
    assert crashed[0]["message"] == "'printer'"
    assert store.pending_count("hook")["hook"] == 1


async def test_an_outage_whose_announcement_could_not_be_stored_is_announced_again() -> None:
    """If handing on a failed poll fails too, the next failure still emits source.unreachable."""
    clock = FakeClock(T0)
    handed: list[Cycle] = []
    fail_next = [True]

    async def handle(cycle: Cycle) -> None:
        if cycle.snapshot is None and fail_next[0]:
            fail_next[0] = False
            raise OSError("disk full")
        handed.append(cycle)

    from printfleet.errors import SourceUnavailable

    down = SourceUnavailable("lab", "503")
    source = ScriptedSource(clock, [snapshot(clock, "A"), down, down])
    poller = SourcePoller(
        source,
        handle=handle,
        clock=clock,
        policy=PollPolicy(interval=timedelta(seconds=15)),
        diff_settings=DiffSettings(),
    )
    await poller.poll_once()
    with pytest.raises(OSError, match="disk full"):
        await poller.poll_once()
    await poller.poll_once()
    announced = [e.type for c in handed for e in c.events]
    assert announced.count(EventType.SOURCE_UNREACHABLE) == 1


async def test_an_outbox_worker_restarted_during_shutdown_leaves_delivering_to_the_drain(
    tmp_path: Any,
) -> None:
    """run() after drain() began returns at once: one delivery loop per sink, never two."""
    from printfleet.testing import RecordingSink

    clock = FakeClock(T0)
    with Store.open(tmp_path / "state.sqlite3", clock=clock) as store:
        sink = RecordingSink("hook")
        async with sink:
            worker = OutboxWorker(store, sink, clock=clock)
            drain = asyncio.create_task(worker.drain(5.0))
            await asyncio.sleep(0)
            await asyncio.wait_for(worker.run(), 1.0)
            await clock.advance(5.0)
            await asyncio.wait_for(drain, 1.0)
