"""Acks (stop the repeats of alerts firing now) and hold silences (one summary at the end)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from test_rules_support import T0, at, engine, event, rule, sinks
from tests.ecosystem import cloudevent_problems, discord_problems, slack_problems, teams_problems

from printfleet.core.delivery import Delivery
from printfleet.core.rules.acks import Ack, acks_from_state
from printfleet.core.rules.engine import Decision, RuleEngine
from printfleet.core.rules.holds import HOLD_ITEMS_MAX
from printfleet.core.rules.model import MqttAction, RuleSet
from printfleet.core.rules.windows import Silence
from printfleet.rulepacks.templates import compile_template
from printfleet.sinks.formats import discord_message, render, slack_message, teams_message

# T0 is Monday 2026-11-23 10:00 UTC.


def down_rule(**options: Any) -> Any:
    options.setdefault("repeat", 3600)
    return rule("down", on=["printer.offline"], resolve=True, **options)


def receivers(deliveries: list[Delivery]) -> list[str]:
    return sorted(d.sink for d in deliveries)


# -- acks ----------------------------------------------------------------------------------------


def test_ack_stops_repeats_but_keeps_the_resolved_notice() -> None:
    """An acknowledged alert sends no repeats; its resolved notice still goes out."""
    eng = engine(down_rule())
    assert sinks(eng.process(event("printer.offline"), T0)) == [("slack", "firing")]
    eng.set_acks([Ack(id="a1", rule="down", created_at=at(minutes=5), created_by="ann")])
    trace: list[Decision] = []
    assert eng.tick(at(hours=1), trace=trace) == []
    assert eng.tick(at(hours=2)) == []
    assert [(d.outcome, d.detail) for d in trace] == [
        ("acknowledged", "repeat not sent: ack a1 by ann")
    ]
    assert eng.counters.acknowledged == {"down": 2}
    assert sinks(eng.process(event("printer.online"), at(hours=2, minutes=10))) == [
        ("slack", "resolved")
    ]


def test_ack_does_not_cover_a_new_firing_for_another_printer() -> None:
    """A firing that starts after the ack (another printer) notifies and repeats as usual."""
    eng = engine(down_rule())
    eng.process(event("printer.offline", "Form4-A"), T0)
    eng.set_acks([Ack(id="a1", rule="down", created_at=at(minutes=5))])
    assert sinks(eng.process(event("printer.offline", "Form4-B"), at(minutes=10))) == [
        ("slack", "firing")
    ]
    repeats = eng.tick(at(hours=1, minutes=10))
    assert [d.payload["event"]["subject"] for d in repeats] == ["Form4-B"]


def test_until_resolved_ack_ends_with_the_alert() -> None:
    """After the acknowledged alert resolves and fires again, it notifies and repeats again."""
    eng = engine(down_rule())
    eng.process(event("printer.offline"), T0)
    eng.set_acks([Ack(id="a1", rule="down", created_at=at(minutes=5))])
    eng.process(event("printer.online"), at(minutes=30))
    assert sinks(eng.process(event("printer.offline"), at(hours=1))) == [("slack", "firing")]
    assert sinks(eng.tick(at(hours=2))) == [("slack", "firing")]


def test_timed_ack_lets_repeats_resume_when_it_ends() -> None:
    """An ack with a duration stops repeats until it ends, then reminders come back."""
    eng = engine(down_rule())
    eng.process(event("printer.offline"), T0)
    eng.set_acks([Ack(id="a1", rule="down", created_at=T0, ends_at=at(hours=2))])
    assert eng.tick(at(hours=1)) == []
    assert [d.payload["repeat"] for d in eng.tick(at(hours=2))] == [2]


@pytest.mark.parametrize(
    ("match", "acked"),
    [
        ({"serial": ("Form4-A",)}, True),
        ({"serial": ("Form3-*",)}, False),
        ({"group": ("Dental",), "source": ("lab",)}, True),
    ],
)
def test_ack_matchers_are_silence_matchers(match: dict[str, tuple[str, ...]], acked: bool) -> None:
    """An ack's matchers take the same fields and globs as a silence's."""
    eng = engine(down_rule())
    eng.process(event("printer.offline"), T0)
    eng.set_acks([Ack(id="a", rule="down", created_at=T0, match=match)])
    assert (eng.tick(at(hours=1)) == []) is acked


def test_ack_of_another_rule_changes_nothing() -> None:
    """An ack covers only the rule it names."""
    eng = engine(down_rule())
    eng.process(event("printer.offline"), T0)
    eng.set_acks([Ack(id="a", rule="other", created_at=T0)])
    assert eng.tick(at(hours=1))


def test_acks_round_trip_through_the_store_format() -> None:
    """Ack.as_dict -> acks_from_state gives the same ack; junk entries are skipped."""
    ack = Ack(
        id="a",
        rule="down",
        created_at=T0,
        match={"serial": ("Form4-*",)},
        ends_at=at(hours=4),
        comment="tank",
        created_by="ann",
    )
    stored = json.loads(json.dumps([ack.as_dict(), {"id": "x"}, "junk"]))
    assert acks_from_state(stored) == (ack,)
    with pytest.raises(ValueError, match="did you mean 'serial'"):
        Ack(id="b", rule="down", created_at=T0, match={"serail": ("x",)})


# -- hold silences -------------------------------------------------------------------------------

NIGHT = Silence(id="night", schedule=("Mon 10:00-Mon 12:00",), hold=True)


def hold_engine(*extra: Any, silences: tuple[Silence, ...] = (NIGHT,)) -> RuleEngine:
    failed = rule(
        "failed",
        notify=("slack", "phone"),
        title=compile_template("{printer.name}: {print.name} failed"),
    )
    return engine(failed, down_rule(repeat=None, notify=("slack",)), *extra, silences=silences)


def test_held_notifications_come_as_one_summary_per_receiver_at_window_end() -> None:
    """Inside the hold window nothing goes out; at its end each receiver gets one summary."""
    eng = hold_engine()
    trace: list[Decision] = []
    assert eng.process(event("print.failed", "Form4-A"), at(minutes=5), trace=trace) == []
    assert eng.process(event("print.failed", "Form4-B"), at(minutes=6)) == []
    assert eng.process(event("printer.offline", "Form4-C"), at(minutes=7)) == []
    assert trace[0].outcome == "held"
    assert eng.counters.held == {"failed": 2, "down": 1}
    assert eng.next_deadline() == at(hours=2)
    assert eng.tick(at(hours=1, minutes=59)) == []
    summaries = eng.tick(at(hours=2))
    assert receivers(summaries) == ["phone", "slack"]
    by_sink = {d.sink: d.payload for d in summaries}
    assert by_sink["slack"]["title"] == "3 notifications held during quiet hours (night)"
    assert by_sink["phone"]["title"] == "2 notifications held during quiet hours (night)"
    assert by_sink["phone"]["text"].splitlines() == [
        "• Mon 10:05 [info] Printer Form4-A: crown-42 failed",
        "• Mon 10:06 [info] Printer Form4-B: crown-42 failed",
    ]
    assert by_sink["slack"]["event"]["data"]["count"] == 3
    assert eng.tick(at(hours=3)) == []  # sent once
    assert eng.state().get("held") is None


def test_a_held_alert_resolved_during_the_window_is_not_in_the_summary() -> None:
    """An alert that resolved while held is taken out; with nothing left, no summary at all."""
    eng = hold_engine()
    eng.process(event("printer.offline", "Form4-C"), at(minutes=7))
    trace: list[Decision] = []
    assert eng.process(event("printer.online", "Form4-C"), at(minutes=30), trace=trace) == []
    assert [(d.outcome, d.detail) for d in trace] == [("resolved", "taken out of the held summary")]
    assert eng.tick(at(hours=2)) == []
    eng.process(event("printer.offline", "Form4-D"), at(hours=1))
    eng.process(event("print.failed", "Form4-A"), at(hours=1))
    eng.process(event("printer.online", "Form4-D"), at(hours=1, minutes=5))
    [summary] = [d for d in eng.tick(at(hours=2)) if d.sink == "slack"]
    assert [i["subject"] for i in summary.payload["event"]["data"]["items"]] == ["Form4-A"]


def test_restart_mid_window_keeps_the_held_items() -> None:
    """The held items are part of the engine state: a restarted engine sends the summary."""
    eng = hold_engine()
    eng.process(event("print.failed", "Form4-A"), at(minutes=5))
    eng.process(event("printer.offline", "Form4-C"), at(minutes=7))
    state = json.loads(json.dumps(eng.state()))
    restarted = RuleEngine(hold_engine().rules, state=state)
    restarted.process(event("printer.online", "Form4-C"), at(minutes=40))  # still resolvable
    assert restarted.next_deadline() == at(hours=2)
    summaries = restarted.tick(at(hours=2))
    assert receivers(summaries) == ["phone", "slack"]
    assert all(d.payload["title"].startswith("1 notification held") for d in summaries)


def test_repeats_while_held_count_up_and_resolved_notices_of_sent_alerts_are_held() -> None:
    """A repeat of a held alert only counts; an alert sent before the window resolves into it."""
    eng = engine(
        down_rule(),
        silences=(Silence(id="later", schedule=("Mon 10:30-Mon 14:00",), hold=True),),
    )
    assert sinks(eng.process(event("printer.offline", "Form4-A"), T0)) == [("slack", "firing")]
    eng.process(event("printer.offline", "Form4-B"), at(minutes=31))
    assert eng.tick(at(hours=1)) == []  # A's repeat: held
    assert eng.tick(at(hours=1, minutes=31)) == []  # B's repeat: counted into B's item
    assert eng.process(event("printer.online", "Form4-A"), at(hours=2)) == []
    [summary] = eng.tick(at(hours=4))
    lines = summary.payload["text"].splitlines()
    assert lines == [
        "• Mon 10:31 [info] Printer Form4-B is offline (3 times)",
        "• Mon 12:00 [info] Resolved: Printer Form4-A is offline",
    ]


def test_mqtt_publishes_are_not_held() -> None:
    """A rule's MQTT topic gets its message now; only the receivers' notifications are held."""
    mqtt_rule = rule("m", on=["print.finished"], mqtt=MqttAction(topic=compile_template("t")))
    eng = hold_engine(mqtt_rule)
    assert [d.sink for d in eng.process(event("print.finished"), at(minutes=5))] == ["mqtt"]
    assert receivers(eng.tick(at(hours=2))) == ["slack"]


def test_a_dropping_silence_wins_over_a_hold() -> None:
    """When a plain silence matches too, the notification is dropped, not held."""
    drop = Silence(id="maint", match={"serial": ("Form4-A",)}, ends_at=at(hours=3))
    eng = hold_engine(silences=(NIGHT, drop))
    eng.process(event("print.failed", "Form4-A"), at(minutes=5))
    assert eng.tick(at(hours=2)) == []


def test_removing_an_adhoc_hold_silence_releases_its_summary() -> None:
    """An ad-hoc hold silence removed early (`silence remove`) sends its summary then."""
    adhoc = Silence(id="adhoc1", starts_at=T0, ends_at=at(hours=8), hold=True)
    eng = hold_engine(silences=())
    eng.set_silences([adhoc])
    eng.process(event("print.failed"), at(minutes=5))
    assert eng.next_deadline() == at(hours=8)
    eng.set_silences([])
    assert eng.next_deadline() == at(minutes=5)
    assert receivers(eng.tick(at(minutes=6))) == ["phone", "slack"]


def test_a_hold_keeps_at_most_its_cap_and_counts_the_rest() -> None:
    """A flapping printer cannot grow the held state without bound."""
    eng = hold_engine()
    for n in range(HOLD_ITEMS_MAX + 5):
        eng.process(event("print.failed", f"F-{n}"), at(minutes=5))
    [held] = eng.state()["held"]
    assert (len(held["items"]), held["overflow"]) == (HOLD_ITEMS_MAX, 5)
    phone = next(d for d in eng.tick(at(hours=2)) if d.sink == "phone")
    assert phone.payload["text"].endswith(f"… and {HOLD_ITEMS_MAX + 5 - 40} more")


def test_the_summary_renders_for_every_receiver_kind() -> None:
    """Webhook (CloudEvent), Slack, Teams and Discord bodies of a summary pass their validators."""
    eng = hold_engine()
    eng.process(event("print.failed", "Form4-<!channel>"), at(minutes=5))
    eng.process(event("printer.offline", "Form4-C", severity=None), at(minutes=7))
    payload = next(d.payload for d in eng.tick(at(hours=2)) if d.sink == "slack")
    body, _ = render("webhook", payload)
    assert cloudevent_problems(body) == []
    assert slack_problems(slack_message(payload)) == []
    assert teams_problems(teams_message(payload)) == []
    assert discord_problems(discord_message(payload)) == []


# -- when a silence ends -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "tz", "now", "end"),
    [
        ("Mon 10:00-Mon 12:00", "UTC", T0, at(hours=2)),
        ("Mon 10:00-Mon 12:00", "UTC", at(hours=3), at(hours=3)),  # not active: now
        ("Sat 00:00-Mon 06:00", "UTC", datetime(2026, 11, 29, 12, tzinfo=UTC),
         datetime(2026, 11, 30, 6, tzinfo=UTC)),  # across the week's end
        ("22:00-06:00", "Europe/Berlin", datetime(2026, 11, 24, 2, tzinfo=UTC),
         datetime(2026, 11, 24, 5, tzinfo=UTC)),  # 06:00 Berlin in winter
        ("22:00-06:00", "Europe/Berlin", datetime(2026, 3, 29, 0, 30, tzinfo=UTC),
         datetime(2026, 3, 29, 4, tzinfo=UTC)),  # the night DST starts: 06:00 CEST
        ("22:00-06:00", "Europe/Berlin", datetime(2026, 10, 25, 0, 30, tzinfo=UTC),
         datetime(2026, 10, 25, 5, tzinfo=UTC)),  # the night DST ends: 06:00 CET
        ("00:00-24:00", "UTC", T0, None),  # always: never ends
    ],
)  # fmt: skip
def test_silence_ends_after(schedule: str, tz: str, now: datetime, end: datetime | None) -> None:
    """ends_after gives the wall-clock end of the window in force, joining adjacent ones."""
    assert Silence(id="s", schedule=(schedule,), timezone=tz).ends_after(now) == end


def test_ends_after_respects_ends_at() -> None:
    """A one-off end earlier than the schedule's window end wins."""
    silence = Silence(id="s", schedule=("Mon 10:00-Mon 12:00",), ends_at=at(hours=1))
    assert silence.ends_after(T0) == at(hours=1)
    assert Silence(id="t", ends_at=at(hours=1)).ends_after(T0 + timedelta(minutes=1)) == at(hours=1)


def test_hold_round_trips_as_a_stored_silence() -> None:
    """Silence.as_dict/from_dict keep hold (ad-hoc `silence add --hold`)."""
    silence = Silence(id="s", ends_at=at(hours=1), hold=True)
    assert Silence.from_dict(json.loads(json.dumps(silence.as_dict()))).hold is True
    assert Silence.from_dict({"id": "old", "ends_at": "2026-11-23T11:00:00Z"}).hold is False


def test_rule_set_silences_with_hold_apply() -> None:
    """Pack silences with hold work through RuleSet like ad-hoc ones."""
    eng = RuleEngine(RuleSet(rules=(rule(),), silences=(NIGHT,)))
    assert eng.process(event("print.failed"), at(minutes=1)) == []
    assert receivers(eng.tick(at(hours=2))) == ["slack"]


def test_a_reload_keeps_the_held_items() -> None:
    """SIGHUP (replace_rules) keeps what a hold silence still in the packs holds."""
    eng = hold_engine()
    eng.process(event("print.failed"), at(minutes=5))
    eng.replace_rules(hold_engine().rules)
    assert receivers(eng.tick(at(hours=2))) == ["phone", "slack"]
