"""Digest schedules: the silences' day grammar with one time, in a zone, across DST."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from printfleet.core.digest_schedule import DigestSchedule, split_zone
from printfleet.core.rules.windows import parse_times

BERLIN = ZoneInfo("Europe/Berlin")


def test_points_use_the_silence_day_words() -> None:
    assert parse_times("Mon-Fri 07:30") == tuple(d * 1440 + 450 for d in range(5))
    assert parse_times("07:30") == tuple(d * 1440 + 450 for d in range(7))
    assert parse_times("weekends 18:00") == (5 * 1440 + 1080, 6 * 1440 + 1080)
    assert parse_times("Sat-Mon 00:00") == (0, 5 * 1440, 6 * 1440)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Mon-Fri", "invalid schedule"),
        ("Mon-Fri 07:30-08:00", "invalid schedule"),
        ("Moo 07:30", "unknown day 'Moo'"),
        ("Mon 25:00", "invalid time"),
        ("Mon 24:00", "invalid time"),
        ("Mon 07:30 Europe/Berlinn", "unknown time zone"),
    ],
)
def test_bad_schedules_say_what_is_accepted(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DigestSchedule.parse(text)


def test_the_zone_is_the_optional_last_word() -> None:
    assert split_zone("Mon-Fri 07:30 Europe/Berlin", "UTC") == ("Mon-Fri 07:30", "Europe/Berlin")
    assert split_zone("Mon-Fri 07:30", "Europe/Paris") == ("Mon-Fri 07:30", "Europe/Paris")
    assert DigestSchedule.parse("07:30", "Europe/Berlin").timezone == "Europe/Berlin"


def test_latest_next_and_previous_follow_the_weekdays() -> None:
    s = DigestSchedule.parse("Mon-Fri 07:30 UTC")
    fri = datetime(2026, 12, 4, 7, 30, tzinfo=UTC)
    mon = datetime(2026, 12, 7, 7, 30, tzinfo=UTC)
    assert s.latest(datetime(2026, 12, 6, 12, tzinfo=UTC)) == fri  # Sunday
    assert s.latest(mon) == mon  # at the point itself
    assert s.next_after(fri) == mon
    assert s.previous(mon) == fri  # Monday's digest covers the weekend


@pytest.mark.parametrize(
    ("before", "after"),
    [
        # Last Sunday of October 2026 (25th): CEST (+2) -> CET (+1).
        (datetime(2026, 10, 23, 5, 30, tzinfo=UTC), datetime(2026, 10, 26, 6, 30, tzinfo=UTC)),
        # Last Sunday of March 2026 (29th): CET (+1) -> CEST (+2).
        (datetime(2026, 3, 27, 6, 30, tzinfo=UTC), datetime(2026, 3, 30, 5, 30, tzinfo=UTC)),
    ],
)
def test_a_local_time_stays_local_across_dst(before: datetime, after: datetime) -> None:
    s = DigestSchedule.parse("Mon-Fri 07:30 Europe/Berlin")
    assert s.next_after(before) == after
    assert s.previous(after) == before
    for point in (before, after):
        local = point.astimezone(BERLIN)
        assert (local.hour, local.minute) == (7, 30)


def test_a_daily_digest_on_the_dst_sunday_itself() -> None:
    s = DigestSchedule.parse("07:30 Europe/Berlin")
    sat = datetime(2026, 10, 24, 5, 30, tzinfo=UTC)
    sun = s.next_after(sat)
    assert sun == datetime(2026, 10, 25, 6, 30, tzinfo=UTC)
    assert sun - sat == (datetime(2026, 10, 25, 6, 30) - datetime(2026, 10, 24, 5, 30))  # 25 h


def test_wall_times_that_do_not_exist_or_exist_twice_are_due_once() -> None:
    spring = DigestSchedule.parse("Sun 02:30 Europe/Berlin")
    # 02:30 does not exist on 2026-03-29: due at 03:30 CEST (01:30 UTC).
    assert spring.next_after(datetime(2026, 3, 28, tzinfo=UTC)) == datetime(
        2026, 3, 29, 1, 30, tzinfo=UTC
    )
    # 02:30 exists twice on 2026-10-25: due the first time (00:30 UTC), then next week.
    first = spring.next_after(datetime(2026, 10, 24, tzinfo=UTC))
    assert first == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    assert spring.next_after(first) == datetime(2026, 11, 1, 1, 30, tzinfo=UTC)
