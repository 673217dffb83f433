"""The poll policy: fast when something is about to happen, slow when idle, within budget."""

from __future__ import annotations

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
from printfleet.core.schedule import Budget, PollPolicy, is_due, next_poll

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
POLICY = PollPolicy(
    interval=timedelta(seconds=15),
    active_interval=timedelta(seconds=5),
    idle_interval=timedelta(seconds=60),
)


def _snapshot(remaining_s: float | None, status: PrintStatus = PrintStatus.PRINTING) -> Snapshot:
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
    )
    return Snapshot(source="lab", vendor=Vendor.FORMLABS, taken_at=NOW, printers={"P1": printer})


@pytest.mark.parametrize(
    ("snapshot", "last_change", "expected_delay", "reason"),
    [
        (None, None, 15.0, "base"),
        (_snapshot(None), None, 60.0, "idle"),
        (_snapshot(3600), None, 15.0, "base"),
        (_snapshot(60), None, 5.0, "active"),
        (_snapshot(3600), NOW - timedelta(seconds=30), 5.0, "active"),
        (_snapshot(3600), NOW - timedelta(minutes=5), 15.0, "base"),
        (_snapshot(60, PrintStatus.FINISHED), None, 60.0, "idle"),
    ],
    ids=[
        "first-poll",
        "idle-fleet",
        "printing",
        "near-end",
        "just-changed",
        "changed-long-ago",
        "finished-is-idle",
    ],
)
def test_interval_follows_fleet_activity(
    snapshot: Snapshot | None, last_change: datetime | None, expected_delay: float, reason: str
) -> None:
    """The delay is the active, base or idle interval depending on what the fleet is doing."""
    decision = next_poll(snapshot, now=NOW, last_change_at=last_change, policy=POLICY)
    assert (decision.delay_s, decision.reason) == (expected_delay, reason)


def test_low_budget_stretches_the_interval_to_a_sustainable_pace() -> None:
    """With the budget nearly spent, polls slow to what the budget refills."""
    budget = Budget(remaining=10, capacity=100, window_s=3600)
    decision = next_poll(_snapshot(60), now=NOW, last_change_at=None, policy=POLICY, budget=budget)
    assert decision.reason == "budget"
    assert decision.delay_s >= 3600 / 100


def test_ample_budget_does_not_slow_polling() -> None:
    """A mostly unspent budget leaves the chosen interval alone."""
    budget = Budget(remaining=1000, capacity=1350, window_s=3600)
    decision = next_poll(_snapshot(60), now=NOW, last_change_at=None, policy=POLICY, budget=budget)
    assert decision.delay_s == 5.0


@pytest.mark.parametrize(
    ("last", "expected"),
    [(None, True), (NOW - timedelta(seconds=59), False), (NOW - timedelta(seconds=60), True)],
)
def test_is_due(last: datetime | None, expected: bool) -> None:
    """A resource is due when never fetched or when its interval has passed."""
    assert is_due(last, NOW, timedelta(seconds=60)) is expected
