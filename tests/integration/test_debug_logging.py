"""`log_level = "debug"` shows what the daemon does: polls, HTTP requests, rule decisions,
deliveries — and detected changes are logged under their own type as the event name.

The real daemon (every component as `printfleet run` wires it) watches the simulator over real
HTTP and notifies a real HTTP receiver; the log is JSON lines as journald would get them.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.receiver import Receiver

from printfleet.app import Daemon
from printfleet.clock import ScaledClock
from printfleet.config import Settings
from printfleet.logs import configure_logging, forget_secrets
from printfleet.simulator import Simulator, SimulatorConfig

SPEED = 300.0  # simulated seconds per real second: prints start and end within seconds

HOOK_PACK = """
[[rule]]
name = "prints-to-hook"
on = ["print.*"]
notify = ["hook"]
title = "{printer.name}: {print.name} {print.status}"

[[rule]]
name = "prints-logged"
on = ["print.*"]
notify = []
title = "{printer.name}: {print.name}"
"""

Lines = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def debug_log() -> Iterator[Lines]:
    """`run`'s logging at debug, JSON into a buffer; calling it returns the lines so far."""
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


def named(lines: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    return [line for line in lines if str(line.get("event", "")).startswith(prefix)]


async def test_debug_logging_shows_polls_requests_rule_decisions_and_deliveries(
    tmp_path: Path, debug_log: Lines
) -> None:
    """At debug a day's work is visible line by line, and no secret is in any of it."""
    clock = ScaledClock(SPEED)
    config = SimulatorConfig(formlabs_printers=4, carbon_printers=0, speed=SPEED, seed=7)
    (tmp_path / "hook.toml").write_text(HOOK_PACK)
    with Simulator(config, now=clock.now) as sim:
        secret = tmp_path / "formlabs.secret"
        secret.write_text(sim.formlabs_client_secret)
        async with Receiver() as receiver:
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
                    "receiver": [{"name": "hook", "kind": "webhook", "url": receiver.url}],
                    "rules": {"packs": [str(tmp_path / "hook.toml")]},
                }
            )
            daemon = Daemon(settings, config_file=tmp_path / "config.toml", clock=clock)
            running = asyncio.create_task(daemon.run())
            try:

                def seen() -> bool:
                    lines = debug_log()
                    return bool(named(lines, "delivery.sent") and named(lines, "rule.matched"))

                async with asyncio.timeout(60):
                    while not seen():
                        await asyncio.sleep(0.05)  # polling a condition, with a deadline
            finally:
                daemon.stop()
                assert await asyncio.wait_for(running, 30) == 0
    lines = debug_log()

    [first_poll, *_] = named(lines, "poll.done")
    assert first_poll["source"] == "lab"
    assert first_poll["level"] == "debug"
    assert {"printers", "events", "duration_s", "next_poll_s", "budget_left"} <= set(first_poll)
    assert first_poll["printers"] == 4

    requests = named(lines, "source.request")
    assert {(r["method"], r["endpoint"]) for r in requests} >= {
        ("POST", "/o/token/"),
        ("GET", "/printers/"),
    }
    listing = next(r for r in requests if r["endpoint"] == "/printers/")
    assert listing["status"] == 200
    assert listing["source"] == "lab"
    assert isinstance(listing["duration_s"], float)
    assert isinstance(listing["budget_left"], int)

    events = [line for line in lines if line["event"] == f"event.{line.get('type')}"]
    assert events, "detected changes are logged as event.<type>"
    assert all(line["level"] == "info" for line in events)
    assert all(line["event"] != "event" for line in lines)  # the old, ungreppable name

    matched = named(lines, "rule.matched")
    assert {m["rule"] for m in matched} >= {"prints-to-hook"}
    logged_only = [m for m in matched if m["rule"] == "prints-logged"]
    assert logged_only
    assert logged_only[0]["outcome"] == "log-only"
    assert logged_only[0]["detail"].startswith("log only: '")
    assert all(m["level"] == "info" for m in matched)

    [sent, *_] = named(lines, "delivery.sent")
    assert sent["sink"] == "hook"
    assert sent["attempt"] == 1
    assert sent["level"] == "debug"

    text = "\n".join(json.dumps(line) for line in lines)
    assert sim.formlabs_client_secret not in text
    assert "Bearer" not in text
