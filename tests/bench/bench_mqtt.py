"""Benchmark: events/s through ``MqttSink.deliver`` vs raw aiomqtt, QoS 1, one local mosquitto.

Both sides publish the same CloudEvent payloads one at a time, each awaited until its PUBACK
(that is what the outbox does), to the same broker, in interleaved rounds; ``value`` and
``baseline_value`` are median rates, ``ratio`` the median of the per-round ratios.
Target: the sink reaches at least 80% of raw aiomqtt. A second row times the first
retained-state sync of a fleet (state + fields + Home Assistant discovery for every printer).

Run: ``python -m tests.bench.bench_mqtt`` (needs mosquitto).
"""

from __future__ import annotations

import asyncio
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt

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
from printfleet.sinks.mqtt.sink import MqttSink
from tests.mosquitto import Mosquitto

EVENTS = 1500
ROUNDS = 15
FLEET = 1000
TARGET_RATIO = 0.8
T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def _printer(i: int) -> Printer:
    serial = f"Form4-{i:05d}"
    return Printer(
        serial=serial,
        name=f"Printer {i}",
        vendor=Vendor.FORMLABS,
        model="Form 4",
        model_code="FORM-4-0",
        status=PrinterStatus.PRINTING,
        status_raw="PRINTING",
        online=True,
        last_seen_at=T0,
        group="Dental",
        firmware="1.9.2",
        current_print=Print(
            id=f"guid-{i}",
            name=f"job-{i}.form",
            status=PrintStatus.PRINTING,
            status_raw="PRINTING",
            progress=(i % 100) / 100,
            layer=i % 400,
            layers_total=400,
            remaining_s=float(i),
        ),
        materials=(
            Material(slot="FRONT", capacity_ml=1000, remaining_ml=500),
            Material(slot="BACK", capacity_ml=1000, remaining_ml=800),
        ),
    )


def _workload(n: int) -> tuple[list[Delivery], list[bytes]]:
    """``n`` deliveries and the exact bytes each one publishes (for the raw client)."""
    printer = _printer(1)
    deliveries, payloads = [], []
    for i in range(n):
        event = ChangeEvent(
            id=f"bench-{i}",
            type=EventType.PRINT_PROGRESS,
            source="lab",
            vendor=Vendor.FORMLABS,
            subject=printer.serial,
            time=T0,
            severity=Severity.INFO,
            printer=printer,
            print=printer.current_print,
            details={"milestone": 0.5},
        )
        payloads.append(encode_event(event))
        deliveries.append(
            Delivery(
                id=f"d-{i}",
                sink="mqtt",
                event_id=event.id,
                key=f"lab/{printer.serial}",
                created_at=T0,
                payload={
                    "event": to_cloudevent(event),
                    "topic": "printfleet/events/print/progress",
                },
            )
        )
    return deliveries, payloads


async def _raw_rate(broker: Mosquitto, payloads: list[bytes], *, nodelay: bool) -> float:
    """Raw aiomqtt with the sink's protocol (MQTT 5), default options or TCP_NODELAY too."""
    options = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),) if nodelay else ()
    async with aiomqtt.Client(
        broker.host,
        broker.port,
        identifier="bench-raw",
        protocol=aiomqtt.ProtocolVersion.V5,
        socket_options=options,
    ) as client:
        start = time.perf_counter()
        for payload in payloads:
            await client.publish("printfleet/events/print/progress", payload, qos=1)
        return len(payloads) / (time.perf_counter() - start)


async def _sink_rate(sink: MqttSink, deliveries: list[Delivery]) -> float:
    start = time.perf_counter()
    for delivery in deliveries:
        await sink.deliver(delivery)
    return len(deliveries) / (time.perf_counter() - start)


async def _bench(broker: Mosquitto) -> list[dict[str, Any]]:
    deliveries, payloads = _workload(EVENTS)
    sink = MqttSink(
        MqttConfig(url=broker.url), password=None, clock=SystemClock(), client_id="bench-sink"
    )
    task = asyncio.create_task(sink.run())
    try:
        async with asyncio.timeout(10):
            await sink.wait_connected()
        raw_rates: list[float] = []
        nodelay_rates: list[float] = []
        sink_rates: list[float] = []
        contenders: list[tuple[list[float], Callable[[], Awaitable[float]]]] = [
            (raw_rates, lambda: _raw_rate(broker, payloads, nodelay=False)),
            (nodelay_rates, lambda: _raw_rate(broker, payloads, nodelay=True)),
            (sink_rates, lambda: _sink_rate(sink, deliveries)),
        ]
        for round_ in range(ROUNDS):
            # Interleaved and rotated, so a busy machine's drift hits every contender alike.
            for i in range(len(contenders)):
                rates, measure = contenders[(round_ + i) % len(contenders)]
                rates.append(await measure())
        raw, mine = statistics.median(raw_rates), statistics.median(sink_rates)
        nodelay = statistics.median(nodelay_rates)
        # Ratios per round, then the median: robust against a busy machine's drift.
        vs_raw = statistics.median(m / r for m, r in zip(sink_rates, raw_rates, strict=True))
        vs_nodelay = statistics.median(
            m / r for m, r in zip(sink_rates, nodelay_rates, strict=True)
        )

        view = FleetView(
            snapshots={
                "lab": Snapshot(
                    source="lab",
                    vendor=Vendor.FORMLABS,
                    taken_at=T0,
                    printers={p.serial: p for p in map(_printer, range(FLEET))},
                )
            },
            health={"lab": AccountHealth(up=True, last_success_at=T0)},
        )
        start = time.perf_counter()
        sink.publish_state(view)
        async with asyncio.timeout(300):
            await sink.wait_state_synced()
        sync_s = time.perf_counter() - start
        messages = sum(1 for _ in sink.retained_topics())
    finally:
        await sink.aclose()
        await task
    return [
        {
            "name": "mqtt deliver, QoS 1 awaited",
            "value": round(mine),
            "unit": "events/s",
            "baseline": "raw aiomqtt QoS 1 awaited (MQTT 5)",
            "baseline_value": round(raw),
            "ratio": round(vs_raw, 3),
            "target": f">= {TARGET_RATIO:g}x of raw",
        },
        {
            "name": "mqtt deliver, QoS 1 awaited",
            "value": round(mine),
            "unit": "events/s",
            "baseline": "raw aiomqtt + TCP_NODELAY (as the sink)",
            "baseline_value": round(nodelay),
            "ratio": round(vs_nodelay, 3),
        },
        {
            "name": f"retained sync, {FLEET} printers, {messages} msgs in {sync_s:.2f} s",
            "value": round(messages / sync_s),
            "unit": "messages/s",
            "baseline": "sink deliver rate (sequential)",
            "baseline_value": round(mine),
            "ratio": round(messages / sync_s / mine, 3),
        },
    ]


def run() -> list[dict[str, Any]]:
    """Start a private mosquitto, run both measurements, return the result rows."""
    with tempfile.TemporaryDirectory() as tmp, Mosquitto(Path(tmp)) as broker:
        return asyncio.run(_bench(broker))


def _print_table(rows: list[dict[str, Any]]) -> None:
    columns = ("name", "value", "unit", "baseline", "baseline_value", "ratio")
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in rows:
        print("  ".join(str(row[c]).ljust(w) for c, w in zip(columns, widths, strict=True)))


if __name__ == "__main__":
    results = run()
    _print_table(results)
    ok = results[0]["ratio"] >= TARGET_RATIO
    print(f"target: >= {TARGET_RATIO:.0%} of raw aiomqtt: {'met' if ok else 'MISSED'}")
    sys.exit(0 if ok else 1)
