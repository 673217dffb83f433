"""`printfleet demo`: the simulator and the daemon wired together, events printed live.

Zero config and zero credentials: the simulator generates its own credentials, the daemon
gets a temporary state directory, metrics are served, and events go to MQTT when a broker
answers at ``--mqtt URL``, else ``$PRINTFLEET_MQTT__URL``, else mqtt://127.0.0.1:1883.
Time runs ``speed`` times faster for both the simulated fleet and
the daemon (one shared clock), so a newcomer sees prints start, progress, finish and fail
within the first minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from printfleet.app import Daemon, DaemonHooks
from printfleet.cli import broker_address
from printfleet.cli.check import safe_url
from printfleet.clock import ScaledClock
from printfleet.config import Settings
from printfleet.core.durations import format_duration
from printfleet.core.events import ChangeEvent, EventType, Severity
from printfleet.logs import configure_logging
from printfleet.simulator import Simulator, SimulatorConfig

_COLORS = {Severity.INFO: "\033[36m", Severity.WARNING: "\033[33m", Severity.CRITICAL: "\033[31m"}
_GOOD = {EventType.PRINT_FINISHED, EventType.PRINTER_ONLINE, EventType.SOURCE_RECOVERED}
_RESET = "\033[0m"
_DIM = "\033[2m"
DEFAULT_MQTT_URL = "mqtt://127.0.0.1:1883"
#: The environment override `printfleet run` honours too (DESIGN §3).
MQTT_URL_ENV = "PRINTFLEET_MQTT__URL"


def demo_mqtt_url(option: str | None, environ: Mapping[str, str]) -> str:
    """The broker the demo tries: ``--mqtt``, else ``$PRINTFLEET_MQTT__URL``, else localhost."""
    return option or environ.get(MQTT_URL_ENV) or DEFAULT_MQTT_URL


def _port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.3):
        return True
    return False


def _free_port(preferred: int) -> int:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
        except OSError:
            sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EventTable:
    """Prints one aligned, colored line per event (plain text when not a terminal)."""

    def __init__(self, out: TextIO, *, color: bool) -> None:
        self._out = out
        self._color = color
        self.count = 0

    def header(self) -> None:
        line = f"{'time (sim)':<10} {'source':<8} {'printer':<16} {'event':<24} details"
        self._write(line, _DIM)
        self._write("-" * 96, _DIM)

    def __call__(self, event: ChangeEvent) -> None:
        self.count += 1
        printer = event.printer.name if event.printer else event.subject
        detail = _describe(event)
        line = (
            f"{event.time.strftime('%H:%M:%S'):<10} {event.source:<8} {printer[:16]:<16} "
            f"{event.type.value:<24} {detail}"
        )
        color = "\033[32m" if event.type in _GOOD else _COLORS.get(event.severity, "")
        self._write(line, color)

    def _write(self, line: str, color: str) -> None:
        if self._color and color:
            line = f"{color}{line}{_RESET}"
        print(line, file=self._out, flush=True)


def _describe(event: ChangeEvent) -> str:
    run = event.print
    details = event.details
    if event.type == EventType.PRINT_PROGRESS and run is not None:
        eta = f", {format_duration(run.remaining_s)} left" if run.remaining_s else ""
        return f"{run.name} {100 * (run.progress or 0):.0f}%{eta}"
    if event.type.value.startswith("print.") and run is not None:
        text = run.name
        if run.message and event.type in (EventType.PRINT_FAILED, EventType.PRINT_ABORTED):
            text += f" — {run.message}"
        if event.type == EventType.PRINT_RATED:
            text += f" {details.get('verdict')} (printer: {details.get('machine_outcome')})"
            if details.get("note"):
                text += f" — {details['note']}"
        return text
    if "alert" in details:
        return f"{details.get('state', '')}: {details['alert']}"
    if event.type == EventType.MATERIAL_LOW:
        ratio = details.get("ratio")
        pct = f" {100 * ratio:.0f}% left" if isinstance(ratio, int | float) else ""
        return f"slot {details.get('slot', '?')}{pct}"
    if "status" in event.changes:
        change = event.changes["status"]
        return f"{change.before} → {change.after}"
    if "error" in details:
        return str(details["error"])
    return ""


def _mqtt_line(*, mqtt: bool, broker: bool, url: str, host: str, port: int) -> str:
    if not mqtt:
        return "off (--no-mqtt)"
    shown = safe_url(url)  # never a password from the URL's user info
    if broker:
        return (
            f"publishing to {shown} (try: mosquitto_sub -h {host} -p {port} -v -t 'printfleet/#')"
        )
    return f"no broker answers at {shown}, MQTT off (start one, or pass --mqtt URL)"


def shipped_rules_dir() -> Path:
    """Shipped rule packs: the checkout's rules/, else <prefix>/share/printfleet/rules."""
    checkout = Path(__file__).resolve().parents[3] / "rules"
    if checkout.is_dir():
        return checkout
    return Path(sys.prefix) / "share" / "printfleet" / "rules"


