"""README's way to capture events for `printfleet rules test` works: `mosquitto_sub` on the
event topics of a real broker, fed by printfleet's own MQTT sink, then the dry run."""

from __future__ import annotations

import asyncio
import io
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tests.mosquitto import Mosquitto

from printfleet.cli.rules import rules_test
from printfleet.clock import SystemClock
from printfleet.config import DaemonConfig, MqttConfig, ReceiverConfig, RulesConfig, Settings
from printfleet.core.delivery import Delivery
from printfleet.core.events import ChangeEvent, EventType, Severity, to_cloudevent
from printfleet.core.model import Print, Printer, PrinterStatus, PrintStatus, Vendor
from printfleet.sinks.mqtt.sink import MqttSink

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
WAIT = 15.0
PACK = """
[[rule]]
name = "failed"
on = ["print.failed"]
notify = ["ops-slack"]
title = "{printer.name}: {print.name} failed"

[[rule]]
name = "offline"
on = ["printer.offline"]
for = "10m"
notify = ["ops-slack"]
title = "{printer.name} offline"
"""


def _event(kind: EventType, n: int, time: datetime) -> ChangeEvent:
    printer = Printer(
        serial="Form4-A",
        name="Lab Form 4",
        vendor=Vendor.FORMLABS,
        model="Form 4",
        model_code="FORM-4-0",
        status=PrinterStatus.IDLE,
        status_raw="IDLE",
        online=kind is not EventType.PRINTER_OFFLINE,
    )
    run = Print(id="p1", name="crown-42", status=PrintStatus.FAILED, status_raw="ERROR")
    return ChangeEvent(
        id=f"e{n}",
        type=kind,
        source="lab",
        vendor=Vendor.FORMLABS,
        subject=printer.serial,
        time=time,
        severity=Severity.INFO,
        printer=printer,
        print=run if kind is EventType.PRINT_FAILED else None,
    )


def _mosquitto_sub(broker: Mosquitto, *extra: str) -> list[str]:
    binary = shutil.which("mosquitto_sub")
    if binary is None:
        pytest.skip("mosquitto_sub is not installed (apt-get install mosquitto-clients)")
    host, port = broker.url.removeprefix("mqtt://").rsplit(":", 1)
    # -c -i: a persistent session, so events published between the two calls are queued.
    return [binary, "-h", host, "-p", port, "-c", "-i", "capture", "-q", "1", *extra]


@pytest.mark.parametrize("verbose", [False, True], ids=["payload-only", "with-topic"])
async def test_events_captured_with_mosquitto_sub_run_through_rules_test(
    mosquitto: Mosquitto, tmp_path: Path, verbose: bool
) -> None:
    """`mosquitto_sub -t 'printfleet/events/#' > events.jsonl` (with or without -v) gives a
    file `rules test` reads: the rules fire as they would have live."""
    topics = ["-t", "printfleet/events/#"]
    # Subscribe once and leave (-E: exit when the broker acknowledged the subscription).
    subprocess.run(_mosquitto_sub(mosquitto, *topics, "-E"), check=True, timeout=WAIT)
    sink = MqttSink(
        MqttConfig(url=mosquitto.url), password=None, clock=SystemClock(), client_id="pf-test"
    )
    task = asyncio.create_task(sink.run())
    try:
        async with asyncio.timeout(WAIT):
            await sink.wait_connected()
        for n, (kind, time) in enumerate(
            [(EventType.PRINT_FAILED, T0), (EventType.PRINTER_OFFLINE, T0 + timedelta(minutes=1))]
        ):
            event = _event(kind, n, time)
            await sink.deliver(
                Delivery(
                    id=f"d{n}",
                    sink="mqtt",
                    event_id=event.id,
                    key="lab/Form4-A",
                    created_at=time,
                    payload={
                        "event": to_cloudevent(event),
                        "topic": f"printfleet/events/{kind.topic_suffix}",
                        "qos": 1,
                        "retain": False,
                    },
                )
            )
    finally:
        await sink.aclose()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    command = _mosquitto_sub(mosquitto, *topics, "-C", "2", "-W", str(int(WAIT)))
    if verbose:
        command.append("-v")
    captured = subprocess.run(command, check=True, capture_output=True, text=True, timeout=WAIT)
    events = tmp_path / "events.jsonl"
    events.write_text(captured.stdout)

    (tmp_path / "pack.toml").write_text(PACK)
    settings = Settings(
        daemon=DaemonConfig(state_dir=tmp_path / "state"),
        receiver=(ReceiverConfig(name="ops-slack", kind="slack", url="https://x.invalid"),),
        rules=RulesConfig(packs=(str(tmp_path / "pack.toml"),)),
    )
    out = io.StringIO()
    assert rules_test(settings, events, out) == 0, out.getvalue()
    text = out.getvalue()
    assert "title:    Lab Form 4: crown-42 failed" in text
    assert "[end of events, flushing timers] 2026-11-23T10:11:00Z" in text
    assert "title:    Lab Form 4 offline" in text
    assert "summary: 2 events; 2 deliveries" in text
