"""The real daemon (every component as `printfleet run` wires it) sends a [[digest]] through
the outbox to a real HTTP receiver, watching the simulator; after a restart past the next
scheduled time it sends that one digest on start, once.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from tests.ecosystem import cloudevent_problems
from tests.receiver import Receiver

from printfleet.app import Daemon, DaemonHooks
from printfleet.clock import ScaledClock
from printfleet.config import Settings
from printfleet.logs import forget_secrets
from printfleet.simulator import Simulator, SimulatorConfig

SPEED = 120.0
BERLIN = ZoneInfo("Europe/Berlin")
MONDAY_0729 = datetime(2026, 12, 7, 6, 29, tzinfo=UTC)  # 07:29 in Berlin


def settings_for(tmp_path: Path, sim: Simulator, receiver: Receiver) -> Settings:
    secret = tmp_path / "formlabs.secret"
    secret.write_text(sim.formlabs_client_secret)
    (tmp_path / "none.toml").write_text("")
    return Settings.model_validate(
        {
            "daemon": {"state_dir": str(tmp_path / "state")},
            "source": [
                {
                    "name": "lab",
                    "vendor": "formlabs",
                    "base_url": sim.formlabs_url,
                    "client_id": sim.formlabs_client_id,
                    "client_secret_file": str(secret),
                }
            ],
            "mqtt": {"enabled": False},
            "metrics": {"enabled": False},
            "receiver": [{"name": "hook", "kind": "webhook", "url": receiver.url}],
            "rules": {"packs": [str(tmp_path / "none.toml")]},
            "digest": [{"name": "morning", "receiver": "hook", "schedule": "07:30 Europe/Berlin"}],
        }
    )


async def run_until(daemon: Daemon, receiver: Receiver, count: int) -> None:
    running = asyncio.create_task(daemon.run())
    try:
        await receiver.wait_for_requests(count, timeout=30)
    finally:
        daemon.stop()
        assert await asyncio.wait_for(running, 30) == 0


def bodies(receiver: Receiver) -> list[dict[str, Any]]:
    for request in receiver.requests:
        assert cloudevent_problems(request.body) == []
    return [json.loads(r.body) for r in receiver.requests]


async def test_the_daemon_sends_the_digest_and_catches_up_once_after_a_restart(
    tmp_path: Path,
) -> None:
    clocks = [ScaledClock(SPEED, start=MONDAY_0729)]
    config = SimulatorConfig(formlabs_printers=3, carbon_printers=0, speed=SPEED, seed=3)
    try:
        with Simulator(config, now=lambda: clocks[-1].now()) as sim:
            async with Receiver() as receiver:
                settings = settings_for(tmp_path, sim, receiver)
                await run_until(Daemon(settings, clock=clocks[-1]), receiver, 1)
                (monday,) = bodies(receiver)
                assert monday["type"] == "printfleet.digest"
                end = datetime.fromisoformat(monday["data"]["period"]["end"])
                assert end.astimezone(BERLIN).strftime("%a %H:%M") == "Mon 07:30"
                # Stopped until Tuesday 07:31: Tuesday's digest is due at start.
                clocks.append(
                    ScaledClock(SPEED, start=MONDAY_0729 + timedelta(hours=24, minutes=2))
                )
                await run_until(Daemon(settings, clock=clocks[-1]), receiver, 2)
                tuesday = bodies(receiver)[1]
                end = datetime.fromisoformat(tuesday["data"]["period"]["end"])
                assert end.astimezone(BERLIN).strftime("%a %H:%M") == "Tue 07:30"
                assert tuesday["data"]["missed_periods"] == 0
                # A third start the same morning sends nothing (the period is recorded).
                clocks.append(ScaledClock(SPEED, start=clocks[-1].now() + timedelta(minutes=1)))
                ready = asyncio.Event()
                daemon = Daemon(
                    settings, clock=clocks[-1], hooks=DaemonHooks(on_ready=lambda d: ready.set())
                )
                running = asyncio.create_task(daemon.run())
                try:
                    await asyncio.wait_for(ready.wait(), 30)
                    assert daemon.pipeline is not None
                    assert daemon.store is not None
                    await daemon.pipeline.tick()  # as the timer loop would
                    assert daemon.store.pending_count("hook") == {"hook": 0}
                finally:
                    daemon.stop()
                    assert await asyncio.wait_for(running, 30) == 0
                assert len(receiver.requests) == 2
    finally:
        forget_secrets()
