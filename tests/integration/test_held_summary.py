"""Quiet hours that hold: the night's notifications reach a real HTTP receiver as one summary
when the window ends, also after a restart in the middle of the night."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from tests.ecosystem import cloudevent_problems, slack_problems
from tests.receiver import Receiver

from printfleet.core.events import ChangeEvent, EventType, Severity
from printfleet.core.fleet import AccountHealth
from printfleet.core.model import Printer, PrinterStatus, Vendor
from printfleet.core.rules.engine import RuleEngine
from printfleet.outbox import OutboxWorker
from printfleet.pipeline import Pipeline
from printfleet.poller import Cycle
from printfleet.rulepacks.loader import load_pack_text
from printfleet.sinks.webhook import WebhookSink
from printfleet.store import Store
from printfleet.testing import FakeClock

# Monday 2026-11-23 23:00 in Berlin (22:00 UTC): inside the 22:00-06:00 quiet hours.
NIGHT_START = datetime(2026, 11, 23, 22, 0, tzinfo=UTC)
PACK = """
[[rule]]
name = "failed"
on = ["print.failed"]
severity = "critical"
notify = ["ops-slack", "hook"]
title = "{printer.name}: print failed"

[[rule]]
name = "offline"
on = ["printer.offline"]
resolve = true
notify = ["ops-slack"]
title = "{printer.name} offline"

[[silence]]
name = "night"
schedule = "22:00-06:00"
timezone = "Europe/Berlin"
hold = true
"""


def printer_event(kind: EventType, serial: str, n: int, when: datetime) -> ChangeEvent:
    printer = Printer(
        serial=serial,
        name=f"Printer {serial}",
        vendor=Vendor.FORMLABS,
        model="Form 4",
        model_code="FORM-4-0",
        status=PrinterStatus.ERROR,
        status_raw="ERROR",
        online=kind != EventType.PRINTER_OFFLINE,
    )
    return ChangeEvent(
        id=f"e{n}",
        type=kind,
        source="lab",
        vendor=Vendor.FORMLABS,
        subject=serial,
        time=when,
        severity=Severity.WARNING,
        printer=printer,
    )


def cycle(*events: ChangeEvent) -> Cycle:
    return Cycle(source="lab", snapshot=None, events=events, health=AccountHealth(), state={})


def pipeline(store: Store, clock: FakeClock, workers: dict[str, OutboxWorker]) -> Pipeline:
    """Wired as the daemon wires it: the engine restored from the store's rule state."""
    rules = load_pack_text(PACK, "night.toml", receivers=("ops-slack", "hook"))
    engine = RuleEngine(rules, state=store.load_state("rules"))
    return Pipeline(
        store=store,
        rules=engine,
        clock=clock,
        mqtt_prefix=None,
        on_committed=lambda sinks: [workers[s].wake() for s in sinks if s in workers],
    )


@contextlib.asynccontextmanager
async def running(*coroutines: object) -> AsyncIterator[None]:
    tasks = [asyncio.ensure_future(c) for c in coroutines]  # type: ignore[call-overload]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@pytest.mark.parametrize("clock_start", [NIGHT_START])
async def test_the_nights_failures_arrive_as_one_summary_per_receiver_in_the_morning(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Failures at night are held; an offline that came back at night is left out; a restart
    at 02:00 keeps the held items; at 06:00 Berlin each receiver gets one summary."""
    db = tmp_path / "state.sqlite3"
    async with (
        Receiver(now=lambda: clock.now().timestamp()) as slack_rx,
        Receiver(now=lambda: clock.now().timestamp()) as hook_rx,
        httpx.AsyncClient() as client,
    ):
        store = Store.open(db, clock=clock)
        sinks = {
            "ops-slack": WebhookSink(
                "ops-slack",
                "slack",
                SecretStr(slack_rx.url),
                client=client,
                clock=clock,
                version="1",
            ),
            "hook": WebhookSink(
                "hook", "webhook", SecretStr(hook_rx.url), client=client, clock=clock, version="1"
            ),
        }
        for sink in sinks.values():
            await sink.__aenter__()
        workers = {
            name: OutboxWorker(store, sink, clock=clock, idle_poll=3600.0)
            for name, sink in sinks.items()
        }
        night = pipeline(store, clock, workers)
        async with running(*(w.run() for w in workers.values()), night.run_timers()):
            await night.handle(
                cycle(printer_event(EventType.PRINT_FAILED, "Form4-A", 1, clock.now()))
            )
            await clock.advance(600)
            await night.handle(
                cycle(printer_event(EventType.PRINTER_OFFLINE, "Form4-B", 2, clock.now()))
            )
            await clock.advance(600)
            await night.handle(
                cycle(printer_event(EventType.PRINTER_ONLINE, "Form4-B", 3, clock.now()))
            )
            await clock.advance(3 * 3600)  # 02:20 Berlin
        assert slack_rx.requests == []
        assert hook_rx.requests == []

        # Restart: a new store handle, engine and pipeline from what was persisted.
        store.close()
        store = Store.open(db, clock=clock)
        workers = {
            name: OutboxWorker(store, sink, clock=clock, idle_poll=3600.0)
            for name, sink in sinks.items()
        }
        morning = pipeline(store, clock, workers)
        async with running(*(w.run() for w in workers.values()), morning.run_timers()):
            await clock.advance(3 * 3600 + 39 * 60)  # 05:59 Berlin
            assert slack_rx.requests == []
            await clock.advance(60)  # 06:00 Berlin = 05:00 UTC
            [slack] = await slack_rx.wait_for_requests(1)
            [hook] = await hook_rx.wait_for_requests(1)
        store.close()
        for sink in sinks.values():
            await sink.__aexit__(None, None, None)

    message = json.loads(slack.body)
    assert slack_problems(message) == []
    assert message["text"].startswith("1 notification held during quiet hours (night)")
    assert "Printer Form4-A: print failed" in json.dumps(message)
    assert "Form4-B" not in json.dumps(message)  # offline and back during the night
    assert cloudevent_problems(hook.body) == []
    event = json.loads(hook.body)
    assert event["type"] == "notifications.held"
    assert event["time"] == "2026-11-24T05:00:00Z"
    assert [(i["rule"], i["subject"], i["severity"]) for i in event["data"]["items"]] == [
        ("failed", "Form4-A", "critical")
    ]
