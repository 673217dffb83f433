"""Metrics: Observer counters and the scrape-time fleet collector on an own registry."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from printfleet.core.events import ChangeEvent, EventType, Severity
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
from printfleet.metrics.exposition import exposition
from printfleet.metrics.fleet import PRINT_RESULTS, FleetCollector
from printfleet.metrics.observer import Metrics
from printfleet.sources.base import BudgetStatus

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def make_printer(serial: str = "Form4-X", **changes: Any) -> Printer:
    values: dict[str, Any] = {
        "serial": serial,
        "name": f"{serial} name",
        "vendor": Vendor.FORMLABS,
        "model": "Form 4",
        "model_code": "FORM-4-0",
        "status": PrinterStatus.PRINTING,
        "status_raw": "PRINTING",
        "online": True,
        "group": "Dental",
        "firmware": "1.9.2",
        "current_print": Print(
            id="p1",
            name="arch",
            status=PrintStatus.PRINTING,
            status_raw="PRINTING",
            progress=0.25,
            layer=100,
            layers_total=400,
            remaining_s=1800.0,
        ),
        "materials": (Material(slot="FRONT", capacity_ml=1000, remaining_ml=250),),
    }
    values.update(changes)
    return Printer(**values)


def make_view(*printers: Printer, source: str = "lab", up: bool = True) -> FleetView:
    snapshot = Snapshot(
        source=source,
        vendor=Vendor.FORMLABS,
        taken_at=T0,
        printers={p.serial: p for p in printers},
    )
    return FleetView(
        snapshots={source: snapshot},
        health={source: AccountHealth(up=up, last_success_at=T0)},
    )


class Holder:
    """The poller's role: holds the current view and swaps it whole."""

    def __init__(self, view: FleetView) -> None:
        self.view = view

    def __call__(self) -> FleetView:
        return self.view


def fleet_registry(
    holder: Holder,
    budgets: Mapping[str, BudgetStatus] | None = None,
    outbox: tuple[Mapping[str, int], Mapping[str, int]] = ({}, {}),
) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(FleetCollector(holder, lambda: budgets or {}, lambda: outbox))
    return registry


def event(kind: EventType, serial: str = "Form4-X") -> ChangeEvent:
    return ChangeEvent(
        id=f"{kind}-{serial}",
        type=kind,
        source="lab",
        vendor=Vendor.FORMLABS,
        subject=serial,
        time=T0,
        severity=Severity.INFO,
    )


