"""Outbox workers: retries with backoff and Retry-After, dead letters, expiry, order, drain."""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import random
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from printfleet.cli.outbox import outbox_command
from printfleet.config import DaemonConfig, Settings
from printfleet.core.backoff import backoff as backoff_delay
from printfleet.core.delivery import Delivery
from printfleet.errors import DeliveryFailed, StoreError
from printfleet.observe import NullObserver
from printfleet.outbox import OutboxWorker
from printfleet.store import Store
from printfleet.testing import FakeClock, RecordingSink

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SETTLE = 5.0  # seconds of real time a condition may take before the test fails


class MaxRandom(random.Random):
    """Jitter that always picks the top of the range, so backoff delays are exact."""

    def random(self) -> float:
        return 1.0


class RecordingObserver(NullObserver):
    def __init__(self) -> None:
        self.results: list[str] = []

    def delivery_done(self, sink: str, result: str) -> None:
        self.results.append(result)


def delivery(n: int, *, key: str = "lab/A", sink: str = "hook") -> Delivery:
    return Delivery(
        id=f"d{n}",
        sink=sink,
        event_id=f"e{n}",
        key=key,
        created_at=T0 + timedelta(microseconds=n),
        payload={"event": {"id": f"e{n}", "type": "print.finished"}, "status": "firing"},
    )


def retry(retry_after: float | None = None, status: int = 503) -> DeliveryFailed:
    return DeliveryFailed(
        "hook", f"HTTP {status}", retryable=True, retry_after=retry_after, status=status
    )


@pytest.fixture
def observer() -> RecordingObserver:
    return RecordingObserver()


def make_worker(
    store: Store, sink: RecordingSink, clock: FakeClock, observer: RecordingObserver, **kw: Any
) -> OutboxWorker:
    kw.setdefault("rng", MaxRandom())
    kw.setdefault("idle_poll", 3600.0)
    return OutboxWorker(store, sink, clock=clock, observer=observer, **kw)


@contextlib.asynccontextmanager
async def running(worker: OutboxWorker, sink: RecordingSink) -> AsyncIterator[OutboxWorker]:
    """The worker's ``run`` as a task (cancelled at the end), once it is idle."""
    async with sink:
        task = asyncio.create_task(worker.run())
        try:
            await settled(worker)
            yield worker
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def settled(worker: OutboxWorker) -> None:
    await asyncio.wait_for(worker.wait_idle(), SETTLE)


async def until(predicate: Callable[[], bool]) -> None:
    """Let the loop run until ``predicate`` holds (fails after SETTLE seconds of real time)."""
    async with asyncio.timeout(SETTLE):
        while not predicate():
            await asyncio.sleep(0)


async def commit(store: Store, worker: OutboxWorker, *deliveries: Delivery) -> None:
    store.commit(deliveries=deliveries)
    worker.wake()
    await settled(worker)


def attempted(sink: RecordingSink) -> list[str]:
    return [a.delivery.id for a in sink.attempts]


# -- delivering ----------------------------------------------------------------------------


async def test_committed_deliveries_go_out_on_wake(
    store: Store, clock: FakeClock, observer: RecordingObserver
) -> None:
    """Deliveries committed and woken for are delivered at once, in order, and removed."""
    sink = RecordingSink("hook")
    worker = make_worker(store, sink, clock, observer)
    async with running(worker, sink):
        await commit(store, worker, delivery(1), delivery(2), delivery(3))
    assert [d.id for d in sink.delivered] == ["d1", "d2", "d3"]
    assert store.pending_count("hook") == {"hook": 0}
    assert observer.results == ["ok", "ok", "ok"]
    assert clock.monotonic() == 0


async def test_entries_committed_without_wake_are_found_by_the_idle_poll(
    store: Store, clock: FakeClock, observer: RecordingObserver
) -> None:
    """An entry queued by another process (CLI replay) goes out within ``idle_poll``."""
    sink = RecordingSink("hook")
    worker = make_worker(store, sink, clock, observer, idle_poll=30.0)
    async with running(worker, sink):
        store.commit(deliveries=[delivery(1)])
        await clock.advance(29)
        assert sink.attempts == []
        await clock.advance(1)
        await settled(worker)
    assert attempted(sink) == ["d1"]


