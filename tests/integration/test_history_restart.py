"""The real daemon continues prints_total and resin_used_ml_total from the stored history."""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

from printfleet.app import Daemon, DaemonHooks
from printfleet.config import Settings
from printfleet.core.history import PrintRecord
from printfleet.core.model import Printer, PrinterStatus, Snapshot, Vendor
from printfleet.store import FILENAME, Store

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def printer(serial: str) -> Printer:
    return Printer(
        serial=serial,
        name=serial,
        vendor=Vendor.FORMLABS,
        model="Form 4",
        model_code="FORM-4-0",
        status=PrinterStatus.IDLE,
        status_raw="IDLE",
        online=True,
    )


def done(print_id: str, serial: str, outcome: str, volume: float | None) -> PrintRecord:
    return PrintRecord(
        source="lab",
        serial=serial,
        printer_name=serial,
        group=None,
        print_id=print_id,
        name=print_id,
        outcome=outcome,
        finished_at=T0 - timedelta(days=1),
        duration_s=3600.0,
        material="Grey V5",
        volume_ml=volume,
    )


def closed_port() -> int:
    """A local port nobody listens on: the source's polls fail, so nothing changes the counts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_restarted_daemon_starts_its_counters_from_the_history(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with Store.open(state / FILENAME) as store:
        store.commit(
            snapshot=Snapshot(
                source="lab",
                vendor=Vendor.FORMLABS,
                taken_at=T0,
                printers={s: printer(s) for s in ("F1", "F2")},
            ),
            history=[
                done("a", "F1", "finished", 30.0),
                done("b", "F1", "finished", 12.5),
                done("c", "F1", "failed", 99.0),
                done("d", "F2", "aborted", None),
                done("e", "OLD", "finished", 5.0),  # a printer no longer in the account
            ],
        )
    secret = tmp_path / "formlabs.secret"
    secret.write_text("not-used")
    settings = Settings.model_validate(
        {
            "daemon": {"state_dir": str(state)},
            "source": [
                {
                    "name": "lab",
                    "vendor": "formlabs",
                    "base_url": f"http://127.0.0.1:{closed_port()}",
                    "client_id": "id",
                    "client_secret_file": str(secret),
                }
            ],
            "mqtt": {"enabled": False},
            "metrics": {"listen": "127.0.0.1:0"},
            "rules": {"packs": []},
        }
    )
    seen: dict[str, float | None] = {}

    def ready(daemon: Daemon) -> None:
        get = daemon.registry.get_sample_value
        seen["resin F1"] = get(
            "printfleet_resin_used_ml_total",
            {"source": "lab", "serial": "F1", "material": "Grey V5"},
        )
        for serial, result in (("F1", "finished"), ("F1", "failed"), ("F2", "aborted")):
            seen[f"{serial} {result}"] = get(
                "printfleet_prints_total", {"source": "lab", "serial": serial, "result": result}
            )
        seen["OLD"] = get(
            "printfleet_prints_total", {"source": "lab", "serial": "OLD", "result": "finished"}
        )
        seen["durations"] = get(
            "printfleet_print_duration_seconds_count", {"source": "lab", "outcome": "finished"}
        )
        daemon.stop()

    daemon = Daemon(
        settings, config_file=tmp_path / "config.toml", hooks=DaemonHooks(on_ready=ready)
    )
    assert await asyncio.wait_for(daemon.run(), 60) == 0
    assert seen == {
        "resin F1": 42.5,  # finished prints only
        "F1 finished": 2,
        "F1 failed": 1,
        "F2 aborted": 1,
        "OLD": None,
        "durations": 0,  # the histogram starts empty, at 0
    }
