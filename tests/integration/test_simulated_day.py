"""A simulated day: 50 Formlabs printers, 24 hours, scored against the simulator's ground truth.

The real ``FormlabsSource`` (built by ``make_source`` from a ``SourceConfig`` with a tight
``budget_per_hour``) and the real ``SourcePoller`` with the default ``PollPolicy`` watch the
simulator (seeded, with printer churn) over real HTTP. Both share one fake clock driven by
``tests.simtime``: HTTP happens while simulated time stands still, and time jumps from one
sleeper's deadline to the next, so nothing sleeps and a day takes under a minute of real time
(about 4,600 requests, each mapped and diffed for real).

Scoring (each transition kind maps one-to-one onto the printfleet event type of the same name):

* print events match on (type, printer serial, print id); the simulator's print id is the run
  guid, which is printfleet's print id;
* printer events (``offline``, ``online``, ``added``, ``removed``) match on (type, serial),
  occurrences paired in time order;
* ``print.rated`` matches on (type, serial, print id) like the other print events, and the
  verdict must agree (the simulator's ``detail`` is the event's ``verdict``): a person rates
  a run while it is still the printer's current run, hours after its outcome at most;
* ``material.low`` matches on (type, serial, cartridge serial): the simulator records one per
  cartridge crossing 15 % (``detail``), the differ emits one per cartridge crossing
  ``material_low_ratio`` (0.15) with the cartridge in ``details["cartridge"]``.

Event types the simulator records no truth for are not scored: ``printer.status_changed`` (a
consequence of the print transitions, no separate truth), ``print.progress`` (milestones, not
transitions), ``printer.alert`` (attention states such as "needs confirmation to print" and
"waiting for resolution"), ``tank.attention`` (tank wear), and ``source.*`` (about the account,
not the fleet; none occur without faults).

What no poller can see is taken out of the ground truth by explicit criteria (see
:func:`unobservable`), and the test asserts that this stays rare.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
from collections import defaultdict
from collections.abc import Iterator
from datetime import timedelta

import pytest
from tests.simtime import FORMLABS_PRINTERS, Detection, FleetRun, run_fleet

from printfleet.core.polling import PollPolicy
from printfleet.logs import forget_secrets
from printfleet.simulator import GroundTruthEvent

PRINTERS = 50
SEED = 2026
DAY = timedelta(hours=24)
# Keep polling after the scored day, so transitions near its end are still seen.
DRAIN = timedelta(minutes=15)
# Tight on purpose (16% of the simulator's 1500/h): unconstrained, the default policy spends
# about 310/h on this fleet (250 printer polls + 60 history fetches), so it has to stretch.
BUDGET_PER_HOUR = 240
OFFLINE_AFTER = timedelta(minutes=5)

#: Detections the event feed made (``details["witness"] == "feed"``), by type.
FEED_TYPES = ("material.low", "print.paused", "print.resumed")

SCORED = frozenset(
    {
        "print.started",
        "print.paused",
        "print.resumed",
        "print.finished",
        "print.failed",
        "print.aborted",
        "print.rated",
        "printer.offline",
        "printer.online",
        "printer.added",
        "printer.removed",
        "material.low",
    }
)

Key = tuple[str, str, str | None]


@pytest.fixture(scope="module")
def day() -> Iterator[FleetRun]:
    """One simulated day, shared by every test in this module (it is the expensive part)."""
    run = asyncio.run(
        run_fleet(
            printers=PRINTERS,
            seed=SEED,
            span=DAY + DRAIN,
            policy=PollPolicy(),
            budget_per_hour=BUDGET_PER_HOUR,
            offline_after=OFFLINE_AFTER,
            inventory=True,
            simulator={"churn": True},  # printers added and removed now and then
        )
    )
    yield run
    forget_secrets()


# -- matching -------------------------------------------------------------------------------


def truth_key(t: GroundTruthEvent) -> Key:
    kind = t.kind.value
    if kind.startswith("print."):
        return (kind, t.serial, t.print_id)
    if kind == "material.low":
        return (kind, t.serial, t.detail)
    return (kind, t.serial, None)


def detection_key(d: Detection) -> Key:
    event = d.event
    kind = event.type.value
    if kind.startswith("print."):
        return (kind, event.subject, event.print.id if event.print is not None else None)
    if kind == "material.low":
        return (kind, event.subject, event.details.get("cartridge"))
    return (kind, event.subject, None)


def match(
    run: FleetRun,
) -> tuple[list[tuple[GroundTruthEvent, Detection]], list[GroundTruthEvent], list[Detection]]:
    """Pair ground truth with detections: (pairs, unmatched truth, unmatched detections).

    Occurrences with the same key (a printer going offline twice) pair up in time order.
    Detections explained by a transition before the recorded day (:func:`before_the_day`)
    are set aside first, so they cannot shift that pairing.
    """
    truth: dict[Key, list[GroundTruthEvent]] = defaultdict(list)
    for t in sorted(run.truth, key=lambda t: t.time):
        truth[truth_key(t)].append(t)
    found: dict[Key, list[Detection]] = defaultdict(list)
    for d in sorted(run.detections, key=lambda d: d.seen_at):
        if d.event.type.value in SCORED and not before_the_day(run, d):
            found[detection_key(d)].append(d)
    pairs: list[tuple[GroundTruthEvent, Detection]] = []
    missed: list[GroundTruthEvent] = []
    extra: list[Detection] = []
    for key in truth.keys() | found.keys():
        ts, ds = truth[key], found[key]
        pairs.extend(zip(ts, ds, strict=False))
        missed.extend(ts[len(ds) :])
        extra.extend(ds[len(ts) :])
    return pairs, missed, extra


def scored_truth(run: FleetRun) -> list[GroundTruthEvent]:
    """Ground truth of the scored day (the drain after it only lets late detections arrive)."""
    return [t for t in run.truth if t.time <= run.end - DRAIN]


def unobservable(run: FleetRun) -> dict[GroundTruthEvent, str]:
    """Ground truth no poller of this API could report, with the reason (none left today).

    Polling alone misses a ``material.low`` for a cartridge the operator replaced in the same
    simulated second it crossed the threshold (the simulator swaps cartridges that cannot
    feed the next job when the printer is cleared): no printer record ever shows it low. The
    ``/events/`` feed has a ``RESIN_LOW`` entry for it, which printfleet reads as a second
    witness (``witness: "feed"``), so that case is scored like any other now; so are pauses
    that polling could not see (see :func:`test_the_feed_reports_what_polling_missed`).
    """
    return {}


def before_the_day(run: FleetRun, d: Detection) -> bool:
    """A ``printer.offline`` whose printer fell silent before the recorded day began.

    The simulator records ground truth from its start only; a printer that stopped pinging
    shortly before it crosses ``offline_after`` after the start, and the differ rightly
    reports it then (its ``last_seen_at`` proves the silence began before the start).
    """
    printer = d.event.printer
    return (
        d.event.type.value == "printer.offline"
        and printer is not None
        and printer.last_seen_at is not None
        and printer.last_seen_at < run.start
    )


# -- the budget -----------------------------------------------------------------------------


def test_no_sliding_hour_exceeds_the_budget(day: FleetRun) -> None:
    """In any sliding simulated hour the simulator saw at most the configured budget."""
    busiest, _ = day.max_requests_per_hour()
    assert 0 < busiest <= BUDGET_PER_HOUR


def test_the_vendor_never_answered_429(day: FleetRun) -> None:
    """The vendor's rate limit never had to step in."""
    statuses = {r.status for r in day.requests}
    assert statuses == {200}


