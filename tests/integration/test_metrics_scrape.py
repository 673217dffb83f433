"""A real scrape of the health server: DESIGN §7 names and labels, promtool, /healthz, /readyz."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from printfleet.core.delivery import Delivery
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
from printfleet.health import HealthServer, source_problems
from printfleet.metrics.fleet import FleetCollector
from printfleet.metrics.observer import Metrics
from printfleet.sources.base import BudgetStatus
from printfleet.store import Store

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)

#: DESIGN §7: every metric family and its exact label names (the contract).
CONTRACT: dict[str, set[str]] = {
    "printfleet_printer_info": {"source", "serial", "name", "model", "vendor", "group", "firmware"},
    "printfleet_printer_up": {"source", "serial"},
    "printfleet_printer_status": {"source", "serial", "status"},
    "printfleet_print_progress_ratio": {"source", "serial"},
    "printfleet_print_remaining_seconds": {"source", "serial"},
    "printfleet_print_layers": {"source", "serial", "kind"},
    "printfleet_material_remaining_ratio": {"source", "serial", "slot"},
    "printfleet_prints_total": {"source", "serial", "result"},
    "printfleet_print_verdicts_total": {"source", "result", "verdict"},
    "printfleet_events_total": {"source", "type"},
    "printfleet_source_up": {"source"},
    "printfleet_source_last_success_timestamp_seconds": {"source"},
    "printfleet_api_requests_total": {"source", "endpoint", "code"},
    "printfleet_api_request_duration_seconds_bucket": {"source", "endpoint", "le"},
    "printfleet_api_budget_remaining": {"source"},
    "printfleet_poll_duration_seconds_bucket": {"source", "le"},
    "printfleet_rule_matches_total": {"rule"},
    "printfleet_deliveries_total": {"sink", "result"},
    "printfleet_outbox_pending": {"sink"},
    "printfleet_outbox_dead": {"sink"},
    "printfleet_records_skipped_total": {"source", "kind"},
    "printfleet_unknown_status_total": {"source", "field", "value"},
    "printfleet_poll_failures_total": {"source", "error"},
    "printfleet_task_restarts_total": {"task"},
    "printfleet_build_info": {"version"},
    "printfleet_resin_used_ml_total": {"source", "serial", "material"},
    "printfleet_print_duration_seconds_bucket": {"source", "outcome", "le"},
}


def make_printer(serial: str) -> Printer:
    return Printer(
        serial=serial,
        name=f"{serial} name",
        vendor=Vendor.FORMLABS,
        model="Form 4",
        model_code="FORM-4-0",
        status=PrinterStatus.PRINTING,
        status_raw="PRINTING",
        online=True,
        group="Dental",
        firmware="1.9.2",
        current_print=Print(
            id="p1",
            name="arch",
            status=PrintStatus.PRINTING,
            status_raw="PRINTING",
            progress=0.5,
            layer=10,
            layers_total=20,
            remaining_s=60.0,
        ),
        materials=(Material(slot="main", capacity_ml=1000, remaining_ml=500),),
    )


def make_view(*serials: str) -> FleetView:
    snapshot = Snapshot(
        source="lab",
        vendor=Vendor.FORMLABS,
        taken_at=T0,
        printers={s: make_printer(s) for s in serials},
    )
    return FleetView(
        snapshots={"lab": snapshot},
        health={"lab": AccountHealth(up=True, last_success_at=T0)},
    )


class World:
    """What the app would wire: a view holder, readiness, and a running health server."""

    def __init__(self) -> None:
        self.view = make_view("Form4-A", "Form4-B")
        self.ready: tuple[bool, str] = (True, "")
        self.registry = CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.registry.register(
            FleetCollector(
                lambda: self.view,
                lambda: {"lab": BudgetStatus(remaining=1200, capacity=1350, window_s=3600)},
                lambda: ({"mqtt": 2}, {"ops-slack": 1}),
            )
        )
        self.server = HealthServer("127.0.0.1:0", self.registry, ready=lambda: self.ready)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.bound_port}"

    def exercise(self) -> None:
        """Give every counter and histogram at least one series."""
        m = self.metrics
        m.api_request("lab", "/printers/", "200", 0.2)
        m.record_skipped("lab", "printer")
        m.unknown_status("lab", "print.status", "complete")
        m.poll_done("lab", 1.0, ok=True)
        m.track_tasks(["lab"], ["poll:lab", "outbox:mqtt", "mqtt"])
        m.poll_failed("lab", "crashed")
        m.task_restarted("poll:lab")
        m.rule_matched("print-failed-to-slack")
        m.delivery_done("mqtt", "ok")
        for kind in (EventType.PRINT_FINISHED, EventType.PRINTER_STATUS_CHANGED):
            m.event_emitted(
                ChangeEvent(
                    id=kind.value,
                    type=kind,
                    source="lab",
                    vendor=Vendor.FORMLABS,
                    subject="Form4-A",
                    time=T0,
                    severity=Severity.INFO,
                    printer=make_printer("Form4-A"),
                    print=Print(
                        id=f"p-{kind.value}",
                        name="arch",
                        status=PrintStatus.FINISHED,
                        status_raw="FINISHED",
                        elapsed_s=5400.0,
                        material="Grey V5",
                        volume_ml=12.5,
                    ),
                )
            )


@pytest.fixture
def world() -> Iterator[World]:
    """A health server on a free port over a two-printer fleet."""
    w = World()
    w.server.start()
    try:
        yield w
    finally:
        w.server.stop()


def scrape(world: World) -> str:
    response = httpx.get(f"{world.url}/metrics", timeout=10)
    assert response.status_code == 200
    return response.text


def test_metric_names_and_labels_follow_the_contract(world: World) -> None:
    """Every DESIGN §7 family is scraped with exactly its contracted label names."""
    world.exercise()
    found: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(scrape(world)):
        for sample in family.samples:
            found.setdefault(sample.name, set()).update(sample.labels)
    missing = set(CONTRACT) - set(found)
    assert not missing
    assert {name: found[name] for name in CONTRACT} == CONTRACT


def test_scraped_text_passes_promtool(world: World) -> None:
    """`promtool check metrics` accepts the scraped exposition without lint findings."""
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is required in CI but is not installed")
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    world.exercise()
    checked = subprocess.run(
        [promtool, "check", "metrics"],
        input=scrape(world),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == ""


def test_metrics_content_type_and_gzip(world: World) -> None:
    """/metrics is text format 0.0.4 and gzip-encoded when the scraper accepts it."""
    raw = httpx.get(f"{world.url}/metrics", headers={"Accept-Encoding": "gzip"}, timeout=10)
    assert raw.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert raw.headers["content-encoding"] == "gzip"
    plain = httpx.get(f"{world.url}/metrics", headers={"Accept-Encoding": "identity"}, timeout=10)
    assert "content-encoding" not in plain.headers
    assert raw.content == plain.content  # httpx decoded the gzip body
    assert raw.num_bytes_downloaded < len(raw.content)


def test_a_removed_printer_is_gone_from_the_next_scrape(world: World) -> None:
    """Swapping in a view without a printer removes all of its series over HTTP."""
    assert 'serial="Form4-B"' in scrape(world)
    world.view = make_view("Form4-A")
    text = scrape(world)
    assert 'serial="Form4-B"' not in text
    assert 'serial="Form4-A"' in text


def test_healthz_is_ok_while_serving(world: World) -> None:
    """/healthz answers 200 ok even when not ready."""
    world.ready = (False, "mqtt disconnected")
    response = httpx.get(f"{world.url}/healthz", timeout=10)
    assert (response.status_code, response.text) == (200, "ok\n")


def test_readyz_follows_the_ready_callable(world: World) -> None:
    """/readyz is 200 when ready and 503 with the reason when not."""
    assert httpx.get(f"{world.url}/readyz", timeout=10).status_code == 200
    world.ready = (False, "source lab not polled successfully in 90s; mqtt disconnected")
    response = httpx.get(f"{world.url}/readyz", timeout=10)
    assert response.status_code == 503
    assert "source lab not polled successfully in 90s; mqtt disconnected" in response.text


def test_unknown_paths_are_404(world: World) -> None:
    """Anything but the three endpoints is 404."""
    assert httpx.get(f"{world.url}/", timeout=10).status_code == 404


def test_a_failing_ready_callable_is_a_500_not_a_dead_server(world: World) -> None:
    """An exception while answering gives a 500 and the server keeps serving."""

    def broken() -> tuple[bool, str]:
        raise RuntimeError("boom")

    world.server._ready = broken
    assert httpx.get(f"{world.url}/readyz", timeout=10).status_code == 500
    assert httpx.get(f"{world.url}/healthz", timeout=10).status_code == 200


def test_stale_sources_are_readiness_problems() -> None:
    """source_problems names sources without a recent successful poll, and unknown ones."""
    view = make_view("Form4-A")
    now = T0.replace(minute=1, second=30)
    assert source_problems(view, now=now, stale_after=120) == []
    assert source_problems(view, now=now, stale_after=60, sources=["lab", "factory"]) == [
        "source lab not polled successfully in 90s",
        "source factory not polled successfully yet",
    ]


def test_stop_releases_the_port() -> None:
    """After stop() the same port can be bound again."""
    registry = CollectorRegistry()
    first = HealthServer("127.0.0.1:0", registry, ready=lambda: (True, ""))
    first.start()
    port = first.bound_port
    first.stop()
    with HealthServer(f"127.0.0.1:{port}", registry, ready=lambda: (True, "")) as second:
        assert second.bound_port == port


# -- outbox gauges and _created --------------------------------------------------------------


def outbox_world(store: Store, sinks: tuple[str, ...]) -> HealthServer:
    """A health server whose fleet collector reads the outbox counts the way app.py wires them."""
    registry = CollectorRegistry()
    registry.register(
        FleetCollector(
            lambda: make_view("Form4-A"),
            outbox=lambda: (store.pending_count(), store.dead_count()),
            sinks=lambda: sinks,
        )
    )
    return HealthServer("127.0.0.1:0", registry, ready=lambda: (True, ""))


def outbox_series(text: str) -> dict[tuple[str, str], float]:
    return {
        (s.name, s.labels["sink"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name in ("printfleet_outbox_pending", "printfleet_outbox_dead")
    }


def test_every_configured_sink_has_outbox_series_at_zero_when_empty(store: Store) -> None:
    """An empty outbox scrapes as 0 per configured sink, so the backlog panel is not "No data"."""
    with outbox_world(store, ("mqtt", "ops-slack")) as server:
        text = httpx.get(f"http://127.0.0.1:{server.bound_port}/metrics", timeout=10).text
    assert outbox_series(text) == {
        ("printfleet_outbox_pending", "mqtt"): 0.0,
        ("printfleet_outbox_pending", "ops-slack"): 0.0,
        ("printfleet_outbox_dead", "mqtt"): 0.0,
        ("printfleet_outbox_dead", "ops-slack"): 0.0,
    }


def test_outbox_series_count_the_store_and_keep_an_unconfigured_sinks_backlog(
    store: Store,
) -> None:
    """Pending and dead entries are counted per sink; a sink no longer configured but still
    holding entries keeps its series."""
    made = [
        Delivery(
            id=f"d{i}", sink=sink, event_id=f"e{i}", key="lab/Form4-A", created_at=T0, payload={}
        )
        for i, sink in enumerate(["mqtt", "mqtt", "ops-slack", "old-hook"])
    ]
    store.commit(deliveries=made)
    store.dead_letter("d2", error="HTTP 404")
    with outbox_world(store, ("mqtt", "ops-slack")) as server:
        text = httpx.get(f"http://127.0.0.1:{server.bound_port}/metrics", timeout=10).text
    assert outbox_series(text) == {
        ("printfleet_outbox_pending", "mqtt"): 2.0,
        ("printfleet_outbox_pending", "ops-slack"): 0.0,
        ("printfleet_outbox_pending", "old-hook"): 1.0,
        ("printfleet_outbox_dead", "mqtt"): 0.0,
        ("printfleet_outbox_dead", "ops-slack"): 1.0,
    }


def test_no_family_has_created_series(world: World) -> None:
    """Counters and histograms are scraped without `_created` samples (README: Metrics)."""
    world.exercise()
    text = scrape(world)
    assert "printfleet_api_requests_total{" in text  # the counters are there ...
    assert "printfleet_poll_duration_seconds_count{" in text
    assert "_created" not in text  # ... without their creation times


# -- the README's Metrics table ----------------------------------------------------------------


def readme_metrics() -> dict[str, set[str]]:
    """The README Metrics table: ``{printfleet_<name>: label names}`` per listed family."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Metrics and health", 1)[1].split("\n## ", 1)[0]
    table: dict[str, set[str]] = {}
    for row in section.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", row)[1:-1]]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        labels = {part.split("=", 1)[0].strip() for part in cells[1].split(",") if part.strip()}
        for name in re.findall(r"`([a-z_]+)`", cells[0]):
            table[f"printfleet_{name}"] = labels
    return table