def samples(text: str) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
    return {
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


# -- fleet collector -----------------------------------------------------------------------


def test_printer_info_carries_the_facts_as_labels() -> None:
    """printer_info is 1 with source, serial, name, model, vendor, group and firmware labels."""
    registry = fleet_registry(Holder(make_view(make_printer())))
    labels = {
        "source": "lab",
        "serial": "Form4-X",
        "name": "Form4-X name",
        "model": "Form 4",
        "vendor": "formlabs",
        "group": "Dental",
        "firmware": "1.9.2",
    }
    assert registry.get_sample_value("printfleet_printer_info", labels) == 1.0


def test_printer_status_is_a_state_set_over_every_status() -> None:
    """printer_status has one series per PrinterStatus, 1 only for the current one."""
    registry = fleet_registry(Holder(make_view(make_printer(status=PrinterStatus.PAUSED))))
    values = {
        s.value: registry.get_sample_value(
            "printfleet_printer_status", {"source": "lab", "serial": "Form4-X", "status": s.value}
        )
        for s in PrinterStatus
    }
    assert values == {s.value: 1.0 if s is PrinterStatus.PAUSED else 0.0 for s in PrinterStatus}


def test_current_print_gauges() -> None:
    """Progress ratio, remaining seconds, layers done/total and material ratio are exported."""
    registry = fleet_registry(Holder(make_view(make_printer())))
    key = {"source": "lab", "serial": "Form4-X"}
    assert registry.get_sample_value("printfleet_print_progress_ratio", key) == 0.25
    assert registry.get_sample_value("printfleet_print_remaining_seconds", key) == 1800.0
    assert registry.get_sample_value("printfleet_print_layers", {**key, "kind": "done"}) == 100
    assert registry.get_sample_value("printfleet_print_layers", {**key, "kind": "total"}) == 400
    material = {**key, "slot": "FRONT"}
    assert registry.get_sample_value("printfleet_material_remaining_ratio", material) == 0.25
    assert registry.get_sample_value("printfleet_printer_up", key) == 1.0


def test_an_idle_printer_has_no_print_series() -> None:
    """Without a current print there is no progress sample rather than a made-up zero."""
    registry = fleet_registry(Holder(make_view(make_printer(current_print=None))))
    key = {"source": "lab", "serial": "Form4-X"}
    assert registry.get_sample_value("printfleet_print_progress_ratio", key) is None
    assert registry.get_sample_value("printfleet_printer_up", key) == 1.0


def test_a_removed_printer_leaves_no_stale_series() -> None:
    """After the view drops a printer, no series with its serial remains in a scrape."""
    holder = Holder(make_view(make_printer("Form4-A"), make_printer("Form4-B")))
    registry = fleet_registry(holder)
    assert b'serial="Form4-B"' in exposition(registry)
    holder.view = make_view(make_printer("Form4-A"))
    assert b'serial="Form4-B"' not in exposition(registry)
    assert b'serial="Form4-B"' not in generate_latest(registry)
    assert b'serial="Form4-A"' in exposition(registry)


def test_fast_text_equals_the_metric_families() -> None:
    """exposition() renders exactly the samples that generate_latest() does."""
    holder = Holder(
        make_view(
            make_printer("Form4-A"),
            make_printer("Form4-B", current_print=None, online=False),
            make_printer("Form4-C", name='Quote " and \\ and\nnewline'),
        )
    )
    registry = fleet_registry(
        holder, {"lab": BudgetStatus(remaining=12, capacity=1350, window_s=3600)}, ({"mqtt": 3}, {})
    )
    Metrics(registry)
    fast = exposition(registry).decode()
    assert samples(fast) == samples(generate_latest(registry).decode())
    holder.view = make_view(make_printer("Form4-A", status=PrinterStatus.IDLE))  # after a change
    assert samples(exposition(registry).decode()) == samples(generate_latest(registry).decode())


def test_label_values_are_escaped() -> None:
    """Quotes, backslashes and newlines in a printer name survive a round trip."""
    name = 'Quote " and \\ and\nnewline'
    registry = fleet_registry(Holder(make_view(make_printer(name=name))))
    [info] = [
        s
        for f in text_string_to_metric_families(exposition(registry).decode())
        for s in f.samples
        if s.name == "printfleet_printer_info"
    ]
    assert info.labels["name"] == name


def test_source_health_budget_and_outbox_gauges() -> None:
    """source_up, last success time, budget remaining and outbox counts come from callables."""
    holder = Holder(make_view(make_printer(), up=False))
    registry = fleet_registry(
        holder,
        {"lab": BudgetStatus(remaining=12, capacity=1350, window_s=3600)},
        ({"mqtt": 3}, {"ops-slack": 1}),
    )
    lab = {"source": "lab"}
    assert registry.get_sample_value("printfleet_source_up", lab) == 0.0
    assert (
        registry.get_sample_value("printfleet_source_last_success_timestamp_seconds", lab)
        == T0.timestamp()
    )
    assert registry.get_sample_value("printfleet_api_budget_remaining", lab) == 12
    assert registry.get_sample_value("printfleet_outbox_pending", {"sink": "mqtt"}) == 3
    assert registry.get_sample_value("printfleet_outbox_dead", {"sink": "ops-slack"}) == 1


def test_registering_the_collector_twice_is_refused() -> None:
    """describe() lets the registry reject a second fleet collector (duplicate series)."""
    registry = fleet_registry(Holder(FleetView()))
    with pytest.raises(ValueError, match="Duplicated"):
        registry.register(FleetCollector(FleetView))


# -- observer counters ---------------------------------------------------------------------


def test_events_are_counted_by_source_and_type() -> None:
    """event_emitted increments events_total{source,type}."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.event_emitted(event(EventType.PRINT_STARTED))
    metrics.event_emitted(event(EventType.PRINT_STARTED, "Form4-Y"))
    labels = {"source": "lab", "type": "print.started"}
    assert registry.get_sample_value("printfleet_events_total", labels) == 2


@pytest.mark.parametrize(
    ("kind", "result"),
    [
        (EventType.PRINT_FINISHED, "finished"),
        (EventType.PRINT_FAILED, "failed"),
        (EventType.PRINT_ABORTED, "aborted"),
    ],
)
def test_ended_prints_are_counted_per_printer_and_result(kind: EventType, result: str) -> None:
    """print.finished/failed/aborted increment prints_total{source,serial,result}."""
    registry = CollectorRegistry()
    Metrics(registry).event_emitted(event(kind))
    labels = {"source": "lab", "serial": "Form4-X", "result": result}
    assert registry.get_sample_value("printfleet_prints_total", labels) == 1


def test_printer_removed_drops_its_print_counters() -> None:
    """printer.removed deletes that printer's prints_total series (no stale series)."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.event_emitted(event(EventType.PRINT_FINISHED, "Form4-Gone"))
    metrics.event_emitted(event(EventType.PRINT_FINISHED, "Form4-Kept"))
    metrics.event_emitted(event(EventType.PRINTER_REMOVED, "Form4-Gone"))
    text = generate_latest(registry)
    assert b"Form4-Gone" not in text
    assert b'printfleet_prints_total{result="finished",serial="Form4-Kept"' in text


def test_api_requests_feed_the_counter_and_the_histogram() -> None:
    """api_request counts by code and observes the duration per endpoint."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.api_request("lab", "/printers/", "200", 0.3)
    metrics.api_request("lab", "/printers/", "429", 0.1)
    by_code = {"source": "lab", "endpoint": "/printers/", "code": "429"}
    assert registry.get_sample_value("printfleet_api_requests_total", by_code) == 1
    duration = {"source": "lab", "endpoint": "/printers/"}
    count = registry.get_sample_value("printfleet_api_request_duration_seconds_count", duration)
    assert count == 2


def test_unknown_status_values_are_bounded() -> None:
    """Each source and field keeps at most 50 word series; further words count as (other)."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    for n in range(60):
        metrics.unknown_status("lab", "print.status", f"word-{n}")
    metrics.unknown_status("lab", "print.status", "word-0")
    metrics.unknown_status("lab", "printer.status", "STANDBY")
    families = text_string_to_metric_families(generate_latest(registry).decode())
    samples = [s for f in families if f.name == "printfleet_unknown_status" for s in f.samples]
    values = {s.labels["value"] for s in samples if s.labels["field"] == "print.status"}
    assert len(values) == 51
    get = registry.get_sample_value
    labels = {"source": "lab", "field": "print.status"}
    assert get("printfleet_unknown_status_total", {**labels, "value": "word-0"}) == 2
    assert get("printfleet_unknown_status_total", {**labels, "value": "(other)"}) == 10
    assert (
        get(
            "printfleet_unknown_status_total",
            {"source": "lab", "field": "printer.status", "value": "STANDBY"},
        )
        == 1
    )


def test_other_observer_hooks() -> None:
    """Skipped records, polls, rule matches and deliveries each land in their series."""
    registry = CollectorRegistry()
    metrics = Metrics(registry, version="9.9.9")
    metrics.record_skipped("lab", "printer")
    metrics.poll_done("lab", 1.5, ok=True)
    metrics.rule_matched("print-failed-to-slack")
    metrics.delivery_done("mqtt", "retry")
    get = registry.get_sample_value
    assert get("printfleet_records_skipped_total", {"source": "lab", "kind": "printer"}) == 1
    assert get("printfleet_poll_duration_seconds_sum", {"source": "lab"}) == 1.5
    assert get("printfleet_rule_matches_total", {"rule": "print-failed-to-slack"}) == 1
    assert get("printfleet_deliveries_total", {"sink": "mqtt", "result": "retry"}) == 1
    assert get("printfleet_build_info", {"version": "9.9.9"}) == 1


# -- prints_total ----------------------------------------------------------------------------

RESULTS = ("finished", "failed", "aborted")


def prints_block(text: bytes) -> bytes:
    """The prints_total family's _total lines, in output order."""
    return b"".join(
        line
        for line in text.splitlines(keepends=True)
        if line.startswith(
            (
                b"printfleet_prints_total",
                b"# HELP printfleet_prints_total",
                b"# TYPE printfleet_prints_total",
            )
        )
    )


def prints(registry: CollectorRegistry, serial: str) -> dict[str, float | None]:
    """The printer's prints_total values by result (None: no such series)."""
    labels = {"source": "lab", "serial": serial}
    return {
        r: registry.get_sample_value("printfleet_prints_total", {**labels, "result": r})
        for r in RESULTS
    }


def test_track_fleet_creates_each_printers_three_series_at_zero() -> None:
    """Every printer in the view has finished/failed/aborted series at 0, in both scrape paths."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.track_fleet(make_view(make_printer("Form4-A"), make_printer("Form4-B")))
    assert prints(registry, "Form4-A") == dict.fromkeys(RESULTS, 0.0)
    assert prints(registry, "Form4-B") == dict.fromkeys(RESULTS, 0.0)
    fast = samples(exposition(registry).decode())
    for serial in ("Form4-A", "Form4-B"):
        for result in RESULTS:
            labels = (("result", result), ("serial", serial), ("source", "lab"))
            assert ("printfleet_prints_total", labels, 0.0) in fast


def test_a_finished_print_increments_exactly_its_series() -> None:
    """print.finished adds 1 to that printer's finished series and touches nothing else."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.track_fleet(make_view(make_printer("Form4-A"), make_printer("Form4-B")))
    metrics.event_emitted(event(EventType.PRINT_FINISHED, "Form4-A"))
    metrics.track_fleet(make_view(make_printer("Form4-A"), make_printer("Form4-B")))  # no reset
    assert prints(registry, "Form4-A") == {"finished": 1.0, "failed": 0.0, "aborted": 0.0}
    assert prints(registry, "Form4-B") == dict.fromkeys(RESULTS, 0.0)
    assert b'printfleet_prints_total{result="finished",serial="Form4-A",source="lab"} 1.0\n' in (
        exposition(registry)
    )


def test_printer_removed_drops_its_tracked_series_and_a_return_starts_at_zero() -> None:
    """printer.removed deletes all three series; tracked again, the printer starts from 0."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    view = make_view(make_printer("Form4-Gone"), make_printer("Form4-Kept"))
    metrics.track_fleet(view)
    metrics.event_emitted(event(EventType.PRINT_FAILED, "Form4-Gone"))
    metrics.event_emitted(event(EventType.PRINTER_REMOVED, "Form4-Gone"))
    assert prints(registry, "Form4-Gone") == dict.fromkeys(RESULTS, None)
    assert prints(registry, "Form4-Kept") == dict.fromkeys(RESULTS, 0.0)
    assert b"Form4-Gone" not in exposition(registry)
    assert b"Form4-Gone" not in generate_latest(registry)
    metrics.track_fleet(view)
    assert prints(registry, "Form4-Gone") == dict.fromkeys(RESULTS, 0.0)


def test_a_print_before_tracking_creates_only_its_series() -> None:
    """As with a labelled Counter, an untracked printer's print creates just that series."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.event_emitted(event(EventType.PRINT_FAILED, "Form4-New"))
    assert prints(registry, "Form4-New") == {"finished": None, "failed": 1.0, "aborted": None}
    metrics.track_fleet(make_view(make_printer("Form4-New")))
    assert prints(registry, "Form4-New") == {"finished": 0.0, "failed": 1.0, "aborted": 0.0}


def test_prints_text_is_what_a_prometheus_client_counter_writes() -> None:
    """exposition(), generate_latest() and a stock Counter fed the same way agree byte for byte
    (label escaping, non-ASCII serials), except that prints_total has no _created series."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    stock_registry = CollectorRegistry()
    stock = Counter(
        "printfleet_prints",
        "Print runs that ended, by printer and result (finished, failed, aborted).",
        ["source", "serial", "result"],
        registry=stock_registry,
    )
    assert prints_block(exposition(registry)) == prints_block(generate_latest(stock_registry))

    serials = ("Form4-A", 'Q"uo\\te\nx', "Fórm-ü", "Form4-Gone")
    metrics.track_fleet(make_view(*(make_printer(s) for s in serials)))
    for serial in serials:
        for result in RESULTS:
            stock.labels("lab", serial, result)
    for kind, serial in [
        (EventType.PRINT_FINISHED, "Form4-A"),
        (EventType.PRINT_FINISHED, "Form4-A"),
        (EventType.PRINT_FAILED, 'Q"uo\\te\nx'),
        (EventType.PRINT_ABORTED, "Form4-A"),
        (EventType.PRINT_FINISHED, "Form4-Late"),  # never tracked: one series
    ]:
        metrics.event_emitted(event(kind, serial))
        stock.labels("lab", serial, PRINT_RESULTS[kind]).inc()
    metrics.event_emitted(event(EventType.PRINTER_REMOVED, "Form4-Gone"))
    for result in RESULTS:
        stock.remove("lab", "Form4-Gone", result)

    expected = prints_block(generate_latest(stock_registry))
    assert prints_block(exposition(registry)) == expected
    assert prints_block(generate_latest(registry)) == expected
    assert b"printfleet_prints_created" not in exposition(registry)
    assert b"printfleet_prints_created" not in generate_latest(registry)


def test_prints_can_be_scraped_while_printers_come_and_go() -> None:
    """A scrape in another thread never sees the counts change under it (they are locked)."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    views = [make_view(*(make_printer(f"Form4-{n}-{i}") for i in range(50))) for n in range(4)]
    errors: list[BaseException] = []
    done = threading.Event()

    def scrape() -> None:
        try:
            while not done.is_set():
                exposition(registry)
                generate_latest(registry)
        except BaseException as error:
            errors.append(error)

    scraper = threading.Thread(target=scrape)
    scraper.start()
    try:
        for _ in range(20):
            for n, view in enumerate(views):
                metrics.track_fleet(view)
                metrics.event_emitted(event(EventType.PRINT_FINISHED, f"Form4-{n}-0"))
            for n in range(4):
                for i in range(50):
                    metrics.event_emitted(event(EventType.PRINTER_REMOVED, f"Form4-{n}-{i}"))
    finally:
        done.set()
        scraper.join()
    assert errors == []
