"""Silences: weekly schedules, time zones, one-off windows, matching, and their effect."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from test_rules_support import T0, at, engine, event, rule

from printfleet.core.rules.engine import Decision
from printfleet.core.rules.windows import Silence, parse_schedule

MON = 0
DAY = 1440


@pytest.mark.parametrize(
    ("text", "windows"),
    [
        ("Sat 00:00-Mon 06:00", [(5 * DAY, 7 * DAY), (0, 6 * 60)]),
        ("Mon 09:00-Mon 17:00", [(9 * 60, 17 * 60)]),
        ("Sun 22:00-Mon 02:00", [(6 * DAY + 22 * 60, 7 * DAY), (0, 2 * 60)]),
        ("Mon-Fri 22:00-06:00", [(d * DAY + 22 * 60, d * DAY + 30 * 60) for d in range(5)]),
        ("Fri-Mon 12:00-13:00", [(d * DAY + 720, d * DAY + 780) for d in (0, 4, 5, 6)]),
        ("Mon,Wed 12:00-13:00", [(720, 780), (2 * DAY + 720, 2 * DAY + 780)]),
        ("00:00-24:00", [(d * DAY, (d + 1) * DAY) for d in range(7)]),
        ("saturday 10:00-sunday 10:00", [(5 * DAY + 600, 6 * DAY + 600)]),
    ],
)
def test_schedules_parse_into_weekly_windows(text: str, windows: list[tuple[int, int]]) -> None:
    """Schedule strings become sorted minute-of-week windows, split at the week's end."""
    assert parse_schedule(text) == tuple(sorted(windows))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Sat 00:00", "invalid schedule"),
        ("Funday 10:00-11:00", "unknown day 'Funday'"),
        ("Mon 25:00-Tue 01:00", "invalid time '25:00'"),
        ("Mon 10:61-11:00", "invalid time '10:61'"),
        ("every other day", "invalid schedule"),
    ],
)
def test_invalid_schedules_say_what_is_accepted(text: str, message: str) -> None:
    """A schedule that cannot be parsed raises with the reason."""
    with pytest.raises(ValueError, match=message):
        parse_schedule(text)


# 2026-11-23 is a Monday; 2026-11-28 a Saturday.
@pytest.mark.parametrize(
    ("schedule", "when", "active"),
    [
        ("Sat 00:00-Mon 06:00", datetime(2026, 11, 27, 23, 59, tzinfo=UTC), False),
        ("Sat 00:00-Mon 06:00", datetime(2026, 11, 28, 0, 0, tzinfo=UTC), True),
        ("Sat 00:00-Mon 06:00", datetime(2026, 11, 29, 23, 59, tzinfo=UTC), True),  # Sun
        ("Sat 00:00-Mon 06:00", datetime(2026, 11, 30, 5, 59, tzinfo=UTC), True),  # week wrap
        ("Sat 00:00-Mon 06:00", datetime(2026, 11, 30, 6, 0, tzinfo=UTC), False),
        ("Mon-Fri 22:00-06:00", datetime(2026, 11, 23, 21, 59, tzinfo=UTC), False),
        ("Mon-Fri 22:00-06:00", datetime(2026, 11, 23, 22, 0, tzinfo=UTC), True),
        ("Mon-Fri 22:00-06:00", datetime(2026, 11, 24, 3, 0, tzinfo=UTC), True),  # past midnight
        ("Mon-Fri 22:00-06:00", datetime(2026, 11, 28, 3, 0, tzinfo=UTC), True),  # Fri night
        ("Mon-Fri 22:00-06:00", datetime(2026, 11, 29, 3, 0, tzinfo=UTC), False),  # Sat night
        ("Mon-Fri 22:00-06:00", datetime(2026, 11, 23, 3, 0, tzinfo=UTC), False),  # Sun night
    ],
)
def test_schedule_boundaries(schedule: str, when: datetime, active: bool) -> None:
    """A scheduled silence is active from its start minute up to, not including, its end."""
    assert Silence(id="s", schedule=(schedule,)).active(when) is active


