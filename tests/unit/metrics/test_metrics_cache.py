"""/metrics from cached blocks: the same text as a fresh render, and gzip that decodes to it."""

from __future__ import annotations

import dataclasses
import gzip
import random
import zlib
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from tests.unit.metrics.test_metrics import Holder, event, make_printer, samples

from printfleet.core.events import EventType
from printfleet.core.fleet import AccountHealth, FleetView
from printfleet.core.model import Material, Printer, PrinterStatus, Snapshot, Vendor
from printfleet.metrics.exposition import exposition, exposition_blocks, gzip_body
from printfleet.metrics.fleet import (
    PRINTER_FAMILIES,
    FleetCollector,
    _printer_text,
    printer_samples,
)
from printfleet.metrics.observer import Metrics

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def view_of(sources: dict[str, list[Printer]]) -> FleetView:
    return FleetView(
        snapshots={
            name: Snapshot(
                source=name,
                vendor=Vendor.FORMLABS,
                taken_at=T0,
                printers={p.serial: p for p in printers},
            )
            for name, printers in sources.items()
        },
        health={name: AccountHealth(up=True, last_success_at=T0) for name in sources},
    )


def fresh_text(view: FleetView) -> bytes:
    """What a collector that never saw an earlier view writes for ``view``."""
    registry = CollectorRegistry()
    registry.register(FleetCollector(Holder(view)))
    return exposition(registry)


def step(rng: random.Random, sources: dict[str, list[Printer]], serial: list[int]) -> None:
    """One poll's worth of changes, as vendors make them (mutates ``sources``)."""
    for name in list(sources):
        printers = sources[name]
        for i, printer in enumerate(printers):
            roll = rng.random()
            if roll < 0.15 and printer.current_print is not None:  # moved on: a new object
                job = dataclasses.replace(printer.current_print, progress=rng.random())
                printers[i] = dataclasses.replace(printer, current_print=job)
            elif roll < 0.25:  # the same values in a new object (identity lost)
                printers[i] = dataclasses.replace(printer)
            elif roll < 0.3:
                status = rng.choice(list(PrinterStatus))
                printers[i] = dataclasses.replace(printer, status=status, online=roll < 0.28)
            elif roll < 0.32:
                printers[i] = dataclasses.replace(printer, name=f'renamed "{rng.random()}"')
        if printers and rng.random() < 0.3:
            printers.pop(rng.randrange(len(printers)))  # a printer left the account
        if rng.random() < 0.3:
            serial[0] += 1
            printers.insert(rng.randrange(len(printers) + 1), make_printer(f"New-{serial[0]}"))
        if rng.random() < 0.1:
            rng.shuffle(printers)  # the vendor listed them in another order
    if rng.random() < 0.15 and len(sources) > 1:
        del sources[rng.choice(list(sources))]  # a source removed
    if rng.random() < 0.15:
        serial[0] += 1
        sources[f"site-{serial[0]}"] = [make_printer(f"S{serial[0]}-{i}") for i in range(3)]


@pytest.mark.parametrize("seed", range(6))
def test_cached_blocks_equal_a_fresh_full_render_over_many_polls(seed: int) -> None:
    """Over polls that change, keep, re-create, remove, add and reorder printers and sources,
    the cached exposition is byte for byte what a fresh collector writes, and the same
    samples as generate_latest."""
    rng = random.Random(seed)
    sources = {
        "lab": [make_printer(f"Form4-{i}") for i in range(8)],
        "plant": [make_printer(f"M2-{i}", vendor=Vendor.CARBON, materials=()) for i in range(5)],
    }
    counter = [0]
    holder = Holder(view_of(sources))
    registry = CollectorRegistry()
    registry.register(FleetCollector(holder))
    for poll in range(25):
        if poll % 4 == 3:
            pass  # no poll between two scrapes: the very same view again
        else:
            step(rng, sources, counter)
            holder.view = view_of({name: list(p) for name, p in sources.items()})
        cached = exposition(registry)
        assert cached == fresh_text(holder.view), f"poll {poll}"
        assert samples(cached.decode()) == samples(generate_latest(registry).decode())


