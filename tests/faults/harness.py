"""The fault-injection rig: the real ``printfleet run`` process against the simulator, a real
mosquitto and a real webhook receiver, with the knobs to break each of them.

- :class:`DaemonProcess` runs ``python -m printfleet run -c CONFIG`` and parses its JSON log
  lines from stdout into :attr:`DaemonProcess.log` as they arrive.
- :class:`MqttRecorder` is a real MQTT client recording everything under ``printfleet/#``; with a
  persistent session it survives a broker restart without missing QoS 1 messages.
- :class:`FlakyReceiver` is the webhook receiver of ``tests/receiver.py`` that can also answer
  503 for a while (:meth:`FlakyReceiver.fail`) or stop listening on its port (:meth:`down`).
- :class:`DiskFull` fills the state directory's file system (a small tmpfs when the tests run
  as root, else ``RLIMIT_FSIZE`` on the daemon process) and frees it again.
- :class:`Rig` writes the config and rule pack, starts daemons, waits on conditions and holds
  the checks every fault case ends with (:meth:`Rig.verify`).

Time: the daemon runs on real time; the simulator runs ``speed`` times faster with
``protocol_clock="wall"`` (tokens, JWTs and rate-limit windows stay on real time).

Nothing here sleeps to let things happen: every wait is :meth:`Changes.until`, a predicate
re-checked whenever a log line, an MQTT message or a webhook request arrives (and every 50 ms
for state that lives in the simulator's threads), bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import os
import resource
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import aiomqtt

from printfleet.simulator import Simulator, SimulatorConfig, TruthKind
from tests.mosquitto import Mosquitto
from tests.receiver import Received, Receiver, Reply

T = TypeVar("T")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

PREFIX = "printfleet"
HOOK = "hook"
SLACK = "ops-slack"
HOOK_SECRET = "fault-suite-signing-key"
FORMLABS_SECRET_FILE = "formlabs.secret"  # a file name, relative to the config
#: Event types the rule pack sends to the webhook receiver (everything else: MQTT only).
HOOK_TYPES = (
    "print.*",
    "printer.status_changed",
    "printer.offline",
    "printer.online",
    "printer.added",
    "printer.removed",
)
#: Event types whose stable identity is (source, subject, type, print id): a second id for the
#: same key would be the same transition announced twice.
PRINT_OUTCOMES = frozenset(
    {"print.started", "print.finished", "print.failed", "print.aborted", "print.progress"}
)


#: Longest daemon log line read whole (see :meth:`DaemonProcess.start`).
LOG_LINE_LIMIT = 16 * 2**20


def rule_pack(name: str = "fault-suite") -> str:
    """A rule pack routing print and printer events to the receiver ``hook``."""
    on = ", ".join(json.dumps(t) for t in HOOK_TYPES)
    return (
        "[[rule]]\n"
        f"name = {json.dumps(name)}\n"
        f"on = [{on}]\n"
        f"notify = [{json.dumps(HOOK)}]\n"
        'title = "{printer.name}: {type}"\n'
    )


def is_event_line(record: dict[str, Any]) -> bool:
    """Whether a log record is a detected change: ``"event": "event.print.finished"`` with the
    type also under ``type`` (README: Troubleshooting)."""
    return record.get("event") == f"event.{record.get('type')}"


def hook_wanted(event_type: str) -> bool:
    return any(fnmatch.fnmatchcase(event_type, pattern) for pattern in HOOK_TYPES)


# ------------------------------------------------------------------------------------ waiting


class Changes:
    """Something happened (a log line, a message, a request): wake whoever waits on a condition."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()

    async def until(
        self,
        predicate: Callable[[], T],
        *,
        timeout: float,
        what: str,
        context: Callable[[], str] = lambda: "",
    ) -> T:
        """Return ``predicate()`` once it is truthy; fail the test after ``timeout`` seconds.

        Re-checked on every notification and at least every 50 ms (the simulator's request log
        and fault counters change in its own threads, which cannot notify this loop).
        """
        deadline = time.monotonic() + timeout
        while True:
            self._event.clear()
            result = predicate()
            if result:
                return result
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout:g}s waiting for {what}{context()}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), min(left, 0.05))


# ------------------------------------------------------------------------------ the daemon


