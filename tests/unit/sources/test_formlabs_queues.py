"""Fleet Control groups and queue items as normalized values: lenient, capped, counted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from printfleet.core.model import Queue, Snapshot, Vendor
from printfleet.core.polling import Budget, PollPolicy, queue_delay
from printfleet.core.queues import MAX_QUEUE_ITEMS
from printfleet.sources import formlabs_queues as fq
from printfleet.sources.mapping import TOO_DEEP
from printfleet.store import Store
from printfleet.testing import FakeClock

NOW = datetime(2025, 6, 18, 14, 30, tzinfo=UTC)


def group(gid: Any = "g1", *, fleet: Any = True, **extra: Any) -> dict[str, Any]:
    return {"id": gid, "name": "Lab", "printers": ["A", "B"], "has_fleet_control": fleet, **extra}


def test_only_fleet_control_groups_are_kept_and_bad_records_counted() -> None:
    records = [
        group("g1"),
        group("g2", fleet=False),
        group("g3", fleet="true"),  # lenient on the bool's spelling
        group("g4", fleet=None),
        "not a group",
        TOO_DEEP,
        {"name": "no id", "has_fleet_control": True},
        group("g1"),  # duplicate
    ]
    groups, skipped = fq.fleet_groups(records)
    assert [g.id for g in groups] == ["g1", "g3"]
    assert groups[0].printers == ("A", "B")
    assert [(s.kind, s.record_id, s.reason) for s in skipped] == [
        ("group", None, "not an object"),
        ("group", None, "nested too deep"),
        ("group", None, "missing id"),
        ("group", "g1", "duplicate"),
    ]


def test_group_shapes_are_read_leniently() -> None:
    odd = group("g1", name="x" * 500, printers=["A", {"serial": "B"}, 7, None, "A", {"no": 1}])
    groups, skipped = fq.fleet_groups([odd, group("g2", printers="A,B"), group("g3", name=None)])
    assert groups[0].name == "x" * fq.MAX_NAME_CHARS
    assert groups[0].printers == ("A", "B", "7")
    assert groups[1].printers == ()
    assert groups[2].name == "g3"
    assert skipped == []


def test_groups_beyond_the_cap_are_skipped_not_read() -> None:
    records = [group(f"g{i}") for i in range(fq.MAX_QUEUE_GROUPS + 3)]
    groups, skipped = fq.fleet_groups(records)
    assert len(groups) == fq.MAX_QUEUE_GROUPS
    assert [s.reason for s in skipped] == [fq.REASON_TOO_MANY_GROUPS] * 3


def test_queue_items_are_counted_leniently_and_dated_by_the_oldest() -> None:
    g = fq.FleetGroup("g1", "Lab", ("A",))
    items: list[Any] = [
        {"id": "1", "created_at": "2025-06-18T13:55:20Z"},
        {"id": "2", "created_at": "2025-06-18T12:00:00+00:00", "volume_ml": "lots"},
        {"created_at": "not a time"},  # still a job
        {},  # still a job
        {"created_at": "2031-01-01T00:00:00Z"},  # from the future: not the oldest
        42,
        TOO_DEEP,
    ]
    queue, skipped = fq.map_queue(g, items, NOW)
    assert queue == Queue(
        key="g1",
        name="Lab",
        items=5,
        printers=("A",),
        oldest_at=datetime(2025, 6, 18, 12, 0, tzinfo=UTC),
        as_of=NOW,
    )
    assert [(s.kind, s.reason) for s in skipped] == [
        ("queue_item", "not an object"),
        ("queue_item", "nested too deep"),
    ]


def test_queue_counts_are_capped() -> None:
    g = fq.FleetGroup("g1", "Lab", ())
    queue, _ = fq.map_queue(g, ({} for _ in range(MAX_QUEUE_ITEMS + 50)), NOW)
    assert queue.items == MAX_QUEUE_ITEMS


@pytest.mark.parametrize(
    ("requests", "minutes"),
    [(1, 5), (2, 5), (11, 5), (12, 5.33), (101, 44.9), (201, 89.3)],
)
def test_queue_delay_keeps_queue_reads_within_a_tenth_of_the_budget(
    requests: int, minutes: float
) -> None:
    budget = Budget(remaining=1000, capacity=1350, window_s=3600)
    delay = queue_delay(PollPolicy(), requests, budget)
    assert delay.total_seconds() / 60 == pytest.approx(minutes, abs=0.05)
    assert requests * 3600 / delay.total_seconds() <= 135.0 + 1e-3
    assert queue_delay(PollPolicy(), requests, None) == timedelta(minutes=5)


def test_the_store_keeps_queues(tmp_path: Any) -> None:
    clock = FakeClock(NOW)
    q = Queue("g1", "Lab", 3, ("A",), NOW - timedelta(hours=1), NOW)
    snap = Snapshot("lab", Vendor.FORMLABS, NOW, {}, queues={"g1": q})
    with Store.open(tmp_path / "state.db", clock=clock) as store:
        store.commit(snapshot=snap)
    with Store.open(tmp_path / "state.db", clock=clock) as store:
        loaded = store.load_snapshot("lab")
        assert loaded is not None
        assert loaded.queues == {"g1": q}
        store.commit(snapshot=Snapshot("lab", Vendor.FORMLABS, NOW + timedelta(minutes=5), {}))
    with Store.open(tmp_path / "state.db", clock=clock) as store:
        loaded = store.load_snapshot("lab")
        assert loaded is not None
        assert loaded.queues == {}
