"""printfleet_print_verdicts_total: ratings counted when they arrive, next to prints_total."""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import CollectorRegistry

from printfleet.core.events import ChangeEvent, EventType, Severity
from printfleet.core.model import Vendor, frozen_mapping
from printfleet.metrics.observer import Metrics

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def rated(verdict: str, outcome: str, serial: str = "Form4-X") -> ChangeEvent:
    return ChangeEvent(
        id=f"{serial}-{verdict}-{outcome}",
        type=EventType.PRINT_RATED,
        source="lab",
        vendor=Vendor.FORMLABS,
        subject=serial,
        time=T0,
        severity=Severity.INFO,
        details=frozen_mapping(
            {"verdict": verdict, "note": None, "by": None, "machine_outcome": outcome}
        ),
    )


def value(registry: CollectorRegistry, result: str, verdict: str) -> float | None:
    labels = {"source": "lab", "result": result, "verdict": verdict}
    return registry.get_sample_value("printfleet_print_verdicts_total", labels)


def test_every_source_starts_with_all_six_series_at_zero() -> None:
    """So increase() sees the first rating, as prints_total's series start at 0."""
    registry = CollectorRegistry()
    Metrics(registry).track_tasks(iter(["lab"]), [])
    for result in ("finished", "failed", "aborted"):
        for verdict in ("success", "failure"):
            assert value(registry, result, verdict) == 0


def test_ratings_count_by_machine_result_and_verdict_without_touching_prints_total() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.event_emitted(rated("FAILURE", "finished"))
    metrics.event_emitted(rated("FAILURE", "finished", "Form4-Y"))
    metrics.event_emitted(rated("SUCCESS", "finished"))
    assert value(registry, "finished", "failure") == 2
    assert value(registry, "finished", "success") == 1
    prints = registry.get_sample_value(
        "printfleet_prints_total", {"source": "lab", "serial": "Form4-X", "result": "finished"}
    )
    assert prints is None  # a rating is not a print ending


def test_an_odd_event_is_not_counted() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.event_emitted(rated("MAYBE", "finished"))
    metrics.event_emitted(rated("SUCCESS", "exploded"))
    assert value(registry, "finished", "success") is None
