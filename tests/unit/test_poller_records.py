"""Unchanged printer records through the poller: counted as reused, not mapped, the same
objects kept from cycle to cycle, and still turning offline when their heartbeat ages."""

from __future__ import annotations

import copy
import json
import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from printfleet.core.events import EventType
from printfleet.core.polling import PollPolicy
from printfleet.core.thresholds import DiffSettings
from printfleet.metrics.observer import Metrics
from printfleet.poller import Cycle, SourcePoller
from printfleet.sources.formlabs import FormlabsSource
from printfleet.testing import FakeClock

START = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
SAMPLES = json.loads(
    (Path(__file__).parents[1] / "fixtures" / "formlabs-samples.json").read_text("utf-8")
)


def records(pinged: datetime) -> list[dict[str, Any]]:
    body: list[dict[str, Any]] = copy.deepcopy(SAMPLES["list_printers"]["body"])
    for record in body:
        record["printer_status"]["last_pinged_at"] = pinged.isoformat().replace("+00:00", "Z")
    return body


class Vendor:
    """Formlabs answering a token and a fixed ``/printers/`` text, dated by the fake clock."""

    def __init__(self, clock: FakeClock, body: list[dict[str, Any]]) -> None:
        self.clock = clock
        self.body = body

    def __call__(self, request: httpx.Request) -> httpx.Response:
        headers = {"Date": format_datetime(self.clock.now(), usegmt=True)}
        path = request.url.path
        if path.endswith("/o/token/"):
            token = {"access_token": "t0k3n", "token_type": "Bearer", "expires_in": 86400}
            return httpx.Response(200, json=token, headers=headers)
        if path.endswith("/printers/"):
            return httpx.Response(200, json=self.body, headers=headers)
        if path.endswith("/groups/"):
            return httpx.Response(200, json=[], headers=headers)
        page = {"count": 0, "next": None, "previous": None, "results": []}
        return httpx.Response(200, json=page, headers=headers)


def counter(registry: CollectorRegistry, name: str) -> float:
    value = registry.get_sample_value(f"printfleet_records_{name}_total", {"source": "lab"})
    return value or 0.0


async def test_unchanged_records_are_counted_kept_and_still_go_offline() -> None:
    clock = FakeClock(START)
    vendor = Vendor(clock, records(START))
    source = FormlabsSource(
        name="lab",
        client_id="client",
        client_secret=SecretStr("s3cr3t-value"),
        client=httpx.AsyncClient(transport=httpx.MockTransport(vendor)),
        clock=clock,
        offline_after=timedelta(minutes=5),
        base_url="https://api.formlabs.test",
        rng=random.Random(1),
    )
    registry = CollectorRegistry()
    cycles: list[Cycle] = []

    async def handle(cycle: Cycle) -> None:
        cycles.append(cycle)

    poller = SourcePoller(
        source,
        handle=handle,
        clock=clock,
        policy=PollPolicy(),
        diff_settings=DiffSettings(),
        observer=Metrics(registry),
    )
    await poller.poll_once()
    assert (counter(registry, "mapped"), counter(registry, "reused")) == (3, 0)
    await clock.advance(60)
    await poller.poll_once()
    assert (counter(registry, "mapped"), counter(registry, "reused")) == (3, 3)
    first, second = (c.snapshot for c in cycles)
    assert first is not None
    assert second is not None
    assert second.reused == 3
    assert all(second.printers[s] is first.printers[s] for s in first.printers)
    assert cycles[1].events == ()

    await clock.advance(5 * 60)  # the same records, now pinged 6 minutes ago
    await poller.poll_once()
    # Only ``online`` moved with the time: the printers are patched, not mapped again.
    assert (counter(registry, "mapped"), counter(registry, "reused")) == (3, 6)
    offline = [e.subject for e in cycles[2].events if e.type is EventType.PRINTER_OFFLINE]
    assert sorted(offline) == ["AmberLynx", "GentleBison", "NimbleHeron"]
    await clock.advance(60)
    await poller.poll_once()  # offline now holds for good: reused again, nothing to tell
    assert (counter(registry, "mapped"), counter(registry, "reused")) == (3, 9)
    assert cycles[3].events == ()

    vendor.body = records(clock.now())  # a fresh ping: only the heartbeat changed
    await poller.poll_once()
    online = [e.subject for e in cycles[4].events if e.type is EventType.PRINTER_ONLINE]
    assert sorted(online) == ["AmberLynx", "GentleBison", "NimbleHeron"]
    assert (counter(registry, "mapped"), counter(registry, "reused")) == (3, 12)
    pinged = cycles[4].snapshot
    assert pinged is not None
    assert all(p.last_seen_at == clock.now() for p in pinged.printers.values())
    assert pinged.printers["NimbleHeron"].raw["printer_status"]["last_pinged_at"] == (
        clock.now().isoformat().replace("+00:00", "Z")
    )

    # Kept state holds the last record's text; a removed printer's event carries no record,
    # as before.
    vendor.body = vendor.body[1:]
    await poller.poll_once()
    removed = [e for e in cycles[5].events if e.type is EventType.PRINTER_REMOVED]
    assert [e.subject for e in removed] == ["NimbleHeron"]
    assert removed[0].printer is not None
    assert dict(removed[0].printer.raw) == {}
