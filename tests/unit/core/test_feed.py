"""The event feed as a second witness: Formlabs feed mapping and the poll/feed dedupe."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from printfleet.cli.rules import rules_test
from printfleet.config import DaemonConfig, RulesConfig, Settings
from printfleet.core.events import ChangeEvent, EventType, Severity, to_cloudevent
from printfleet.core.feed import (
    MAX_SEEN_IDS,
    FeedKind,
    FeedRecord,
    WitnessMemory,
    reconcile,
)
from printfleet.core.model import (
    Material,
    Print,
    Printer,
    PrinterStatus,
    PrintStatus,
    Snapshot,
    Vendor,
    frozen_mapping,
    iso,
)
from printfleet.sources.formlabs import MAX_FEED_RECORDS, _capped_feed
from printfleet.sources.formlabs_map import (
    FEED_MESSAGE_CHARS,
    FEED_TYPE_CHARS,
    map_feed,
)

T0 = datetime(2026, 12, 1, 8, tzinfo=UTC)
SERIAL = "Form4-Fox"
PID = "run-1"


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


# -- the Formlabs mapping ----------------------------------------------------------------------


def raw_event(ident: int, kind: str, minutes: float, **extra: Any) -> dict[str, Any]:
    return {
        "id": ident,
        "printer": SERIAL,
        "created_at": at(minutes).isoformat().replace("+00:00", "Z"),
        "print_run": None,
        "tank": None,
        "cartridge": None,
        "type": kind,
        "type_label": kind.title(),
        "action": "",
        "message": f"{kind} happened",
        "was_read": False,
        "group": None,
        **extra,
    }


def test_feed_types_map_to_kinds_and_unknown_ones_are_kept_raw() -> None:
    page = {
        "count": 5,
        "next": None,
        "previous": None,
        "results": [
            raw_event(1, "RESIN_LOW", 1, cartridge="CRT-1"),
            raw_event(2, "PRINT_PAUSED", 2, print_run={"guid": PID, "status": "PAUSED"}),
            raw_event(3, "PRINT_RESUMED", 3, print_run={"guid": PID, "status": "PRINTING"}),
            raw_event(4, "PRINT_FINISHED", 4, print_run={"guid": PID, "status": "FINISHED"}),
            raw_event(5, "PRINTING_REPORT", 5),
            raw_event(6, "TANK_SOMETHING_NEW", 6, tank="TNK-1"),
        ],
    }
    records = map_feed(page)
    assert [(r.id, r.kind, r.known) for r in records] == [
        ("1", FeedKind.MATERIAL_LOW, True),
        ("2", FeedKind.PAUSED, True),
        ("3", FeedKind.RESUMED, True),
        ("4", FeedKind.COVERED, True),
        ("5", FeedKind.OTHER, True),
        ("6", FeedKind.OTHER, False),
    ]
    assert records[0].cartridge == "CRT-1"
    assert records[1].print_id == PID
    assert records[5].tank == "TNK-1"
    assert records[0].created_at == at(1)


def test_feed_records_without_id_type_or_time_are_left_out_and_texts_are_capped() -> None:
    long = "x" * 10_000
    records = map_feed(
        [
            "not an object",
            {**raw_event(1, "RESIN_LOW", 1), "id": None},
            {**raw_event(2, "RESIN_LOW", 1), "type": 7},
            {**raw_event(3, "RESIN_LOW", 1), "created_at": "yesterday-ish"},
            {**raw_event(4, "NEW_" + long, 1), "message": long, "type_label": long},
        ]
    )
    assert len(records) == 1
    record = records[0]
    assert len(record.type) == FEED_TYPE_CHARS
    assert len(record.message) == FEED_MESSAGE_CHARS
    assert len(record.type_label) <= 120
    assert not record.known


# -- the dedupe --------------------------------------------------------------------------------


def run(status: PrintStatus) -> Print:
    return Print(
        id=PID, name="crowns", status=status, status_raw=status.value, printer_serial=SERIAL
    )


def printer(status: PrintStatus | None = PrintStatus.PRINTING, cartridge: str = "CRT-1") -> Printer:
    return Printer(
        serial=SERIAL,
        name="Fox",
        vendor=Vendor.FORMLABS,
        model="Form 4",
        model_code="FORM-4-0",
        status=PrinterStatus.PRINTING,
        status_raw="PRINTING",
        online=True,
        current_print=run(status) if status is not None else None,
        materials=(
            Material(
                slot="main", serial=cartridge, name="Grey V5", capacity_ml=1000, remaining_ml=120
            ),
        ),
    )


def snap(minutes: float, p: Printer | None = None) -> Snapshot:
    p = p or printer()
    return Snapshot(
        source="lab",
        vendor=Vendor.FORMLABS,
        taken_at=at(minutes),
        printers=frozen_mapping({p.serial: p}),
    )


def feed(ident: int, kind: FeedKind, minutes: float, **kw: Any) -> FeedRecord:
    return FeedRecord(
        id=str(ident),
        type={
            FeedKind.MATERIAL_LOW: "RESIN_LOW",
            FeedKind.PAUSED: "PRINT_PAUSED",
            FeedKind.RESUMED: "PRINT_RESUMED",
            FeedKind.COVERED: "PRINT_START",
            FeedKind.OTHER: "SOMETHING_NEW",
        }[kind],
        kind=kind,
        created_at=at(minutes),
        type_label="label",
        message="text",
        printer_serial=SERIAL,
        print_id=PID if kind in (FeedKind.PAUSED, FeedKind.RESUMED) else None,
        cartridge="CRT-1" if kind is FeedKind.MATERIAL_LOW else None,
        known=kind is not FeedKind.OTHER,
    )


def polled(kind: EventType, minutes: float, **details: Any) -> ChangeEvent:
    """An event as the differ makes it (the id scheme does not matter here)."""
    return ChangeEvent(
        id=f"poll-{kind.value}-{minutes}",
        type=kind,
        source="lab",
        vendor=Vendor.FORMLABS,
        subject=SERIAL,
        time=at(minutes),
        severity=Severity.INFO,
        printer=printer(),
        print=run(PrintStatus.PAUSED) if kind.value.startswith("print.") else None,
        details=frozen_mapping(details),
    )


class Cycles:
    """Feeds cycles through :func:`reconcile` with the memory carried (and persisted) between."""

    def __init__(self) -> None:
        self.memory = WitnessMemory()
        self.previous: Snapshot | None = snap(0)

    def cycle(
        self,
        minutes: float,
        poll: Sequence[ChangeEvent] = (),
        records: Sequence[FeedRecord] = (),
        current: Snapshot | None = None,
    ) -> list[ChangeEvent]:
        current = current or snap(minutes)
        result = reconcile(
            poll, records, self.memory, previous=self.previous, current=current, now=at(minutes)
        )
        # Through JSON, as the store keeps it: a restart between any two cycles changes nothing.
        self.memory = WitnessMemory.from_state(json.loads(json.dumps(result.memory.to_state())))
        self.previous = current
        return result.events


def kinds(events: list[ChangeEvent]) -> list[tuple[str, str]]:
    return [(e.type.value, e.details.get("witness", "")) for e in events]


def test_a_pause_and_resume_between_two_polls_are_both_reported_in_order_at_vendor_times() -> None:
    c = Cycles()
    events = c.cycle(10, records=[feed(2, FeedKind.RESUMED, 7), feed(1, FeedKind.PAUSED, 3)])
    assert kinds(events) == [("print.paused", "feed"), ("print.resumed", "feed")]
    assert [e.time for e in events] == [at(3), at(7)]
    assert all(e.print is not None and e.print.id == PID for e in events)
    assert events[0].details["vendor_event"] == {
        "id": "1",
        "type": "PRINT_PAUSED",
        "type_label": "label",
        "message": "text",
        "created_at": iso(at(3)),
    }


def test_the_feed_arriving_after_the_poll_adds_nothing() -> None:
    c = Cycles()
    assert kinds(c.cycle(5, poll=[polled(EventType.PRINT_PAUSED, 5)])) == [("print.paused", "poll")]
    assert kinds(c.cycle(9, poll=[polled(EventType.PRINT_RESUMED, 9)])) == [
        ("print.resumed", "poll")
    ]
    late = c.cycle(20, records=[feed(1, FeedKind.PAUSED, 4), feed(2, FeedKind.RESUMED, 8)])
    assert late == []


def test_the_feed_first_then_the_poll_adds_nothing() -> None:
    c = Cycles()
    assert kinds(c.cycle(5, records=[feed(1, FeedKind.PAUSED, 4)])) == [("print.paused", "feed")]
    assert c.cycle(6, poll=[polled(EventType.PRINT_PAUSED, 6)]) == []
    assert kinds(c.cycle(9, records=[feed(2, FeedKind.RESUMED, 8)])) == [("print.resumed", "feed")]
    assert c.cycle(10, poll=[polled(EventType.PRINT_RESUMED, 10)]) == []


def test_in_one_cycle_the_poll_wins_and_keeps_its_event() -> None:
    c = Cycles()
    mine = polled(EventType.PRINT_PAUSED, 5)
    events = c.cycle(5, poll=[mine], records=[feed(1, FeedKind.PAUSED, 4)])
    assert [e.id for e in events] == [mine.id]


def test_a_second_pause_after_a_feed_seen_resume_is_new() -> None:
    """Poll saw the pause; the feed then tells the resume and a pause again, which the poll
    cannot see (paused at both polls): both are new."""
    c = Cycles()
    c.cycle(5, poll=[polled(EventType.PRINT_PAUSED, 5)])
    events = c.cycle(
        15,
        records=[
            feed(1, FeedKind.PAUSED, 4),
            feed(2, FeedKind.RESUMED, 8),
            feed(3, FeedKind.PAUSED, 12),
        ],
    )
    assert kinds(events) == [("print.resumed", "feed"), ("print.paused", "feed")]


def test_low_then_swapped_between_polls_is_one_material_low_from_the_feed() -> None:
    c = Cycles()
    swapped = snap(10, printer(cartridge="CRT-2"))
    events = c.cycle(10, records=[feed(1, FeedKind.MATERIAL_LOW, 6)], current=swapped)
    assert kinds(events) == [("material.low", "feed")]
    low = events[0]
    assert low.details["cartridge"] == "CRT-1"
    assert low.details["slot"] == "main"  # read from the printer as it was before the swap
    assert low.details["material"] == "Grey V5"
    assert low.severity is Severity.WARNING
    assert c.cycle(11, records=[feed(1, FeedKind.MATERIAL_LOW, 6)]) == []  # re-read: by id


def test_material_low_is_told_once_whoever_sees_it_first_but_empty_is_news() -> None:
    c = Cycles()
    low = polled(EventType.MATERIAL_LOW, 5, cartridge="CRT-1", empty=False)
    assert kinds(c.cycle(5, poll=[low])) == [("material.low", "poll")]
    assert c.cycle(9, records=[feed(1, FeedKind.MATERIAL_LOW, 4)]) == []
    c2 = Cycles()
    c2.cycle(5, records=[feed(1, FeedKind.MATERIAL_LOW, 4)])
    assert c2.cycle(9, poll=[low]) == []
    empty = polled(EventType.MATERIAL_LOW, 20, cartridge="CRT-1", empty=True)
    assert kinds(c2.cycle(20, poll=[empty])) == [("material.low", "poll")]


def test_unmapped_types_become_vendor_events_and_covered_ones_nothing() -> None:
    c = Cycles()
    events = c.cycle(5, records=[feed(1, FeedKind.OTHER, 4), feed(2, FeedKind.COVERED, 4)])
    assert [e.type for e in events] == [EventType.VENDOR_EVENT]
    event = events[0]
    assert event.severity is Severity.INFO
    envelope = to_cloudevent(event)
    assert envelope["data"]["vendor_event"]["type"] == "SOMETHING_NEW"
    assert envelope["data"]["witness"] == "feed"
    assert envelope["subject"] == SERIAL


def test_other_poll_events_pass_untouched() -> None:
    c = Cycles()
    other = polled(EventType.PRINT_FINISHED, 5)
    assert c.cycle(5, poll=[other]) == [other]


def test_memory_is_bounded_and_survives_garbage() -> None:
    memory = WitnessMemory()
    for i in range(MAX_SEEN_IDS + 50):
        memory.seen[str(i)] = at(i / 1000)
    memory.prune(at(1))
    assert len(memory.seen) == MAX_SEEN_IDS
    assert "0" not in memory.seen
    memory.prune(at(60 * 24 * 30))
    assert memory.seen == {}
    assert WitnessMemory.from_state({"prints": {"x": "garbage"}, "seen": [1]}).prints == {}
    assert WitnessMemory.from_state("nonsense").to_state() == WitnessMemory().to_state()


def test_the_default_pack_logs_vendor_events_and_a_when_can_pick_a_type(tmp_path: Path) -> None:
    """``default-vendor-event`` matches (log-only, no receiver) and renders the vendor's
    label and text; ``data.vendor_event.type`` is what a notifying rule filters on."""
    event = Cycles().cycle(5, records=[feed(1, FeedKind.OTHER, 4)])[0]
    (tmp_path / "events.jsonl").write_text(json.dumps(to_cloudevent(event)) + "\n")
    (tmp_path / "pick.toml").write_text(
        '[[rule]]\nname = "pick"\non = ["vendor.event"]\n'
        "when = \"data.vendor_event.type == 'SOMETHING_NEW'\"\nnotify = []\n"
        'title = "{data.vendor_event.type}"\n'
        '[[rule]]\nname = "other"\non = ["vendor.event"]\n'
        "when = \"data.vendor_event.type == 'REMOTE_JOB_EXPIRED'\"\nnotify = []\n"
    )
    default = Path(__file__).parents[3] / "rules" / "default.toml"
    settings = Settings(
        daemon=DaemonConfig(state_dir=tmp_path / "state"),
        rules=RulesConfig(packs=(str(default), str(tmp_path / "pick.toml"))),
    )
    out = io.StringIO()
    assert rules_test(settings, tmp_path / "events.jsonl", out) == 0
    text = out.getvalue()
    assert "default-vendor-event  log-only" in text
    assert "title:    Fox: label" in text
    assert "text:     text (SOMETHING_NEW)" in text
    assert "pick                  log-only" in text
    assert "other" not in text
    assert "summary: 1 events; 2 log-only" in text


def test_a_read_takes_at_most_the_cap_and_the_cursor_stops_before_the_rest() -> None:
    """More entries than MAX_FEED_RECORDS: the oldest are kept and the watermark ends just
    before the first one left out, so the next read starts there (re-reads dedupe by id)."""
    records = [feed(i, FeedKind.OTHER, i / 60) for i in range(MAX_FEED_RECORDS + 20)]
    kept, resume = _capped_feed(list(reversed(records)), since=T0 - timedelta(seconds=1))
    assert [r.id for r in kept] == [r.id for r in records[:MAX_FEED_RECORDS]]
    assert resume is not None
    assert kept[-1].created_at <= resume < records[MAX_FEED_RECORDS].created_at
    few, none = _capped_feed(records[:3], since=T0)
    assert none is None
    assert len(few) == 3
    # All in one instant: taking them all is the only way forward.
    burst = [feed(i, FeedKind.OTHER, 1) for i in range(MAX_FEED_RECORDS + 5)]
    everything, no_resume = _capped_feed(burst, since=at(1) - timedelta(microseconds=1))
    assert (len(everything), no_resume) == (len(burst), None)
