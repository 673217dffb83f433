"""Resin used and print durations: counted on outcome events, continued across restarts."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from printfleet.core.delivery import Delivery
from printfleet.core.events import ChangeEvent, EventType, Severity
from printfleet.core.fleet import AccountHealth
from printfleet.core.model import Print, Printer, PrinterStatus, PrintStatus, Snapshot, Vendor
from printfleet.core.rules.engine import Decision
from printfleet.metrics.exposition import exposition
from printfleet.metrics.history import MATERIAL_OTHER, MATERIAL_SERIES
from printfleet.metrics.observer import Metrics
from printfleet.pipeline import Pipeline
from printfleet.poller import Cycle
from printfleet.store import FILENAME, Store
from printfleet.testing import FakeClock

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
RESIN = "printfleet_resin_used_ml_total"
DURATION = "printfleet_print_duration_seconds"


def a_print(pid: str, *, status: PrintStatus = PrintStatus.FINISHED, **kw: Any) -> Print:
    fields: dict[str, Any] = {
        "id": pid,
        "name": f"job {pid}",
        "status": status,
        "status_raw": status.value,
        "started_at": T0,
        "finished_at": T0 + timedelta(hours=5),
        "material": "Grey V5",
        "volume_ml": 40.0,
    }
    fields.update(kw)
    return Print(**fields)


def printer(serial: str = "F1") -> Printer:
    return Printer(
        serial=serial,
        name=f"name {serial}",
        vendor=Vendor.FORMLABS,
        model="Form 4",
        model_code="FORM-4-0",
        status=PrinterStatus.IDLE,
        status_raw="IDLE",
        online=True,
    )


def outcome(
    run: Print, *, kind: EventType = EventType.PRINT_FINISHED, serial: str = "F1"
) -> ChangeEvent:
    return ChangeEvent(
        id=f"{kind.value}-{serial}-{run.id}",
        type=kind,
        source="lab",
        vendor=Vendor.FORMLABS,
        subject=serial,
        time=T0 + timedelta(hours=6),
        severity=Severity.INFO,
        printer=printer(serial),
        print=run,
    )


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_a_finished_print_adds_its_volume_and_its_duration() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.event_emitted(outcome(a_print("p1")))
    metrics.event_emitted(outcome(a_print("p2", volume_ml=2.5)))
    assert value(registry, RESIN, source="lab", serial="F1", material="Grey V5") == 42.5
    five_hours = {"source": "lab", "outcome": "finished"}
    assert value(registry, f"{DURATION}_count", **five_hours) == 2
    assert value(registry, f"{DURATION}_sum", **five_hours) == 2 * 5 * 3600.0
    assert value(registry, f"{DURATION}_bucket", le="14400.0", **five_hours) == 0
    assert value(registry, f"{DURATION}_bucket", le="21600.0", **five_hours) == 2


def test_failed_and_aborted_prints_are_timed_but_use_no_resin() -> None:
    """Formlabs' volume is the job's planned volume; a stopped print did not use all of it."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.event_emitted(outcome(a_print("p1"), kind=EventType.PRINT_FAILED))
    metrics.event_emitted(outcome(a_print("p2"), kind=EventType.PRINT_ABORTED))
    metrics.event_emitted(outcome(a_print("p3", volume_ml=None, material=None)))
    assert value(registry, RESIN, source="lab", serial="F1", material="Grey V5") is None
    assert value(registry, RESIN, source="lab", serial="F1", material="") is None
    for word in ("failed", "aborted", "finished"):
        assert value(registry, f"{DURATION}_count", source="lab", outcome=word) == 1


def test_unknown_material_with_a_volume_counts_under_an_empty_label() -> None:
    registry = CollectorRegistry()
    Metrics(registry).event_emitted(outcome(a_print("p1", material=None)))
    assert value(registry, RESIN, source="lab", serial="F1", material="") == 40.0


def test_every_source_has_duration_series_at_zero() -> None:
    registry = CollectorRegistry()
    Metrics(registry).track_tasks(["lab"], [])
    for word in ("finished", "failed", "aborted"):
        assert value(registry, f"{DURATION}_count", source="lab", outcome=word) == 0


