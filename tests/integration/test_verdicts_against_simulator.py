"""Ratings, parts on the platform, Form Auto harvests and NOT_READY over real HTTP.

The real ``FormlabsSource`` polls the simulator once a simulated minute; each snapshot is
carried forward, diffed and kept through the store's codec, as the poller does. What the
daemon reports is compared with the simulator's ground truth (ratings) and with the printer
words the simulator sent (alerts).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from pydantic import SecretStr

from printfleet.core.alerts import (
    ALERT_HARVEST_FAILED,
    ALERT_NOT_READY,
    ALERT_PARTS_ON_PLATFORM,
)
from printfleet.core.codec import snapshot_from_json, snapshot_to_json
from printfleet.core.diff import carry_forward, diff
from printfleet.core.events import ChangeEvent, EventType, Severity
from printfleet.core.model import Snapshot, without_raw
from printfleet.core.thresholds import DiffSettings
from printfleet.logs import forget_secrets
from printfleet.simulator import Simulator, SimulatorConfig, TruthKind
from printfleet.sources.formlabs import FormlabsSource
from printfleet.testing import FakeClock

HOURS = 8


Watched = tuple[Simulator, list[ChangeEvent], list[Snapshot]]


async def watch() -> Watched:
    """Eight simulated hours of one Formlabs account, polled once a minute."""
    clock = FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
    config = SimulatorConfig(
        formlabs_printers=24,
        carbon_printers=0,
        seed=7,
        formlabs_note_share=0.6,
        formlabs_form_auto_share=0.5,
        formlabs_harvest_failed_share=0.5,
    )
    settings = DiffSettings()
    events: list[ChangeEvent] = []
    kept: list[Snapshot] = []
    async with httpx.AsyncClient() as client:
        with Simulator(config, now=clock.now) as sim:
            source = FormlabsSource(
                name="lab",
                client_id=sim.formlabs_client_id,
                client_secret=SecretStr(sim.formlabs_client_secret),
                client=client,
                clock=clock,
                offline_after=timedelta(minutes=5),
                base_url=sim.formlabs_url,
                rng=random.Random(1),
                timeout=5.0,
            )
            previous: Snapshot | None = None
            for _ in range(HOURS * 60):
                current = await source.fetch_printers()
                now = clock.now()
                current = carry_forward(previous, current, now, settings)
                events += diff(previous, current, now, settings)
                previous = snapshot_from_json(snapshot_to_json(without_raw(current, previous)))
                kept.append(previous)
                await clock.advance(60)
            sim.ground_truth  # noqa: B018 - advances the fleet to the last poll
            return sim, events, kept


@pytest.fixture(scope="module")
def watched() -> Iterator[Watched]:
    """Shared by the tests of this module (the eight hours are the expensive part)."""
    yield asyncio.run(watch())
    forget_secrets()


def test_every_rating_is_reported_once_with_its_verdict(
    watched: Watched,
) -> None:
    sim, events, kept = watched
    start = kept[0].taken_at  # rated before the first (silent) poll: not news
    truth = {
        (t.serial, t.print_id, t.detail)
        for t in sim.ground_truth
        if t.kind is TruthKind.PRINT_RATED and t.time >= start
    }
    rated = [e for e in events if e.type is EventType.PRINT_RATED]
    seen = [(e.subject, e.print.id if e.print else None, e.details["verdict"]) for e in rated]
    assert len(seen) == len(set(seen))  # once each
    # Ratings in the last minute of the run may not have been polled yet.
    last = max(t.time for t in sim.ground_truth)
    late = {
        (t.serial, t.print_id, t.detail)
        for t in sim.ground_truth
        if t.kind is TruthKind.PRINT_RATED and t.time > last - timedelta(minutes=2)
    }
    assert truth - late <= set(seen) <= truth
    assert len(truth) >= 10


def test_ratings_carry_the_note_the_rater_and_the_machine_outcome(
    watched: Watched,
) -> None:
    _, events, _ = watched
    rated = [e for e in events if e.type is EventType.PRINT_RATED]
    assert {e.details["verdict"] for e in rated} == {"SUCCESS", "FAILURE"}
    assert any(e.details["note"] and e.details["by"] for e in rated)
    surprises = [e for e in rated if e.details["machine_outcome"] == "finished"]
    for e in surprises:
        expected = Severity.WARNING if e.details["verdict"] == "FAILURE" else Severity.INFO
        assert e.severity is expected
    assert {e.details["machine_outcome"] for e in rated} <= {"finished", "failed", "aborted"}


def test_the_kept_state_remembers_ratings(
    watched: Watched,
) -> None:
    """Once rated, a print stays rated in every later kept snapshot that knows it."""
    _, _, kept = watched
    verdicts: dict[str, str] = {}
    for snapshot in kept:
        views = [p.current_print for p in snapshot.printers.values() if p.current_print]
        for view in [*views, *snapshot.runs.values()]:
            if view.verdict is not None:
                verdicts[view.id] = view.verdict
        for rid, run in snapshot.runs.items():
            if rid in verdicts:
                assert run.verdict == verdicts[rid], rid
    assert verdicts


def test_platform_harvest_and_readiness_alerts_rise_and_clear(
    watched: Watched,
) -> None:
    _, events, kept = watched
    alerts = [
        (e.subject, e.details["alert"], e.details["state"])
        for e in events
        if e.type is EventType.PRINTER_ALERT
    ]
    for text in (ALERT_PARTS_ON_PLATFORM, ALERT_HARVEST_FAILED, ALERT_NOT_READY):
        raised = [a for a in alerts if a[1] == text and a[2] == "raised"]
        cleared = [a for a in alerts if a[1] == text and a[2] == "cleared"]
        assert raised, text
        assert cleared, text
    # Raised and cleared alternate per printer, from what the first (silent) snapshot showed.
    state: dict[tuple[str, str], str] = {
        (serial, text): "raised" for serial, p in kept[0].printers.items() for text in p.alerts
    }
    for subject, text, change in alerts:
        assert state.get((subject, text)) != change, (subject, text, change)
        state[subject, text] = change