def build_settings(
    sim: Any,
    workdir: Path,
    *,
    vendor: str,
    mqtt: bool,
    metrics_port: int,
    mqtt_url: str = DEFAULT_MQTT_URL,
) -> Settings:
    """The demo's configuration: the simulator's accounts, a temp state dir, shipped rules."""
    sources: list[dict[str, Any]] = []
    if vendor in ("formlabs", "both"):
        secret = workdir / "formlabs.secret"
        secret.write_text(sim.formlabs_client_secret)
        sources.append(
            {
                "name": "lab",
                "vendor": "formlabs",
                "base_url": sim.formlabs_url,
                "client_id": sim.formlabs_client_id,
                "client_secret_file": str(secret),
            }
        )
    if vendor in ("carbon", "both"):
        secrets = workdir / "carbon-secrets.json"
        sim.write_carbon_secrets(secrets)
        sources.append(
            {
                "name": "factory",
                "vendor": "carbon",
                "base_url": sim.carbon_url,
                "secrets_file": str(secrets),
            }
        )
    default_pack = shipped_rules_dir() / "default.toml"
    packs = [str(default_pack)] if default_pack.exists() else []
    return Settings.model_validate(
        {
            "daemon": {"state_dir": str(workdir / "state"), "log_level": "warning"},
            "source": sources,
            # Its own client id: never takes the session of a service running on this host.
            "mqtt": {
                "enabled": mqtt,
                "url": mqtt_url,
                "client_id": f"printfleet-demo-{os.getpid()}",
            },
            "metrics": {"listen": f"127.0.0.1:{metrics_port}"},
            "rules": {"packs": packs},
        }
    )


def run_demo(
    printers: int = 24,
    speed: float = 60.0,
    duration: float | None = None,
    vendor: str = "both",
    mqtt: bool = True,
    out: TextIO | None = None,
    *,
    mqtt_url: str | None = None,
    seed: int = 7,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Run the demo until Ctrl-C (or ``duration`` real seconds); return the exit code.

    ``printers`` may be 0: the simulated accounts exist and answer, with no printers in them.
    ``mqtt_url`` (else ``$PRINTFLEET_MQTT__URL`` in ``environ``) names the broker; a URL that
    is not an MQTT URL is exit code 2.
    """
    out = out or sys.stdout
    url = demo_mqtt_url(mqtt_url, os.environ if environ is None else environ)
    try:
        host, port = broker_address(url)
    except ValueError as err:
        print(f"printfleet demo: {err}", file=sys.stderr)
        return 2
    color = out.isatty() and not os.environ.get("NO_COLOR")
    configure_logging("warning", "console" if color else "json", stream=sys.stderr)
    clock = ScaledClock(speed)
    formlabs = printers if vendor == "formlabs" else 0 if vendor == "carbon" else printers * 2 // 3
    carbon = printers - formlabs if vendor == "both" else printers if vendor == "carbon" else 0
    config = SimulatorConfig(
        formlabs_printers=formlabs, carbon_printers=carbon, speed=speed, seed=seed
    )
    broker = mqtt and _port_open(host, port)
    table = EventTable(out, color=color)
    with (
        tempfile.TemporaryDirectory(prefix="printfleet-demo-") as tmp,
        Simulator(config, now=clock.now) as sim,
    ):
        workdir = Path(tmp)
        metrics_port = _free_port(9877)
        settings = build_settings(
            sim, workdir, vendor=vendor, mqtt=broker, metrics_port=metrics_port, mqtt_url=url
        )
        print(
            f"printfleet demo: {formlabs} Formlabs + {carbon} Carbon simulated printers, "
            f"time x{speed:g}, seed {seed}",
            file=out,
        )
        print(f"  metrics  http://127.0.0.1:{metrics_port}/metrics", file=out)
        print(
            f"  mqtt     {_mqtt_line(mqtt=mqtt, broker=broker, url=url, host=host, port=port)}",
            file=out,
        )
        print("  Ctrl-C to stop\n", file=out)
        table.header()
        daemon = Daemon(settings, clock=clock, hooks=DaemonHooks(on_event=table))

        async def main() -> int:
            if duration is not None:
                asyncio.get_running_loop().call_later(duration, daemon.stop)
            return await daemon.run()

        try:
            code = asyncio.run(main())
        except KeyboardInterrupt:
            code = 0
    print(f"\n{table.count} events.", file=out)
    return code
