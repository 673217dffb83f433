"""The MQTT sink against a real mosquitto: retained state, Last Will, QoS 1 events, reconnect."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import random
import re
import signal
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
from pydantic import SecretStr
from structlog.testing import capture_logs
from tests.mosquitto import Mosquitto, Subscriber, free_port

from printfleet.clock import SystemClock
from printfleet.config import MqttConfig
from printfleet.core.delivery import Delivery
from printfleet.core.events import ChangeEvent, EventType, Severity, encode_event, to_cloudevent
from printfleet.core.fleet import AccountHealth, FleetView
from printfleet.core.model import (
    Material,
    Print,
    Printer,
    PrinterStatus,
    PrintStatus,
    Snapshot,
    Vendor,
)
from printfleet.errors import ConfigError, DeliveryFailed
from printfleet.sinks.homeassistant import entity_key, node_id
from printfleet.sinks.mqtt.sink import MqttSink, default_client_id, parse_broker_url
from printfleet.sinks.mqtt.topics import field_values
from printfleet.testing import FakeClock

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
BASE = "printfleet/lab/Form4-CapableBeaver"
WAIT = 15.0  # generous bound for any single condition; tests finish far sooner


# -- builders ----------------------------------------------------------------------------


def make_printer(
    serial: str = "Form4-CapableBeaver",
    *,
    progress: float | None = 0.425,
    status: PrinterStatus = PrinterStatus.PRINTING,
    materials: tuple[Material, ...] = (
        Material(slot="FRONT", capacity_ml=1000, remaining_ml=640),
        Material(slot="BACK", capacity_ml=1000, remaining_ml=120),
    ),
    last_seen: datetime = T0,
) -> Printer:
    job = (
        Print(
            id="guid-1",
            name="dental-arch.form",
            status=PrintStatus.PRINTING,
            status_raw="PRINTING",
            progress=progress,
            layer=170,
            layers_total=400,
            remaining_s=1834.4,
        )
        if progress is not None
        else None
    )
    return Printer(
        serial=serial,
        name=f"{serial} name",
        vendor=Vendor.FORMLABS,
        model="Form 4",
        model_code="FORM-4-0",
        status=status,
        status_raw=status.value,
        online=True,
        last_seen_at=last_seen,
        group="Dental",
        firmware="1.9.2",
        current_print=job,
        materials=materials,
    )


def make_view(*printers: Printer, source: str = "lab") -> FleetView:
    snapshot = Snapshot(
        source=source,
        vendor=Vendor.FORMLABS,
        taken_at=T0,
        printers={p.serial: p for p in printers},
    )
    return FleetView(
        snapshots={source: snapshot},
        health={source: AccountHealth(up=True, last_success_at=T0)},
    )


def make_event(kind: EventType = EventType.PRINT_FINISHED, n: int = 0) -> ChangeEvent:
    printer = make_printer()
    return ChangeEvent(
        id=f"event-{kind.value}-{n}",
        type=kind,
        source="lab",
        vendor=Vendor.FORMLABS,
        subject=printer.serial,
        time=T0,
        severity=Severity.INFO,
        printer=printer,
        print=printer.current_print,
        details={"note": "Grüße ✓"},  # non-ASCII must survive byte-exact
    )


def make_delivery(event: ChangeEvent, **payload: Any) -> Delivery:
    body: dict[str, Any] = {"event": to_cloudevent(event), **payload}
    body.setdefault("topic", f"printfleet/events/{event.type.topic_suffix}")
    return Delivery(
        id=f"d-{event.id}",
        sink="mqtt",
        event_id=event.id,
        key=f"lab/{event.subject}",
        created_at=T0,
        payload=body,
    )


def config_for(broker: Mosquitto, **overrides: Any) -> MqttConfig:
    return MqttConfig(url=broker.url, **overrides)


@pytest.fixture
async def sinks() -> AsyncIterator[list[tuple[MqttSink, asyncio.Task[None]]]]:
    """Every sink started by a test; closed (announcing offline) afterwards."""
    started: list[tuple[MqttSink, asyncio.Task[None]]] = []
    yield started
    for sink, task in started:
        await sink.aclose()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def run_sink(
    sinks: list[tuple[MqttSink, asyncio.Task[None]]],
    broker: Mosquitto | str,
    *,
    connect: bool = True,
    publish_timeout: float = 10.0,
    backoff: Callable[[int], float] = lambda attempt: 0.05,
    **config: Any,
) -> MqttSink:
    password = config.pop("password", None)
    url = broker if isinstance(broker, str) else broker.url
    sink = MqttSink(
        MqttConfig(url=url, **config),
        password=password,
        clock=SystemClock(),
        client_id=f"printfleet-test-{len(sinks)}",
        backoff=backoff,
        publish_timeout=publish_timeout,
    )
    task = asyncio.create_task(sink.run())
    sinks.append((sink, task))
    if connect:
        async with asyncio.timeout(WAIT):
            await sink.wait_connected()
    return sink


async def publish_and_sync(sink: MqttSink, view: FleetView) -> None:
    sink.publish_state(view)
    async with asyncio.timeout(WAIT):
        await sink.wait_state_synced()


# -- pure helpers --------------------------------------------------------------------------


def test_field_values_use_percent_with_one_decimal_and_null_for_unknown() -> None:
    """Per-field payloads are percent with one decimal, whole seconds, and `null` when unknown."""
    assert field_values(make_printer())["progress"] == "42.5"
    assert field_values(make_printer())["remaining_s"] == "1834"
    assert field_values(make_printer())["material_remaining/BACK"] == "12.0"
    idle = field_values(make_printer(progress=None, status=PrinterStatus.IDLE))
    assert idle["progress"] == "null"
    assert idle["print_name"] == "null"


def test_single_material_uses_the_plain_field_topic() -> None:
    """A printer with one material slot publishes `material_remaining` without a slot level."""
    values = field_values(
        make_printer(materials=(Material(slot="main", remaining_ml=1, capacity_ml=4),))
    )
    assert values["material_remaining"] == "25.0"
    assert not any(k.startswith("material_remaining/") for k in values)


def test_broker_url_rejects_other_schemes() -> None:
    """An http:// broker URL is a config error naming the key and the fix."""
    with pytest.raises(ConfigError, match=r"mqtt\.url"):
        parse_broker_url("http://broker:1883")
    assert parse_broker_url("mqtts://broker").port == 8883


