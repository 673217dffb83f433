"""The vendor's event feed as a second witness, over real HTTP against the simulator.

A scout simulator with the same seed runs ahead (the fleet is deterministic) to find a
cartridge that runs low and is swapped, and a pause with its resume; the watched simulator
is then polled just before and just after each, so polling alone sees nothing of them.
Both share one FakeClock with the poller: nothing sleeps.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from structlog.testing import capture_logs

from printfleet.core.events import ChangeEvent, EventType
from printfleet.core.polling import PollPolicy
from printfleet.core.thresholds import DiffSettings
from printfleet.logs import forget_secrets
from printfleet.metrics.observer import Metrics
from printfleet.poller import Cycle, SourcePoller
from printfleet.simulator import Simulator, SimulatorConfig
from printfleet.sources.formlabs import FormlabsSource
from printfleet.sources.http.client import RetryPolicy
from printfleet.testing import FakeClock

START = datetime(2026, 12, 1, 8, tzinfo=UTC)
AHEAD = timedelta(hours=4)
# Seed 3: its first four hours hold what the tests need (a cartridge low then swapped between
# two polls, a pause and resume); the ratings added to the simulator shifted seed 11 past them.
CONFIG = SimulatorConfig(formlabs_printers=30, carbon_printers=0, seed=3)
FEED_TYPES = {EventType.MATERIAL_LOW, EventType.PRINT_PAUSED, EventType.PRINT_RESUMED}


@pytest.fixture(autouse=True)
def _forget_registered_secrets() -> Iterator[None]:
    yield
    forget_secrets()


@pytest.fixture(scope="module")
def scouted() -> dict[str, Any]:
    """What the fleet will do in its first hours: one low-then-swapped cartridge, one pause."""
    clock = FakeClock(START)
    scout = Simulator(CONFIG, now=clock.now)
    scout.advance_to(START + AHEAD)
    feed = [e for e in scout.feed if e["time"] > START + timedelta(minutes=2)]
    truth = scout.ground_truth
    swap = next(
        (low, swap)
        for low in feed
        if low["type"] == "RESIN_LOW"
        for swap in feed
        if swap["type"] == "CARTRIDGE_SWAPPED"
        and swap["printer"] == low["printer"]
        and swap["time"] >= low["time"]
    )
    resumed = next(e for e in feed if e["type"] == "PRINT_RESUMED")
    pausing = next(
        t.time
        for t in truth
        if t.kind.value == "print.paused" and t.print_id == resumed["print_id"]
    )
    return {"low": swap[0], "swap": swap[1], "pausing": pausing, "resumed": resumed}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as http:
        yield http


def source(sim: Simulator, client: httpx.AsyncClient, clock: FakeClock) -> FormlabsSource:
    # One try per request: a failed poll fails at once (nothing waits on the fake clock).
    return FormlabsSource(
        retry=RetryPolicy(attempts=1),
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


class Watch:
    """A poller over the simulator, its cycles, and the state a store would have kept."""

    def __init__(
        self,
        sim: Simulator,
        client: httpx.AsyncClient,
        clock: FakeClock,
        policy: PollPolicy | None = None,
        **kw: Any,
    ) -> None:
        self.cycles: list[Cycle] = []
        self.state: dict[str, Any] = {}
        self.registry = CollectorRegistry()
        self.clock = clock

        async def handle(cycle: Cycle) -> None:
            self.cycles.append(cycle)
            self.state.update(cycle.state)

        self.poller = SourcePoller(
            source(sim, client, clock),
            handle=handle,
            clock=clock,
            policy=policy or PollPolicy(),
            diff_settings=DiffSettings(),
            observer=Metrics(self.registry),
            **kw,
        )

    def restart(self, sim: Simulator, client: httpx.AsyncClient) -> Watch:
        """A new poller (a daemon restart) from the last snapshot and the kept state."""
        fresh = Watch(
            sim,
            client,
            self.clock,
            previous=self.poller.previous,
            watermark=datetime.fromisoformat(self.state["watermark:lab"]),
            feed_memory=self.state.get("feed:lab"),
        )
        fresh.state = dict(self.state)
        return fresh

    async def poll_at(self, moment: datetime) -> list[ChangeEvent]:
        await self.clock.advance((moment - self.clock.now()).total_seconds())
        await self.poller.poll_once()
        return list(self.cycles[-1].events)


def of(events: list[ChangeEvent], *types: EventType) -> list[ChangeEvent]:
    return [e for e in events if e.type in types]


async def test_what_happens_between_two_polls_is_reported_once_from_the_feed(
    scouted: dict[str, Any], client: httpx.AsyncClient
) -> None:
    """A cartridge low-then-swapped between two polls yields material.low once; the feed's
    unmapped CARTRIDGE_SWAPPED is a vendor.event, logged once and counted; a pause and its
    resume while the daemon was stopped yield both after the restart, in order, at the
    vendor's times; a further restart repeats none of it."""
    clock = FakeClock(START)
    with Simulator(CONFIG, now=clock.now) as sim:
        watch = Watch(sim, client, clock)
        await watch.poll_at(START + timedelta(minutes=1))
        low, swap = scouted["low"], scouted["swap"]
        before = await watch.poll_at(low["time"] - timedelta(seconds=1))
        assert not of(before, EventType.MATERIAL_LOW)
        with capture_logs() as logs:
            after = await watch.poll_at(swap["time"] + timedelta(seconds=1))
        snapshot = watch.cycles[-1].snapshot
        assert snapshot is not None
        printer = snapshot.printers[low["printer"]]
        assert low["cartridge"] not in {m.serial for m in printer.materials}  # really swapped
        lows = of(after, EventType.MATERIAL_LOW)
        assert [(e.subject, e.details["cartridge"], e.details["witness"]) for e in lows] == [
            (low["printer"], low["cartridge"], "feed")
        ]
        assert lows[0].time == low["time"]
        assert lows[0].details["vendor_event"]["type"] == "RESIN_LOW"
        vendor = of(after, EventType.VENDOR_EVENT)
        assert [e.details["vendor_event"]["type"] for e in vendor] == ["CARTRIDGE_SWAPPED"]
        assert vendor[0].details["vendor_event"]["id"] == str(swap["id"])
        assert vendor[0].severity.value == "info"
        unmapped = [e for e in logs if e["event"] == "feed.unmapped_type"]
        assert [e["value"] for e in unmapped] == ["CARTRIDGE_SWAPPED"]
        labels = {"source": "lab", "field": "event.type", "value": "CARTRIDGE_SWAPPED"}
        assert watch.registry.get_sample_value("printfleet_unknown_status_total", labels) == 1

        resumed = scouted["resumed"]
        await watch.poll_at(scouted["pausing"] - timedelta(seconds=1))
        # The daemon stops before the pause and starts again after the resume, from what
        # the store kept: the feed tells both (nothing skipped) ...
        restarted = watch.restart(sim, client)
        events = await restarted.poll_at(resumed["time"] + timedelta(seconds=1))
        pair = [
            e
            for e in of(events, EventType.PRINT_PAUSED, EventType.PRINT_RESUMED)
            if e.print is not None and e.print.id == resumed["print_id"]
        ]
        assert [e.type for e in pair] == [EventType.PRINT_PAUSED, EventType.PRINT_RESUMED]
        assert {e.details["witness"] for e in pair} == {"feed"}
        assert scouted["pausing"] <= pair[0].time < pair[1].time == resumed["time"]
        assert all(e.subject == resumed["printer"] for e in pair)

        # ... and a further restart repeats none of it.
        assert restarted.state["feed:lab"]["seen"]
        again_watch = restarted.restart(sim, client)
        again = await again_watch.poll_at(resumed["time"] + timedelta(minutes=3))
        told = {e.id for w in (watch, restarted) for c in w.cycles for e in c.events}
        assert {e.id for e in again} & told == set()
        assert not [
            e
            for e in of(again, *FEED_TYPES, EventType.VENDOR_EVENT)
            if e.details.get("witness") == "feed"
            and datetime.fromisoformat(e.details["vendor_event"]["created_at"]) <= resumed["time"]
        ]