def test_material_labels_per_printer_are_capped() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    for n in range(MATERIAL_SERIES + 5):
        metrics.event_emitted(outcome(a_print(f"p{n}", material=f"resin {n}", volume_ml=1.0)))
    series = [
        s
        for family in text_string_to_metric_families(exposition(registry).decode())
        for s in family.samples
        if s.name == RESIN
    ]
    assert len(series) == MATERIAL_SERIES + 1
    assert value(registry, RESIN, source="lab", serial="F1", material=MATERIAL_OTHER) == 5.0


def test_a_removed_printer_loses_its_resin_series() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.event_emitted(outcome(a_print("p1")))
    removed = ChangeEvent(
        id="gone",
        type=EventType.PRINTER_REMOVED,
        source="lab",
        vendor=Vendor.FORMLABS,
        subject="F1",
        time=T0,
        severity=Severity.INFO,
        printer=printer(),
    )
    metrics.event_emitted(removed)
    assert f"{RESIN}{{" not in exposition(registry).decode()


# -- across a restart: the real pipeline, store and metrics -----------------------------------


class _NoRules:
    matches: Mapping[str, int] = {}

    def process(
        self, event: dict[str, Any], now: datetime, *, trace: list[Decision] | None = None
    ) -> list[Delivery]:
        return []

    def tick(self, now: datetime, *, trace: list[Decision] | None = None) -> list[Delivery]:
        return []

    def next_deadline(self) -> datetime | None:
        return None

    def state(self) -> dict[str, Any]:
        return {}


def cycle(*events: ChangeEvent, serials: tuple[str, ...] = ("F1", "F2")) -> Cycle:
    snapshot = Snapshot(
        source="lab",
        vendor=Vendor.FORMLABS,
        taken_at=T0 + timedelta(hours=6),
        printers={s: printer(s) for s in serials},
    )
    return Cycle(source="lab", snapshot=snapshot, events=events, health=AccountHealth(), state={})


def started(path: Path) -> tuple[Store, CollectorRegistry, Pipeline]:
    """What the daemon does at start: open the store, restore counters, build the pipeline."""
    store = Store.open(path, clock=FakeClock(T0))
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    previous = store.load_snapshot("lab")
    if previous is not None:
        metrics.restore_history("lab", store.history_totals("lab"), previous.printers)
        metrics.restore_history("lab", store.history_totals("lab"), previous.printers)  # no-op
    pipeline = Pipeline(
        store=store, rules=_NoRules(), clock=FakeClock(T0), mqtt_prefix=None, observer=metrics
    )
    pipeline.seed("lab", previous)
    return store, registry, pipeline


async def test_counters_continue_across_a_restart(tmp_path: Path) -> None:
    path = tmp_path / FILENAME
    store, registry, pipeline = started(path)
    await pipeline.handle(
        cycle(
            outcome(a_print("p1")),
            outcome(a_print("p2", material="Clear V4", volume_ml=10.0)),
            outcome(a_print("p3"), kind=EventType.PRINT_FAILED),
            outcome(a_print("p4", volume_ml=5.0), serial="F2"),
            outcome(a_print("p5", volume_ml=7.0), serial="GONE"),
        )
    )
    store.close()

    store, registry, pipeline = started(path)
    with store:
        assert value(registry, RESIN, source="lab", serial="F1", material="Grey V5") == 40.0
        assert value(registry, RESIN, source="lab", serial="F1", material="Clear V4") == 10.0
        assert value(registry, RESIN, source="lab", serial="F2", material="Grey V5") == 5.0
        prints = "printfleet_prints_total"
        assert value(registry, prints, source="lab", serial="F1", result="finished") == 2
        assert value(registry, prints, source="lab", serial="F1", result="failed") == 1
        assert value(registry, prints, source="lab", serial="F2", result="finished") == 1
        # GONE is not in the restored snapshot: removed printers do not come back.
        assert value(registry, RESIN, source="lab", serial="GONE", material="Grey V5") is None
        assert value(registry, prints, source="lab", serial="GONE", result="finished") is None

        # Live counting goes on from there.
        await pipeline.handle(cycle(outcome(a_print("p6", volume_ml=1.5))))
        assert value(registry, RESIN, source="lab", serial="F1", material="Grey V5") == 41.5
        assert value(registry, prints, source="lab", serial="F1", result="finished") == 3
        assert len(store.print_history()) == 6
