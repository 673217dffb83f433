"""Many accounts on one host: what the vendor sees and what the daemon costs.

One ``printfleet simulate`` child process (today's code, Formlabs only, ``--speed 1`` and the
wall protocol clock, so its per-IP limit of 100 requests/s counts real seconds) serves
``accounts`` accounts of ``printers_per_account`` printers each; one ``printfleet run`` child
watches all of them (one ``[[source]]`` per account, MQTT off, the shipped log-only
``default.toml`` rule pack, metrics served for ``/readyz``). Measured:

- from the simulator's side (its ``--stats-file``, written on exit): the most requests it
  received in any one second of the whole run, start-up included (``max_per_second``, a
  sliding window), and how many it refused with 429;
- from ``/proc/<daemon pid>`` over :data:`WINDOW_S` once ``/readyz`` said 200 (every source
  polled): CPU % of one core and the highest RSS sampled each second.

``python`` runs the daemon (e.g. an older release's venv interpreter): the config written
then holds only keys that 7be2331 knew (the shared host limit is on by default, 90/s, in
builds that have it, so the config need not name it either way).

Run alone: ``python -m tests.bench.many_accounts [accounts] [printers_per_account]``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from tests.bench.bench_footprint import _get, cpu_seconds, status_mb
from tests.mosquitto import free_port

ROOT = Path(__file__).resolve().parents[2]
WINDOW_S = 60.0
READY_TIMEOUT_S = 300.0
START_TIMEOUT_S = 300.0
_ACCOUNT = re.compile(r"^\s+account\s+(\d+)\s+(\S+)\s+(\S+)$")
_BASE_URL = re.compile(r"^Formlabs\s+base_url\s+(\S+)$")


def _own_env() -> dict[str, str]:
    """The environment for today's code: this worktree's package first on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "daemon"), *filter(None, [env.get("PYTHONPATH")])]
    )
    return env


@contextlib.contextmanager
def _simulator(
    accounts: int, printers: int, stats: Path, log: IO[str]
) -> Iterator[tuple[str, list[tuple[str, str]]]]:
    """The simulator child; yields its base URL and each account's (client_id, secret)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "printfleet",
            "simulate",
            "--vendor",
            "formlabs",
            "--printers",
            str(printers),
            "--accounts",
            str(accounts),
            "--speed",
            "1",
            "--seed",
            "1",
            "--stats-file",
            str(stats),
        ],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        cwd=ROOT,
        env=_own_env(),
    )
    try:
        assert proc.stdout is not None
        base_url = ""
        found: dict[int, tuple[str, str]] = {}
        first: dict[str, str] = {}
        for line in proc.stdout:
            if line.startswith("Ctrl-C"):
                break
            text = line.rstrip()
            if match := _BASE_URL.match(text):
                base_url = match.group(1)
            elif match := _ACCOUNT.match(text):
                found[int(match.group(1))] = (match.group(2), match.group(3))
            elif text.strip().startswith(("client_id ", "client_secret ")):
                key, value = text.split(None, 1)
                first[key] = value.strip()
        else:
            raise RuntimeError(f"the simulator exited early (code {proc.wait()})")
        if not found:  # one account: the lines of the 1-account announcement
            found[1] = (first["client_id"], first["client_secret"])
        yield base_url, [found[i] for i in sorted(found)]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def write_config(
    workdir: Path, base_url: str, credentials: list[tuple[str, str]], port: int, rules_root: Path
) -> Path:
    """A config that 7be2331 accepts as well as today's code: one source per account."""
    secrets = workdir / "secrets"
    secrets.mkdir(mode=0o700)
    (workdir / "state").mkdir()
    sources = []
    for i, (client_id, secret) in enumerate(credentials, start=1):
        path = secrets / f"account-{i}.secret"
        path.write_text(secret + "\n")
        path.chmod(0o600)
        sources.append(
            f'[[source]]\nname = "account-{i}"\nvendor = "formlabs"\n'
            f'client_id = "{client_id}"\nclient_secret_file = "{path}"\nbase_url = "{base_url}"\n'
        )
    text = (
        f'[daemon]\nstate_dir = "{workdir / "state"}"\nlog_level = "warning"\n'
        'log_format = "json"\n\n'
        + "\n".join(sources)
        + f'\n[mqtt]\nenabled = false\n\n[metrics]\nlisten = "127.0.0.1:{port}"\n\n'
        f'[rules]\npacks = ["{rules_root / "default.toml"}"]\n'
    )
    config = workdir / "config.toml"
    config.write_text(text)
    return config


