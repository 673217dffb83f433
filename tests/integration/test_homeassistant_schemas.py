"""Every Home Assistant discovery config the demo fleet produces passes Home Assistant's own
MQTT discovery schemas (vendored in tests/vendor/homeassistant_mqtt), with nothing dropped."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from tests.vendor import homeassistant_mqtt as ha

from printfleet.core.model import Material, Printer, PrinterStatus, Snapshot, Vendor
from printfleet.simulator import Simulator, SimulatorConfig
from printfleet.sinks import homeassistant
from printfleet.sinks.mqtt.topics import field_values, printer_topic
from printfleet.sources.carbon import CarbonSource
from printfleet.sources.factory import load_carbon_secrets
from printfleet.sources.formlabs import FormlabsSource
from printfleet.testing import FakeClock

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


@pytest.fixture
def clock_start() -> datetime:
    return T0


@pytest.fixture
def demo_sim(clock: FakeClock) -> Iterator[Simulator]:
    """The simulator with the demo's fleet: 16 Formlabs and 8 Carbon printers, seed 7."""
    config = SimulatorConfig(formlabs_printers=16, carbon_printers=8, seed=7)
    with Simulator(config, now=clock.now) as running:
        yield running


async def demo_snapshots(sim: Simulator, clock: FakeClock, tmp_path: Path) -> list[Snapshot]:
    async with httpx.AsyncClient() as client:
        lab = FormlabsSource(
            name="lab",
            client_id=sim.formlabs_client_id,
            client_secret=SecretStr(sim.formlabs_client_secret),
            client=client,
            clock=clock,
            offline_after=timedelta(minutes=5),
            base_url=sim.formlabs_url,
            rng=random.Random(1),
            timeout=5.0,
        )
        client_id, key = load_carbon_secrets(sim.write_carbon_secrets(tmp_path / "secrets.json"))
        factory = CarbonSource(
            name="factory",
            client_id=client_id,
            private_key=key,
            client=client,
            clock=clock,
            base_url=sim.carbon_url,
            rng=random.Random(1),
            timeout=5.0,
        )
        return [await lab.fetch_printers(), await factory.fetch_printers()]


def configs_of(source: str, printer: Printer) -> dict[str, dict[str, object]]:
    """What the MQTT sink publishes for one printer: ``<component>/<key>`` -> config."""
    base = printer_topic("printfleet", source, printer.serial)
    bodies = homeassistant.discovery_configs(
        source=source,
        printer=printer,
        field_topics={name: f"{base}/{name}" for name in field_values(printer)},
        availability_topic="printfleet/status",
        sw_version="0.1.0",
    )
    return {entity: json.loads(body) for entity, body in bodies.items()}


def odd_printer(serial: str) -> Printer:
    return Printer(
        serial=serial,
        name=serial,
        vendor=Vendor.FORMLABS,
        model="Form 4",
        model_code="FORM-4-0",
        status=PrinterStatus.IDLE,
        status_raw="IDLE",
        online=True,
        materials=(Material(slot="a/b"), Material(slot="A B")),
    )


async def test_every_demo_discovery_payload_passes_home_assistants_schemas(
    demo_sim: Simulator, clock: FakeClock, tmp_path: Path
) -> None:
    """HA schemas N/N: every config validates, nothing is dropped, entity ids are valid."""
    results: dict[str, list[str]] = {}
    printers = 0
    for snapshot in await demo_snapshots(demo_sim, clock, tmp_path):
        for printer in snapshot.printers.values():
            printers += 1
            for entity, config in configs_of(snapshot.source, printer).items():
                component = entity.partition("/")[0]
                results[f"{snapshot.source}/{printer.serial}/{entity}"] = ha.validate(
                    component, config
                )
    failed = {name: problems for name, problems in results.items() if problems}
    print(f"HA schemas {len(results) - len(failed)}/{len(results)} ({printers} printers)")
    assert printers == 24
    assert not failed, failed


@pytest.mark.parametrize("serial", ["a/b", "+", "\x01x", "S" * 70_000, "\ud800X", "Ünïcode 3D"])
def test_odd_serials_still_give_valid_discovery_payloads(serial: str) -> None:
    """Serials with `/ + #`, control characters or 70,000 characters give valid configs."""
    for entity, config in configs_of("lab", odd_printer(serial)).items():
        assert ha.validate(entity.partition("/")[0], config) == [], entity


def test_the_removed_object_id_would_be_dropped() -> None:
    """The vendored schema is strict enough to notice what older printfleet sent."""
    config = next(iter(configs_of("lab", odd_printer("X")).values()))
    assert ha.validate("sensor", {**config, "object_id": "x"}) == [
        "key 'object_id' is dropped by Home Assistant"
    ]
