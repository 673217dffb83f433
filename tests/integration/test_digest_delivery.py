"""Digests end to end on a fake clock: timer loop -> store commit -> outbox -> real HTTP receiver.

Across a restart (a digest due while the daemon was stopped is sent once on start, not once per
missed day, and never again by a later start) and across both DST changes of Europe/Berlin
(the 07:30 digest stays at 07:30 local time).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from pydantic import SecretStr
from tests.ecosystem import cloudevent_problems
from tests.receiver import Receiver

from printfleet.config.schema import DigestConfig
from printfleet.core.digest import LoggedEvent
from printfleet.core.history import PrintRecord
from printfleet.core.rules.engine import RuleEngine
from printfleet.core.rules.model import RuleSet
from printfleet.digests import DigestRunner
from printfleet.outbox import OutboxWorker
from printfleet.pipeline import Pipeline
from printfleet.sinks.webhook import WebhookSink
from printfleet.store import FILENAME, Store
from printfleet.testing import FakeClock

BERLIN = ZoneInfo("Europe/Berlin")
SETTLE = 10.0


def config(schedule: str = "Mon-Fri 07:30 Europe/Berlin") -> DigestConfig:
    return DigestConfig(name="morning", receiver="hook", schedule=schedule, title="Lab morning")


@contextlib.asynccontextmanager
async def daemon(
    state_dir: Path, clock: FakeClock, receiver: Receiver, digest: DigestConfig
) -> AsyncIterator[tuple[Store, Pipeline]]:
    """What app.Daemon wires for digests: store, runner, pipeline timer loop, outbox worker."""
    async with httpx.AsyncClient() as client:
        store = Store.open(state_dir / FILENAME, clock=clock)
        sink = WebhookSink(
            "hook", "webhook", SecretStr(receiver.url), client=client, clock=clock, version="t"
        )
        worker = OutboxWorker(store, sink, clock=clock, idle_poll=3600.0)
        pipeline = Pipeline(
            store=store,
            rules=RuleEngine(RuleSet()),
            clock=clock,
            mqtt_prefix=None,
            on_committed=lambda sinks: worker.wake(),
            digests=DigestRunner([digest], store, default_timezone="UTC"),
        )
        async with sink:
            tasks = [
                asyncio.create_task(worker.run()),
                asyncio.create_task(pipeline.run_timers(max_sleep=6 * 3600)),
            ]
            try:
                await clock.advance(0)
                yield store, pipeline
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                store.close()


async def until_requests(receiver: Receiver, n: int) -> list[dict[str, Any]]:
    received = await receiver.wait_for_requests(n, timeout=SETTLE)
    for r in received:
        assert cloudevent_problems(r.body) == []
    return [json.loads(r.body) for r in received]


def local(text: str) -> str:
    return datetime.fromisoformat(text).astimezone(BERLIN).strftime("%a %Y-%m-%d %H:%M")


def record(print_id: str, outcome: str, at: datetime, volume: float = 10.0) -> PrintRecord:
    return PrintRecord(
        source="lab",
        serial="F4-1",
        printer_name="Beaver",
        group="lab-a",
        print_id=print_id,
        name="crown.form",
        outcome=outcome,
        finished_at=at,
        material="Grey V5",
        volume_ml=volume,
    )


async def test_a_digest_due_while_stopped_is_sent_once_on_start(tmp_path: Path) -> None:
    # Monday 2026-12-07 06:00 Berlin (05:00 UTC).
    clock = FakeClock(datetime(2026, 12, 7, 5, 0, tzinfo=UTC))
    async with Receiver() as receiver:
        async with daemon(tmp_path, clock, receiver, config()) as (store, _):
            # The weekend's prints and an offline spell, as poll commits would store them.
            store.commit(
                history=[
                    record("p1", "finished", datetime(2026, 12, 5, 9, tzinfo=UTC)),
                    record("p2", "failed", datetime(2026, 12, 6, 9, tzinfo=UTC), volume=4.0),
                ],
                events=[
                    LoggedEvent(
                        "printer.offline", "lab", "F4-1", datetime(2026, 12, 6, 10, tzinfo=UTC)
                    ),
                    LoggedEvent(
                        "printer.online", "lab", "F4-1", datetime(2026, 12, 6, 12, tzinfo=UTC)
                    ),
                ],
            )
            assert receiver.requests == []  # the first start only schedules
            await clock.advance(3600 + 30 * 60)  # Monday 07:30 Berlin
            (monday,) = await until_requests(receiver, 1)
            assert monday["type"] == "printfleet.digest"
            data = monday["data"]
            assert (local(data["period"]["start"]), local(data["period"]["end"])) == (
                "Fri 2026-12-04 07:30",
                "Mon 2026-12-07 07:30",
            )
            assert data["totals"] == {
                "finished": 1,
                "failed": 1,
                "aborted": 0,
                "failure_rate": 0.5,
                "resin_ml": 14.0,
                "offline_s": 7200,
                "warnings": 0,
            }
            await clock.advance(3600)
        # Stopped from Monday 08:30 until Wednesday 09:00: Tuesday's and Wednesday's passed.
        await clock.advance(48 * 3600 + 30 * 60)
        async with daemon(tmp_path, clock, receiver, config()):
            _, wednesday = await until_requests(receiver, 2)
            assert local(wednesday["data"]["period"]["start"]) == "Tue 2026-12-08 07:30"
            assert local(wednesday["data"]["period"]["end"]) == "Wed 2026-12-09 07:30"
            assert wednesday["data"]["missed_periods"] == 1  # Tuesday's, not sent on its own
            await clock.advance(3600)
        # Another restart the same morning sends nothing more.
        async with daemon(tmp_path, clock, receiver, config()) as (store, pipeline):
            await clock.advance(3600)
            await pipeline.tick()  # what the timer loop does when it wakes
            assert store.pending_count("hook") == {"hook": 0}
            assert store.list_entries(sink="hook") == []
            assert len(receiver.requests) == 2
            # ... and Thursday's comes on time.
            await clock.advance(21 * 3600)
            _, _, thursday = await until_requests(receiver, 3)
            assert local(thursday["data"]["period"]["end"]) == "Thu 2026-12-10 07:30"
            assert thursday["id"] != wednesday["id"]


async def test_the_local_time_holds_across_both_dst_changes(tmp_path: Path) -> None:
    for start, days in (
        (datetime(2026, 10, 23, 4, 0, tzinfo=UTC), 5),  # CEST -> CET on Sunday the 25th
        (datetime(2026, 3, 27, 4, 0, tzinfo=UTC), 5),  # CET -> CEST on Sunday the 29th
    ):
        clock = FakeClock(start)
        state = tmp_path / start.strftime("%m")
        async with Receiver() as receiver:
            async with daemon(state, clock, receiver, config("07:30 Europe/Berlin")):
                for day in range(days):
                    # The digest is computed in a thread: wait for each day's before the next.
                    await clock.advance(24 * 3600)
                    events = await until_requests(receiver, day + 1)
            ends = [datetime.fromisoformat(e["data"]["period"]["end"]) for e in events]
            assert [e.astimezone(BERLIN).strftime("%H:%M") for e in ends] == ["07:30"] * days
            assert len({e.utcoffset() for e in ends}) == 1  # stored in UTC
            utc_hours = [e.astimezone(UTC).hour for e in ends]
            assert len(set(utc_hours)) == 2  # the UTC time moved by an hour, once
            gaps = {ends[i + 1] - ends[i] for i in range(len(ends) - 1)}
            assert gaps == {timedelta(hours=24), timedelta(hours=23 if start.month == 3 else 25)}