async def test_delivery_fails_fast_when_not_connected(mosquitto: Mosquitto) -> None:
    """A delivery while no connection is up raises a retryable DeliveryFailed at once."""
    sink = MqttSink(config_for(mosquitto), password=None, clock=SystemClock())
    async with asyncio.timeout(1):
        with pytest.raises(DeliveryFailed) as failed:
            await sink.deliver(make_delivery(make_event()))
    assert failed.value.retryable


# -- retained state ------------------------------------------------------------------------


async def test_late_subscriber_sees_retained_availability_state_and_fields(
    mosquitto: Mosquitto, sinks: list[tuple[MqttSink, asyncio.Task[None]]]
) -> None:
    """A subscriber arriving after the sync gets `online`, the state JSON and every field."""
    sink = await run_sink(sinks, mosquitto, homeassistant_discovery=False)
    printer = make_printer()
    await publish_and_sync(sink, make_view(printer))

    base = "printfleet/lab/Form4-CapableBeaver"
    async with Subscriber(mosquitto, "printfleet/#") as sub:
        await sub.barrier()
        retained = sub.retained
    assert retained["printfleet/status"] == b"online"
    state = json.loads(retained[f"{base}/state"])
    assert printer.current_print is not None
    assert state == {**printer.as_dict(), "current_print": printer.current_print.as_dict()}
    assert retained[f"{base}/status"] == b"PRINTING"
    assert retained[f"{base}/online"] == b"true"
    assert retained[f"{base}/progress"] == b"42.5"
    assert retained[f"{base}/print_name"] == b"dental-arch.form"
    assert retained[f"{base}/print_status"] == b"PRINTING"
    assert retained[f"{base}/remaining_s"] == b"1834"
    assert retained[f"{base}/layer"] == b"170"
    assert retained[f"{base}/material_remaining/FRONT"] == b"64.0"
    assert retained[f"{base}/last_seen"] == b"2026-11-23T10:00:00Z"
    assert all(m.retain for m in sub.messages if m.topic.value.startswith("printfleet/"))