def test_a_source_whose_snapshot_is_the_same_object_is_not_rendered_again() -> None:
    """An unchanged snapshot (another source polled) reuses its blocks as they are."""
    holder = Holder(view_of({"lab": [make_printer("A")], "plant": [make_printer("B")]}))
    registry = CollectorRegistry()
    registry.register(FleetCollector(holder))
    lab_blocks = [b for b in exposition_blocks(registry) if b'source="lab",serial=' in b.data]
    lab = holder.view.snapshots["lab"]
    holder.view = holder.view.with_source(
        "plant",
        snapshot=Snapshot(
            source="plant",
            vendor=Vendor.FORMLABS,
            taken_at=T0,
            printers={"B": make_printer("B", online=False)},
        ),
        health=AccountHealth(up=True, last_success_at=T0),
    )
    assert holder.view.snapshots["lab"] is lab
    after = exposition_blocks(registry)
    assert b'printfleet_printer_up{source="plant",serial="B"} 0.0' in b"".join(
        b.data for b in after
    )
    kept = [b for b in after if b'source="lab",serial=' in b.data]
    assert len(kept) == len(lab_blocks)
    assert all(new is old for new, old in zip(kept, lab_blocks, strict=True))


@pytest.mark.parametrize(
    "printer",
    [
        make_printer(),
        make_printer("Idle", current_print=None, online=False, group=None, firmware=None),
        make_printer('Q"uo\\te\nx', name="Fórm\ud800 ü", status=PrinterStatus.UNKNOWN),
        make_printer(
            "Slots",
            materials=(
                Material(slot="A", capacity_ml=1000, remaining_ml=None),
                Material(slot='B"', capacity_ml=1000, remaining_ml=1000),
                Material(slot="C", capacity_ml=1000, remaining_ml=1, is_empty=True),
            ),
        ),
    ],
)
def test_the_direct_printer_text_has_exactly_the_printer_samples(printer: Printer) -> None:
    """The hand-written per-printer lines hold what printer_samples lists, family by family."""
    texts = _printer_text("lab", printer)
    for index, family in enumerate(PRINTER_FAMILIES):
        header = f"# HELP {family.name} x\n# TYPE {family.name} gauge\n"
        parsed = [
            (tuple(s.labels[n] for n in family.labels), s.value)
            for f in text_string_to_metric_families(header + texts[index].decode())
            for s in f.samples
        ]
        expected = [
            (labels, value) for (i, labels, value) in printer_samples("lab", printer) if i == index
        ]
        assert parsed == expected, family.name


def test_gzip_body_is_one_member_that_decodes_to_the_plain_text() -> None:
    """The gzip scrape body is a single gzip member (every client reads it whole), equal to the
    plain text once decoded, also after blocks changed and were compressed again."""
    holder = Holder(view_of({"lab": [make_printer(f"P{i}") for i in range(50)]}))
    registry = CollectorRegistry()
    registry.register(FleetCollector(holder))
    for progress in (0.1, 0.2):
        job = make_printer().current_print
        assert job is not None
        moved = dataclasses.replace(job, progress=progress)
        printers = [make_printer(f"P{i}", current_print=moved) for i in range(50)]
        holder.view = view_of({"lab": printers})
        blocks = exposition_blocks(registry)
        body = b"".join(gzip_body(blocks))
        plain = b"".join(block.data for block in blocks)
        assert gzip.decompress(body) == plain
        decoder = zlib.decompressobj(wbits=31)  # one member: nothing left over after it
        assert decoder.decompress(body) == plain
        assert decoder.eof
        assert decoder.unused_data == b""


def test_print_counters_blocks_follow_counts_and_removals() -> None:
    """prints_total from cached per-source blocks moves with events and forgets removed
    printers and sources."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    view = view_of({"lab": [make_printer("A"), make_printer("B")], "plant": [make_printer("C")]})
    metrics.track_fleet(view)
    metrics.track_fleet(view)  # the same snapshots again: nothing to do
    assert (
        registry.get_sample_value(
            "printfleet_prints_total", {"source": "lab", "serial": "A", "result": "finished"}
        )
        == 0.0
    )
    metrics.event_emitted(event(EventType.PRINT_FINISHED, "A"))
    assert b'printfleet_prints_total{result="finished",serial="A",source="lab"} 1.0' in (
        exposition(registry)
    )
    metrics.event_emitted(event(EventType.PRINTER_REMOVED, "B"))
    text = exposition(registry)
    assert b'serial="B"' not in text
    assert b'serial="C"' in text
    metrics.prints.forget_source("plant")
    assert b'serial="C"' not in exposition(registry)
    stock = {s for s in samples(generate_latest(registry).decode()) if "_created" not in s[0]}
    assert samples(exposition(registry).decode()) == stock
