"""SIGHUP adds, changes and removes sources in the running daemon; the other sources keep polling.

The real daemon (wired as `printfleet run` wires it) watches three simulated Formlabs accounts
over real HTTP, mirrors them into a real mosquitto with Home Assistant discovery, and serves a
real /metrics. Each step rewrites the config file and sends the process a real SIGHUP:

* an added source polls, and its printers appear on MQTT and in /metrics;
* a removed source's retained topics (state, fields, discovery configs) are emptied and its
  series leave /metrics, while the remaining sources' poll tasks are the very same objects and
  their poll counts keep rising; added back, it resumes without announcing its printers again;
* a changed source (rotated secret file, new base_url) is rebuilt under the same name;
* rejected credentials of a source added or changed by SIGHUP are a ``source.auth_failed``,
  never the end of the daemon (exit code 3 is for start-up only).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.mosquitto import Mosquitto, Subscriber

from printfleet.app import Daemon, DaemonHooks
from printfleet.clock import ScaledClock
from printfleet.config import load_settings
from printfleet.core.events import ChangeEvent, EventType
from printfleet.logs import forget_secrets
from printfleet.simulator import Simulator, SimulatorConfig
from printfleet.simulator.simulator import AccountInfo
from printfleet.sinks.homeassistant import node_id

SPEED = 100.0
WAIT = 60.0  # bound of any one condition; each is met in a second or two


@pytest.fixture(autouse=True)
def _forget_secrets() -> Iterator[None]:
    yield
    forget_secrets()


@pytest.fixture
def notify_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """What systemd would hear: the daemon's sd_notify datagrams (RELOADING=1 ... READY=1
    brackets each reload, so the test knows when one is done without reading logs)."""
    with tempfile.TemporaryDirectory() as short:  # AF_UNIX paths are short
        path = os.path.join(short, "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.setblocking(False)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        try:
            yield sock
        finally:
            sock.close()


class Rig:
    """The config file, the simulator's accounts and ways to look at the running daemon."""

    def __init__(
        self, tmp_path: Path, sim: Simulator, broker: Mosquitto, notify: socket.socket
    ) -> None:
        self.notify = notify
        self.dir = tmp_path
        self.sim = sim
        self.broker = broker
        self.accounts: list[AccountInfo] = [a for a in sim.accounts if a.vendor == "formlabs"]
        self.config = tmp_path / "config.toml"
        self.daemon: Daemon | None = None
        self.events: list[ChangeEvent] = []

    def secret_file(self, name: str, content: str) -> Path:
        path = self.dir / f"{name}.secret"
        path.write_text(content)
        path.chmod(0o600)
        return path

    def write(self, sources: dict[str, dict[str, str]]) -> None:
        """The config with one Formlabs source per entry (name -> its keys)."""
        tables = "".join(
            f'\n[[source]]\nname = "{name}"\nvendor = "formlabs"\n'
            + "".join(f'{key} = "{value}"\n' for key, value in keys.items())
            for name, keys in sources.items()
        )
        self.config.write_text(
            f"""
[daemon]
state_dir = "{self.dir / "state"}"

[mqtt]
url = "{self.broker.url}"
homeassistant_discovery = true

[metrics]
listen = "127.0.0.1:0"

[rules]
packs = []
{tables}"""
        )

    def account(self, name: str, index: int, *, secret: str | None = None) -> dict[str, str]:
        """Source keys for simulated account ``index`` (its secret file named after ``name``)."""
        info = self.accounts[index]
        path = self.secret_file(name, info.client_secret if secret is None else secret)
        return {
            "base_url": self.sim.formlabs_url,
            "client_id": info.client_id,
            "client_secret_file": str(path),
        }

    @property
    def running(self) -> Daemon:
        assert self.daemon is not None
        return self.daemon

    async def reload(self, sources: dict[str, dict[str, str]], *, expect: set[str]) -> None:
        """Rewrite the config, send SIGHUP, wait until the daemon runs exactly ``expect``."""
        self.write(sources)
        while True:  # what came before this reload
            try:
                self.notify.recv(4096)
            except BlockingIOError:
                break
        os.kill(os.getpid(), signal.SIGHUP)
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(WAIT):
            while b"RELOADING=1" not in await loop.sock_recv(self.notify, 4096):
                pass
            while b"READY=1" not in await loop.sock_recv(self.notify, 4096):
                pass
        await until(
            lambda: (
                {p.name for p in self.running.pollers} == expect
                and set(self.running.poll_tasks) == expect
            ),
            f"the daemon running {sorted(expect)}",
        )

    async def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        health = self.running.health
        assert health is not None
        async with httpx.AsyncClient() as http:
            reply = await http.get(f"http://127.0.0.1:{health.bound_port}/metrics")
        reply.raise_for_status()
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(reply.text)
            for sample in family.samples
        }

    async def series_of(self, source: str) -> set[str]:
        """Names of the /metrics samples labelled with ``source``."""
        return {name for name, labels in await self.scrape() if ("source", source) in labels}

    async def polls(self, source: str) -> float:
        samples = await self.scrape()
        return samples.get(("printfleet_poll_duration_seconds_count", (("source", source),)), 0.0)

    async def retained(self) -> dict[str, bytes]:
        """What a subscriber arriving now sees retained (printfleet and discovery topics)."""
        async with Subscriber(self.broker, "printfleet/#", "homeassistant/#") as sub:
            await sub.barrier()
            return sub.retained

    def topics_of(self, retained: dict[str, bytes], source: str) -> list[str]:
        """Retained topics of ``source``'s printers: state, fields and discovery configs."""
        serials = self.serials(source)
        nodes = {node_id(source, serial) for serial in serials}
        return [
            topic
            for topic in retained
            if topic.startswith(f"printfleet/{source}/")
            or any(f"/{node}/" in topic for node in nodes)
        ]

    def serials(self, source: str) -> set[str]:
        assert self.running.pipeline is not None
        snapshot = self.running.pipeline.view.snapshots.get(source)
        if snapshot is not None:
            return set(snapshot.printers)
        assert self.running.store is not None
        stored = self.running.store.load_snapshot(source)
        return set(stored.printers) if stored is not None else set()

    async def synced(self) -> None:
        assert self.running.mqtt is not None
        await asyncio.wait_for(self.running.mqtt.wait_state_synced(), WAIT)

    def events_of(self, source: str, kind: EventType, since: int = 0) -> list[ChangeEvent]:
        return [e for e in self.events[since:] if e.source == source and e.type is kind]