@pytest.mark.parametrize(
    ("when", "active"),
    [
        # winter, Berlin = UTC+1: 22:00 local is 21:00 UTC
        (datetime(2026, 1, 12, 20, 59, tzinfo=UTC), False),
        (datetime(2026, 1, 12, 21, 0, tzinfo=UTC), True),
        (datetime(2026, 1, 13, 4, 59, tzinfo=UTC), True),
        (datetime(2026, 1, 13, 5, 0, tzinfo=UTC), False),
        # summer, Berlin = UTC+2: 22:00 local is 20:00 UTC
        (datetime(2026, 7, 13, 19, 59, tzinfo=UTC), False),
        (datetime(2026, 7, 13, 20, 0, tzinfo=UTC), True),
        (datetime(2026, 7, 14, 3, 59, tzinfo=UTC), True),
        (datetime(2026, 7, 14, 4, 0, tzinfo=UTC), False),
        # the night DST starts (Sun 29 March 2026, 02:00 -> 03:00): window ends 06:00 local
        (datetime(2026, 3, 30, 3, 59, tzinfo=UTC), True),
        (datetime(2026, 3, 30, 4, 0, tzinfo=UTC), False),
        # the night DST ends (Sun 25 October 2026): Monday 06:00 local is 05:00 UTC again
        (datetime(2026, 10, 26, 4, 59, tzinfo=UTC), True),
        (datetime(2026, 10, 26, 5, 0, tzinfo=UTC), False),
    ],
)
def test_schedules_follow_local_wall_clock_across_dst(when: datetime, active: bool) -> None:
    """A schedule in Europe/Berlin means Berlin wall-clock time, in winter and in summer."""
    silence = Silence(id="night", schedule=("Sun-Thu 22:00-06:00",), timezone="Europe/Berlin")
    assert silence.active(when) is active


def test_unknown_time_zone_is_rejected() -> None:
    """A time zone that zoneinfo does not know raises with an example of a valid one."""
    with pytest.raises(ValueError, match=r"unknown time zone 'Mars/Olympus'.*Europe/Berlin"):
        Silence(id="s", schedule=("22:00-06:00",), timezone="Mars/Olympus")


@pytest.mark.parametrize(
    ("when", "active"),
    [(at(minutes=-1), False), (at(0), True), (at(hours=1, seconds=-1), True), (at(hours=1), False)],
)
def test_one_off_window(when: datetime, active: bool) -> None:
    """starts_at is inclusive, ends_at exclusive."""
    silence = Silence(id="s", starts_at=T0, ends_at=T0 + timedelta(hours=1))
    assert silence.active(when) is active


def test_one_off_window_combines_with_schedule() -> None:
    """With both, the silence is active only inside the schedule and the one-off window."""
    silence = Silence(
        id="s",
        schedule=("Sat 00:00-Mon 06:00",),
        starts_at=datetime(2026, 11, 28, tzinfo=UTC),
        ends_at=datetime(2026, 12, 5, tzinfo=UTC),
    )
    assert silence.active(datetime(2026, 11, 29, 12, tzinfo=UTC))
    assert not silence.active(datetime(2026, 12, 6, 12, tzinfo=UTC))


@pytest.mark.parametrize(
    ("match", "matches"),
    [
        ({}, True),
        ({"source": ("lab",)}, True),
        ({"source": ("factory",)}, False),
        ({"serial": ("Form4-*",)}, True),
        ({"serial": ("Form3-*", "Form4-A")}, True),
        ({"type": ("print.*",)}, True),
        ({"severity": ("critical",)}, False),
        ({"severity": ("info",)}, True),
        ({"group": ("Dental",), "rule": ("r",)}, True),
        ({"group": ("Dental",), "rule": ("other",)}, False),
    ],
)
def test_silence_match_globs(match: dict[str, tuple[str, ...]], matches: bool) -> None:
    """All matchers must accept the notification; each is a glob (any of a list)."""
    silence = Silence(id="s", match=match, starts_at=T0)
    eng = engine(rule(severity=None), silences=[silence])
    delivered = eng.process(event("print.failed", severity=None), T0)
    assert (not delivered) is matches


def test_unknown_match_field_is_rejected() -> None:
    """A silence matcher on a field that does not exist raises with a suggestion."""
    with pytest.raises(ValueError, match="unknown match field 'serail'; did you mean 'serial'"):
        Silence(id="s", match={"serail": ("x",)})


def test_silenced_notifications_are_dropped_and_counted() -> None:
    """A matching active silence drops the notification, counts it and traces its id."""
    quiet = Silence(id="quiet", schedule=("Mon 09:00-Mon 11:00",))
    eng = engine(rule("r"), silences=[quiet])
    trace: list[Decision] = []
    assert eng.process(event("print.failed"), T0, trace=trace) == []
    assert eng.counters.silenced == {"r": 1}
    assert trace[0].outcome == "silenced"
    assert trace[0].detail == "by silence quiet"


