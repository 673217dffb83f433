"""A source taken out of the config by SIGHUP leaves no series behind; the others keep theirs."""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from printfleet.core.events import ChangeEvent, EventType, Severity
from printfleet.core.fleet import AccountHealth, FleetView
from printfleet.core.history import HistoryTotal
from printfleet.core.model import Printer, PrinterStatus, Snapshot, Vendor
from printfleet.metrics.observer import Metrics

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


def finished(source: str, serial: str) -> ChangeEvent:
    return ChangeEvent(
        id=f"{source}-{serial}",
        type=EventType.PRINT_FINISHED,
        source=source,
        vendor=Vendor.FORMLABS,
        subject=serial,
        time=T0,
        severity=Severity.INFO,
    )


def sources_in(registry: CollectorRegistry) -> dict[str, set[str]]:
    """Sample name -> the ``source`` labels it has."""
    text = generate_latest(registry).decode()
    seen: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if "source" in sample.labels:
                seen.setdefault(sample.name, set()).add(sample.labels["source"])
    return seen


def used(metrics: Metrics, source: str) -> None:
    metrics.track_tasks([source], [f"poll:{source}"])
    metrics.api_request(source, "/printers/", "200", 0.1)
    metrics.poll_done(source, 0.2, ok=True)
    metrics.poll_failed(source, "unavailable")
    metrics.record_skipped(source, "printer")
    metrics.unknown_status(source, "printer.status", "WEIRD")
    metrics.task_restarted(f"poll:{source}")
    metrics.track_fleet(
        FleetView(
            snapshots={
                source: Snapshot(
                    source=source,
                    vendor=Vendor.FORMLABS,
                    taken_at=T0,
                    printers={"F1": printer("F1")},
                )
            },
            health={source: AccountHealth(up=True)},
        )
    )
    metrics.event_emitted(finished(source, "F1"))


def test_forget_source_removes_every_series_of_that_source_only() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    used(metrics, "gone")
    used(metrics, "kept")
    before = sources_in(registry)
    assert {name for name, s in before.items() if "gone" in s} >= {
        "printfleet_api_requests_total",
        "printfleet_poll_duration_seconds_count",
        "printfleet_poll_failures_total",
        "printfleet_events_total",
        "printfleet_prints_total",
        "printfleet_print_verdicts_total",
        "printfleet_print_duration_seconds_count",
        "printfleet_records_skipped_total",
        "printfleet_unknown_status_total",
    }

    metrics.forget_source("gone")

    after = sources_in(registry)
    assert not [name for name, s in after.items() if "gone" in s]
    assert {name for name, s in after.items() if "kept" in s} == {
        name for name, s in before.items() if "kept" in s
    }
    text = generate_latest(registry).decode()
    assert 'task="poll:gone"' not in text
    assert 'task="poll:kept"' in text


def test_a_forgotten_source_added_back_restores_its_counters_from_history() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    totals = [
        HistoryTotal(
            source="lab",
            serial="F1",
            outcome="finished",
            material="Grey V5",
            prints=3,
            volume_ml=30.0,
            with_volume=3,
        )
    ]
    metrics.restore_history("lab", totals, {"F1"})
    metrics.forget_source("lab")
    labels = {"source": "lab", "serial": "F1", "result": "finished"}
    assert registry.get_sample_value("printfleet_prints_total", labels) is None

    metrics.restore_history("lab", totals, {"F1"})

    assert registry.get_sample_value("printfleet_prints_total", labels) == 3
    assert (
        registry.get_sample_value(
            "printfleet_resin_used_ml_total",
            {"source": "lab", "serial": "F1", "material": "Grey V5"},
        )
        == 30.0
    )


def test_a_view_without_the_source_keeps_the_others() -> None:
    health = AccountHealth(up=True)
    snap = Snapshot(source="a", vendor=Vendor.FORMLABS, taken_at=T0, printers={})
    view = FleetView(snapshots={"a": snap, "b": snap}, health={"a": health, "b": health})
    smaller = view.without_source("a")
    assert set(smaller.snapshots) == set(smaller.health) == {"b"}
    assert set(view.snapshots) == {"a", "b"}  # views are never changed in place