async def until(condition: Callable[[], Any], what: str, timeout: float = WAIT) -> None:
    """Wait for ``condition()`` (sync or async) to be true, polling it, with a deadline."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                value = condition()
                if asyncio.iscoroutine(value):
                    value = await value
                if value:
                    return
                await asyncio.sleep(0.05)  # polling a condition, with a deadline
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def test_sighup_adds_changes_and_removes_sources(
    tmp_path: Path, mosquitto: Mosquitto, notify_socket: socket.socket
) -> None:
    clock = ScaledClock(SPEED)
    config = SimulatorConfig(
        formlabs_printers=6,
        carbon_printers=0,
        vendors=("formlabs",),
        formlabs_accounts=3,
        speed=SPEED,
        seed=5,
    )
    with Simulator(config, now=clock.now) as sim:
        rig = Rig(tmp_path, sim, mosquitto, notify_socket)
        a, b, c = (rig.account(n, i) for i, n in enumerate("abc"))
        rig.write({"a": a, "b": b})
        started = asyncio.Event()
        rig.daemon = Daemon(
            load_settings(rig.config),
            config_file=rig.config,
            clock=clock,
            hooks=DaemonHooks(on_event=rig.events.append, on_ready=lambda d: started.set()),
        )
        running = asyncio.create_task(rig.daemon.run())
        try:
            await asyncio.wait_for(started.wait(), WAIT)
            await until(lambda: rig.serials("a") and rig.serials("b"), "first polls of a and b")
            tasks = dict(rig.running.poll_tasks)

            # Added: c polls; its printers appear on MQTT and in /metrics; a and b untouched.
            b_before = await rig.polls("b")
            await rig.reload({"a": a, "b": b, "c": c}, expect={"a", "b", "c"})
            await until(lambda: rig.serials("c"), "a first poll of the added source")
            await rig.synced()
            retained = await rig.retained()
            assert len(rig.topics_of(retained, "c")) > len(rig.serials("c")) * 5
            assert any(t.startswith("homeassistant/") for t in rig.topics_of(retained, "c"))
            assert "printfleet_printer_up" in await rig.series_of("c")
            assert rig.running.poll_tasks["a"] is tasks["a"]
            assert rig.running.poll_tasks["b"] is tasks["b"]
            await until(lambda: _more(rig.polls("b"), b_before), "b polling on across the reload")

            # Removed: b's retained topics are emptied, its series vanish, a and c go on.
            b_serials = rig.serials("b")
            assert rig.topics_of(await rig.retained(), "b")
            a_before, c_task = await rig.polls("a"), rig.running.poll_tasks["c"]
            await rig.reload({"a": a, "c": c}, expect={"a", "c"})
            await rig.synced()
            assert rig.topics_of(await rig.retained(), "b") == []
            assert await rig.series_of("b") == set()
            assert rig.running.poll_tasks["a"] is tasks["a"]
            assert rig.running.poll_tasks["c"] is c_task
            await until(lambda: _more(rig.polls("a"), a_before), "a polling on after b left")
            health = rig.running.health
            assert health is not None
            async with httpx.AsyncClient() as http:
                await until(
                    lambda: _ready(http, health.bound_port), "/readyz without the removed source"
                )
            assert rig.serials("b") == b_serials  # its snapshot stays in the store

            # Added back: it resumes from its stored snapshot without announcing its printers.
            mark = len(rig.events)
            await rig.reload({"a": a, "b": b, "c": c}, expect={"a", "b", "c"})
            await until(lambda: _more(rig.polls("b"), 0.0), "the re-added source polling")
            await rig.synced()
            assert set(rig.topics_of(await rig.retained(), "b"))
            assert rig.events_of("b", EventType.PRINTER_ADDED, mark) == []

            # Rejected: a new source whose secret file is missing; nothing changes.
            tasks = dict(rig.running.poll_tasks)
            missing = {**rig.account("e", 1), "client_secret_file": str(tmp_path / "nope")}
            await rig.reload({"a": a, "b": b, "c": c, "e": missing}, expect={"a", "b", "c"})
            assert rig.running.poll_tasks == tasks

            # Changed: a rotated secret file that the vendor rejects is a source.auth_failed;
            # the daemon keeps running, the other sources keep their tasks.
            a_task = rig.running.poll_tasks["a"]
            b_task = rig.running.poll_tasks["b"]
            wrong = rig.account("a", 0, secret="rotated-but-wrong")
            await rig.reload({"a": wrong, "b": b, "c": c}, expect={"a", "b", "c"})
            assert rig.running.poll_tasks["a"] is not a_task
            assert rig.running.poll_tasks["b"] is b_task
            await until(
                lambda: rig.events_of("a", EventType.SOURCE_AUTH_FAILED),
                "source.auth_failed for the changed credentials",
            )
            assert not running.done()

            # Changed again: the right secret behind another base_url spelling; it recovers.
            fixed = rig.account("a", 0)
            fixed["base_url"] = sim.formlabs_url.replace("127.0.0.1", "localhost")
            await rig.reload({"a": fixed, "b": b, "c": c}, expect={"a", "b", "c"})
            await until(
                lambda: rig.events_of("a", EventType.SOURCE_RECOVERED),
                "the changed source recovering with its new settings",
            )
            assert rig.running.poll_tasks["b"] is b_task

            # Added with credentials the vendor rejects: reported, the daemon goes on.
            bad = rig.account("d", 2, secret="not-the-secret")
            await rig.reload({"a": fixed, "b": b, "c": c, "d": bad}, expect={"a", "b", "c", "d"})
            await until(
                lambda: rig.events_of("d", EventType.SOURCE_AUTH_FAILED),
                "source.auth_failed for the added source",
            )
            b_now = await rig.polls("b")
            await until(lambda: _more(rig.polls("b"), b_now), "b polling on")
            assert not running.done()
        finally:
            rig.running.stop()
            assert await asyncio.wait_for(running, 30) == 0


async def _more(count: Any, than: float) -> bool:
    return bool(await count > than)


async def _ready(http: httpx.AsyncClient, port: int) -> bool:
    reply = await http.get(f"http://127.0.0.1:{port}/readyz")
    return reply.status_code == 200
