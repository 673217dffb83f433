"""One measured ``printfleet run`` against a simulated fleet: any daemon version, any fleet shape.

The footprint of :mod:`tests.bench.bench_footprint`, generalised for the scale benchmarks: the
daemon under test is given as an interpreter command and a rules root (so 7be2331's daemon runs
from its own venv with its own ``rules/`` packs and only config keys it knew), the fleet as a
:class:`~tests.bench.simfleet.FleetShape` served by today's simulator in a child process (both
versions see the same fleet). A mosquitto broker takes MQTT with Home Assistant discovery.

Timeline: exec -> ``/readyz`` 200 (or the ready timeout: the run is then measured anyway and
marked not ready) -> settle -> the window, over which the daemon's CPU (utime + stime of its
``/proc`` entry), its highest sampled ``VmRSS``, the printer records the simulator served, the
requests each vendor host answered per wall second and, optionally, the retained MQTT messages
the broker relayed are taken; after the window, optional /metrics scrapes.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.bench.simfleet import FleetShape, SimFleet, running
from tests.mosquitto import Mosquitto, free_port, mosquitto_binary

ROOT = Path(__file__).resolve().parents[2]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_EVENTS = "printfleet/events/"


@dataclass(frozen=True)
class Daemon:
    """How to start one printfleet version."""

    label: str
    command: list[str]  # e.g. [python, "-m", "printfleet"]
    rules_root: Path  # its tree: rules/default.toml and rules/home-assistant.toml under it
    python: list[str] | None = None  # its interpreter command (None: this one)
    isolated: bool = False  # drop PYTHONPATH, so an installed older version is not shadowed
    extra_config: str = ""  # TOML appended to the config (only keys this version knows)


def today() -> Daemon:
    return Daemon("today", [sys.executable, "-m", "printfleet"], ROOT)


@dataclass
class Result:
    daemon: str
    shape: FleetShape
    ready: bool
    ready_s: float  # exec -> /readyz 200 (the timeout when never ready)
    window_s: float
    cpu_percent: float
    rss_mb: float  # highest VmRSS sampled in the window (MB = 10^6 bytes)
    hwm_mb: float  # VmHWM at the end
    records: int  # printer records the simulator served in the window
    sim_requests: dict[str, int]  # requests each vendor host answered in the window
    max_per_second: dict[str, int]  # each vendor host's busiest wall second, exec to window end
    sim_cpu_percent: float
    retained: int | None  # retained MQTT messages relayed in the window
    warnings: str
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def cpu_us_per_record(self) -> float | None:
        if not self.records:
            return None
        return self.cpu_percent / 100 * self.window_s / self.records * 1e6


def cpu_seconds(pid: int) -> float:
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def status_mb(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024 / 1e6
    raise KeyError(key)


def get(url: str, timeout: float = 30.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - local
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except OSError as err:
        return 0, str(err)


def write_config(
    workdir: Path, sim: SimFleet, daemon: Daemon, mqtt_url: str | None, port: int
) -> Path:
    (workdir / "state").mkdir()
    rules = [
        str(daemon.rules_root / "rules" / "default.toml"),
        str(daemon.rules_root / "rules" / "home-assistant.toml"),
    ]
    sources = []
    for account in sim.accounts:
        vendor = account["vendor"]
        if vendor == "formlabs":
            creds = (
                f'client_id = "{account["client_id"]}"\n'
                f'client_secret_file = "{account["secret_file"]}"'
            )
        else:
            creds = f'secrets_file = "{account["secrets_file"]}"'
        sources.append(
            f'[[source]]\nname = "{account["name"]}"\nvendor = "{vendor}"\n{creds}\n'
            f'base_url = "{sim.urls[vendor]}"\n'
        )
    text = f"""
[daemon]
state_dir = "{workdir / "state"}"
log_level = "warning"
log_format = "json"

{chr(10).join(sources)}
[mqtt]
enabled = {"true" if mqtt_url else "false"}
url = "{mqtt_url or "mqtt://127.0.0.1:1883"}"
homeassistant_discovery = true

[metrics]
listen = "127.0.0.1:{port}"

[rules]
packs = {json.dumps(rules)}
{daemon.extra_config}
"""
    path = workdir / "config.toml"
    path.write_text(text)
    return path


def _warnings(log: str) -> str:
    found: Counter[str] = Counter()
    for line in log.splitlines():
        if not line.startswith("{"):
            continue
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and record.get("level") in ("warning", "error"):
                found[str(record.get("event"))] += 1
    return ", ".join(f"{n}x {e}" for e, n in found.most_common(4)) or "none"


@contextlib.contextmanager
def _broker(workdir: Path) -> Iterator[str | None]:
    if mosquitto_binary() is None:
        yield None
        return
    broker = Mosquitto(workdir)
    broker.start()
    try:
        yield broker.url
    finally:
        broker.stop()


def _own_retained_counter(broker_url: str, seconds: float) -> int:
    """Retained per-printer messages the broker relays in ``seconds``.

    What slice mqtt's ``tests/bench/mqtt_rate.py`` counts, for when it is not there: topics
    ``printfleet/+/+/#`` without ``printfleet/events/`` (so neither HA discovery configs nor
    event messages), published with the retain flag (MQTT 5 retain-as-published shows it).
    """
    from urllib.parse import urlsplit

    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.subscribeoptions import SubscribeOptions

    parts = urlsplit(broker_url)
    counted = [0]
    counting = threading.Event()

    def on_message(_client: Any, _userdata: Any, message: Any) -> None:
        if counting.is_set() and message.retain and not message.topic.startswith(_EVENTS):
            counted[0] += 1

    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.on_message = on_message
    client.connect(parts.hostname or "127.0.0.1", parts.port or 1883)
    # retainHandling=2: no stored retained messages at subscribe time, only new publishes.
    client.subscribe(
        "printfleet/+/+/#",
        options=SubscribeOptions(qos=0, retainAsPublished=True, retainHandling=2),
    )
    client.loop_start()
    try:
        time.sleep(0.5)  # the SUBACK
        counting.set()
        time.sleep(seconds)
        counting.clear()
    finally:
        client.loop_stop()
        client.disconnect()
    return counted[0]


def count_retained(broker_url: str, seconds: float) -> tuple[int, str]:
    """slice mqtt's counter when present, else ours; returns (count, whose)."""
    try:
        from tests.bench.mqtt_rate import count_retained as theirs  # type: ignore[import-not-found]
    except ImportError:
        return _own_retained_counter(broker_url, seconds), "bench subscriber"
    return int(theirs(broker_url, seconds)), "tests/bench/mqtt_rate.py"