class DaemonProcess:
    """One ``printfleet run`` child process with its log parsed as it arrives."""

    def __init__(
        self,
        config: Path,
        changes: Changes,
        *,
        run: int = 0,
        preexec_fn: Callable[[], None] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.run = run
        self._changes = changes
        self._preexec_fn = preexec_fn
        self._env = dict(env) if env is not None else None
        self.log: list[dict[str, Any]] = []
        self.raw: list[str] = []  # stdout lines that are not JSON (should be none)
        self.stderr: list[str] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._readers: list[asyncio.Task[None]] = []

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.returncode

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self) -> DaemonProcess:
        env = dict(os.environ if self._env is None else self._env)
        env.pop("PRINTFLEET_CONFIG", None)
        env.pop("CREDENTIALS_DIRECTORY", None)
        env.pop("NOTIFY_SOCKET", None)
        env.pop("WATCHDOG_USEC", None)
        env["PYTHONUNBUFFERED"] = "1"
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "printfleet",
            "run",
            "-c",
            str(self.config),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            preexec_fn=self._preexec_fn,
            # A hostile name makes long log lines (a 70,000-character serial is logged in
            # full): asyncio's 64 KiB default would kill the reader and, once the pipe is
            # full, stall the daemon on its own stdout.
            limit=LOG_LINE_LIMIT,
        )
        assert self.proc.stdout is not None
        assert self.proc.stderr is not None
        self._readers = [
            asyncio.create_task(self._read(self.proc.stdout, self._stdout_line)),
            asyncio.create_task(self._read(self.proc.stderr, self.stderr.append)),
        ]
        return self

    async def _read(self, stream: asyncio.StreamReader, sink: Callable[[str], None]) -> None:
        while True:
            line = await stream.readline()
            if not line:
                break
            sink(line.decode("utf-8", "replace").rstrip("\n"))
            self._changes.notify()
        self._changes.notify()

    def _stdout_line(self, text: str) -> None:
        try:
            record = json.loads(text)
        except ValueError:
            self.raw.append(text)
            return
        if not isinstance(record, dict):
            self.raw.append(text)
            return
        record["_run"] = self.run
        record["_seen"] = time.time()
        self.log.append(record)

    # -- reading the log ---------------------------------------------------------------------

    def named(self, name: str, **fields: Any) -> list[dict[str, Any]]:
        """Log records whose ``event`` is ``name`` and whose fields equal ``fields``."""
        return [
            r
            for r in self.log
            if r.get("event") == name and all(r.get(k) == v for k, v in fields.items())
        ]

    def events(self) -> list[dict[str, Any]]:
        """The ``event.<type>`` lines: every change the daemon detected, in detection order."""
        return [r for r in self.log if is_event_line(r)]

    def tail(self, lines: int = 40) -> str:
        shown = [
            json.dumps({k: v for k, v in r.items() if not k.startswith("_")}) for r in self.log
        ]
        out = "\n".join(shown[-lines:] + self.raw[-5:])
        err = "\n".join(self.stderr[-lines:])
        return f"\n--- daemon run {self.run} stdout (tail) ---\n{out}\n--- stderr ---\n{err}"

    def peak_rss(self) -> int:
        """The process' peak resident set size in bytes (``VmHWM`` of ``/proc/<pid>/status``)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise AssertionError(f"no VmHWM in /proc/{self.pid}/status")

    # -- signals and exit --------------------------------------------------------------------

    def send(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(sig)

    async def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"daemon did not exit within {timeout:g}s{self.tail()}") from None
        await asyncio.gather(*self._readers, return_exceptions=True)
        return code

    async def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait for the exit code."""
        self.send(signal.SIGTERM)
        return await self.wait_exit(timeout)

    async def kill(self) -> int:
        """SIGKILL and wait (the crash case)."""
        self.send(signal.SIGKILL)
        return await self.wait_exit(10.0)

    async def cleanup(self) -> None:
        """Make sure the process is gone (test teardown)."""
        if self.proc is None:
            return
        if self.proc.returncode is None:
            self.send(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 10.0)
            except TimeoutError:
                self.send(signal.SIGKILL)
                await self.proc.wait()
        for task in self._readers:
            task.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)


# ---------------------------------------------------------------------------------- MQTT


@dataclass(frozen=True, slots=True)
class MqttMessage:
    topic: str
    payload: bytes
    retain: bool
    connection: int  # which (re)connection of the recorder received it
    seen: float  # time.time()


