"""The poller reads queues every queue_interval, carries them in between, keeps them when a
queue read fails (no outage), and stretches the interval with what a read cost."""

from __future__ import annotations

from datetime import datetime, timedelta

from printfleet.core.events import EventType
from printfleet.core.model import Queue, Snapshot, Vendor
from printfleet.core.polling import PollPolicy
from printfleet.core.thresholds import DiffSettings
from printfleet.errors import RateLimited, SourceUnavailable
from printfleet.poller import Cycle, SourcePoller
from printfleet.sources.base import BudgetStatus, Inventory, QueueBatch, RunBatch
from printfleet.testing import FakeClock


class QueueSource:
    """Printers never change; each fetch_queues answers the next scripted batch or error."""

    def __init__(self, clock: FakeClock, script: list[QueueBatch | Exception]) -> None:
        self._clock = clock
        self.script = script
        self.reads = 0

    @property
    def name(self) -> str:
        return "lab"

    @property
    def vendor(self) -> Vendor:
        return Vendor.FORMLABS

    async def fetch_printers(self) -> Snapshot:
        return Snapshot("lab", Vendor.FORMLABS, self._clock.now(), {})

    async def fetch_runs(self, *, since: datetime | None = None, lookups: object = ()) -> RunBatch:
        return RunBatch()

    async def fetch_inventory(self) -> Inventory:
        return Inventory()

    async def fetch_queues(self) -> QueueBatch:
        self.reads += 1
        answer = self.script.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def budget(self) -> BudgetStatus:
        return BudgetStatus(remaining=1350.0, capacity=1350.0, window_s=3600.0)

    async def aclose(self) -> None:
        pass


def batch(items: int, requests: int = 2) -> QueueBatch:
    return QueueBatch(queues={"g1": Queue("g1", "Lab", items, ("A",))}, requests=requests)


async def test_queues_are_read_when_due_carried_between_and_kept_on_failure() -> None:
    clock = FakeClock()
    cycles: list[Cycle] = []

    async def handle(cycle: Cycle) -> None:
        cycles.append(cycle)

    source = QueueSource(clock, [batch(3), SourceUnavailable("lab", "503"), batch(0)])
    poller = SourcePoller(
        source,
        handle=handle,
        clock=clock,
        policy=PollPolicy(queue_interval=timedelta(minutes=5)),
        diff_settings=DiffSettings(),
    )
    await poller.poll_once()
    await clock.advance(60)
    await poller.poll_once()  # not due: carried
    assert source.reads == 1
    await clock.advance(240)
    await poller.poll_once()  # due, fails: the last queues stay, no outage
    assert source.reads == 2
    assert all(c.snapshot is not None and c.snapshot.queues["g1"].items == 3 for c in cycles)
    assert not any(e.type.value.startswith("source.") for c in cycles for e in c.events)
    await clock.advance(60)
    await poller.poll_once()  # the failed read waits a whole interval too
    assert source.reads == 2
    await clock.advance(240)
    await poller.poll_once()
    assert source.reads == 3
    assert [e.type for e in cycles[-1].events] == [EventType.QUEUE_EMPTY]


async def test_a_costly_read_stretches_the_queue_interval() -> None:
    clock = FakeClock()

    async def handle(cycle: Cycle) -> None:
        pass

    source = QueueSource(clock, [batch(1, requests=101), batch(1, requests=101)])
    poller = SourcePoller(
        source, handle=handle, clock=clock, policy=PollPolicy(), diff_settings=DiffSettings()
    )
    await poller.poll_once()
    await clock.advance(30 * 60)  # past the 5 min default, short of 101 * 3600 / 135 s
    await poller.poll_once()
    assert source.reads == 1
    await clock.advance(15 * 60)
    await poller.poll_once()
    assert source.reads == 2


async def test_a_rate_limited_queue_read_keeps_the_cycle_and_the_last_queues() -> None:
    clock = FakeClock()
    cycles: list[Cycle] = []

    async def handle(cycle: Cycle) -> None:
        cycles.append(cycle)

    source = QueueSource(clock, [batch(3), RateLimited("lab", "429", retry_after=30)])
    poller = SourcePoller(
        source, handle=handle, clock=clock, policy=PollPolicy(), diff_settings=DiffSettings()
    )
    await poller.poll_once()
    await clock.advance(300)
    await poller.poll_once()
    assert len(cycles) == 2
    assert cycles[-1].snapshot is not None
    assert cycles[-1].snapshot.queues["g1"].items == 3
    assert poller.last_outcome == "ok"
