"""Job queues over real HTTP against the simulator: Formlabs Fleet Control groups and their
queues are fetched (within the budget), counted, diffed into events, and scraped as
``printfleet_queue_items``; Carbon queues come with the printers.

The daemon side and the simulator share one FakeClock, so nothing here sleeps.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from printfleet.core.alerts import ALERT_BLOCKED_WITH_QUEUE, BLOCKING_ALERTS
from printfleet.core.events import EventType
from printfleet.core.fleet import AccountHealth, FleetView
from printfleet.core.model import Snapshot
from printfleet.core.polling import PollPolicy
from printfleet.core.thresholds import DiffSettings
from printfleet.health import HealthServer
from printfleet.logs import forget_secrets
from printfleet.metrics.fleet import FleetCollector
from printfleet.poller import Cycle, SourcePoller
from printfleet.simulator import Simulator, SimulatorConfig
from printfleet.sources.carbon import CarbonSource
from printfleet.sources.factory import load_carbon_secrets
from printfleet.sources.formlabs import FormlabsSource
from printfleet.testing import FakeClock

API = "/developer/v1"
QUEUE_INTERVAL = timedelta(minutes=5)


@pytest.fixture(autouse=True)
def _forget_registered_secrets() -> Iterator[None]:
    yield
    forget_secrets()


@pytest.fixture
def clock_start() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as http:
        yield http


@pytest.fixture
def sim(clock: FakeClock) -> Iterator[Simulator]:
    config = SimulatorConfig(formlabs_printers=30, carbon_printers=10, seed=11)
    with Simulator(config, now=clock.now) as running:
        yield running


def formlabs(sim: Simulator, client: httpx.AsyncClient, clock: FakeClock) -> FormlabsSource:
    return FormlabsSource(
        name="lab",
        client_id=sim.formlabs_client_id,
        client_secret=SecretStr(sim.formlabs_client_secret),
        client=client,
        clock=clock,
        offline_after=timedelta(minutes=5),
        base_url=sim.formlabs_url,
        rng=random.Random(1),
        timeout=5.0,
    )


class Run:
    """A poller over one source, keeping every cycle it handed over."""

    def __init__(self, source: Any, clock: FakeClock) -> None:
        self.cycles: list[Cycle] = []
        self.clock = clock

        async def handle(cycle: Cycle) -> None:
            self.cycles.append(cycle)

        self.poller = SourcePoller(
            source,
            handle=handle,
            clock=clock,
            policy=PollPolicy(queue_interval=QUEUE_INTERVAL),
            diff_settings=DiffSettings(queue_backlog_items=10),
        )

    async def poll(self, after: timedelta = timedelta(0)) -> Cycle:
        await self.clock.advance(after.total_seconds())
        await self.poller.poll_once()
        return self.cycles[-1]

    def events(self, kind: EventType) -> list[Any]:
        return [e for c in self.cycles for e in c.events if e.type is kind]


async def test_fleet_control_queues_are_fetched_and_counted(
    sim: Simulator, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    """Only Fleet Control groups' queues are read: 1 + groups requests, every item counted."""
    groups = sim.fleet_control_groups()
    assert groups  # the simulated account has one
    before = sim.request_count("formlabs", f"{API}/groups/")
    batch = await formlabs(sim, client, clock).fetch_queues()
    assert batch.requests == 1 + len(groups)
    assert sim.request_count("formlabs", f"{API}/groups/") - before == batch.requests
    assert set(batch.queues) == set(groups)
    for group_id, serials in groups.items():
        queue = batch.queues[group_id]
        items = sim.queue_items(group_id)
        assert queue.items == len(items)
        assert set(queue.printers) == set(serials)
        oldest = min(item.created_at for item in items)
        assert queue.oldest_at is not None
        assert int(queue.oldest_at.timestamp()) == oldest
        assert queue.name == "Prototyping Lab"
    assert batch.skipped == ()