class MqttRecorder:
    """Records every message under ``printfleet/#``, reconnecting when the broker goes away.

    With ``persistent=True`` it keeps an MQTT session (clean_session false, QoS 1): a broker
    with persistence keeps queueing messages for it across a restart, so nothing published
    while the recorder reconnects is missed.
    """

    def __init__(self, broker: Mosquitto, changes: Changes, *, persistent: bool = False) -> None:
        self.broker = broker
        self.persistent = persistent
        self.messages: list[MqttMessage] = []
        self.connections = 0
        self.connected = asyncio.Event()
        self._changes = changes
        self._id = f"fault-rec-{uuid.uuid4().hex[:8]}"
        self._task: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 10.0) -> MqttRecorder:
        self._task = asyncio.create_task(self._loop())
        await asyncio.wait_for(self.connected.wait(), timeout)
        return self

    async def _loop(self) -> None:
        while True:
            client = aiomqtt.Client(
                self.broker.host,
                self.broker.port,
                identifier=self._id,
                protocol=aiomqtt.ProtocolVersion.V311,
                clean_session=not self.persistent,
                keepalive=5,
            )
            try:
                async with client:
                    await client.subscribe(f"{PREFIX}/#", qos=1)
                    self.connections += 1
                    connection = self.connections
                    self.connected.set()
                    self._changes.notify()
                    async for message in client.messages:
                        self.messages.append(
                            MqttMessage(
                                message.topic.value,
                                bytes(message.payload),  # type: ignore[arg-type]
                                bool(message.retain),
                                connection,
                                time.time(),
                            )
                        )
                        self._changes.notify()
            except aiomqtt.MqttError:
                pass
            self.connected.clear()
            self._changes.notify()
            # Reconnect promptly: the broker is (re)started by the test, not by a schedule.
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def events(self) -> list[dict[str, Any]]:
        """CloudEvents received on ``printfleet/events/#``, in arrival order (duplicates kept)."""
        found = []
        for m in self.messages:
            if m.topic.startswith(f"{PREFIX}/events/"):
                found.append(json.loads(m.payload))
        return found

    def on(self, topic: str) -> list[MqttMessage]:
        return [m for m in self.messages if m.topic == topic]


# ------------------------------------------------------------------------------ receiver


#: The reply chosen for the request being handled (each connection is its own task, so this
#: pairs a recorded request with its answer even when connections interleave).
_REPLY: ContextVar[Reply | None] = ContextVar("fault_receiver_reply", default=None)


class _Script(deque[Reply]):
    """The receiver's reply script, plus a standing reply while :attr:`standing` is set."""

    standing: Reply | None = None

    def __bool__(self) -> bool:
        return self.standing is not None or len(self) > 0

    def popleft(self) -> Reply:
        reply = self.standing if self.standing is not None else super().popleft()
        _REPLY.set(reply)
        return reply