async def test_only_changed_payloads_are_republished(
    mosquitto: Mosquitto, sinks: list[tuple[MqttSink, asyncio.Task[None]]]
) -> None:
    """After a progress change, only the topics whose payload changed are published again."""
    sink = await run_sink(sinks, mosquitto, homeassistant_discovery=False, state_min_interval="0s")
    await publish_and_sync(sink, make_view(make_printer(progress=0.425)))
    async with Subscriber(mosquitto, "printfleet/lab/#") as sub:
        await sub.barrier()
        before = len(sub.messages)
        await publish_and_sync(sink, make_view(make_printer(progress=0.5)))
        await sub.barrier()
        changed = {m.topic.value for m in sub.messages[before:]} - {
            m.topic.value for m in sub.messages if m.topic.value.startswith("test-barrier/")
        }
    base = "printfleet/lab/Form4-CapableBeaver"
    assert changed == {f"{base}/state", f"{base}/progress"}


async def test_heartbeat_only_changes_are_held_back(
    mosquitto: Mosquitto, sinks: list[tuple[MqttSink, asyncio.Task[None]]]
) -> None:
    """A newer last_seen alone does not republish the printer before the heartbeat interval."""
    sink = await run_sink(sinks, mosquitto, homeassistant_discovery=False)
    await publish_and_sync(sink, make_view(make_printer(last_seen=T0)))
    async with Subscriber(mosquitto, "printfleet/lab/#") as sub:
        await sub.barrier()
        before = len(sub.messages)
        await publish_and_sync(sink, make_view(make_printer(last_seen=T0 + timedelta(seconds=15))))
        await sub.barrier()
        quiet = [m for m in sub.messages[before:] if m.topic.value.startswith("printfleet/")]
        await publish_and_sync(sink, make_view(make_printer(last_seen=T0 + timedelta(seconds=61))))
        await sub.barrier()
        late = {
            m.topic.value for m in sub.messages[before:] if m.topic.value.startswith("printfleet/")
        }
    assert quiet == []
    assert late == {
        "printfleet/lab/Form4-CapableBeaver/state",
        "printfleet/lab/Form4-CapableBeaver/last_seen",
    }


async def test_progress_is_merged_for_state_min_interval_and_the_latest_published_after_it(
    mosquitto: Mosquitto, sinks: list[tuple[MqttSink, asyncio.Task[None]]]
) -> None:
    """Progress held back by state_min_interval reaches a subscriber when the interval ends,
    with no new poll; a status change and an event in between go out at once."""
    clock = FakeClock()
    sink = MqttSink(
        MqttConfig(url=mosquitto.url, homeassistant_discovery=False, state_min_interval="30s"),
        password=None,
        clock=clock,
        client_id="printfleet-test-coalesce",
    )
    sinks.append((sink, asyncio.create_task(sink.run())))
    async with asyncio.timeout(WAIT):
        await sink.wait_connected()
    await publish_and_sync(sink, make_view(make_printer(progress=0.425)))

    def progress(sub: Subscriber) -> list[bytes]:
        return [m.payload for m in sub.messages if m.topic.value == f"{BASE}/progress"]

    async with Subscriber(mosquitto, "printfleet/#") as sub:
        await sub.barrier()
        assert progress(sub) == [b"42.5"]  # the retained one
        await clock.advance(10)
        await publish_and_sync(sink, make_view(make_printer(progress=0.45)))
        await clock.advance(10)
        await publish_and_sync(sink, make_view(make_printer(progress=0.5)))
        await sink.deliver(make_delivery(make_event()))
        await sub.barrier()
        assert progress(sub) == [b"42.5"]  # held back...
        assert [m for m in sub.messages if m.topic.value.startswith("printfleet/events/")]
        await clock.advance(10)  # ...until 30 s after the last publish, with no new view
        await sub.wait_for(lambda: progress(sub)[1:] == [b"50.0"], timeout=WAIT)
        await clock.advance(5)
        await publish_and_sync(sink, make_view(make_printer(progress=0.55)))
        await clock.advance(1)
        paused = make_printer(progress=0.6, status=PrinterStatus.PAUSED)
        await publish_and_sync(sink, make_view(paused))
        await sub.barrier()
    assert progress(sub) == [b"42.5", b"50.0", b"60.0"]
    state = [m.payload for m in sub.messages if m.topic.value == f"{BASE}/state"]
    assert json.loads(state[-1])["status"] == "PAUSED"