def test_the_scheduler_stretches_instead_of_running_dry(day: FleetRun) -> None:
    """The budget binds, so polls spread out; yet none is refused and none stalls."""
    busiest, _ = day.max_requests_per_hour()
    assert busiest >= 0.75 * BUDGET_PER_HOUR
    polls = sorted(r.time for r in day.requests if r.path.startswith(FORMLABS_PRINTERS))
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(polls)]
    # With prints running all day the policy asks for the base interval (or sooner): spaced
    # wider than that, the polls were stretched by the budget.
    assert statistics.median(gaps) > PollPolicy().interval.total_seconds()
    assert day.failed_polls == 0  # our own limiter never had to refuse a request
    assert max(gaps) <= PollPolicy().idle_interval.total_seconds()


# -- recall and precision -------------------------------------------------------------------


def test_every_observable_transition_is_reported(day: FleetRun) -> None:
    """Recall is 100%: each real transition of the day yields the matching event."""
    _, missed, _ = match(day)
    skip = unobservable(day)
    scored = set(scored_truth(day))
    missing = [t for t in missed if t in scored and t not in skip]
    assert missing == []


def test_every_reported_transition_happened(day: FleetRun) -> None:
    """Precision is 100%: no scored event lacks a real transition behind it."""
    _, _, extra = match(day)
    assert extra == []


def test_ratings_carry_the_verdict_the_person_gave(day: FleetRun) -> None:
    """Each paired print.rated says the verdict the simulator recorded, and the day has some
    of each (the share of FINISHED prints rated FAILURE is the costly surprise)."""
    pairs, _, _ = match(day)
    rated = [(t, d) for t, d in pairs if t.kind.value == "print.rated"]
    assert rated
    assert [(t.detail, d.event.details["verdict"]) for t, d in rated] == [
        (t.detail, t.detail) for t, _ in rated
    ]
    assert {t.detail for t, _ in rated} == {"SUCCESS", "FAILURE"}


def test_events_are_reported_after_their_transition(day: FleetRun) -> None:
    """Every pairing is causal: detected no earlier than the transition happened."""
    pairs, _, _ = match(day)
    early = [(t, d) for t, d in pairs if d.seen_at < t.time]
    assert early == []


def test_unobservable_ground_truth_is_rare(day: FleetRun) -> None:
    """What is filtered out as unobservable stays a small share of the day's transitions."""
    scored = scored_truth(day)
    assert len(scored) > 500  # a busy day, or the percentages below mean little
    assert len(unobservable(day)) <= 0.02 * len(scored)
    earlier = [d for d in day.detections if before_the_day(day, d)]
    assert len(earlier) <= 0.01 * len(scored)


def test_the_feed_reports_what_polling_missed(day: FleetRun) -> None:
    """Every feed-witnessed event is a real transition polling had not reported, and the
    feed's unmapped entries (``CARTRIDGE_SWAPPED``) reach users as ``vendor.event``."""
    pairs, _, _ = match(day)
    by_feed = [d for _, d in pairs if d.event.details.get("witness") == "feed"]
    assert {d.event.type.value for d in by_feed} <= set(FEED_TYPES)
    # The cartridges swapped the instant they ran low are only in the feed.
    assert any(d.event.type.value == "material.low" for d in by_feed)
    vendor = [d for d in day.detections if d.event.type.value == "vendor.event"]
    assert vendor, "the simulator writes CARTRIDGE_SWAPPED entries, which printfleet does not map"
    assert {d.event.details["vendor_event"]["type"] for d in vendor} == {"CARTRIDGE_SWAPPED"}
    ids = [d.event.details["vendor_event"]["id"] for d in vendor]
    assert len(ids) == len(set(ids))  # each feed entry once
