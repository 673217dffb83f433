"""One daemon per state directory, checked with real `printfleet run` processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import printfleet

DAEMON_DIR = str(Path(printfleet.__file__).resolve().parent.parent)


def env() -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PRINTFLEET_")}
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [DAEMON_DIR, environ.get("PYTHONPATH")]))
    return environ


class Daemon:
    """A `printfleet run` process whose stdout (JSON log lines) is collected as it comes."""

    def __init__(self, config: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "printfleet", "run", "-c", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env(),
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def wait_for(self, event: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(f'"event": "{event}"' in line for line in self.lines):
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        pytest.fail(f"no {event} from pid {self.process.pid}: {''.join(self.lines[-20:])}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(30)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A config with no sources and no sinks: a daemon that starts in well under a second."""
    path = tmp_path / "config.toml"
    path.write_text(
        f"""
[daemon]
state_dir = "{tmp_path / "state"}"
shutdown_grace = "1s"

[mqtt]
enabled = false

[metrics]
enabled = false

[rules]
packs = []
"""
    )
    return path


@pytest.fixture
def first(config: Path) -> Iterator[Daemon]:
    """A running daemon that holds the state directory."""
    daemon = Daemon(config)
    daemon.wait_for("daemon.ready")
    yield daemon
    daemon.stop(signal.SIGKILL)


def printfleet_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "printfleet", *args],
        capture_output=True,
        text=True,
        env=env(),
        timeout=60,
    )


def test_a_second_daemon_on_the_same_state_dir_exits_1_naming_dir_and_pid(
    config: Path, first: Daemon
) -> None:
    """`printfleet run` on a state directory in use exits 1 with the directory and the pid."""
    second = printfleet_cli("run", "-c", str(config))
    state_dir = config.parent / "state"
    assert second.returncode == 1, second.stderr
    assert (
        f"state directory {state_dir} is in use by another printfleet process "
        f"(pid {first.process.pid})"
    ) in second.stderr
    assert '"event": "daemon.state_dir_locked"' in second.stdout
    assert '"event": "daemon.ready"' not in second.stdout
    assert first.process.poll() is None  # the first one is undisturbed


def test_read_only_commands_work_while_the_daemon_runs(config: Path, first: Daemon) -> None:
    """`check`, `outbox list` and `history export` do not take the lock, so they work next
    to the daemon."""
    check = printfleet_cli("check", "-c", str(config))
    assert check.returncode == 0, check.stderr
    listing = printfleet_cli("outbox", "list", "-c", str(config))
    assert listing.returncode == 0, listing.stderr
    history = printfleet_cli("history", "export", "--csv", "-c", str(config))
    assert history.returncode == 0, history.stderr
    assert history.stdout.startswith("source,serial,printer_name,")
    assert first.process.poll() is None


def test_the_lock_goes_with_the_process_even_after_kill_9(config: Path) -> None:
    """After the holder is killed with SIGKILL a new daemon starts at once (no stale lock)."""
    killed = Daemon(config)
    killed.wait_for("daemon.ready")
    killed.stop(signal.SIGKILL)
    successor = Daemon(config)
    try:
        successor.wait_for("daemon.ready")
    finally:
        assert successor.stop() == 0