async def test_removed_printer_topics_are_cleared(
    mosquitto: Mosquitto, sinks: list[tuple[MqttSink, asyncio.Task[None]]]
) -> None:
    """When a printer leaves the fleet its retained topics are deleted (empty retained payload)."""
    sink = await run_sink(sinks, mosquitto, homeassistant_discovery=False)
    keep, gone = make_printer("Form4-Keep"), make_printer("Form4-Gone")
    await publish_and_sync(sink, make_view(keep, gone))
    await publish_and_sync(sink, make_view(keep))
    async with Subscriber(mosquitto, "printfleet/#") as sub:
        await sub.barrier()
        topics = set(sub.retained)
    assert "printfleet/lab/Form4-Keep/state" in topics
    assert not [t for t in topics if "Form4-Gone" in t]


# -- events --------------------------------------------------------------------------------


async def test_events_arrive_at_qos1_with_the_exact_cloudevent_bytes(
    mosquitto: Mosquitto, sinks: list[tuple[MqttSink, asyncio.Task[None]]]
) -> None:
    """An event is published on its events topic, QoS 1, not retained, byte-identical."""
    sink = await run_sink(sinks, mosquitto)
    event = make_event(EventType.PRINT_FINISHED)
    async with Subscriber(mosquitto, "printfleet/events/#", qos=1) as sub:
        await sink.deliver(make_delivery(event))
        await sub.wait_for(lambda: bool(sub.received("printfleet/events/print/finished")))
        message = next(
            m for m in sub.messages if m.topic.value == "printfleet/events/print/finished"
        )
    assert bytes(message.payload) == encode_event(event)
    assert message.qos == 1
    assert not message.retain


async def test_a_rule_body_goes_to_its_own_topic_retained(
    mosquitto: Mosquitto, sinks: list[tuple[MqttSink, asyncio.Task[None]]]
) -> None:
    """A delivery with its own topic, body and retain flag is published exactly so."""
    sink = await run_sink(sinks, mosquitto)
    delivery = make_delivery(make_event(), topic="shop/alarm", body="Form4 failed", retain=True)
    await sink.deliver(delivery)
    async with Subscriber(mosquitto, "shop/#") as late:
        await late.barrier()
        assert late.retained == {"shop/alarm": b"Form4 failed"}


async def test_wildcard_topic_is_not_retryable(
    mosquitto: Mosquitto, sinks: list[tuple[MqttSink, asyncio.Task[None]]]
) -> None:
    """A delivery to a topic with a wildcard can never succeed, so it is not retryable."""
    sink = await run_sink(sinks, mosquitto)
    with pytest.raises(DeliveryFailed) as failed:
        await sink.deliver(make_delivery(make_event(), topic="printfleet/events/#"))
    assert not failed.value.retryable


# -- availability --------------------------------------------------------------------------


async def test_clean_close_announces_offline_retained(
    mosquitto: Mosquitto, sinks: list[tuple[MqttSink, asyncio.Task[None]]]
) -> None:
    """aclose() leaves `offline` retained on the status topic before disconnecting."""
    sink = await run_sink(sinks, mosquitto)
    await sink.aclose()
    assert not sink.connected
    async with Subscriber(mosquitto, "printfleet/status") as late:
        await late.barrier()
        assert late.retained == {"printfleet/status": b"offline"}


