"""When to poll: a pure policy choosing the next printer-state interval for one source.

The policy spends polls where outcomes are due. Each active print carries the vendor's
estimate of its remaining time, so its end is predictable: the next poll is aimed just past the
earliest upcoming estimated end (``eta_margin``), and a print that is overdue (or aborting)
keeps the source on the active interval until it resolves or ``end_window`` passes. Otherwise
it polls at the base interval while anything prints, and slowly while the whole fleet is idle.

The budget is paced, not just guarded: the next poll is never sooner than
``pace * window / remaining`` (times the requests one cycle costs), which costs little while
the budget is full, stretches smoothly as it drains, and can never spend it dry within a
window, so the vendor's limit (or our own limiter) is never the thing that stops polling.
While nothing can come back yet (a fresh budget's first window) what is left is also spread
evenly until it can.

It never reads a clock: the poller passes ``now`` and the budget it observed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from printfleet.core.model import PrintStatus, Snapshot


@dataclass(frozen=True, slots=True)
class PollPolicy:
    """The intervals from ``[poll]`` plus how the policy treats estimated ends and the budget."""

    interval: timedelta = timedelta(seconds=15)
    active_interval: timedelta = timedelta(seconds=5)
    idle_interval: timedelta = timedelta(seconds=60)
    history_interval: timedelta = timedelta(seconds=60)
    # Formlabs Fleet Control queues (``[poll] queue_interval``); see :func:`queue_delay`.
    queue_interval: timedelta = timedelta(minutes=5)
    # The most of the request budget queue reads may take, on average.
    queue_share: float = 0.1
    # The poll aimed at a print's estimated end lands this long after it (clock skew, rounding).
    eta_margin: timedelta = timedelta(seconds=1)
    # A print past its estimated end by up to this keeps the source on the active interval:
    # the estimate was optimistic and the outcome is due any moment.
    end_window: timedelta = timedelta(minutes=2)
    # A printer whose state changed this recently keeps the source on the active interval.
    # Off by default: in a fleet some printer changes every minute, which would pin the whole
    # source to the active interval, while resin printers' follow-up transitions (outcomes)
    # are minutes or hours away and already covered by the estimated end.
    settle_window: timedelta = timedelta(0)
    # Budget pacing: the next poll waits at least pace * window * cost / remaining. Under
    # sustained demand this settles at spending 1 / (1 + pace) of the budget (printer polls
    # and history together), keeping the rest for lookups and retries.
    pace: float = 0.25


@dataclass(frozen=True, slots=True)
class Budget:
    """The request budget as the poller saw it (see ``sources.base.BudgetStatus``).

    ``refill_in_s``: seconds before any spent request comes back; a fresh budget gets nothing
    back until its first window has passed (0 when unknown or when requests are returning).
    """

    remaining: float
    capacity: float
    window_s: float
    refill_in_s: float = 0.0


@dataclass(frozen=True, slots=True)
class PollDecision:
    delay_s: float
    reason: str  # "eta", "active", "base", "idle", "budget" (for logs and tests)


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
    next_end: float | None = None
    if snapshot is None:
        wanted, reason = policy.interval, "base"
    else:
        due, next_end = _outcomes(snapshot, now, policy.end_window)
        settling = (
            last_change_at is not None
            and policy.settle_window > timedelta(0)
            and now - last_change_at <= policy.settle_window
        )
        if due or settling:
            wanted, reason = policy.active_interval, "active"
        elif not _any_active_print(snapshot):
            wanted, reason = policy.idle_interval, "idle"
        else:
            wanted, reason = policy.interval, "base"
    delay = wanted.total_seconds()
    if next_end is not None:
        aimed = next_end + policy.eta_margin.total_seconds()
        if aimed < delay:
            delay, reason = aimed, "eta"
    if budget is not None and budget.capacity > 0 and budget.window_s > 0:
        floor = _budget_floor(budget, policy, requests_per_poll)
        if floor > delay:
            return PollDecision(floor, "budget")
    return PollDecision(delay, reason)


def _budget_floor(budget: Budget, policy: PollPolicy, requests_per_poll: float) -> float:
    """The shortest delay the budget allows.

    Pacing is harmonic: at most ``remaining / pace`` requests' worth per window, i.e. one poll
    every ``pace * window * cost / remaining``. Spending ``remaining`` that way takes
    ``pace * window * ln(remaining)`` (a harmonic sum), longer than a window once the budget is
    above ``e ** (1 / pace)`` requests, by which time requests come back as the window slides:
    the budget never runs dry, and under steady demand ``remaining`` settles near
    ``capacity * pace / (1 + pace)``. It is deliberately uncapped: any cap lets the last few
    requests go at a fixed pace and spends the budget dry, after which our own limiter stops
    polling until the window slides (up to an hour).

    While nothing comes back (``refill_in_s``, e.g. a fresh budget's first window) what is
    left above that steady level is also spread evenly until requests return. Harmonic pacing
    alone would front-load a fresh budget: polls minutes apart at the end of its first window,
    and that pattern echoing through the next windows as the early requests return together.

    The cost of a cycle is the printer fetch plus its share of the history fetch, which is due
    every ``history_interval``: ``requests_per_poll + min(1, delay / history_interval)``.
    """
    window = budget.window_s
    remaining = max(budget.remaining, 1.0)
    # Requests' worth per window (pace 0 turns harmonic pacing off).
    allowed = remaining / policy.pace if policy.pace > 0 else float("inf")
    if budget.refill_in_s > 0:
        spare = remaining - budget.capacity * policy.pace / (1 + policy.pace)
        if spare > 0:
            allowed = min(allowed, spare * window / budget.refill_in_s)
    return _delay_for(allowed, window, requests_per_poll, policy.history_interval.total_seconds())


def _delay_for(allowed: float, window: float, requests_per_poll: float, history_s: float) -> float:
    """The delay between cycles that spends ``allowed`` requests per ``window``, solving
    ``delay = window * (requests_per_poll + min(1, delay / history_s)) / allowed``."""
    if history_s > 0 and allowed > window / history_s:
        # Polls closer than history_interval share each history fetch.
        shared = window * requests_per_poll / (allowed - window / history_s)
        if shared < history_s:
            return shared
    return window * (requests_per_poll + 1) / allowed  # history due at every poll


def _any_active_print(snapshot: Snapshot) -> bool:
    return any(
        p.current_print is not None and p.current_print.status.is_active
        for p in snapshot.printers.values()
    )


# An estimate is only meaningful while the print is moving towards its end.
_PROGRESSING = frozenset({PrintStatus.PREPARING, PrintStatus.PRINTING})


def _outcomes(snapshot: Snapshot, now: datetime, window: timedelta) -> tuple[bool, float | None]:
    """Whether an outcome is due now, and seconds until the earliest upcoming estimated end.

    An outcome is due when a print is aborting, or progressing and past its estimated end by
    at most ``window``. A paused or waiting print has no meaningful end yet. ``remaining_s`` is
    the vendor's estimate as of the printer's last report (``last_seen_at``), else as of the
    snapshot; a report time ahead of the snapshot is not believed.
    """
    due = False
    soonest: float | None = None
    for printer in snapshot.printers.values():
        run = printer.current_print
        if run is None:
            continue
        if run.status is PrintStatus.ABORTING:
            due = True
            continue
        if run.status not in _PROGRESSING or run.remaining_s is None:
            continue
        seen = printer.last_seen_at
        believable = seen is not None and seen.tzinfo is not None and seen <= snapshot.taken_at
        ref = seen if believable and seen is not None else snapshot.taken_at
        left = (ref - now).total_seconds() + run.remaining_s
        if left > 0:
            soonest = left if soonest is None else min(soonest, left)
        elif left >= -window.total_seconds():
            due = True
    return due, soonest


def is_due(last: datetime | None, now: datetime, interval: timedelta) -> bool:
    """Whether a resource fetched at ``last`` should be fetched again at ``now``."""
    return last is None or now - last >= interval


def queue_delay(policy: PollPolicy, requests: int, budget: Budget | None) -> timedelta:
    """The wait before the next queue read, which cost ``requests`` last time.

    ``queue_interval``, stretched so queue reads (``1 + Fleet Control groups`` requests on
    Formlabs) average at most ``queue_share`` of the budget: 1350/h and a 10% share allow
    135 queue requests an hour, i.e. 10 groups every 5 minutes, or 100 groups every 45.
    Queues move on the scale of jobs (minutes to hours) and back a 2 h backlog threshold, so
    a slower queue never delays printer state, which keeps the rest of the budget.
    """
    if budget is None or budget.capacity <= 0 or budget.window_s <= 0 or policy.queue_share <= 0:
        return policy.queue_interval
    stretched = timedelta(
        seconds=max(0, requests) * budget.window_s / (budget.capacity * policy.queue_share)
    )
    return max(policy.queue_interval, stretched)
