"""The retained mirror's ``state_min_interval``: progress merged per printer, the rest at once."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import aiomqtt
import pytest

from printfleet.config import MqttConfig
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
from printfleet.sinks.mqtt.retained import RetainedMirror, progress_only
from printfleet.sinks.mqtt.topics import state_payload
from printfleet.testing import FakeClock

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
BASE = "printfleet/lab/Form4-A"


class FakeBroker:
    """Stands in for aiomqtt.Client: records what was published, acknowledges at once."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes, int, bool]] = []

    async def publish(
        self, topic: str, payload: bytes, *, qos: int, retain: bool, timeout: float
    ) -> None:
        self.published.append((topic, payload, qos, retain))

    def take(self) -> dict[str, bytes]:
        """Topic -> payload of what was published since the last take."""
        out = {topic: payload for topic, payload, _, _ in self.published}
        self.published.clear()
        return out


def printer(
    progress: float = 0.4,
    *,
    status: PrinterStatus = PrinterStatus.PRINTING,
    job: str = "guid-1",
    remaining_ml: float = 640,
    seen: float = 0,
) -> Printer:
    return Printer(
        serial="Form4-A",
        name="Form4-A",
        vendor=Vendor.FORMLABS,
        model="Form 4",
        model_code="FORM-4-0",
        status=status,
        status_raw=status.value,
        online=True,
        last_seen_at=T0 + timedelta(seconds=seen),
        current_print=Print(
            id=job,
            name=f"{job}.form",
            status=PrintStatus.PRINTING,
            status_raw="PRINTING",
            progress=progress,
            layer=round(progress * 400),
            layers_total=400,
            elapsed_s=progress * 10_000,
            remaining_s=(1 - progress) * 10_000,
        ),
        materials=(Material(slot="main", capacity_ml=1000, remaining_ml=remaining_ml),),
    )


def view(*printers: Printer) -> FleetView:
    snapshot = Snapshot(
        source="lab", vendor=Vendor.FORMLABS, taken_at=T0, printers={p.serial: p for p in printers}
    )
    return FleetView(
        snapshots={"lab": snapshot}, health={"lab": AccountHealth(up=True, last_success_at=T0)}
    )


class Rig:
    def __init__(self, interval: str = "30s") -> None:
        self.clock = FakeClock()
        self.broker = FakeBroker()
        config = MqttConfig(state_min_interval=interval, homeassistant_discovery=False)
        # Heartbeat far away: these tests are about progress, not last_seen.
        self.mirror = RetainedMirror(config, heartbeat=3600, clock=self.clock)

    async def sync(self, *printers: Printer) -> dict[str, bytes]:
        await self.mirror.sync(cast(aiomqtt.Client, self.broker), view(*printers))
        return self.broker.take()

    async def at(self, seconds: float, *printers: Printer) -> dict[str, bytes]:
        await self.clock.run_until(seconds)
        return await self.sync(*printers)


def progress_of(published: dict[str, bytes]) -> Any:
    return json.loads(published[f"{BASE}/state"])["current_print"]["progress"]


async def test_progress_within_the_interval_goes_out_once_then_the_latest_at_its_end() -> None:
    rig = Rig()
    assert f"{BASE}/state" in await rig.at(0, printer(0.40))
    first = await rig.at(100, printer(0.41, seen=100))
    assert progress_of(first) == 0.41  # the first change after a quiet spell: at once
    assert await rig.at(105, printer(0.42, seen=105)) == {}
    assert await rig.at(110, printer(0.43, seen=110)) == {}
    assert rig.mirror.next_due == 130
    assert await rig.at(129.9, printer(0.43, seen=110)) == {}
    due = await rig.at(130, printer(0.43, seen=110))
    assert due[f"{BASE}/state"] == state_payload(printer(0.43, seen=110))
    assert set(due) == {
        f"{BASE}/state",
        f"{BASE}/progress",
        f"{BASE}/layer",
        f"{BASE}/remaining_s",
        f"{BASE}/last_seen",
    }
    assert rig.mirror.next_due is None


async def test_the_latest_progress_is_due_even_when_no_new_view_comes() -> None:
    """What the sink's timer does: sync the same view again at ``next_due``."""
    rig = Rig()
    await rig.at(0, printer(0.40))
    assert await rig.at(1, printer(0.45, seen=1)) == {}
    due = rig.mirror.next_due
    assert due == 30
    assert progress_of(await rig.at(due, printer(0.45, seen=1))) == 0.45


@pytest.mark.parametrize(
    "change",
    [
        {"status": PrinterStatus.PAUSED},
        {"job": "guid-2"},  # another print started
        {"remaining_ml": 500},  # materials
    ],
    ids=["status", "new-print", "material"],
)
async def test_any_other_change_goes_out_at_once_with_the_latest_progress(
    change: dict[str, Any],
) -> None:
    rig = Rig()
    await rig.at(0, printer(0.40))
    assert await rig.at(5, printer(0.42, seen=5)) == {}
    now = await rig.at(10, printer(0.43, seen=10, **change))
    assert progress_of(now) == 0.43
    assert now[f"{BASE}/state"] == state_payload(printer(0.43, seen=10, **change))
    assert rig.mirror.next_due is None


async def test_zero_interval_publishes_every_progress_change() -> None:
    rig = Rig("0s")
    await rig.at(0, printer(0.40))
    for second, progress in ((1, 0.41), (2, 0.42), (3, 0.43)):
        assert progress_of(await rig.at(second, printer(progress, seen=second))) == progress
    assert rig.mirror.next_due is None


async def test_one_printers_interval_does_not_hold_back_another() -> None:
    rig = Rig()
    other = dataclasses.replace(printer(0.1), serial="Form4-B", name="Form4-B")
    await rig.at(0, printer(0.40))
    await rig.at(20, printer(0.40), other)
    moved_b = dataclasses.replace(printer(0.2, seen=25), serial="Form4-B", name="Form4-B")
    published = await rig.at(25, printer(0.41, seen=25), moved_b)
    assert "printfleet/lab/Form4-B/state" not in published  # B was published 5 s ago
    assert f"{BASE}/state" not in published  # A 25 s ago
    assert rig.mirror.next_due == 30  # A is due first, B at 50


async def test_the_same_printer_object_is_skipped_without_rendering(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rig = Rig()
    same = printer(0.40)
    await rig.at(0, same)

    def fail(*_: object, **__: object) -> None:
        raise AssertionError("an unchanged printer was rendered again")

    monkeypatch.setattr(rig.mirror, "_printer_messages", fail)
    assert await rig.at(100, same) == {}


async def test_a_coalesced_publish_is_retained_at_qos_1_like_any_other() -> None:
    rig = Rig()
    await rig.at(0, printer(0.40))
    await rig.at(1, printer(0.45, seen=1))
    await rig.clock.run_until(30)
    await rig.mirror.sync(cast(aiomqtt.Client, rig.broker), view(printer(0.45, seen=1)))
    assert rig.broker.published
    assert {(qos, retain) for _, _, qos, retain in rig.broker.published} == {(1, True)}


def test_progress_only_is_about_the_same_print_moving_on() -> None:
    base = printer(0.40)
    assert progress_only(base, printer(0.45, seen=15))
    assert not progress_only(base, printer(0.40, seen=15))  # heartbeat only: not progress
    assert not progress_only(base, printer(0.45, status=PrinterStatus.PAUSED))
    assert not progress_only(base, printer(0.45, job="guid-2"))
    assert not progress_only(base, printer(0.45, remaining_ml=600))
    assert not progress_only(base, dataclasses.replace(base, current_print=None))