async def test_cancelling_run_still_announces_offline(
    mosquitto: Mosquitto, sinks: list[tuple[MqttSink, asyncio.Task[None]]]
) -> None:
    """Cancelling the run() task (a TaskGroup shutting down) leaves `offline` retained."""
    sink = await run_sink(sinks, mosquitto)
    _, task = sinks[-1]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not sink.connected
    async with Subscriber(mosquitto, "printfleet/status") as late:
        await late.barrier()
        assert late.retained == {"printfleet/status": b"offline"}


SINK_PROCESS = textwrap.dedent(
    """
    import asyncio, sys
    from printfleet.clock import SystemClock
    from printfleet.config import MqttConfig
    from printfleet.sinks.mqtt.sink import MqttSink

    async def main():
        sink = MqttSink(MqttConfig(url=sys.argv[1]), password=None, clock=SystemClock(),
                        client_id="printfleet-doomed")
        task = asyncio.create_task(sink.run())
        await sink.wait_connected()
        print("connected", flush=True)
        await task

    asyncio.run(main())
    """
)


async def test_broker_publishes_the_last_will_when_the_process_is_killed(
    mosquitto: Mosquitto,
) -> None:
    """SIGKILLing the daemon makes the broker publish the retained Last Will `offline`."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SINK_PROCESS,
        mosquitto.url,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(WAIT):
            while (line := await proc.stdout.readline()) and line.strip() != b"connected":
                pass  # skip the sink's own log lines
        assert line.strip() == b"connected"
        async with Subscriber(mosquitto, "printfleet/status") as sub:
            await sub.wait_for(lambda: sub.received("printfleet/status") == [b"online"])
            proc.send_signal(signal.SIGKILL)
            await sub.wait_for(lambda: sub.received("printfleet/status")[-1:] == [b"offline"])
        async with Subscriber(mosquitto, "printfleet/status") as late:
            await late.barrier()
            assert late.retained == {"printfleet/status": b"offline"}
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


# -- reconnect -----------------------------------------------------------------------------


async def test_reconnect_after_broker_restart_republishes_retained_state(
    mosquitto: Mosquitto, sinks: list[tuple[MqttSink, asyncio.Task[None]]]
) -> None:
    """During an outage deliveries fail retryably; after the restart retained state is back."""
    sink = await run_sink(sinks, mosquitto)
    await publish_and_sync(sink, make_view(make_printer()))

    mosquitto.stop()
    async with asyncio.timeout(WAIT):
        await sink.wait_disconnected()
    async with asyncio.timeout(1):
        with pytest.raises(DeliveryFailed) as failed:
            await sink.deliver(make_delivery(make_event()))
    assert failed.value.retryable

    mosquitto.start()  # same port, no persistence: the broker forgot every retained message
    async with asyncio.timeout(WAIT):
        await sink.wait_connected()
        await sink.wait_state_synced()
    async with Subscriber(mosquitto, "printfleet/#") as late:
        await late.barrier()
        retained = late.retained
    assert retained["printfleet/status"] == b"online"
    assert retained["printfleet/lab/Form4-CapableBeaver/progress"] == b"42.5"
    await sink.deliver(make_delivery(make_event()))  # and events flow again


async def test_a_delivery_waiting_for_its_puback_fails_when_the_connection_drops(
    mosquitto: Mosquitto, sinks: list[tuple[MqttSink, asyncio.Task[None]]]
) -> None:
    """A publish in flight when the broker dies ends in a retryable DeliveryFailed at once."""
    sink = await run_sink(sinks, mosquitto, publish_timeout=60)
    mosquitto.pause()  # the PUBACK will never come
    delivery = asyncio.create_task(sink.deliver(make_delivery(make_event())))
    await asyncio.sleep(0)  # let the task send its PUBLISH and start waiting (no time passes)
    mosquitto.kill()
    async with asyncio.timeout(5):
        with pytest.raises(DeliveryFailed) as failed:
            await delivery
    assert failed.value.retryable
    assert "connection lost" in failed.value.message


async def test_printer_removed_during_outage_is_cleared_after_reconnect(
    persistent_mosquitto: Mosquitto, sinks: list[tuple[MqttSink, asyncio.Task[None]]]
) -> None:
    """A printer that vanished while the broker was down is cleared from its retained store."""
    broker = persistent_mosquitto
    sink = await run_sink(sinks, broker, homeassistant_discovery=False)
    await publish_and_sync(sink, make_view(make_printer("Form4-Keep"), make_printer("Form4-Gone")))
    broker.stop()
    async with asyncio.timeout(WAIT):
        await sink.wait_disconnected()
    sink.publish_state(make_view(make_printer("Form4-Keep")))
    broker.start()
    async with asyncio.timeout(WAIT):
        await sink.wait_connected()
        await sink.wait_state_synced()
    async with Subscriber(broker, "printfleet/#") as late:
        await late.barrier()
        topics = set(late.retained)
    assert "printfleet/lab/Form4-Keep/state" in topics
    assert not [t for t in topics if "Form4-Gone" in t]


# -- Home Assistant discovery --------------------------------------------------------------


async def test_discovery_configs_appear_and_are_removed_with_the_printer(
    mosquitto: Mosquitto, sinks: list[tuple[MqttSink, asyncio.Task[None]]]
) -> None:
    """Each printer's discovery configs are retained, and cleared when the printer goes away."""
    sink = await run_sink(sinks, mosquitto)
    await publish_and_sync(sink, make_view(make_printer("Form4-A"), make_printer("Form4-B")))
    async with Subscriber(mosquitto, "homeassistant/#") as sub:
        await sub.barrier()
        configs = sub.retained
    node = node_id("lab", "Form4-B")
    status = json.loads(configs[f"homeassistant/sensor/{node}/status/config"])
    assert status["state_topic"] == "printfleet/lab/Form4-B/status"
    assert status["availability_topic"] == "printfleet/status"
    assert status["device"]["identifiers"] == [node]
    online = json.loads(configs[f"homeassistant/binary_sensor/{node}/online/config"])
    assert online["device_class"] == "connectivity"
    assert f"homeassistant/sensor/{node}/{entity_key('material_remaining/FRONT')}/config" in configs

    await publish_and_sync(sink, make_view(make_printer("Form4-A")))
    async with Subscriber(mosquitto, "homeassistant/#") as late:
        await late.barrier()
        remaining = set(late.retained)
    assert not [t for t in remaining if node in t]
    assert [t for t in remaining if node_id("lab", "Form4-A") in t]