class FlakyReceiver(Receiver):
    """The test receiver on a fixed port that can fail (503) or go away (connection refused)."""

    def __init__(self, changes: Changes, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._changes = changes
        self._script = _Script()
        self.statuses: list[int] = []  # the answer to each of ``requests`` (0: dropped)

    async def __aenter__(self) -> FlakyReceiver:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _record(self, request: Received) -> None:
        reply = _REPLY.get()
        status = 200 if reply is None else reply.status  # no script: the receiver answers 200
        _REPLY.set(None)
        if request.dropped or (reply is not None and reply.trickle_s > 0):
            status = 0  # a slow-loris answer never completes: nothing was delivered
        elif request.signature_ok is False:
            status = 401
        async with self._arrived:  # both lists in one step: they stay aligned
            self.requests.append(request)
            self.statuses.append(status)
            self._arrived.notify_all()
        self._changes.notify()

    def answer(self, reply: Reply) -> None:
        """Answer every request with ``reply`` (e.g. a hostile one) until :meth:`recover`."""
        self._script.standing = reply

    def fail(self, status: int = 503, retry_after: int | None = None) -> None:
        """Answer every request with ``status`` until :meth:`recover`."""
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        self._script.standing = Reply(status, headers=headers)

    def recover(self) -> None:
        self._script.standing = None

    async def down(self) -> None:
        """Stop listening and drop open connections: deliveries get connection refused."""
        await self.__aexit__(None, None, None)
        self._server = None

    async def up(self) -> None:
        """Listen again on the same port."""
        await self.__aenter__()

    def events(self) -> list[dict[str, Any]]:
        """CloudEvents of every complete POST, in arrival order (duplicates and refused ones)."""
        return [json.loads(r.body) for r in self.requests if not r.dropped and r.body]

    def delivered(self) -> list[dict[str, Any]]:
        """CloudEvents of the POSTs answered 2xx (what counts as delivered), in arrival order."""
        return [
            json.loads(r.body)
            for r, status in zip(self.requests, self.statuses, strict=True)
            if 200 <= status < 300 and r.body
        ]

    def refused(self) -> int:
        """How many requests were answered with something else than 2xx."""
        return sum(1 for status in self.statuses if not 200 <= status < 300)


# ---------------------------------------------------------------------------- disk full


class DiskFull:
    """Makes writes to the state directory fail with "disk full", and lets them succeed again.

    As root (CI runs as root) the state directory is a small tmpfs that :meth:`fill` fills with
    a ballast file; elsewhere :meth:`fill` lowers ``RLIMIT_FSIZE`` of the daemon process so that
    SQLite's writes fail with EFBIG ("file too large"), which it reports like a full disk.
    """

    def __init__(self, state_dir: Path, size: str = "8m", *, mount: bool = True) -> None:
        self.state_dir = state_dir
        self.size = size
        self.mount = mount
        self.mounted = False
        self.pid: int | None = None
        self._ballast = state_dir / "ballast"
        self._saved_limit: tuple[int, int] | None = None

    @property
    def method(self) -> str:
        return "tmpfs" if self.mounted else "rlimit"

    def prepare(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if not self.mount or os.geteuid() != 0:
            return
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.size},mode=0700", "tmpfs", self.state_dir],
            capture_output=True,
            check=False,
        )
        self.mounted = done.returncode == 0

    def fill(self) -> None:
        if self.mounted:
            descriptor = os.open(self._ballast, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                for size in (1 << 20, 1 << 16, 1 << 12, 1 << 9):  # down to the last free block
                    chunk = b"\0" * size
                    with contextlib.suppress(OSError):
                        while True:
                            os.write(descriptor, chunk)
            finally:
                os.close(descriptor)
            return
        assert self.pid is not None, "set DiskFull.pid to the daemon's pid first"
        self._saved_limit = resource.prlimit(self.pid, resource.RLIMIT_FSIZE)
        resource.prlimit(self.pid, resource.RLIMIT_FSIZE, (1, self._saved_limit[1]))

    def free(self) -> None:
        if self.mounted:
            self._ballast.unlink(missing_ok=True)
            return
        if self._saved_limit is not None and self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                resource.prlimit(self.pid, resource.RLIMIT_FSIZE, self._saved_limit)

    def cleanup(self) -> None:
        self.free()
        if self.mounted:
            subprocess.run(["umount", "-l", self.state_dir], capture_output=True, check=False)
            self.mounted = False


# ----------------------------------------------------------------------------------- rig


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def toml_table(header: str, values: Mapping[str, Any]) -> str:
    lines = [header] + [f"{k} = {toml_value(v)}" for k, v in values.items() if v is not None]
    return "\n".join(lines) + "\n"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RigOptions:
    """What one fault case needs from the rig (defaults: a small, busy, two-vendor fleet)."""

    formlabs_printers: int = 8
    carbon_printers: int = 6
    speed: float = 240.0
    seed: int = 3
    sim_start: datetime | None = None
    offline_probability: float = 0.4
    poll_interval: str = "1s"
    active_interval: str = "1s"
    idle_interval: str = "2s"
    history_interval: str = "2s"
    offline_after: str = "3m"
    source_timeout: str = "2s"
    receiver_timeout: str = "2s"
    shutdown_grace: str = "3s"
    mqtt: bool = True
    persistent_session: bool = False
    #: The daemon's MQTT client id; ``None`` leaves it to the daemon's default.
    mqtt_client_id: str | None = field(
        default_factory=lambda: f"printfleet-fault-{uuid.uuid4().hex[:8]}"
    )
    homeassistant_discovery: bool = False
    #: Also configure a Slack receiver ``SLACK`` (at :attr:`Rig.slack`) for rules to notify.
    slack: bool = False
    #: Extra tables: ``{"daemon": {...}, "lab": {...}, "factory": {...}, "poll": {...}}`` add
    #: keys to those tables; any other name (e.g. ``"limits"``) is written as its own table.
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)