async def test_retryable_failure_is_retried_after_the_backoff(
    store: Store, clock: FakeClock, observer: RecordingObserver
) -> None:
    """A retryable failure is retried after the backoff, not before."""
    sink = RecordingSink("hook", script=[retry()], clock=clock)
    worker = make_worker(store, sink, clock, observer, backoff_base=10.0)
    async with running(worker, sink):
        await commit(store, worker, delivery(1))
        await clock.advance(9.9)
        await settled(worker)
        assert attempted(sink) == ["d1"]
        await clock.advance(0.1)
        await settled(worker)
    assert [a.outcome for a in sink.attempts] == ["failed", "ok"]
    assert [a.monotonic for a in sink.attempts] == [0.0, 10.0]
    assert observer.results == ["retry", "ok"]


async def test_backoff_doubles_up_to_the_cap(
    store: Store, clock: FakeClock, observer: RecordingObserver
) -> None:
    """Successive retries wait base, 2 base, 4 base... never more than the cap."""
    sink = RecordingSink("hook", script=[retry()] * 5, clock=clock)
    worker = make_worker(store, sink, clock, observer, backoff_base=1.0, backoff_cap=5.0)
    async with running(worker, sink):
        await commit(store, worker, delivery(1))
        for _ in range(20):
            await clock.advance(1)
            await settled(worker)
    times = [a.monotonic or 0.0 for a in sink.attempts]
    assert [b - a for a, b in itertools.pairwise(times)] == [1, 2, 4, 5, 5]
    assert sink.attempts[-1].outcome == "ok"


async def test_retry_after_wins_over_the_backoff(
    store: Store, clock: FakeClock, observer: RecordingObserver
) -> None:
    """With Retry-After, nothing is sent to the sink before it has passed, then it is retried."""
    sink = RecordingSink("hook", script=[retry(retry_after=120, status=429)], clock=clock)
    worker = make_worker(store, sink, clock, observer, backoff_base=1.0)
    async with running(worker, sink):
        await commit(store, worker, delivery(1))
        await commit(store, worker, delivery(2, key="lab/B"))
        await clock.advance(119.9)
        await settled(worker)
        assert attempted(sink) == ["d1"]
        await clock.advance(0.1)
        await settled(worker)
    assert sorted(attempted(sink)) == ["d1", "d1", "d2"]
    assert [a.monotonic for a in sink.attempts] == [0.0, 120.0, 120.0]
    assert len(sink.delivered) == 2


async def test_rejected_delivery_is_dead_lettered_with_the_response(
    store: Store, clock: FakeClock, observer: RecordingObserver
) -> None:
    """A non-retryable failure (HTTP 400) is dead-lettered at once with the receiver's answer."""
    rejected = DeliveryFailed(
        "hook", "HTTP 400", retryable=False, status=400, response="invalid_blocks"
    )
    sink = RecordingSink("hook", script=[rejected])
    worker = make_worker(store, sink, clock, observer)
    async with running(worker, sink):
        await commit(store, worker, delivery(1), delivery(2))
    assert attempted(sink) == ["d1", "d2"]
    dead = store.list_entries(dead=True)
    assert [(e.delivery.id, e.response, e.last_error, e.attempt) for e in dead] == [
        ("d1", "invalid_blocks", "HTTP 400", 1)
    ]
    assert observer.results == ["dead", "ok"]


async def test_entries_older_than_max_age_expire_unsent(
    store: Store, clock: FakeClock, observer: RecordingObserver
) -> None:
    """An entry queued longer ago than ``max_age`` is dead-lettered as expired, not sent."""
    store.commit(deliveries=[delivery(1)])
    await clock.advance(25 * 3600)
    sink = RecordingSink("hook")
    worker = make_worker(store, sink, clock, observer, max_age=timedelta(hours=24))
    async with running(worker, sink):
        pass
    assert sink.attempts == []
    [dead] = store.list_entries(dead=True)
    assert dead.last_error == "expired after 0 attempts"
    assert observer.results == ["dead"]


async def test_an_entry_failing_past_max_age_expires(
    store: Store, clock: FakeClock, observer: RecordingObserver
) -> None:
    """An entry still failing when ``max_age`` has passed is dead-lettered with its last error."""
    sink = RecordingSink("hook", fail=lambda d: retry(retry_after=600), clock=clock)
    worker = make_worker(store, sink, clock, observer, max_age=timedelta(minutes=25))
    async with running(worker, sink):
        await commit(store, worker, delivery(1))
        for _ in range(3):
            await clock.advance(600)
            await settled(worker)
    [dead] = store.list_entries(dead=True)
    assert dead.last_error == "expired after 3 attempts; last error: HTTP 503"
    assert len(sink.attempts) == 3