async def test_discovery_is_not_republished_for_a_progress_change(
    mosquitto: Mosquitto, sinks: list[tuple[MqttSink, asyncio.Task[None]]]
) -> None:
    """With discovery on, a print moving on republishes its values, never the configs."""
    sink = await run_sink(sinks, mosquitto, state_min_interval="0s")
    await publish_and_sync(sink, make_view(make_printer(progress=0.425)))
    async with Subscriber(mosquitto, "#") as sub:
        await sub.barrier()
        before = len(sub.messages)
        await publish_and_sync(sink, make_view(make_printer(progress=0.5)))
        await sub.barrier()
        changed = {
            m.topic.value
            for m in sub.messages[before:]
            if not m.topic.value.startswith("test-barrier/")
        }
    base = "printfleet/lab/Form4-CapableBeaver"
    assert changed == {f"{base}/state", f"{base}/progress"}


async def test_discovery_follows_a_renamed_printer_and_a_removed_material_slot(
    mosquitto: Mosquitto, sinks: list[tuple[MqttSink, asyncio.Task[None]]]
) -> None:
    """A new name reaches every entity's device; a slot that went away loses its entity."""
    sink = await run_sink(sinks, mosquitto)
    printer = make_printer()
    await publish_and_sync(sink, make_view(printer))
    renamed = dataclasses.replace(
        printer,
        name="Front desk",
        materials=(Material(slot="FRONT", capacity_ml=1000, remaining_ml=640),),
    )
    await publish_and_sync(sink, make_view(renamed))
    async with Subscriber(mosquitto, "#") as sub:
        await sub.barrier()
        retained = sub.retained
    node = node_id("lab", "Form4-CapableBeaver")
    configs = {t: json.loads(p) for t, p in retained.items() if t.startswith("homeassistant/")}
    assert configs
    assert {c["device"]["name"] for c in configs.values()} == {"Front desk"}
    assert f"homeassistant/sensor/{node}/material_remaining/config" in configs
    assert not [t for t in retained if "material_remaining_front" in t or "BACK" in t]
    assert retained["printfleet/lab/Form4-CapableBeaver/material_remaining"] == b"64.0"
    assert set(retained) == {*sink.retained_topics(), "printfleet/status"}