def test_the_readme_metrics_table_lists_every_family_with_its_labels() -> None:
    """README: Metrics and health names each contracted family and exactly its labels."""
    table = readme_metrics()
    expected = {name.removesuffix("_bucket"): labels - {"le"} for name, labels in CONTRACT.items()}
    assert {name: table.get(name) for name in expected} == expected


# -- pre-rendered scrapes and gzip ------------------------------------------------------------


def test_gzip_and_plain_scrapes_carry_the_same_text_and_pass_promtool(world: World) -> None:
    """With Accept-Encoding: gzip the body is gzip (one member, decoded by any gzip reader)
    and decodes to exactly the plain scrape; promtool accepts both."""
    world.exercise()
    world.server.prerender()
    zipped = httpx.get(f"{world.url}/metrics", headers={"Accept-Encoding": "gzip"}, timeout=10)
    plain = httpx.get(f"{world.url}/metrics", headers={"Accept-Encoding": "identity"}, timeout=10)
    assert zipped.headers["content-encoding"] == "gzip"
    assert "content-encoding" not in plain.headers
    assert int(zipped.headers["content-length"]) == zipped.num_bytes_downloaded
    assert zipped.num_bytes_downloaded < len(plain.content) / 3
    assert zipped.content == plain.content  # httpx decoded the gzip body, all of it
    assert 'printfleet_printer_up{source="lab",serial="Form4-B"} 1.0' in plain.text
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    for text in (zipped.text, plain.text):
        checked = subprocess.run(
            [promtool, "check", "metrics"],
            input=text,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_printer_changed_between_polls_shows_its_new_value_on_the_next_scrape(
    world: World,
) -> None:
    """After a poll (view_changed: the render thread re-renders), the next scrape, plain or
    gzip, has the printer's new values and nothing of the old ones."""
    before = httpx.get(f"{world.url}/metrics", headers={"Accept-Encoding": "gzip"}, timeout=10)
    assert 'printfleet_print_progress_ratio{source="lab",serial="Form4-A"} 0.5' in before.text
    view = make_view("Form4-A", "Form4-B")
    moved = make_printer("Form4-A")
    assert moved.current_print is not None
    moved = replace(
        moved,
        online=False,
        status=PrinterStatus.ERROR,
        current_print=replace(moved.current_print, progress=0.75),
    )
    snapshot = view.snapshots["lab"]
    world.view = replace(
        view,
        snapshots={"lab": replace(snapshot, printers={**snapshot.printers, "Form4-A": moved})},
    )
    world.server.view_changed()
    for gzip in (True, False):
        text = httpx.get(
            f"{world.url}/metrics",
            headers={"Accept-Encoding": "gzip" if gzip else "identity"},
            timeout=10,
        ).text
        assert 'printfleet_print_progress_ratio{source="lab",serial="Form4-A"} 0.75' in text
        assert 'printfleet_printer_up{source="lab",serial="Form4-A"} 0.0' in text
        assert 'printfleet_printer_status{source="lab",serial="Form4-A",status="ERROR"} 1.0' in text
        assert 'printfleet_print_progress_ratio{source="lab",serial="Form4-A"} 0.5' not in text
        assert 'printfleet_print_progress_ratio{source="lab",serial="Form4-B"} 0.5' in text


def test_a_removed_source_takes_its_series_with_it(world: World) -> None:
    """A source gone from the view (removed from the config) has no fleet series in the next
    scrape, compressed or not; the other source's stay."""
    lab = world.view.snapshots["lab"]
    plant = replace(lab, source="plant", printers={"M2-1": make_printer("M2-1")})
    health = AccountHealth(up=True, last_success_at=T0)
    world.view = FleetView(
        snapshots={"lab": lab, "plant": plant}, health={"lab": health, "plant": health}
    )
    world.server.view_changed()
    assert 'serial="M2-1"' in httpx.get(f"{world.url}/metrics", timeout=10).text
    world.view = FleetView(snapshots={"lab": lab}, health={"lab": health})
    world.server.view_changed()
    for gzip in (True, False):
        text = httpx.get(
            f"{world.url}/metrics",
            headers={"Accept-Encoding": "gzip" if gzip else "identity"},
            timeout=10,
        ).text
        assert 'source="plant"' not in text
        assert 'printfleet_printer_up{source="lab",serial="Form4-A"} 1.0' in text
