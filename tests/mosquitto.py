"""A real mosquitto broker for tests and benchmarks: free port, temp config, stop and restart.

The broker runs as a child process listening on ``127.0.0.1:<port>`` with anonymous access.
Its log goes to a pipe that a reader thread drains into memory, so tests can wait for a log
line (``wait_for_log``) instead of sleeping, and a failing test can show what the broker saw.

Use the ``mosquitto`` fixtures (defined in ``tests/integration/conftest.py``), or
:class:`Mosquitto` directly from a benchmark. When the binary is missing the fixture skips,
except under CI (``$CI`` set), where it fails: CI installs mosquitto, so a missing broker is a
broken setup.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt

_CANDIDATES = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/opt/homebrew/sbin/mosquitto")
READY_LINE = re.compile(r"mosquitto version \S+ running")


def mosquitto_binary() -> str | None:
    """Path of the mosquitto executable, or ``None`` when it is not installed."""
    found = shutil.which("mosquitto")
    if found:
        return found
    for candidate in _CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class TlsFiles:
    """A throw-away CA and a server certificate for 127.0.0.1 signed by it (PEM files)."""

    ca: Path
    cert: Path
    key: Path


def make_tls_files(directory: Path) -> TlsFiles:
    """Create a CA and a server certificate valid for IP 127.0.0.1 and ``localhost``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(name("printfleet test CA"))
        .issuer_name(name("printfleet test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("127.0.0.1"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    files.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


class Mosquitto:
    """One mosquitto process on a fixed port (kept across :meth:`restart`)."""

    host = "127.0.0.1"

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        persistence: bool = False,
        tls: TlsFiles | None = None,
        binary: str | None = None,
    ) -> None:
        found = binary or mosquitto_binary()
        if found is None:
            raise FileNotFoundError("mosquitto is not installed (apt-get install mosquitto)")
        self.binary = found
        self.workdir = workdir
        self.port = port or free_port()
        self.persistence = persistence
        self.tls = tls
        self.tls_port = free_port() if tls else None
        self._proc: subprocess.Popen[str] | None = None
        self._lines: list[str] = []
        self._cond = threading.Condition()
        self._reader: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def tls_url(self) -> str:
        """``mqtts://`` URL of the TLS listener (only with ``tls=``)."""
        if self.tls_port is None:
            raise RuntimeError("this broker has no TLS listener")
        return f"mqtts://{self.host}:{self.tls_port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def log(self) -> str:
        """Everything the broker logged since it was first started."""
        with self._cond:
            return "".join(self._lines)

    def _write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        lines = [
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            # Started as root, mosquitto would switch to the "mosquitto" user and lose access
            # to the temp directory; as anyone else this line is ignored.
            f"user {getpass.getuser()}",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            # No per-client queue limits getting in the way of benchmarks.
            "max_queued_messages 0",
        ]
        if self.persistence:
            lines += [
                "persistence true",
                f"persistence_location {self.workdir}/",
                "autosave_interval 1",
            ]
        else:
            lines.append("persistence false")
        if self.tls is not None:
            lines += [
                f"listener {self.tls_port} {self.host}",
                f"certfile {self.tls.cert}",
                f"keyfile {self.tls.key}",
            ]
        path = self.workdir / "mosquitto.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self, timeout: float = 10.0) -> None:
        """Start the broker and return once it accepts connections."""
        if self.running:
            raise RuntimeError("mosquitto is already running")
        config = self._write_config()
        with self._cond:
            start_index = len(self._lines)
        self._proc = subprocess.Popen(
            [self.binary, "-c", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(
            target=self._drain, args=(self._proc,), name="mosquitto-log", daemon=True
        )
        self._reader.start()
        if not self.wait_for_log(READY_LINE, timeout=timeout, since=start_index):
            self.stop()
            raise RuntimeError(f"mosquitto did not start within {timeout}s:\n{self.log}")

    def _drain(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with self._cond:
                self._lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for_log(
        self, pattern: str | re.Pattern[str], *, timeout: float = 10.0, since: int = 0
    ) -> bool:
        """Wait until a log line (from line index ``since`` on) matches ``pattern``."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if any(regex.search(line) for line in self._lines[since:]):
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self._proc is not None and self._proc.poll() is not None):
                    return any(regex.search(line) for line in self._lines[since:])
                self._cond.wait(remaining)

    @property
    def log_position(self) -> int:
        """Index of the next log line (pass as ``since`` to wait for lines after now)."""
        with self._cond:
            return len(self._lines)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the broker (SIGTERM, then SIGKILL if it does not exit in time)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        if self._reader is not None:
            self._reader.join(timeout)
        if proc.stdout is not None:
            proc.stdout.close()

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): connections stay open but nothing is answered."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)

    def kill(self) -> None:
        """Kill the broker abruptly (SIGKILL; works while paused too)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.kill()
        proc.wait()
        if self._reader is not None:
            self._reader.join(10.0)
        if proc.stdout is not None:
            proc.stdout.close()

    def restart(self, timeout: float = 10.0) -> None:
        """Stop and start again on the same port (retained messages survive only with
        ``persistence=True``)."""
        self.stop(timeout)
        self.start(timeout)

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Subscriber:
    """A real MQTT client that records every message it receives (use ``async with``).

    ``retained`` mirrors what a late subscriber would see: the last non-empty payload per topic
    (an empty payload deletes). :meth:`barrier` waits until everything the broker accepted
    before the call has reached this subscriber, so tests never sleep to "let messages arrive".
    """

    def __init__(self, broker: Mosquitto, *topics: str, qos: int = 1) -> None:
        self.broker = broker
        self.topics = topics or ("#",)
        self.qos = qos
        self.messages: list[aiomqtt.Message] = []
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._changed: asyncio.Event | None = None
        self._barriers = 0
        self._id = f"test-sub-{uuid.uuid4().hex[:8]}"

    async def __aenter__(self) -> Subscriber:
        self._changed = asyncio.Event()
        self._client = aiomqtt.Client(self.broker.host, self.broker.port, identifier=self._id)
        await self._client.__aenter__()
        for topic in (*self.topics, f"test-barrier/{self._id}"):
            await self._client.subscribe(topic, qos=self.qos)
        self._task = asyncio.create_task(self._collect())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await self._task
        if self._client is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await self._client.__aexit__(None, None, None)

    async def _collect(self) -> None:
        assert self._client is not None
        assert self._changed is not None
        async for message in self._client.messages:
            self.messages.append(message)
            self._changed.set()

    def received(self, topic: str) -> list[bytes]:
        """Payloads received on ``topic``, in order."""
        return [bytes(m.payload) for m in self.messages if m.topic.value == topic]

    def topics_seen(self) -> set[str]:
        return {m.topic.value for m in self.messages}

    @property
    def retained(self) -> dict[str, bytes]:
        """Topic -> last payload, without deleted (empty) ones and barrier markers."""
        state: dict[str, bytes] = {}
        for m in self.messages:
            topic = m.topic.value
            if topic.startswith("test-barrier/"):
                continue
            payload = bytes(m.payload)
            if payload:
                state[topic] = payload
            else:
                state.pop(topic, None)
        return state

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until ``predicate()`` holds, re-checking whenever a message arrives."""
        assert self._changed is not None
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    async def barrier(self, timeout: float = 10.0) -> None:
        """Return once every message the broker accepted before this call was received."""
        assert self._client is not None
        self._barriers += 1
        marker = f"test-barrier/{self._id}"
        payload = str(self._barriers).encode()
        await self._client.publish(marker, payload, qos=1)
        await self.wait_for(
            lambda: any(
                m.topic.value == marker and bytes(m.payload) == payload for m in self.messages
            ),
            timeout,
        )