async def test_same_key_in_order_different_keys_concurrently(
    store: Store, clock: FakeClock, observer: RecordingObserver
) -> None:
    """Printers are delivered concurrently up to the limit; one printer strictly in order."""
    sink = RecordingSink("hook", clock=clock, latency=1.0)
    worker = make_worker(store, sink, clock, observer, concurrency=2)
    batch = [delivery(10 * k + n, key=f"lab/{k}") for n in range(3) for k in range(3)]
    async with running(worker, sink):
        store.commit(deliveries=batch)
        worker.wake()
        for _ in range(30):
            await clock.advance(1)
        await settled(worker)
    assert len(sink.delivered) == 9
    for k in range(3):
        mine = [d.id for d in sink.delivered if d.key == f"lab/{k}"]
        assert mine == [f"d{10 * k}", f"d{10 * k + 1}", f"d{10 * k + 2}"]
    assert sink.max_in_flight == 2


async def test_one_key_is_never_delivered_concurrently(
    store: Store, clock: FakeClock, observer: RecordingObserver
) -> None:
    """Entries of the same printer are never in flight together, whatever the concurrency."""
    sink = RecordingSink("hook", clock=clock, latency=1.0)
    worker = make_worker(store, sink, clock, observer, concurrency=8)
    async with running(worker, sink):
        store.commit(deliveries=[delivery(n) for n in range(4)])
        worker.wake()
        for _ in range(10):
            await clock.advance(1)
        await settled(worker)
    assert [d.id for d in sink.delivered] == ["d0", "d1", "d2", "d3"]
    assert sink.max_in_flight == 1


async def test_a_failed_head_holds_back_later_entries_of_its_key(
    store: Store, clock: FakeClock, observer: RecordingObserver
) -> None:
    """While the first delivery for a printer waits to be retried, the next one is not sent."""
    sink = RecordingSink("hook", script=[retry()], clock=clock)
    worker = make_worker(store, sink, clock, observer, backoff_base=30.0)
    async with running(worker, sink):
        await commit(store, worker, delivery(1), delivery(2))
        assert attempted(sink) == ["d1"]
        await clock.advance(30)
        await settled(worker)
    assert attempted(sink) == ["d1", "d1", "d2"]


# -- a failing sink ------------------------------------------------------------------------


async def test_failing_sink_is_probed_one_entry_at_a_time(
    store: Store, clock: FakeClock, observer: RecordingObserver
) -> None:
    """After a batch fails entirely, the worker sends one entry per backoff, not the backlog."""
    sink = RecordingSink("hook", fail=lambda d: retry(), clock=clock)
    worker = make_worker(store, sink, clock, observer, backoff_base=10.0, backoff_cap=10.0)
    async with running(worker, sink):
        await commit(store, worker, *[delivery(n, key=f"lab/{n}") for n in range(5)])
        assert len(sink.attempts) == 5
        await clock.advance(10)
        await settled(worker)
        assert len(sink.attempts) == 6
        await clock.advance(10)
        await settled(worker)
        assert len(sink.attempts) == 7
    assert worker.failing


async def test_failing_and_recovered_are_logged_once_and_backlog_flushes(
    store: Store, clock: FakeClock, observer: RecordingObserver
) -> None:
    """The sink's failure and recovery are each logged once; recovery sends the backlog at once."""
    sink = RecordingSink("hook", script=[retry()] * 4, clock=clock)
    worker = make_worker(store, sink, clock, observer, backoff_base=10.0, backoff_cap=10.0)
    with capture_logs() as logs:
        async with running(worker, sink):
            await commit(store, worker, *[delivery(n, key=f"lab/{n}") for n in range(3)])
            for _ in range(3):
                await clock.advance(10)
                await settled(worker)
    events = [e["event"] for e in logs]
    assert events.count("outbox.sink_failing") == 1
    assert events.count("outbox.sink_recovered") == 1
    assert sorted(d.id for d in sink.delivered) == ["d0", "d1", "d2"]
    assert clock.monotonic() == 30  # nobody waited out their own (up to 10 s) backoff


async def test_each_batch_logs_one_line_with_counts_and_no_payload(
    store: Store, clock: FakeClock, observer: RecordingObserver
) -> None:
    """One ``outbox.batch`` line per batch carries counts, never payloads."""
    rejected = DeliveryFailed("hook", "HTTP 404", retryable=False, status=404)
    sink = RecordingSink("hook", script=[None, rejected, retry()])
    worker = make_worker(store, sink, clock, observer)
    with capture_logs() as logs:
        async with running(worker, sink):
            await commit(store, worker, *[delivery(n, key=f"lab/{n}") for n in range(3)])
    batches = [e for e in logs if e["event"] == "outbox.batch"]
    assert len(batches) == 1
    line = batches[0]
    assert (line["delivered"], line["dead"], line["retried"]) == (1, 1, 1)
    assert "print.finished" not in repr(logs)