@contextlib.contextmanager
def fleet(shape: FleetShape, workdir: Path) -> Iterator[SimFleet]:
    """Today's simulator for ``shape`` in a child process, its log in ``workdir``."""
    with (
        (workdir / "simulator.log").open("w") as log,
        running(shape, workdir, [sys.executable], log, ROOT) as sim,
    ):
        yield sim


def compare(
    shape: FleetShape, daemons: list[Daemon], **kwargs: Any
) -> dict[str, Result | Exception]:
    """Measure each daemon in turn against one simulator (built once: at 100,000 printers the
    build is most of a minute); a daemon that fails yields its exception, the others still run.

    Sharing the fleet is fair: the later daemon sees the same printers a few minutes on, and
    each daemon's requests are far below the accounts' hourly limits.
    """
    results: dict[str, Result | Exception] = {}
    with (
        tempfile.TemporaryDirectory(prefix="printfleet-scale-") as tmp,
        fleet(shape, Path(tmp)) as sim,
    ):
        for i, daemon in enumerate(daemons):
            workdir = Path(tmp) / f"daemon-{i}"
            workdir.mkdir()
            try:
                results[daemon.label] = measure(sim, daemon, workdir, **kwargs)
            except Exception as err:  # report it beside the other daemon's figures
                results[daemon.label] = err
    return results


def measure(
    sim: SimFleet,
    daemon: Daemon,
    workdir: Path,
    *,
    settle_s: float,
    window_s: float,
    ready_timeout_s: float,
    retained: bool = False,
    after: Callable[[str, int], dict[str, Any]] | None = None,
) -> Result:
    """Run ``daemon`` against ``sim`` and measure it (see the module docstring)."""
    log_path = workdir / "daemon.log"
    env = dict(os.environ)
    if daemon.isolated:
        env.pop("PYTHONPATH", None)
    with (
        log_path.open("w") as log,
        _broker(workdir / "mosquitto") as mqtt_url,
    ):
        port = free_port()
        config = write_config(workdir, sim, daemon, mqtt_url, port)
        started = time.monotonic()
        first_second = int(time.time())  # the simulator is shared: count this daemon's seconds
        proc = subprocess.Popen(
            [*daemon.command, "run", "-c", str(config)],
            stdout=log,
            stderr=log,
            cwd=daemon.rules_root,
            env=env,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            ready = False
            while time.monotonic() - started < ready_timeout_s:
                if proc.poll() is not None:
                    tail = log_path.read_text()[-2000:]
                    raise RuntimeError(f"{daemon.label}: printfleet run exited:\n{tail}")
                if get(f"{base}/readyz", timeout=5)[0] == 200:
                    ready = True
                    break
                time.sleep(0.5)
            ready_s = time.monotonic() - started
            time.sleep(settle_s)
            pid = proc.pid
            s0 = sim.stats()
            cpu0, wall0 = cpu_seconds(pid), time.monotonic()
            counter: list[tuple[int, str]] = []
            thread = None
            if retained and mqtt_url:
                thread = threading.Thread(
                    target=lambda: counter.append(count_retained(mqtt_url, window_s - 1.0)),
                    daemon=True,
                )
                thread.start()
            rss = 0.0
            while (elapsed := time.monotonic() - wall0) < window_s:
                rss = max(rss, status_mb(pid, "VmRSS"))
                time.sleep(min(1.0, window_s - elapsed))
            cpu1, wall1 = cpu_seconds(pid), time.monotonic()
            s1 = sim.stats()
            rss = max(rss, status_mb(pid, "VmRSS"))
            hwm = max(rss, status_mb(pid, "VmHWM"))
            if thread is not None:
                thread.join(timeout=30)
            extras = after(base, pid) if after is not None else {}
            extras["sim_build_s"] = sim.info["build_s"]
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    window = wall1 - wall0
    if counter:
        extras["retained_by"] = counter[0][1]
    return Result(
        daemon=daemon.label,
        shape=sim.shape,
        ready=ready,
        ready_s=ready_s,
        window_s=window,
        cpu_percent=(cpu1 - cpu0) / window * 100,
        rss_mb=rss,
        hwm_mb=hwm,
        records=sum(s1.records.values()) - sum(s0.records.values()),
        sim_requests={v: n - s0.requests.get(v, 0) for v, n in s1.requests.items()},
        max_per_second={
            v: max((n for t, n in secs.items() if t >= first_second), default=0)
            for v, secs in s1.per_second.items()
        },
        sim_cpu_percent=(s1.cpu_s - s0.cpu_s) / window * 100,
        retained=counter[0][0] if counter else None,
        warnings=_warnings(log_path.read_text()),
        extras=extras,
    )
