"""When to poll: a pure policy choosing the next printer-state interval for one source.

The policy polls fast while something is about to happen (a print close to its estimated
end, a printer that just changed), slowly while the whole fleet is idle, and stretches any
interval when the request budget runs low, so the vendor's limit is never the thing that
stops us. It never reads a clock: the poller passes ``now`` and the budget it observed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from printfleet.core.model import Snapshot


@dataclass(frozen=True, slots=True)
class PollPolicy:
    """The intervals from ``[poll]`` plus how close to an ETA counts as "about to finish"."""

    interval: timedelta = timedelta(seconds=15)
    active_interval: timedelta = timedelta(seconds=5)
    idle_interval: timedelta = timedelta(seconds=60)
    history_interval: timedelta = timedelta(seconds=60)
    # A print whose estimated end is within this window (or overdue by up to it) is "near its end".
    end_window: timedelta = timedelta(minutes=2)
    # A printer whose state changed this recently keeps the source on the active interval.
    settle_window: timedelta = timedelta(minutes=1)
    # Fraction of the budget window kept in reserve for history, lookups and retries.
    reserve: float = 0.25


@dataclass(frozen=True, slots=True)
class Budget:
    """The request budget as the poller saw it (see ``sources.base.BudgetStatus``)."""

    remaining: float
    capacity: float
    window_s: float


@dataclass(frozen=True, slots=True)
class PollDecision:
    delay_s: float
    reason: str  # "active", "base", "idle", "budget" (for logs and tests)


def next_poll(
    snapshot: Snapshot | None,
    *,
    now: datetime,
    last_change_at: datetime | None,
    policy: PollPolicy,
    budget: Budget | None = None,
    requests_per_poll: float = 1.0,
) -> PollDecision:
    """Choose the delay before the next printer-state fetch.

    Args:
        snapshot: the latest good snapshot (``None`` before the first success).
        last_change_at: when the differ last produced a printer or print event.
        budget: the source's budget right now; ``None`` means unlimited.
        requests_per_poll: how many requests one printer fetch costs (pages).
    """
    if snapshot is None:
        wanted, reason = policy.interval, "base"
    elif (
        last_change_at is not None and now - last_change_at <= policy.settle_window
    ) or _print_near_end(snapshot, now, policy.end_window):
        wanted, reason = policy.active_interval, "active"
    elif not _any_active_print(snapshot):
        wanted, reason = policy.idle_interval, "idle"
    else:
        wanted, reason = policy.interval, "base"
    delay = wanted.total_seconds()
    if budget is not None and budget.capacity > 0 and budget.window_s > 0:
        sustainable = budget.window_s / budget.capacity * requests_per_poll / (1 - policy.reserve)
        # Running low: fall back to a pace the budget can sustain indefinitely.
        if budget.remaining < budget.capacity * policy.reserve and sustainable > delay:
            return PollDecision(sustainable, "budget")
    return PollDecision(delay, reason)


def _any_active_print(snapshot: Snapshot) -> bool:
    return any(
        p.current_print is not None and p.current_print.status.is_active
        for p in snapshot.printers.values()
    )


def _print_near_end(snapshot: Snapshot, now: datetime, window: timedelta) -> bool:
    for printer in snapshot.printers.values():
        run = printer.current_print
        if run is None or not run.status.is_active or run.remaining_s is None:
            continue
        # remaining_s was estimated at taken_at; project it to now.
        eta = snapshot.taken_at + timedelta(seconds=run.remaining_s)
        if eta - window <= now <= eta + window:
            return True
    return False


def is_due(last: datetime | None, now: datetime, interval: timedelta) -> bool:
    """Whether a resource fetched at ``last`` should be fetched again at ``now``."""
    return last is None or now - last >= interval
