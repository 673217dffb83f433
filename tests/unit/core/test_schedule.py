"""The poll policy: aimed at estimated ends, fast when an outcome is due, slow when idle, paced."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from printfleet.core.model import (
    Print,
    Printer,
    PrinterStatus,
    PrintStatus,
    Snapshot,
    Vendor,
)
from printfleet.core.polling import Budget, PollPolicy, is_due, next_poll

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
POLICY = PollPolicy(
    interval=timedelta(seconds=15),
    active_interval=timedelta(seconds=5),
    idle_interval=timedelta(seconds=60),
)
SETTLING = PollPolicy(settle_window=timedelta(minutes=1))


def _snapshot(
    remaining_s: float | None,
    status: PrintStatus = PrintStatus.PRINTING,
    *,
    last_seen_at: datetime | None = None,
) -> Snapshot:
    run = (
        None
        if remaining_s is None
        else Print(
            id="r1", name="bracket", status=status, status_raw=status.value, remaining_s=remaining_s
        )
    )
    printer = Printer(
        serial="P1",
        name="P1",
        vendor=Vendor.FORMLABS,
        model="Form 4",
        model_code="FORM-4-0",
        status=PrinterStatus.PRINTING if run else PrinterStatus.IDLE,
        status_raw="PRINTING" if run else "IDLE",
        online=True,
        current_print=run,
        last_seen_at=last_seen_at,
    )
    return Snapshot(source="lab", vendor=Vendor.FORMLABS, taken_at=NOW, printers={"P1": printer})


@pytest.mark.parametrize(
    ("snapshot", "now", "expected_delay", "reason"),
    [
        (None, NOW, 15.0, "base"),
        (_snapshot(None), NOW, 60.0, "idle"),
        (_snapshot(3600), NOW, 15.0, "base"),
        (_snapshot(60), NOW, 15.0, "base"),
        (_snapshot(10), NOW, 11.0, "eta"),
        (_snapshot(10), NOW + timedelta(seconds=4), 7.0, "eta"),
        (_snapshot(10, last_seen_at=NOW - timedelta(seconds=8)), NOW, 3.0, "eta"),
        (_snapshot(10, last_seen_at=NOW + timedelta(seconds=8)), NOW, 11.0, "eta"),
        (_snapshot(10), NOW + timedelta(seconds=30), 5.0, "active"),
        (_snapshot(10), NOW + timedelta(minutes=5), 15.0, "base"),
        (_snapshot(600, PrintStatus.ABORTING), NOW, 5.0, "active"),
        (_snapshot(10, PrintStatus.PAUSED), NOW, 15.0, "base"),
        (_snapshot(10, PrintStatus.PAUSED), NOW + timedelta(seconds=30), 15.0, "base"),
        (_snapshot(60, PrintStatus.FINISHED), NOW, 60.0, "idle"),
    ],
    ids=[
        "first-poll",
        "idle-fleet",
        "printing",
        "end-further-than-one-interval",
        "aimed-just-past-the-estimated-end",
        "aim-counts-from-the-snapshot",
        "estimate-dates-from-the-last-report",
        "report-ahead-of-the-snapshot-not-believed",
        "overdue",
        "overdue-for-too-long",
        "aborting",
        "paused-has-no-end",
        "paused-is-never-overdue",
        "finished-is-idle",
    ],
)
def test_interval_follows_fleet_activity(
    snapshot: Snapshot | None, now: datetime, expected_delay: float, reason: str
) -> None:
    """The delay is aimed at the next estimated end, else active, base or idle by activity."""
    decision = next_poll(snapshot, now=now, last_change_at=None, policy=POLICY)
    assert (decision.delay_s, decision.reason) == (expected_delay, reason)


@pytest.mark.parametrize(
    ("last_change", "expected_delay"),
    [(None, 15.0), (NOW - timedelta(seconds=30), 5.0), (NOW - timedelta(minutes=5), 15.0)],
    ids=["no-change", "just-changed", "changed-long-ago"],
)
def test_settle_window_keeps_a_changed_source_active(
    last_change: datetime | None, expected_delay: float
) -> None:
    """With a settle window, a recent change keeps the source on the active interval."""
    decision = next_poll(_snapshot(3600), now=NOW, last_change_at=last_change, policy=SETTLING)
    assert decision.delay_s == expected_delay


@pytest.mark.parametrize("ago", [timedelta(0), timedelta(seconds=1)])
def test_changes_alone_do_not_speed_polling_by_default(ago: timedelta) -> None:
    """By default a change in the fleet, even one this very instant, keeps the base pace."""
    decision = next_poll(_snapshot(3600), now=NOW, last_change_at=NOW - ago, policy=POLICY)
    assert (decision.delay_s, decision.reason) == (15.0, "base")


def test_earliest_estimated_end_wins() -> None:
    """Of several printing printers, the poll is aimed at the print that ends first."""
    soon, later = _snapshot(8).printers["P1"], _snapshot(12).printers["P1"]
    snapshot = Snapshot(
        source="lab",
        vendor=Vendor.FORMLABS,
        taken_at=NOW,
        printers={"P1": later, "P2": dataclasses.replace(soon, serial="P2")},
    )
    decision = next_poll(snapshot, now=NOW, last_change_at=None, policy=POLICY)
    assert (decision.delay_s, decision.reason) == (9.0, "eta")


def test_low_budget_stretches_the_interval() -> None:
    """With the budget nearly spent, polls slow down to stretch what is left."""
    budget = Budget(remaining=10, capacity=100, window_s=3600)
    decision = next_poll(
        _snapshot(3600), now=NOW, last_change_at=None, policy=POLICY, budget=budget
    )
    assert decision.reason == "budget"
    assert decision.delay_s >= 3600 / 100


def test_ample_budget_does_not_slow_polling() -> None:
    """A mostly unspent budget leaves the chosen interval alone."""
    budget = Budget(remaining=1000, capacity=1350, window_s=3600)
    decision = next_poll(_snapshot(10), now=NOW, last_change_at=None, policy=POLICY, budget=budget)
    assert (decision.delay_s, decision.reason) == (11.0, "eta")


@pytest.mark.parametrize(
    ("remaining", "expected"),
    [
        (600, 11.0),  # full: the aimed poll is not held back
        (60, 20.0),  # 900 / (60 - 15): polls 20 s apart share each history fetch
        (30, 60.0),  # 900 / (30 - 15) = 60 s: every poll carries the history fetch
        (20, 90.0),  # 900 * 2 / 20: slower than the history interval, uncapped
        (0, 1800.0),  # nothing left: as slow as one request at a time allows
    ],
)
def test_budget_pacing_grows_as_the_budget_drains(remaining: float, expected: float) -> None:
    """The floor is pace * window * cycle cost / remaining."""
    budget = Budget(remaining=remaining, capacity=600, window_s=3600)
    decision = next_poll(_snapshot(10), now=NOW, last_change_at=None, policy=POLICY, budget=budget)
    assert decision.delay_s == pytest.approx(expected)


def _spend_a_fresh_budget(capacity: int, *, fresh: bool, hours: int = 3) -> list[float]:
    """Poll as fast as pacing allows from a full budget (history due every minute riding
    along, requests coming back one window after they were spent); the delays chosen."""
    spent: list[float] = []
    t, last_history, delays = 0.0, -3600.0, []
    while t < hours * 3600:
        spent = [s for s in spent if s > t - 3600]
        cost = 1 + (t - last_history >= 60)
        if cost > 1:
            last_history = t
        assert capacity - len(spent) >= cost, f"ran dry at t={t:.0f}s"
        spent += [t] * cost
        budget = Budget(
            remaining=capacity - len(spent),
            capacity=capacity,
            window_s=3600,
            refill_in_s=max(0.0, 3600 - t) if fresh else 0.0,
        )
        delay = next_poll(
            _snapshot(0.5), now=NOW, last_change_at=None, policy=POLICY, budget=budget
        ).delay_s
        delays.append(delay)
        t += delay
    return delays


@pytest.mark.parametrize("capacity", [120, 240, 600, 1350])
def test_harmonic_pacing_never_spends_the_budget_dry(capacity: int) -> None:
    """Even without knowing when requests come back, pacing never exhausts the budget."""
    _spend_a_fresh_budget(capacity, fresh=False)


@pytest.mark.parametrize("capacity", [120, 240, 600, 1350])
def test_a_fresh_budget_is_spread_over_its_first_window(capacity: int) -> None:
    """Knowing nothing returns during the first window, polls never stall at its end."""
    delays = _spend_a_fresh_budget(capacity, fresh=True)
    steady = 3600 * 2 / (capacity / 1.25)  # a poll plus a history fetch, at the settled pace
    assert max(delays) <= 2 * steady


def test_first_window_pacing_spreads_what_is_left_until_requests_return() -> None:
    """A fresh budget spends what is above the settled reserve evenly over the window."""
    budget = Budget(remaining=240, capacity=240, window_s=3600, refill_in_s=3600)
    decision = next_poll(_snapshot(0.5), now=NOW, last_change_at=None, policy=POLICY, budget=budget)
    # 192 of 240 to spend within the hour, polls 3600 / (192 - 60) s apart sharing history
    assert decision.delay_s == pytest.approx(3600 / (192 - 60))


@pytest.mark.parametrize(
    ("last", "expected"),
    [(None, True), (NOW - timedelta(seconds=59), False), (NOW - timedelta(seconds=60), True)],
)
def test_is_due(last: datetime | None, expected: bool) -> None:
    """A resource is due when never fetched or when its interval has passed."""
    assert is_due(last, NOW, timedelta(seconds=60)) is expected
