"""The daemon as `printfleet run` wires it shows print pictures in chat notifications.

The real daemon watches the simulator over real HTTP and notifies a real receiver configured
as a Discord webhook; the picture links in what it posts are fresh and answer with a PNG, and
no log line (at debug, JSON as journald gets it) carries a link's signature.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.ecosystem import discord_problems
from tests.receiver import Receiver

from printfleet.app import Daemon
from printfleet.clock import ScaledClock
from printfleet.config import Settings
from printfleet.logs import configure_logging, forget_secrets
from printfleet.simulator import Simulator, SimulatorConfig

SPEED = 300.0

PACK = """
[[rule]]
name = "prints-to-chat"
on = ["print.*"]
notify = ["chat"]
title = "{printer.name}: {print.name} {print.status}"
"""

Lines = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def debug_log() -> Iterator[Lines]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging("debug", "json", stream=stream)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    root.handlers[:] = handlers
    root.setLevel(level)
    for name in ("httpx", "httpcore", "aiomqtt"):
        logging.getLogger(name).setLevel(logging.NOTSET)
    forget_secrets()


def with_thumbnail(receiver: Receiver) -> list[dict[str, Any]]:
    bodies = [json.loads(r.body) for r in receiver.requests]
    return [b for b in bodies if "thumbnail" in b["embeds"][0]]


async def test_the_daemon_posts_fresh_pictures_and_logs_no_signature(
    tmp_path: Path, debug_log: Lines
) -> None:
    clock = ScaledClock(SPEED)
    config = SimulatorConfig(
        formlabs_printers=4, carbon_printers=0, vendors=("formlabs",), speed=SPEED, seed=7
    )
    (tmp_path / "chat.toml").write_text(PACK)
    with Simulator(config, now=clock.now) as sim:
        secret = tmp_path / "formlabs.secret"
        secret.write_text(sim.formlabs_client_secret)
        async with Receiver() as receiver, httpx.AsyncClient() as http:
            settings = Settings.model_validate(
                {
                    "daemon": {"state_dir": str(tmp_path / "state"), "log_level": "debug"},
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
                    "receiver": [
                        {"name": "chat", "kind": "discord", "url": receiver.url + "/api/x"}
                    ],
                    "rules": {"packs": [str(tmp_path / "chat.toml")]},
                }
            )
            daemon = Daemon(settings, config_file=tmp_path / "config.toml", clock=clock)
            running = asyncio.create_task(daemon.run())
            try:
                async with asyncio.timeout(60):
                    while not with_thumbnail(receiver):
                        await asyncio.sleep(0.05)  # polling a condition, with a deadline
            finally:
                daemon.stop()
                assert await asyncio.wait_for(running, 30) == 0
            message = with_thumbnail(receiver)[0]
            assert discord_problems(message) == []
            picture = await http.get(message["embeds"][0]["thumbnail"]["url"])
            assert picture.status_code == 200
            assert picture.headers["content-type"] == "image/png"
            assert sim.request_count("formlabs", "/developer/v1/prints/") >= 1
    text = json.dumps(debug_log())
    assert "sig=" not in text
    assert "expires=" not in text