def measure(
    accounts: int,
    printers_per_account: int,
    python: list[str] | None = None,
    rules_root: Path | None = None,
) -> dict[str, float]:
    """Run the simulator and a daemon watching ``accounts`` accounts; return the figures:

    ``max_requests_per_second`` (simulator side, whole run), ``requests_429``,
    ``requests_total``, ``ready_s`` (exec to /readyz 200), ``cpu_percent`` and ``rss_mb``
    (max sampled; MB = 10^6 bytes) and ``hwm_mb`` of the daemon over the window,
    ``window_requests_per_second`` (the daemon's average during the window).
    """
    rules_root = rules_root or ROOT / "rules"
    with tempfile.TemporaryDirectory(prefix="printfleet-accounts-") as tmp:
        workdir = Path(tmp)
        stats_path = workdir / "simulator-stats.json"
        log_path = workdir / "processes.log"
        with (
            log_path.open("w") as log,
            _simulator(accounts, accounts * printers_per_account, stats_path, log) as (
                base_url,
                credentials,
            ),
        ):
            if len(credentials) != accounts:
                raise RuntimeError(f"{len(credentials)} accounts announced, not {accounts}")
            port = free_port()
            config = write_config(workdir, base_url, credentials, port, rules_root)
            daemon_cmd = [*(python or [sys.executable]), "-m", "printfleet", "run"]
            env = _own_env() if python is None else _foreign_env()
            started = time.monotonic()
            daemon = subprocess.Popen(
                [*daemon_cmd, "-c", str(config)],
                stdout=log,
                stderr=log,
                cwd=workdir,
                env=env,
            )
            try:
                figures = _watch(daemon, port, started, log_path)
            finally:
                daemon.terminate()
                try:
                    daemon.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    daemon.kill()
                    daemon.wait()
        stats = json.loads(stats_path.read_text())["formlabs"]
    by_status: dict[str, int] = stats["by_status"]
    figures.update(
        max_requests_per_second=float(stats["max_per_second"]),
        requests_429=float(by_status.get("429", 0)),
        requests_total=float(stats["requests"]),
    )
    return figures


def _foreign_env() -> dict[str, str]:
    """Another build's interpreter: nothing of this worktree on its path."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return env


def _watch(
    daemon: subprocess.Popen[bytes], port: int, started: float, log: Path
) -> dict[str, float]:
    base = f"http://127.0.0.1:{port}"
    while True:
        if daemon.poll() is not None:
            raise RuntimeError(
                f"printfleet run exited ({daemon.returncode}):\n{log.read_text()[-2000:]}"
            )
        status, body = _get(f"{base}/readyz")
        if status == 200:
            break
        if time.monotonic() - started > READY_TIMEOUT_S:
            raise RuntimeError(f"not ready after {READY_TIMEOUT_S:.0f} s: {body.strip()[:300]}")
        time.sleep(0.5)
    ready_s = time.monotonic() - started
    pid = daemon.pid
    before = _requests(_get(f"{base}/metrics")[1])
    cpu0, wall0 = cpu_seconds(pid), time.monotonic()
    rss = 0.0
    while (elapsed := time.monotonic() - wall0) < WINDOW_S:
        rss = max(rss, status_mb(pid, "VmRSS"))
        time.sleep(min(1.0, WINDOW_S - elapsed))
    cpu1, wall1 = cpu_seconds(pid), time.monotonic()
    rss = max(rss, status_mb(pid, "VmRSS"))
    hwm = max(rss, status_mb(pid, "VmHWM"))
    after = _requests(_get(f"{base}/metrics")[1])
    return {
        "ready_s": ready_s,
        "cpu_percent": (cpu1 - cpu0) / (wall1 - wall0) * 100,
        "rss_mb": rss,
        "hwm_mb": hwm,
        "window_requests_per_second": (after - before) / (wall1 - wall0),
    }


def _requests(metrics: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("printfleet_api_requests_total{")
    )


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    result = measure(*(args + [500, 20][len(args) :]))
    print(json.dumps({k: round(v, 2) for k, v in result.items()}, indent=2))