class Rig:
    """One fault case's world: simulator, broker, receiver, config, daemon process(es)."""

    def __init__(
        self, workdir: Path, broker: Mosquitto | None, options: RigOptions | None = None
    ) -> None:
        self.workdir = workdir
        self.broker = broker
        self.options = options = options or RigOptions()
        self.changes = Changes()
        self.sim = Simulator(
            SimulatorConfig(
                formlabs_printers=options.formlabs_printers,
                carbon_printers=options.carbon_printers,
                speed=options.speed,
                seed=options.seed,
                start=options.sim_start,
                protocol_clock="wall",
                formlabs_hourly_limit=1_000_000,
                formlabs_per_second_limit=1_000,
                carbon_limit_per_10s=10_000,
                offline_probability=options.offline_probability,
            )
        )
        self.receiver = FlakyReceiver(self.changes, secret=HOOK_SECRET.encode())
        self.slack = FlakyReceiver(self.changes)  # answers 200; only in the config if asked
        self.mqtt: MqttRecorder | None = None
        self.daemons: list[DaemonProcess] = []
        self.state_dir = workdir / "state"
        self.history_checked = 0  # print_history records seen by the last history_mismatch()
        self.config_path = workdir / "printfleet.toml"
        self.pack_path = workdir / "rules" / "fault-suite.toml"
        self.metrics_port = free_port()
        self.disk: DiskFull | None = None
        # Reference point to map wall time to simulated time (the simulator's clock is a
        # scaled monotonic clock, so this mapping is exact up to clock drift).
        self._wall_ref = 0.0
        self._sim_ref = datetime.now(UTC)
        self.offline_at_start: set[str] = set()

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Rig:
        self.sim.start()
        self._wall_ref, self._sim_ref = time.time(), self.sim.now()
        self.offline_at_start = _offline_at_start(self.sim)
        await self.receiver.__aenter__()
        if self.options.slack:
            await self.slack.__aenter__()
        if self.broker is not None and self.options.mqtt:
            self.mqtt = await MqttRecorder(
                self.broker, self.changes, persistent=self.options.persistent_session
            ).start()
        self.write_secrets()
        self.write_pack(rule_pack())
        self.write_config()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for daemon in self.daemons:
            await daemon.cleanup()
        if self.mqtt is not None:
            await self.mqtt.stop()
        with contextlib.suppress(Exception):
            await self.receiver.__aexit__(None, None, None)
        if self.options.slack:
            with contextlib.suppress(Exception):
                await self.slack.__aexit__(None, None, None)
        self.sim.faults.clear()
        self.sim.stop()
        if self.disk is not None:
            self.disk.cleanup()

    # -- files -------------------------------------------------------------------------------

    def write_secrets(self) -> None:
        (self.workdir / FORMLABS_SECRET_FILE).write_text(self.sim.formlabs_client_secret + "\n")
        self.sim.write_carbon_secrets(self.workdir / "carbon-secrets.json")
        (self.workdir / "hook.secret").write_text(HOOK_SECRET + "\n")
        (self.workdir / "slack.url").write_text(self.slack.url + "/services/T0/B0/x\n")
        for name in (FORMLABS_SECRET_FILE, "hook.secret", "slack.url", "carbon-secrets.json"):
            (self.workdir / name).chmod(0o600)

    def write_pack(self, text: str) -> None:
        self.pack_path.parent.mkdir(parents=True, exist_ok=True)
        self.pack_path.write_text(text)

    def config_text(
        self,
        *,
        secret_file: str | None = None,
        state_dir: Path | None = None,
        metrics_port: int | None = None,
    ) -> str:
        """The config file: both sources, poll intervals, MQTT, metrics, the receiver, the pack.

        ``secret_file`` is the Formlabs client secret file (a wrong one for the auth case);
        ``state_dir`` and ``metrics_port`` let a second daemon run next to the first.
        """
        o = self.options
        parts = [
            toml_table(
                "[daemon]",
                {
                    "state_dir": state_dir or self.state_dir,
                    "log_level": "info",
                    "log_format": "json",
                    "shutdown_grace": o.shutdown_grace,
                    **o.extra.get("daemon", {}),
                },
            ),
        ]
        if o.formlabs_printers:
            parts.append(
                toml_table(
                    "[[source]]",
                    {
                        "name": "lab",
                        "vendor": "formlabs",
                        "base_url": self.sim.formlabs_url,
                        "client_id": self.sim.formlabs_client_id,
                        "client_secret_file": secret_file or FORMLABS_SECRET_FILE,
                        "budget_per_hour": 100_000,
                        "requests_per_second": 50,
                        "timeout": o.source_timeout,
                        **o.extra.get("lab", {}),
                    },
                )
            )
        if o.carbon_printers:
            parts.append(
                toml_table(
                    "[[source]]",
                    {
                        "name": "factory",
                        "vendor": "carbon",
                        "base_url": self.sim.carbon_url,
                        "secrets_file": "carbon-secrets.json",
                        "requests_per_10s": 1000,
                        "timeout": o.source_timeout,
                        **o.extra.get("factory", {}),
                    },
                )
            )
        parts.append(
            toml_table(
                "[poll]",
                {
                    "interval": o.poll_interval,
                    "active_interval": o.active_interval,
                    "idle_interval": o.idle_interval,
                    "history_interval": o.history_interval,
                    "offline_after": o.offline_after,
                    **o.extra.get("poll", {}),
                },
            )
        )
        mqtt_on = self.broker is not None and o.mqtt
        parts.append(
            toml_table(
                "[mqtt]",
                {
                    "enabled": mqtt_on,
                    "url": self.broker.url if self.broker is not None else "mqtt://127.0.0.1:1",
                    "topic_prefix": PREFIX,
                    "qos": 1,
                    "client_id": o.mqtt_client_id,
                    "homeassistant_discovery": o.homeassistant_discovery,
                },
            )
        )
        port = metrics_port or self.metrics_port
        parts.append(toml_table("[metrics]", {"listen": f"127.0.0.1:{port}"}))
        parts.append(
            toml_table(
                "[[receiver]]",
                {
                    "name": HOOK,
                    "kind": "webhook",
                    "url": self.receiver.url,
                    "secret_file": "hook.secret",
                    "timeout": o.receiver_timeout,
                },
            )
        )
        if o.slack:
            parts.append(
                toml_table(
                    "[[receiver]]",
                    {
                        "name": SLACK,
                        "kind": "slack",
                        "url_file": "slack.url",
                        "timeout": o.receiver_timeout,
                    },
                )
            )
        parts.append(toml_table("[rules]", {"packs": [str(self.pack_path)]}))
        own = {"daemon", "lab", "factory", "poll"}
        for table, values in o.extra.items():
            if table not in own:
                parts.append(toml_table(f"[{table}]", values))
        return "\n".join(parts)

    def write_config(self, text: str | None = None, path: Path | None = None) -> Path:
        target = path or self.config_path
        target.write_text(text if text is not None else self.config_text())
        return target

    # -- daemons -----------------------------------------------------------------------------

    @property
    def daemon(self) -> DaemonProcess:
        """The latest daemon process."""
        return self.daemons[-1]

    async def spawn(
        self,
        config: Path | None = None,
        *,
        preexec_fn: Callable[[], None] | None = None,
    ) -> DaemonProcess:
        """Start ``printfleet run`` (no waiting)."""
        process = DaemonProcess(
            config or self.config_path,
            self.changes,
            run=len(self.daemons),
            preexec_fn=preexec_fn,
        )
        self.daemons.append(process)
        return await process.start()

    async def start_daemon(self, timeout: float = 30.0) -> DaemonProcess:
        """Start the daemon and wait for ``daemon.ready`` (and its MQTT connection)."""
        process = await self.spawn()
        await self.until(
            lambda: process.named("daemon.ready") or not process.running,
            timeout=timeout,
            what="daemon.ready",
        )
        assert process.running, f"the daemon exited with {process.returncode}{process.tail()}"
        if self.mqtt is not None:
            await self.until(
                lambda: process.named("mqtt.connected"), timeout=timeout, what="mqtt.connected"
            )
        return process

    async def until(self, predicate: Callable[[], T], *, timeout: float, what: str) -> T:
        return await self.changes.until(
            predicate, timeout=timeout, what=what, context=self._context
        )

    async def wait_log(
        self, name: str, *, count: int = 1, timeout: float = 20.0, since: int = 0, **fields: Any
    ) -> list[dict[str, Any]]:
        """Wait until the latest daemon logged ``name`` (with ``fields``) ``count`` times
        at or after log index ``since``."""
        process = self.daemon

        def found() -> list[dict[str, Any]]:
            hits = [
                r
                for r in process.log[since:]
                if r.get("event") == name and all(r.get(k) == v for k, v in fields.items())
            ]
            return hits if len(hits) >= count else []

        return await self.until(found, timeout=timeout, what=f"log {name} {fields or ''}")

    async def wait_events(
        self,
        count: int = 1,
        *,
        since: int = 0,
        timeout: float = 30.0,
        where: Callable[[dict[str, Any]], bool] = lambda r: True,
    ) -> list[dict[str, Any]]:
        """Wait for ``count`` detected events (``event.<type>`` lines) after log index ``since``."""
        process = self.daemon

        def found() -> list[dict[str, Any]]:
            hits = [r for r in process.log[since:] if is_event_line(r) and where(r)]
            return hits if len(hits) >= count else []

        return await self.until(found, timeout=timeout, what=f"{count} detected event(s)")

    def mark(self) -> int:
        """The latest daemon's current log position (for ``since=``)."""
        return len(self.daemon.log)

    def _context(self) -> str:
        text = self.daemon.tail() if self.daemons else ""
        return text + f"\n--- receiver: {len(self.receiver.requests)} request(s)"

    # -- what was detected and what arrived --------------------------------------------------

    def logged(self) -> list[dict[str, Any]]:
        """Every detected event over all daemon runs, in detection order."""
        return [r for d in self.daemons for r in d.events()]

    def logged_for_hook(self) -> list[dict[str, Any]]:
        return [r for r in self.logged() if hook_wanted(r["type"])]

    def mqtt_ids(self) -> set[str]:
        return {e["id"] for e in self.mqtt.events()} if self.mqtt is not None else set()

    def hook_ids(self) -> set[str]:
        return {e["id"] for e in self.receiver.delivered()}

    def history_mismatch(self) -> dict[str, set[tuple[str, str]]]:
        """Print outcomes on MQTT without a ``print_history`` record, and records without an
        outcome on MQTT (both as ``(source, print id)``): the two are written by one commit."""
        from printfleet.store import FILENAME, Store

        outcomes = {"print.finished", "print.failed", "print.aborted"}
        events = {
            (str(e["source"]).rsplit("/", 1)[-1], str(e["data"]["print"]["id"]))
            for e in (self.mqtt.events() if self.mqtt is not None else [])
            if e.get("type") in outcomes and isinstance(e.get("data", {}).get("print"), dict)
        }
        with Store.open(self.state_dir / FILENAME) as store:
            records = {(r.source, r.print_id) for r in store.print_history()}
        found = {"outcomes without a record": events - records}
        found["records without an outcome"] = records - events
        self.history_checked = len(records)
        return {what: keys for what, keys in found.items() if keys}

    def missing(self) -> dict[str, list[str]]:
        """Detected events that have not arrived yet, per sink."""
        gone: dict[str, list[str]] = {}
        if self.mqtt is not None:
            have = self.mqtt_ids()
            lost = [r["id"] for r in self.logged() if r["id"] not in have]
            if lost:
                gone["mqtt"] = lost
        have = self.hook_ids()
        lost = [r["id"] for r in self.logged_for_hook() if r["id"] not in have]
        if lost:
            gone[HOOK] = lost
        return gone

    async def wait_all_delivered(self, timeout: float = 30.0) -> None:
        """Every detected event reaches MQTT, and the webhook receiver when the rules say so."""
        try:
            await self.until(lambda: not self.missing(), timeout=timeout, what="delivery")
        except AssertionError as err:
            lost = {i for ids in self.missing().values() for i in ids}
            where = [
                f"run {r['_run']} {r['timestamp']} {r['type']} {r['source']}/{r['subject']} "
                f"{r['id']}"
                for r in self.logged()
                if r["id"] in lost
            ]
            raise AssertionError(
                f"detected but never delivered: {self.missing()}\n" + "\n".join(where) + f"\n{err}"
            ) from None

    # -- ground truth ------------------------------------------------------------------------

    def sim_time(self, wall: float) -> datetime:
        """The simulated instant at wall-clock ``wall`` (seconds since the epoch)."""
        return self._sim_ref + timedelta(seconds=(wall - self._wall_ref) * self.options.speed)

    def episodes(self) -> dict[str, list[tuple[datetime, datetime | None]]]:
        """Real offline episodes per serial from the simulator's ground truth: (went offline,
        came back or ``None``); a printer offline from the start has an episode from the epoch."""
        found: dict[str, list[tuple[datetime, datetime | None]]] = defaultdict(list)
        truth = self.sim.ground_truth
        first: dict[str, TruthKind] = {}
        for item in truth:
            if item.kind in (TruthKind.PRINTER_OFFLINE, TruthKind.PRINTER_ONLINE):
                first.setdefault(item.serial, item.kind)
        offline = {s for s, kind in first.items() if kind == TruthKind.PRINTER_ONLINE}
        for serial in offline | self.offline_at_start:
            found[serial].append((_EPOCH, None))
        for item in truth:
            if item.kind == TruthKind.PRINTER_OFFLINE:
                found[item.serial].append((item.time, None))
            elif item.kind == TruthKind.PRINTER_ONLINE and found[item.serial]:
                start, end = found[item.serial][-1]
                if end is None:
                    found[item.serial][-1] = (start, item.time)
        return found

    def false_transitions(self) -> list[str]:
        """``printer.offline`` / ``printer.online`` events the ground truth does not back.

        Detected at simulated time D (mapped from the log line's wall time), ``printer.offline``
        is real when the printer went offline at or before D (plus the mapping's slack) and was
        still offline, or came back too recently for the daemon to have seen it (``lag``: the
        threshold and a few poll intervals); ``printer.online`` is real when an episode ended
        within that window before D.
        """
        speed = self.options.speed
        slack = timedelta(seconds=1.0 * speed)
        lag = timedelta(seconds=8.0 * speed)
        flips = [r for r in self.logged() if r["type"] in ("printer.offline", "printer.online")]
        if not flips:
            return []
        episodes = self.episodes()
        bad = []
        for record in flips:
            serial = _serial(self._event_body(record["id"])) or str(record.get("subject"))
            detected = self.sim_time(_timestamp(record))
            spans = episodes.get(serial, [])
            if record["type"] == "printer.offline":
                real = any(
                    start <= detected + slack and (end is None or end >= detected - lag)
                    for start, end in spans
                )
            else:
                real = any(
                    end is not None and detected - lag <= end <= detected + slack
                    for _, end in spans
                )
            if not real:
                bad.append(f"{record['type']} {record['source']}/{serial} at {detected:%H:%M:%S}")
        return bad

    def false_offline(self) -> list[str]:
        """The ``printer.offline`` part of :meth:`false_transitions`."""
        return [t for t in self.false_transitions() if t.startswith("printer.offline")]

    def _event_body(self, event_id: str) -> dict[str, Any]:
        sources: list[Iterable[dict[str, Any]]] = [self.receiver.events()]
        if self.mqtt is not None:
            sources.insert(0, self.mqtt.events())
        for events in sources:
            for event in events:
                if event.get("id") == event_id:
                    return event
        return {}

    # -- the checks every case ends with -----------------------------------------------------

    def order_violations(self) -> list[str]:
        """Per printer (ordering key ``source/subject``), events must arrive in the order they
        were detected (first arrival of each id; redeliveries of an id are allowed)."""
        detected: dict[str, list[str]] = defaultdict(list)
        for r in self.logged():
            key = f"{r['source']}/{r['subject']}"
            if r["id"] not in detected[key]:
                detected[key].append(r["id"])
        problems = []
        streams = {HOOK: self.receiver.delivered()}
        if self.mqtt is not None:
            streams["mqtt"] = self.mqtt.events()
        for sink, events in streams.items():
            arrived: dict[str, list[str]] = defaultdict(list)
            for e in events:
                key = f"{_source_name(e)}/{e.get('subject')}"
                if e["id"] not in arrived[key]:
                    arrived[key].append(e["id"])
            for key, ids in arrived.items():
                expected = [i for i in detected.get(key, []) if i in ids]
                got = [i for i in ids if i in expected]
                if got != expected:
                    problems.append(f"{sink} {key}: arrived {got}, detected {expected}")
        return problems

    def reannounced(self) -> list[str]:
        """The same print transition detected under two different event ids."""
        by_key: dict[tuple[Any, ...], set[str]] = defaultdict(set)
        events = self.mqtt.events() if self.mqtt is not None else self.receiver.events()
        for e in events:
            if e.get("type") not in PRINT_OUTCOMES:
                continue
            data = e.get("data") or {}
            run = data.get("print") or {}
            key: tuple[Any, ...] = (e.get("source"), e.get("subject"), e["type"], run.get("id"))
            if e["type"] == "print.progress":
                key += (data.get("milestone"),)  # one event per milestone per print
            by_key[key].add(e["id"])
        return [f"{k}: {sorted(v)}" for k, v in by_key.items() if len(v) > 1]

    async def verify(self, *, delivered_timeout: float = 30.0) -> None:
        """The invariants of every case: nothing detected is lost, per-printer order holds, no
        false ``printer.offline``, no transition announced twice under different ids."""
        await self.wait_all_delivered(timeout=delivered_timeout)
        assert not self.order_violations(), self.order_violations()
        false = self.false_transitions()
        assert not false, f"printer.offline/online the ground truth does not back: {false}"
        assert not self.reannounced(), f"re-announced transitions: {self.reannounced()}"
        flips = [r for r in self.logged() if r["type"] in ("printer.offline", "printer.online")]
        print(
            f"verified: {len(self.logged())} events detected over {len(self.daemons)} run(s), "
            f"{len(self.mqtt_ids())} on MQTT, {len(self.hook_ids())} at the receiver, "
            f"{len(flips)} offline/online checked against ground truth"
        )
        for process in self.daemons:
            assert not process.raw, f"non-JSON stdout lines: {process.raw[:5]}"
            tracebacks = [r for r in process.log if "exception" in r]
            assert not tracebacks, f"tracebacks logged: {tracebacks[:2]}"

    # -- tools -------------------------------------------------------------------------------

    def cli(self, *args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``printfleet <args> -c CONFIG`` to completion."""
        return subprocess.run(
            [sys.executable, "-m", "printfleet", *args, "-c", str(config or self.config_path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={k: v for k, v in os.environ.items() if k != "PRINTFLEET_CONFIG"},
        )

    def requests_since(self, vendor: str, since: datetime) -> list[Any]:
        return [r for r in self.sim.requests if r.vendor == vendor and r.time >= since]

    def metrics_text(self) -> str:
        import urllib.request

        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5
        ) as response:
            return str(response.read().decode())


def _offline_at_start(sim: Simulator) -> set[str]:
    """Serials offline when the simulator started.

    The ground truth records transitions only, so a printer that was already offline at the
    start and stays so has no episode in it (reported to the simulator's owner). Until the
    simulator says so itself, read its fleet state (internal, hence the guard).
    """
    engine = getattr(sim, "_engine", None)
    if engine is None or not hasattr(engine, "printers"):
        return set()
    found: set[str] = set()
    with sim._lock:  # the simulator's own lock around its fleet
        for vendor in sim.config.vendors:
            with contextlib.suppress(KeyError):
                found |= {p.serial for p in engine.printers(vendor) if not getattr(p, "online", 1)}
    return found


def metric_value(text: str, name: str, **labels: str) -> float:
    """The sum of ``name`` samples whose labels include ``labels``, from exposition text."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, label_text = head.partition("{")
        if metric != name:
            continue
        if all(f'{k}="{v}"' in label_text for k, v in labels.items()):
            total += float(value)
    return total


def _timestamp(record: Mapping[str, Any]) -> float:
    stamp = record.get("timestamp")
    if isinstance(stamp, str):
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    return float(record.get("_seen", time.time()))


def _serial(event: Mapping[str, Any]) -> str | None:
    printer = (event.get("data") or {}).get("printer") or {}
    serial = printer.get("serial")
    return serial if isinstance(serial, str) else None


def _source_name(event: Mapping[str, Any]) -> str:
    """``lab`` from the CloudEvent source ``printfleet/formlabs/lab``."""
    return str(event.get("source", "")).rsplit("/", 1)[-1]
