"""Footprint: RSS and CPU of an idling ``printfleet run`` with 100 and with 10,000 printers.

Each size gets its own processes: the simulator (``python -m printfleet simulate``, real vendor
rate limits, ``--speed 1`` so the fleet moves at real pace), a mosquitto broker (MQTT with Home
Assistant discovery on, as a typical install has it), and the daemon under test (``python -m
printfleet run -c <temp config>``: one Formlabs and one Carbon account, half the printers each,
the shipped log-only rule packs, metrics served, no webhook receivers). Only the daemon's own
process is measured, from ``/proc/<pid>``:

- warm-up: until ``/readyz`` answers 200 (both accounts polled) plus a settle time (10 s; 30 s
  at 10,000 printers, where the first full MQTT publish of ~130k retained state and discovery
  messages is still under way then, so its tail falls into the window);
- then for :data:`WINDOW_S` of wall time: CPU % = (utime + stime) delta / wall, RSS = the highest
  ``VmRSS`` sampled each second, peak = ``VmHWM`` at the end (the high-water mark since start,
  warm-up included).

Targets: <= 80 MB RSS and <= 1 % CPU at 100 printers; <= 300 MB at 10,000 (MB = 10^6 bytes,
stricter than MiB). The baseline column is the target itself (ratio = target / value, > 1x
means within target). About three minutes in all.

Run alone with ``python -m tests.bench.bench_footprint``; ``make bench`` collects :func:`run`.
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
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tests.mosquitto import Mosquitto, free_port, mosquitto_binary

ROOT = Path(__file__).resolve().parents[2]
#: printers, settle seconds after ready, RSS target MB, CPU target % (None: no target)
SIZES = ((100, 10.0, 80.0, 1.0), (10_000, 30.0, 300.0, None))
WINDOW_S = 60.0
READY_TIMEOUT_S = 120.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_ANNOUNCE = re.compile(r"^(Formlabs|Carbon|)\s+(\w+)\s+(\S.*)$")


@dataclass(frozen=True)
class Footprint:
    printers: int
    cpu_percent: float
    rss_mb: float  # highest VmRSS sampled during the window
    hwm_mb: float  # VmHWM at the end of the window
    ready_s: float  # from exec to /readyz 200
    window_s: float
    requests: str  # API requests the daemon made during the window, by source
    warnings: str  # warning/error log events of the whole run, by name


# -- /proc ------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all threads) in seconds."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # fields 14 and 15 of stat(5)


def status_mb(pid: int, key: str) -> float:
    """A ``kB`` line of ``/proc/<pid>/status`` (VmRSS, VmHWM) in MB (10^6 bytes)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024 / 1e6
    raise KeyError(key)


# -- processes --------------------------------------------------------------------------------


def _python() -> list[str]:
    return [sys.executable, "-m", "printfleet"]