def test_silence_is_judged_when_the_hold_down_fires() -> None:
    """A hold-down that elapses after the quiet window ended is sent."""
    quiet = Silence(id="quiet", schedule=("Mon 09:00-Mon 10:05",))
    eng = engine(rule(on=["printer.offline"], hold=600), silences=[quiet])
    eng.process(event("printer.offline"), T0)  # 10:00, inside the window
    assert eng.tick(at(minutes=10))  # 10:10, after it


def test_adhoc_silences_apply_per_call_and_per_engine() -> None:
    """Silences passed to process() or set_silences() drop notifications like pack ones."""
    maintenance = Silence(id="m", match={"serial": ("Form4-A",)}, ends_at=at(hours=1))
    eng = engine(rule())
    assert eng.process(event("print.failed"), T0, silences=[maintenance]) == []
    eng.set_silences([maintenance])
    assert eng.process(event("print.failed"), at(1)) == []
    assert eng.process(event("print.failed"), at(hours=2))


def test_no_resolved_notice_for_a_silenced_firing() -> None:
    """If the firing was silenced, its resolution is not announced either."""
    quiet = Silence(id="q", ends_at=at(minutes=30))
    eng = engine(rule(on=["printer.offline"], resolve=True), silences=[quiet])
    eng.process(event("printer.offline"), T0)
    assert eng.process(event("printer.online"), at(hours=1)) == []


def test_repeat_after_the_silence_announces_the_firing() -> None:
    """A condition that fired during quiet hours is announced by the first repeat after them."""
    quiet = Silence(id="q", ends_at=at(minutes=30))
    eng = engine(rule(on=["printer.offline"], resolve=True, repeat=3600), silences=[quiet])
    eng.process(event("printer.offline"), T0)
    assert [d.payload["status"] for d in eng.tick(at(hours=1))] == ["firing"]
    assert [d.payload["status"] for d in eng.process(event("printer.online"), at(minutes=90))] == [
        "resolved"
    ]


def test_silence_round_trips_through_json() -> None:
    """as_dict/from_dict keep every field, so ad-hoc silences survive the store."""
    silence = Silence(
        id="x",
        match={"serial": ("Form4-*",)},
        schedule=("Mon-Fri 22:00-06:00",),
        timezone="Europe/Berlin",
        starts_at=T0,
        ends_at=at(hours=2),
        comment="resin change",
        origin="adhoc",
        created_by="ops",
    )
    assert Silence.from_dict(silence.as_dict()) == silence


class _RecordingStore:
    """Keeps what the pipeline commits."""

    def __init__(self) -> None:
        self.deliveries: list[Any] = []

    def commit(
        self,
        *,
        snapshot: Any = None,
        deliveries: Any = (),
        state: Any = None,
        history: Any = (),
        events: Any = (),
    ) -> int:
        self.deliveries.extend(deliveries)
        return len(deliveries)

    def load_state(self, key: str) -> Any:
        return None


async def test_silences_never_stop_mqtt_event_publishing() -> None:
    """With every notification silenced, the pipeline still publishes the event to MQTT."""
    from printfleet.core.events import ChangeEvent, EventType, Severity
    from printfleet.core.fleet import AccountHealth
    from printfleet.core.model import Vendor
    from printfleet.pipeline import Pipeline
    from printfleet.poller import Cycle
    from printfleet.testing import FakeClock

    everything = Silence(id="all", ends_at=T0 + timedelta(days=1))
    eng = engine(rule("failed"), silences=[everything])
    store = _RecordingStore()
    pipeline = Pipeline(store=store, rules=eng, clock=FakeClock(T0), mqtt_prefix="printfleet")
    failed = ChangeEvent(
        id="e1",
        type=EventType.PRINT_FAILED,
        source="lab",
        vendor=Vendor.FORMLABS,
        subject="Form4-A",
        time=T0,
        severity=Severity.CRITICAL,
    )
    cycle = Cycle(source="lab", snapshot=None, events=(failed,), health=AccountHealth(), state={})
    await pipeline.handle(cycle)
    assert [(d.sink, d.payload["topic"]) for d in store.deliveries] == [
        ("mqtt", "printfleet/events/print/failed")
    ]
    assert eng.counters.silenced == {"failed": 1}