# -- protocol and secrets ------------------------------------------------------------------


async def _read_packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    first = (await reader.readexactly(1))[0]
    length, shift = 0, 0
    while True:
        byte = (await reader.readexactly(1))[0]
        length += (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return first, await reader.readexactly(length)


async def test_falls_back_to_mqtt_311_when_the_broker_refuses_v5(
    sinks: list[tuple[MqttSink, asyncio.Task[None]]],
) -> None:
    """A broker answering a v5 CONNECT with 'unsupported protocol' gets a 3.1.1 CONNECT next."""
    levels: list[int] = []

    async def old_broker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Speaks just enough MQTT 3.1.1: CONNACK, PUBACK, PINGRESP; refuses v5."""
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            _, connect = await _read_packet(reader)
            levels.append(connect[6])  # protocol level follows the 2-byte length and "MQTT"
            if connect[6] != 4:
                writer.write(bytes([0x20, 0x02, 0x00, 0x01]))  # "unacceptable protocol version"
                await writer.drain()
                return
            writer.write(bytes([0x20, 0x02, 0x00, 0x00]))
            while True:
                first, body = await _read_packet(reader)
                kind, qos = first >> 4, (first >> 1) & 0x03
                if kind == 3 and qos == 1:
                    topic_len = int.from_bytes(body[:2], "big")
                    writer.write(bytes([0x40, 0x02]) + body[2 + topic_len : 4 + topic_len])
                elif kind == 12:
                    writer.write(bytes([0xD0, 0x00]))
                elif kind == 14:
                    return
                await writer.drain()
        writer.close()

    port = free_port()
    server = await asyncio.start_server(old_broker, "127.0.0.1", port)
    async with server:
        sink = await run_sink(sinks, f"mqtt://127.0.0.1:{port}")
        assert levels == [5, 4]
        await sink.aclose()


async def test_mqtts_connects_with_the_configured_ca(
    tls_mosquitto: Mosquitto, sinks: list[tuple[MqttSink, asyncio.Task[None]]]
) -> None:
    """An mqtts:// URL with ca_file connects over TLS and publishes like plain MQTT."""
    assert tls_mosquitto.tls is not None
    sink = await run_sink(sinks, tls_mosquitto.tls_url, ca_file=tls_mosquitto.tls.ca)
    await sink.deliver(make_delivery(make_event()))
    async with Subscriber(tls_mosquitto, "printfleet/status") as late:  # plain listener
        await late.barrier()
        assert late.retained == {"printfleet/status": b"online"}


async def test_mqtts_refuses_an_unknown_ca(
    tls_mosquitto: Mosquitto, sinks: list[tuple[MqttSink, asyncio.Task[None]]], tmp_path: Any
) -> None:
    """Against a certificate the configured CA did not sign, the sink never connects."""
    from tests.mosquitto import make_tls_files

    other = make_tls_files(tmp_path / "other-ca")
    attempt_failed = asyncio.Event()

    def backoff(attempt: int) -> float:
        attempt_failed.set()  # the run loop asks for a delay after each failed attempt
        return 0.05

    with structlog.testing.capture_logs() as logs:
        sink = await run_sink(
            sinks, tls_mosquitto.tls_url, connect=False, backoff=backoff, ca_file=other.ca
        )
        async with asyncio.timeout(WAIT):
            await attempt_failed.wait()
    assert not sink.connected
    [failure] = [e for e in logs if e["event"] == "mqtt.disconnected"]
    assert "CERTIFICATE_VERIFY_FAILED" in failure["error"]


async def test_password_never_appears_in_logs(
    mosquitto: Mosquitto, sinks: list[tuple[MqttSink, asyncio.Task[None]]]
) -> None:
    """Connecting, losing and regaining the broker never logs the password."""
    secret = "hunter2-very-secret"
    with structlog.testing.capture_logs() as logs:
        sink = await run_sink(sinks, mosquitto, username="printfleet", password=SecretStr(secret))
        mosquitto.stop()
        async with asyncio.timeout(WAIT):
            await sink.wait_disconnected()
        mosquitto.start()
        async with asyncio.timeout(WAIT):
            await sink.wait_connected()
        await sink.aclose()
    assert {e["event"] for e in logs} >= {"mqtt.connected", "mqtt.disconnected"}
    assert secret not in repr(logs)
    assert secret not in repr(sink)


# -- session safety and odd names -----------------------------------------------------------


async def test_two_sinks_sharing_a_client_id_back_off_and_say_why(
    mosquitto: Mosquitto, sinks: list[tuple[MqttSink, asyncio.Task[None]]]
) -> None:
    """Two daemons with one client id reconnect a few times a minute, not ~190 times a
    second, and each takeover is logged as mqtt.session_taken_over naming the client id."""
    clock = FakeClock(T0)
    pair = [
        MqttSink(
            config_for(mosquitto),
            password=None,
            clock=clock,
            client_id="printfleet-shared",
            rng=random.Random(n),
        )
        for n in range(2)
    ]
    window = 60.0  # simulated seconds, driven by the fake clock (no real waiting)
    with capture_logs() as logs:
        for sink in pair:
            task = asyncio.create_task(sink.run())
            sinks.append((sink, task))
            async with asyncio.timeout(WAIT):
                await sink.wait_connected()

        async def settled() -> None:
            # One holds the session, the other waits out its backoff on the fake clock.
            while not (clock.next_deadline is not None and pair[0].connected != pair[1].connected):
                await asyncio.sleep(0.005)

        while clock.monotonic() < window:
            async with asyncio.timeout(WAIT):
                await settled()
            await clock.advance(0.25)
    connects = [e for e in logs if e["event"] == "mqtt.connected"]
    takeovers = [e for e in logs if e["event"] == "mqtt.session_taken_over"]
    # Backoff 1, 2, 4, 8, 16, 32 s (half jitter) per sink: at most ~7 connects each in 60 s;
    # the old reset-on-connect loop made ~100 in the same window.
    assert 2 < len(connects) <= 16, len(connects)
    assert takeovers, "the takeover was not logged"
    assert takeovers[0]["client_id"] == "printfleet-shared"
    assert "after connecting" in takeovers[0]["cause"] or "142" in takeovers[0]["cause"]
    assert "client_id" in takeovers[0]["hint"]


def test_default_client_ids_differ_per_state_directory(tmp_path: Path) -> None:
    """Two state directories on one host give two client ids; one directory always the same."""
    first = default_client_id(tmp_path / "a", host="box")
    assert first == default_client_id(tmp_path / "a", host="box")
    assert first != default_client_id(tmp_path / "b", host="box")
    assert re.fullmatch(r"printfleet-box-[0-9a-f]{8}", first)


ODD_SERIALS = ["a/b", "a_b", "+", "#", "ctl\x01", "\ud800X", "S" * 70_000, "x\ufffe"]


async def test_odd_serials_get_topics_of_their_own_and_keep_the_connection(
    mosquitto: Mosquitto, sinks: list[tuple[MqttSink, asyncio.Task[None]]]
) -> None:
    """Printers with `/ + #`, control characters, a lone surrogate or a 70,000-character
    serial each get their own retained state (real serial in the payload), and the broker
    never drops the connection."""
    printers = [make_printer(serial) for serial in ODD_SERIALS]
    with capture_logs() as logs:
        sink = await run_sink(sinks, mosquitto)
        await publish_and_sync(sink, make_view(*printers))
    assert sink.connected
    assert not [e for e in logs if e["event"] == "mqtt.disconnected"]
    async with Subscriber(mosquitto, "printfleet/lab/+/state") as sub:
        await sub.barrier()
        states = {t: json.loads(p) for t, p in sub.retained.items() if p}
    assert len(states) == len(ODD_SERIALS)
    assert sorted(s["serial"] for s in states.values()) == sorted(ODD_SERIALS)
    assert all(len(t.encode()) < 200 for t in states)