async def test_an_unexpected_sink_error_is_retried_not_fatal(
    store: Store, clock: FakeClock, observer: RecordingObserver
) -> None:
    """A bug in a sink (any exception) reschedules the entry and keeps the worker alive."""
    calls: list[int] = []

    def flaky(d: Delivery) -> DeliveryFailed | None:
        calls.append(1)
        if len(calls) == 1:
            raise KeyError("oops")
        return None

    sink = RecordingSink("hook", fail=flaky)
    worker = make_worker(store, sink, clock, observer, backoff_base=1.0)
    async with running(worker, sink):
        await commit(store, worker, delivery(1))
        await clock.advance(1)
        await settled(worker)
    assert observer.results == ["retry", "ok"]


async def test_a_store_failure_keeps_the_entry_and_the_worker_alive(
    store: Store, clock: FakeClock, observer: RecordingObserver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When recording a delivery fails, the worker logs it once, pauses, and sends it again."""
    real = store.mark_delivered
    calls: list[str] = []

    def flaky(delivery_id: str) -> None:
        calls.append(delivery_id)
        if len(calls) <= 2:
            raise StoreError("state database: could not mark: the disk is full")
        real(delivery_id)

    monkeypatch.setattr(store, "mark_delivered", flaky)
    sink = RecordingSink("hook")
    worker = make_worker(store, sink, clock, observer, backoff_base=1.0)
    with capture_logs() as logs:
        async with running(worker, sink):
            await commit(store, worker, delivery(1))
            for _ in range(4):
                await clock.advance(2)
                await settled(worker)
    assert attempted(sink) == ["d1", "d1", "d1"]
    assert store.pending_count() == {}
    events = [e["event"] for e in logs]
    assert events.count("outbox.store_failed") == 1
    assert events.count("outbox.store_recovered") == 1


# -- shutdown and restart ------------------------------------------------------------------


async def test_drain_delivers_for_the_timeout_and_leaves_the_rest(
    store: Store, clock: FakeClock, observer: RecordingObserver
) -> None:
    """On shutdown, what can go in the grace period goes; the rest stays persisted."""
    sink = RecordingSink("hook", clock=clock, latency=1.0)
    worker = make_worker(store, sink, clock, observer)
    async with sink:
        run = asyncio.create_task(worker.run())
        await settled(worker)
        store.commit(deliveries=[delivery(n) for n in range(5)])
        drain = asyncio.create_task(worker.drain(2.5))
        for done in range(2):
            await until(lambda: len(sink.delivered) == done and sink.in_flight == 1)  # noqa: B023
            await clock.advance(1)
        await until(lambda: len(sink.delivered) == 2 and sink.in_flight == 1)
        await clock.advance(0.5)
        await asyncio.wait_for(drain, SETTLE)
        assert run.done()
    assert [d.id for d in sink.delivered] == ["d0", "d1"]
    assert [e.delivery.id for e in store.list_entries()] == ["d2", "d3", "d4"]


async def test_drain_without_run_sends_what_is_due_and_stops(
    store: Store, clock: FakeClock, observer: RecordingObserver
) -> None:
    """Drain alone delivers what is due now and returns without waiting for backoffs."""
    store.commit(deliveries=[delivery(1), delivery(2, key="lab/B")])
    store.reschedule("d2", due_at=T0 + timedelta(minutes=5), error="HTTP 503")
    sink = RecordingSink("hook")
    worker = make_worker(store, sink, clock, observer)
    async with sink:
        await asyncio.wait_for(worker.drain(10), SETTLE)
    assert [d.id for d in sink.delivered] == ["d1"]
    assert store.pending_count("hook") == {"hook": 1}


async def test_restart_picks_up_what_was_pending(
    store_path: Path, clock: FakeClock, observer: RecordingObserver
) -> None:
    """Entries left pending by a stopped daemon are delivered by the next one, in order."""
    with Store.open(store_path, clock=clock) as first:
        first.commit(deliveries=[delivery(1), delivery(2)])
        sink = RecordingSink("hook", fail=lambda d: retry())
        worker = make_worker(first, sink, clock, observer)
        async with running(worker, sink):
            first.commit(deliveries=[])
        assert attempted(sink) == ["d1"]
    with Store.open(store_path, clock=clock) as second:
        sink = RecordingSink("hook")
        worker = make_worker(second, sink, clock, observer)
        async with running(worker, sink):
            await clock.advance(1)
            await settled(worker)
        assert [d.id for d in sink.delivered] == ["d1", "d2"]
        assert second.pending_count() == {}


def test_backoff_delay_is_full_jitter_under_a_capped_exponential() -> None:
    """Each delay lies in [0, min(cap, base·2^(n-1))] and they are not all equal."""
    rng = random.Random(7)
    for attempt in range(1, 15):
        delays = [backoff_delay(attempt, base=0.5, cap=60.0, rng=rng) for _ in range(50)]
        ceiling = min(60.0, 0.5 * 2 ** (attempt - 1))
        assert all(0 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1


# -- the outbox CLI ------------------------------------------------------------------------


def cli(tmp_path: Path, action: str, **kw: Any) -> tuple[int, str]:
    out = io.StringIO()
    settings = Settings(daemon=DaemonConfig(state_dir=tmp_path))
    kw.setdefault("sink", None)
    kw.setdefault("dead", False)
    kw.setdefault("ids", [])
    code = outbox_command(settings, action, out=out, **kw)
    return code, out.getvalue()


def test_cli_lists_pending_entries_as_a_table(store: Store, tmp_path: Path) -> None:
    """``outbox list`` shows id, sink, type, subject, attempt, due time and last error."""
    store.commit(deliveries=[delivery(1), delivery(2)])
    store.reschedule("d1", due_at=T0 + timedelta(minutes=1), error="HTTP 503")
    code, text = cli(tmp_path, "list")
    lines = text.splitlines()
    assert code == 0
    assert lines[0].split() == ["ID", "SINK", "TYPE", "SUBJECT", "ATTEMPT", "DUE", "LAST", "ERROR"]
    assert lines[1].split() == [
        "d1", "hook", "print.finished", "1", "2026-01-01", "00:01:00Z", "HTTP", "503"
    ]  # fmt: skip
    assert "after earlier" in lines[2]
    assert lines[-1] == "2 pending deliveries"


def test_cli_lists_the_dead_letter_table(store: Store, tmp_path: Path) -> None:
    """``outbox list --dead`` shows dead-lettered entries and why."""
    store.commit(deliveries=[delivery(1), delivery(2, key="lab/B")])
    store.dead_letter("d2", error="HTTP 400 (not retried)", response="bad")
    code, text = cli(tmp_path, "list", dead=True)
    assert code == 0
    assert "DEAD SINCE" in text
    assert "d2" in text
    assert "d1" not in text
    assert "HTTP 400 (not retried)" in text


def test_cli_replay_and_drop(store: Store, tmp_path: Path) -> None:
    """``replay`` revives dead entries and ``drop --dead`` deletes them."""
    store.commit(deliveries=[delivery(1), delivery(2, key="lab/B")])
    store.dead_letter("d1", error="x")
    store.dead_letter("d2", error="x")
    assert cli(tmp_path, "replay", ids=["d1"]) == (
        0,
        "replayed 1 dead-letter delivery; a running daemon sends them within 30 s\n",
    )
    assert cli(tmp_path, "drop", dead=True, sink="hook") == (0, "dropped 1 dead-letter delivery\n")
    assert store.pending_count() == {"hook": 1}
    assert store.dead_count() == {}


def test_cli_drop_needs_a_selection(store: Store, tmp_path: Path) -> None:
    """``drop`` without ids or sink deletes nothing and fails."""
    store.commit(deliveries=[delivery(1)])
    code, text = cli(tmp_path, "drop")
    assert code == 1
    assert "needs --id" in text
    assert store.pending_count() == {"hook": 1}


def test_cli_without_a_database_creates_nothing(tmp_path: Path) -> None:
    """Listing before the daemon ever ran says so and leaves the state directory alone."""
    code, text = cli(tmp_path / "missing", "list")
    assert code == 0
    assert "no state database" in text
    assert not (tmp_path / "missing").exists()


@pytest.mark.parametrize("wait", [float("inf"), 1e300, float("nan")])
async def test_an_absurd_retry_after_neither_crashes_nor_parks_the_sink(
    store: Store, clock: FakeClock, observer: RecordingObserver, wait: float
) -> None:
    """A receiver asking to wait forever (or NaN) is retried within the hour, not never."""
    sink = RecordingSink("hook", script=[retry(retry_after=wait, status=429)], clock=clock)
    worker = make_worker(store, sink, clock, observer)
    async with running(worker, sink):
        await commit(store, worker, delivery(1))
        await clock.advance(3600.0)
        await settled(worker)
    assert [a.outcome for a in sink.attempts] == ["failed", "ok"]
    assert sink.attempts[1].monotonic is not None
    assert sink.attempts[1].monotonic <= 3600.0