async def test_a_change_polling_saw_first_is_not_told_again_by_the_feed(
    scouted: dict[str, Any], client: httpx.AsyncClient
) -> None:
    """Polled often enough to see the pause and the resume itself, the daemon reports each
    once (witness "poll"); the feed's entries for them, read later, add nothing."""
    clock = FakeClock(START)
    resumed = scouted["resumed"]
    with Simulator(CONFIG, now=clock.now) as sim:
        # The history (and so the feed) is read only every 30 min: polling is well ahead.
        watch = Watch(sim, client, clock, PollPolicy(history_interval=timedelta(minutes=30)))
        await watch.poll_at(START + timedelta(minutes=1))
        t = scouted["pausing"] - timedelta(seconds=1)
        seen: list[ChangeEvent] = []
        while t < resumed["time"] + timedelta(hours=1):
            seen.extend(await watch.poll_at(t))
            t += timedelta(seconds=30)
        mine = [
            e
            for e in of(seen, EventType.PRINT_PAUSED, EventType.PRINT_RESUMED)
            if e.print is not None and e.print.id == resumed["print_id"]
        ]
        assert [(e.type, e.details["witness"]) for e in mine] == [
            (EventType.PRINT_PAUSED, "poll"),
            (EventType.PRINT_RESUMED, "poll"),
        ]


async def test_a_pause_and_resume_inside_an_outage_are_reported_after_it(
    scouted: dict[str, Any], client: httpx.AsyncClient
) -> None:
    """The API answers 503 from before the pause until after the resume: after
    ``source.recovered`` the feed tells the pause and the resume that polling never saw."""
    clock = FakeClock(START)
    resumed = scouted["resumed"]
    with Simulator(CONFIG, now=clock.now) as sim:
        watch = Watch(sim, client, clock)
        await watch.poll_at(START + timedelta(minutes=1))
        await watch.poll_at(scouted["pausing"] - timedelta(seconds=30))
        sim.faults.formlabs.outage = "503"
        down = await watch.poll_at(scouted["pausing"] + timedelta(seconds=5))
        assert [e.type for e in down] == [EventType.SOURCE_UNREACHABLE]
        assert await watch.poll_at(resumed["time"] - timedelta(seconds=5)) == []
        sim.faults.formlabs.outage = None
        events = await watch.poll_at(resumed["time"] + timedelta(seconds=30))
        assert events[0].type is EventType.SOURCE_RECOVERED
        pair = [
            (e.type, e.details["witness"])
            for e in of(events, EventType.PRINT_PAUSED, EventType.PRINT_RESUMED)
            if e.print is not None and e.print.id == resumed["print_id"]
        ]
        assert pair == [
            (EventType.PRINT_PAUSED, "feed"),
            (EventType.PRINT_RESUMED, "feed"),
        ]