async def test_an_unknown_group_queue_is_404_like_the_vendor(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    token = await client.post(
        f"{sim.formlabs_url}{API}/o/token/",
        data={
            "grant_type": "client_credentials",
            "client_id": sim.formlabs_client_id,
            "client_secret": sim.formlabs_client_secret,
        },
    )
    headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
    url = f"{sim.formlabs_url}{API}/groups/00000000-0000-4000-8000-000000000000/queue/"
    answer = await client.get(url, headers=headers)
    assert answer.status_code == 404
    assert answer.json() == {"detail": "Not found."}
    assert (await client.get(url)).status_code == 401  # auth first, as everywhere
    group_id = next(iter(sim.fleet_control_groups()))
    known = await client.get(f"{sim.formlabs_url}{API}/groups/{group_id}/queue/", headers=headers)
    assert known.status_code == 200
    assert len(known.json()) == len(sim.queue_items(group_id))


async def test_queue_polling_follows_its_interval_and_produces_events(
    sim: Simulator, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    """Read on the first cycle, carried between reads, then backlog and empty over HTTP."""
    group_id = next(iter(sim.fleet_control_groups()))
    run = Run(formlabs(sim, client, clock), clock)
    first = await run.poll()
    assert first.snapshot is not None
    assert group_id in first.snapshot.queues
    reads = sim.request_count("formlabs", f"{API}/groups/{group_id}/queue/")
    sim.set_queue(group_id, 12)
    second = await run.poll(timedelta(seconds=15))  # not due: carried, not read
    assert sim.request_count("formlabs", f"{API}/groups/{group_id}/queue/") == reads
    assert second.snapshot is not None
    assert second.snapshot.queues[group_id] == first.snapshot.queues[group_id]
    await run.poll(QUEUE_INTERVAL)
    assert sim.request_count("formlabs", f"{API}/groups/{group_id}/queue/") == reads + 1
    backlog = run.events(EventType.QUEUE_BACKLOG)
    assert [e.subject for e in backlog] == [group_id]
    assert backlog[0].details["queue"]["items"] >= 10
    sim.set_queue(group_id, 0)
    await run.poll(QUEUE_INTERVAL)
    empty = run.events(EventType.QUEUE_EMPTY)
    assert [e.subject for e in empty] == [group_id]
    assert empty[0].details["queue"]["items"] == 0
    assert len(run.events(EventType.QUEUE_BACKLOG)) == 1  # not re-raised while it lasted


async def test_printer_blocked_while_its_group_has_jobs(
    sim: Simulator, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    """A Fleet Control printer left waiting for someone (parts on the platform, needs
    confirmation) while its group's queue holds jobs raises the alert, with the details."""
    group_id, serials = next(iter(sim.fleet_control_groups().items()))
    run = Run(formlabs(sim, client, clock), clock)
    await run.poll()
    raised: list[Any] = []
    for _ in range(200):  # simulated minutes until a group printer finishes and lingers
        sim.set_queue(group_id, 3)  # jobs keep waiting, whatever the printers took
        await run.poll(QUEUE_INTERVAL)
        raised = [
            e
            for e in run.events(EventType.PRINTER_ALERT)
            if e.details["alert"] == ALERT_BLOCKED_WITH_QUEUE and e.details["state"] == "raised"
        ]
        if raised:
            break
    assert raised, "no group printer was ever blocked"
    event = raised[0]
    assert event.subject in serials
    assert event.details["queued"] == 3
    assert event.details["blocking"]
    assert set(event.details["blocking"]) <= BLOCKING_ALERTS
    sim.set_queue(group_id, 0)
    await run.poll(QUEUE_INTERVAL)
    cleared = [
        e
        for e in run.events(EventType.PRINTER_ALERT)
        if e.details["alert"] == ALERT_BLOCKED_WITH_QUEUE and e.details["state"] == "cleared"
    ]
    assert event.subject in {e.subject for e in cleared}


async def test_carbon_queue_lengths_become_per_printer_queues(
    sim: Simulator, client: httpx.AsyncClient, clock: FakeClock, tmp_path: Path
) -> None:
    client_id, key = load_carbon_secrets(sim.write_carbon_secrets(tmp_path / "secrets.json"))
    source = CarbonSource(
        name="factory",
        client_id=client_id,
        private_key=key,
        client=client,
        clock=clock,
        base_url=sim.carbon_url,
        rng=random.Random(1),
        timeout=5.0,
    )
    assert await source.fetch_queues() is None  # nothing more to read
    snapshot = await source.fetch_printers()
    assert set(snapshot.queues) == {
        s for s, p in snapshot.printers.items() if p.queue_length is not None
    }
    for serial, queue in snapshot.queues.items():
        assert queue.printers == (serial,)
        assert queue.items == snapshot.printers[serial].queue_length


async def test_queue_items_metric_is_scraped_and_cleared_with_its_queue(
    sim: Simulator, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    run = Run(formlabs(sim, client, clock), clock)
    cycle = await run.poll()
    assert cycle.snapshot is not None
    snapshot: Snapshot = cycle.snapshot
    view = FleetView(snapshots={"lab": snapshot}, health={"lab": AccountHealth(up=True)})
    registry = CollectorRegistry()
    registry.register(FleetCollector(lambda: view))
    server = HealthServer("127.0.0.1:0", registry, ready=lambda: (True, ""))
    server.start()
    try:
        url = f"http://127.0.0.1:{server.bound_port}/metrics"
        series = _queue_series((await client.get(url)).text)
        assert series == {("lab", key): float(q.items) for key, q in snapshot.queues.items()}
        assert series  # the Fleet Control group is there
        view = FleetView(
            snapshots={"lab": Snapshot("lab", snapshot.vendor, snapshot.taken_at, {})},
            health=view.health,
        )
        assert _queue_series((await client.get(url)).text) == {}
    finally:
        server.stop()


def _queue_series(text: str) -> dict[tuple[str, str], float]:
    found: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "printfleet_queue_items":
                found[sample.labels["source"], sample.labels["group"]] = sample.value
    return found