@contextlib.contextmanager
def simulator(printers_per_vendor: int, log: IO[str]) -> Iterator[dict[str, dict[str, str]]]:
    """``printfleet simulate`` in a child process; yields its announced URLs and credentials."""
    proc = subprocess.Popen(
        [
            *_python(),
            "simulate",
            "--printers",
            str(printers_per_vendor),
            "--speed",
            "1",
            "--seed",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        info: dict[str, dict[str, str]] = {}
        vendor = ""
        for line in proc.stdout:
            if line.startswith("Ctrl-C"):
                break
            match = _ANNOUNCE.match(line.rstrip())
            if match:
                vendor = match.group(1).lower() or vendor
                info.setdefault(vendor, {})[match.group(2)] = match.group(3).strip()
        else:
            raise RuntimeError(f"the simulator exited early (code {proc.wait()})")
        yield info
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def write_config(
    workdir: Path, sim: dict[str, dict[str, str]], mqtt_url: str | None, port: int
) -> Path:
    secret = workdir / "formlabs.secret"
    secret.write_text(sim["formlabs"]["client_secret"] + "\n")
    secret.chmod(0o600)
    (workdir / "state").mkdir()
    rules = [str(ROOT / "rules" / "default.toml"), str(ROOT / "rules" / "home-assistant.toml")]
    text = f"""
[daemon]
state_dir = "{workdir / "state"}"
log_level = "warning"
log_format = "json"

[[source]]
name = "lab"
vendor = "formlabs"
client_id = "{sim["formlabs"]["client_id"]}"
client_secret_file = "{secret}"
base_url = "{sim["formlabs"]["base_url"]}"

[[source]]
name = "factory"
vendor = "carbon"
secrets_file = "{sim["carbon"]["secrets_file"]}"
base_url = "{sim["carbon"]["base_url"]}"

[mqtt]
enabled = {"true" if mqtt_url else "false"}
url = "{mqtt_url or "mqtt://127.0.0.1:1883"}"
homeassistant_discovery = true

[metrics]
listen = "127.0.0.1:{port}"

[rules]
packs = {rules!r}
"""
    path = workdir / "config.toml"
    path.write_text(text.replace("'", '"'))
    return path


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - local URL
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except OSError as err:
        return 0, str(err)


def _requests_by_source(metrics: str) -> dict[str, float]:
    counts: dict[str, float] = {}
    for line in metrics.splitlines():
        if line.startswith("printfleet_api_requests_total{"):
            source = re.search(r'source="([^"]*)"', line)
            name = source.group(1) if source else "?"
            counts[name] = counts.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


def measure(printers: int, workdir: Path, settle_s: float = 10.0) -> Footprint:
    """Start simulator, broker and daemon for ``printers``; measure the idling daemon."""
    log_path = workdir / "processes.log"
    with (
        log_path.open("w") as log,
        simulator(printers // 2, log) as sim,
        _broker(workdir / "mosquitto") as mqtt_url,
    ):
        port = free_port()
        config = write_config(workdir, sim, mqtt_url, port)
        started = time.monotonic()
        daemon = subprocess.Popen(
            [*_python(), "run", "-c", str(config)],
            stdout=log,
            stderr=log,
            cwd=ROOT,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            while True:
                if daemon.poll() is not None:
                    tail = log_path.read_text()[-2000:]
                    raise RuntimeError(f"printfleet run exited ({daemon.returncode}):\n{tail}")
                status, body = _get(f"{base}/readyz")
                if status == 200:
                    break
                if time.monotonic() - started > READY_TIMEOUT_S:
                    raise RuntimeError(f"not ready after {READY_TIMEOUT_S:.0f} s: {body.strip()}")
                time.sleep(0.5)
            ready_s = time.monotonic() - started
            time.sleep(settle_s)
            pid = daemon.pid
            before = _requests_by_source(_get(f"{base}/metrics")[1])
            cpu0, wall0 = cpu_seconds(pid), time.monotonic()
            rss = 0.0
            while (elapsed := time.monotonic() - wall0) < WINDOW_S:
                rss = max(rss, status_mb(pid, "VmRSS"))
                time.sleep(min(1.0, WINDOW_S - elapsed))
            cpu1, wall1 = cpu_seconds(pid), time.monotonic()
            rss = max(rss, status_mb(pid, "VmRSS"))
            hwm = max(rss, status_mb(pid, "VmHWM"))  # the kernel updates VmHWM lazily
            after = _requests_by_source(_get(f"{base}/metrics")[1])
        finally:
            daemon.terminate()
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
    requests = ", ".join(f"{s} {after[s] - before.get(s, 0):.0f}" for s in sorted(after))
    warnings = _warnings(log_path.read_text())
    return Footprint(
        printers=printers,
        cpu_percent=(cpu1 - cpu0) / (wall1 - wall0) * 100,
        rss_mb=rss,
        hwm_mb=hwm,
        ready_s=ready_s,
        window_s=wall1 - wall0,
        requests=requests or "none",
        warnings=", ".join(f"{n}x {e}" for e, n in warnings.most_common()) or "none",
    )


def _warnings(log: str) -> Counter[str]:
    """Warning and error events in the daemon's JSON log lines, by event name."""
    found: Counter[str] = Counter()
    for line in log.splitlines():
        if not line.startswith("{"):
            continue
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and record.get("level") in ("warning", "error"):
                found[str(record.get("event"))] += 1
    return found


@contextlib.contextmanager
def _broker(workdir: Path) -> Iterator[str | None]:
    """A local mosquitto; ``None`` (MQTT off) when it is not installed."""
    if mosquitto_binary() is None:
        yield None
        return
    broker = Mosquitto(workdir)
    broker.start()
    try:
        yield broker.url
    finally:
        broker.stop()


def run() -> list[dict[str, Any]]:
    """Rows for ``make bench``: idle RSS, peak RSS and CPU of the daemon per fleet size."""
    rows: list[dict[str, Any]] = []
    mqtt = (
        "MQTT with HA discovery to a local mosquitto"
        if mosquitto_binary()
        else "MQTT off (mosquitto not installed)"
    )
    for printers, settle_s, rss_target, cpu_target in SIZES:
        with tempfile.TemporaryDirectory(prefix="printfleet-footprint-") as tmp:
            fp = measure(printers, Path(tmp), settle_s)
        label = f"{printers:,} printers"
        note = (
            f"{printers // 2:,} Formlabs + {printers // 2:,} Carbon at simulator speed 1, {mqtt}, "
            f"shipped log-only rule packs; ready {fp.ready_s:.1f} s after exec, measured "
            f"{fp.window_s:.0f} s from {settle_s:.0f} s later; API requests in the window: "
            f"{fp.requests}; daemon warnings (whole run): {fp.warnings}"
        )
        target = f"<= {rss_target:.0f} MB"
        rows += [
            {
                "name": f"daemon idle RSS, {label}",
                "value": fp.rss_mb,
                "unit": "MB",
                "baseline": "target",
                "baseline_value": rss_target,
                "ratio": rss_target / fp.rss_mb,
                "target": target,
                "note": note,
            },
            {
                "name": f"daemon peak RSS (VmHWM), {label}",
                "value": fp.hwm_mb,
                "unit": "MB",
                "baseline": "target",
                "baseline_value": rss_target,
                "ratio": rss_target / fp.hwm_mb,
                "target": target,
            },
            {
                "name": f"daemon idle CPU, {label}",
                "value": fp.cpu_percent,
                "unit": "% of a core",
                "baseline": "target" if cpu_target is not None else None,
                "baseline_value": cpu_target,
                "ratio": (
                    cpu_target / fp.cpu_percent
                    if cpu_target is not None and fp.cpu_percent > 0
                    else None
                ),
                "target": f"<= {cpu_target:g} %" if cpu_target is not None else "",
            },
        ]
    return rows


if __name__ == "__main__":
    for row in run():
        print(f"{row['name']}: {row['value']:.2f} {row['unit']} (target {row['target'] or '-'})")
        if row.get("note"):
            print(f"  note: {row['note']}")
