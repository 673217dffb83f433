"""The real daemon with an apprise receiver: the simulator's print events reach a local ntfy
receiver through Apprise, and the token in the receiver's url_file shows nowhere in the
debug log."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.receiver import Receiver

from printfleet.app import Daemon
from printfleet.clock import ScaledClock
from printfleet.config import Settings
from printfleet.logs import configure_logging, forget_secrets
from printfleet.simulator import Simulator, SimulatorConfig

SPEED = 300.0
TOKEN = "tk_DaemonPushToken4242"
PACK = """
[[rule]]
name = "prints-to-phone"
on = ["print.*"]
notify = ["phone"]
title = "{printer.name}: {print.name} {print.status}"
"""


@pytest.fixture
def debug_log() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging("debug", "json", stream=stream)
    yield stream
    root.handlers[:] = handlers
    root.setLevel(level)
    for name in ("httpx", "httpcore", "aiomqtt", "urllib3"):
        logging.getLogger(name).setLevel(logging.NOTSET)
    forget_secrets()


async def test_the_daemon_delivers_through_apprise(tmp_path: Path, debug_log: io.StringIO) -> None:
    clock = ScaledClock(SPEED)
    config = SimulatorConfig(formlabs_printers=4, carbon_printers=0, speed=SPEED, seed=7)
    (tmp_path / "pack.toml").write_text(PACK)
    with Simulator(config, now=clock.now) as sim:
        secret = tmp_path / "formlabs.secret"
        secret.write_text(sim.formlabs_client_secret)
        async with Receiver() as receiver:
            url_file = tmp_path / "phone.url"
            url_file.write_text(f"ntfy://{TOKEN}@127.0.0.1:{receiver.port}/printers\n")
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
                    "metrics": {"listen": "127.0.0.1:0"},
                    "receiver": [{"name": "phone", "kind": "apprise", "url_file": str(url_file)}],
                    "rules": {"packs": [str(tmp_path / "pack.toml")]},
                }
            )
            daemon = Daemon(settings, config_file=tmp_path / "config.toml", clock=clock)
            running = asyncio.create_task(daemon.run())
            try:
                await receiver.wait_for_requests(1, timeout=60)
            finally:
                daemon.stop()
                assert await asyncio.wait_for(running, 30) == 0
    request = receiver.requests[0]
    body = json.loads(request.body)
    assert body["topic"] == "printers"
    assert ": " in body["title"]  # the rule's title template, rendered
    assert "Event: print." in body["message"]
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    log = debug_log.getvalue()
    assert '"sink": "phone"' in log or '"sink":"phone"' in log
    assert TOKEN not in log
