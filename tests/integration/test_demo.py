"""`printfleet demo` and `printfleet simulate` as a newcomer runs them: the real command, a real
broker on a port of its own, the simulator over real HTTP."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from tests.mosquitto import Mosquitto, Subscriber, free_port

from printfleet.cli import build_parser
from printfleet.simulator.cli import _parser as simulator_parser


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRINTFLEET_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return {**env, **extra}


async def _demo(*args: str, env: dict[str, str], timeout: float = 60.0) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "printfleet",
        "demo",
        *args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_demo_publishes_to_the_broker_of_the_environment(mosquitto: Mosquitto) -> None:
    """With PRINTFLEET_MQTT__URL naming a broker on another port, the demo publishes there."""
    async with Subscriber(mosquitto, "printfleet/#") as subscriber:
        code, out = await _demo(
            "--duration", "3s", "--printers", "3", env=_env(PRINTFLEET_MQTT__URL=mosquitto.url)
        )
        assert code == 0, out
        assert f"publishing to {mosquitto.url}" in out, out
        await subscriber.wait_for(lambda: bool(subscriber.received("printfleet/status")))
    assert any(topic.endswith("/state") for topic in subscriber.topics_seen())


async def test_demo_mqtt_option_wins_over_the_environment(mosquitto: Mosquitto) -> None:
    """`--mqtt URL` is used even when PRINTFLEET_MQTT__URL names another (dead) broker."""
    dead = f"mqtt://127.0.0.1:{free_port()}"
    async with Subscriber(mosquitto, "printfleet/status") as subscriber:
        code, out = await _demo(
            "--duration",
            "2s",
            "--printers",
            "2",
            "--mqtt",
            mosquitto.url,
            env=_env(PRINTFLEET_MQTT__URL=dead),
        )
        assert code == 0, out
        await subscriber.wait_for(lambda: bool(subscriber.received("printfleet/status")))
    assert dead not in out


async def test_demo_without_mqtt_and_without_printers() -> None:
    """`--no-mqtt` says MQTT is off (no "no broker" message); `--printers 0` runs empty
    accounts; the seed is shown."""
    code, out = await _demo(
        "--duration", "2s", "--printers", "0", "--no-mqtt", "--seed", "11", env=_env()
    )
    assert code == 0, out
    assert "0 Formlabs + 0 Carbon" in out, out
    assert "seed 11" in out
    assert "mqtt     off (--no-mqtt)" in out
    assert "no broker" not in out
    assert "Traceback" not in out


async def test_demo_rejects_a_url_that_is_not_a_broker() -> None:
    """A non-MQTT URL in PRINTFLEET_MQTT__URL is exit code 2 with what is expected."""
    code, out = await _demo("--duration", "1s", env=_env(PRINTFLEET_MQTT__URL="http://x:1883"))
    assert code == 2, out
    assert "mqtt://host:1883" in out


def test_demo_and_simulate_describe_every_option() -> None:
    """Every option of `demo --help`, `simulate --help` and the simulator's own parser has a
    description, `--seed` included."""
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parsers = {
        "demo": commands.choices["demo"],
        "simulate": commands.choices["simulate"],
        "simulator": simulator_parser(),
    }
    for name, parser in parsers.items():
        options = {a.dest: a.help for a in parser._actions if a.option_strings}
        assert "seed" in options, name
        bare = [dest for dest, text in options.items() if not text]
        assert not bare, f"{name}: options without a description: {bare}"
    assert "credentials_dir" in {a.dest for a in parsers["simulate"]._actions}


def test_simulate_credentials_dir_keeps_secrets_that_authenticate(tmp_path: Path) -> None:
    """`simulate --credentials-dir DIR --printers 0` writes formlabs.secret and
    carbon-secrets.json (0600) that the simulator accepts, keeps them after exit, and serves
    empty accounts."""
    directory = tmp_path / "creds"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "printfleet",
            "simulate",
            "--printers",
            "0",
            "--credentials-dir",
            str(directory),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            lines.append(line)
            if line.startswith("Ctrl-C"):
                break

        def value(label: str) -> str:
            return next(line.split()[-1] for line in lines if label in line.split())

        secret = (directory / "formlabs.secret").read_text().strip()
        carbon = json.loads((directory / "carbon-secrets.json").read_text())
        assert value("client_secret_file") == str(directory / "formlabs.secret")
        assert value("secrets_file") == str(directory / "carbon-secrets.json")
        assert carbon["client_id"] in "".join(lines)
        token = httpx.post(
            value("Formlabs") + "/developer/v1/o/token/",
            data={
                "grant_type": "client_credentials",
                "client_id": value("client_id"),
                "client_secret": secret,
            },
            timeout=10,
        )
        assert token.status_code == 200, token.text
        printers = httpx.get(
            value("Formlabs") + "/developer/v1/printers/",
            headers={"Authorization": f"Bearer {token.json()['access_token']}"},
            timeout=10,
        )
        assert printers.status_code == 200
        body = printers.json()
        assert (body if isinstance(body, list) else body.get("results", body)) == []
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
    for name in ("formlabs.secret", "carbon-secrets.json"):
        assert (directory / name).stat().st_mode & 0o777 == 0o600, name
