"""The rule engine: matching, hold-down, throttle, repeat, resolve and grouping."""

from __future__ import annotations

from datetime import timedelta

import pytest
from test_rules_support import T0, at, engine, event, rule, sinks

from printfleet.core.delivery import delivery_id
from printfleet.core.events import Severity
from printfleet.core.rules.engine import Decision, RuleEngine
from printfleet.core.rules.model import MqttAction, Rule, RuleSet, expand_event_patterns
from printfleet.core.rules.names import event_names
from printfleet.rulepacks.templates import compile_template

# -- matching ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patterns", "kind", "fires"),
    [
        (["print.failed"], "print.failed", True),
        (["print.failed"], "print.finished", False),
        (["print.*"], "print.aborted", True),
        (["print.*"], "printer.offline", False),
        (["printer.*"], "printer.offline", True),
        (["*.offline", "source.*"], "source.unreachable", True),
        (["*"], "tank.attention", True),
    ],
)
def test_on_patterns_select_event_types(patterns: list[str], kind: str, fires: bool) -> None:
    """A rule fires only for event types its `on` names or globs match."""
    eng = engine(rule(on=patterns))
    assert bool(eng.process(event(kind), T0)) is fires


def test_unknown_event_pattern_is_rejected() -> None:
    """A pattern matching no event type raises with the list of known types."""
    with pytest.raises(ValueError, match=r"unknown event type 'print\.failde'.*print\.failed"):
        expand_event_patterns(["print.failde"])


@pytest.mark.parametrize(
    ("when", "group", "fires"),
    [
        ("printer.group == 'Dental'", "Dental", True),
        ("printer.group == 'Dental'", "Jewelry", False),
        ("printer.group == 'Dental'", None, False),
        ("printer.raw.status_message.startswith('Resin')", "Dental", True),
        ("print.progress > 0.4 and severity == 'critical'", "Dental", False),
        ("changes.status.to == 'IDLE'", "Dental", False),
    ],
)
def test_when_filters_events(when: str, group: str | None, fires: bool) -> None:
    """Only events satisfying `when` fire the rule; missing keys count as None."""
    eng = engine(rule(when=when))
    assert bool(eng.process(event("print.failed", group=group), T0)) is fires


def test_delivery_carries_the_contract_fields() -> None:
    """Each receiver gets one delivery with the stable id, ordering key and payload keys."""
    ev = event("print.failed")
    eng = engine(rule("failed", notify=("slack", "mes"), severity=Severity.CRITICAL))
    deliveries = eng.process(ev, T0)
    assert [d.sink for d in deliveries] == ["slack", "mes"]
    first = deliveries[0]
    assert first.id == delivery_id(ev["id"], "failed", "slack", "firing")
    assert first.event_id == ev["id"]
    assert first.key == "lab/Form4-A"
    assert first.created_at == T0
    assert first.payload["event"] == ev
    assert first.payload["status"] == "firing"
    assert first.payload["rule"] == "failed"
    assert first.payload["severity"] == "critical"
    assert first.payload["title"] == "Printer Form4-A: crown-42 failed"


def test_titles_and_texts_are_rendered_from_templates() -> None:
    """`title` and `text` templates see printer, print (with elapsed) and raw vendor fields."""
    eng = engine(
        rule(
            title="{printer.name}: {print.name} failed at {print.progress:.0%}",
            text="After {print.elapsed} — {printer.raw.status_message} ({printer.raw.nope})",
        )
    )
    payload = eng.process(event("print.failed"), T0)[0].payload
    assert payload["title"] == "Printer Form4-A: crown-42 failed at 42%"
    assert payload["text"] == "After 1h 02m — Resin tank missing (—)"


def test_severity_defaults_to_the_events() -> None:
    """Without a `severity` key the payload keeps the event's severity."""
    eng = engine(rule())
    ev = event("print.failed", severity=Severity.WARNING)
    assert eng.process(ev, T0)[0].payload["severity"] == "warning"


def test_mqtt_action_publishes_to_the_rules_topic() -> None:
    """An `mqtt` action adds one delivery to the mqtt sink with a rendered, topic-safe topic."""
    action = MqttAction(compile_template("lab/{printer.serial}/alerts", topic=True), True, 2)
    eng = engine(rule("ha", notify=(), mqtt=action))
    [delivery] = eng.process(event("print.failed", "Form4/X"), T0)
    assert delivery.sink == "mqtt"
    assert delivery.payload["topic"] == "lab/Form4_X/alerts"
    assert (delivery.payload["retain"], delivery.payload["qos"]) == (True, 2)


def test_log_only_rule_sends_nothing_but_counts() -> None:
    """A rule without receivers or MQTT produces no delivery but counts a match and a trace."""
    eng = engine(rule("quiet", notify=()))
    trace: list[Decision] = []
    assert eng.process(event("print.failed"), T0, trace=trace) == []
    assert eng.matches == {"quiet": 1}
    assert [d.outcome for d in trace] == ["log-only"]


def test_failing_when_is_counted_and_skipped() -> None:
    """A `when` that raises on odd data counts an error and does not stop other rules."""
    eng = engine(rule("bad", when="printer.name + 1 > 2"), rule("good"))
    deliveries = eng.process(event("print.failed"), T0)
    assert [d.payload["rule"] for d in deliveries] == ["good"]
    assert eng.counters.errors == {"bad": 1}


def test_cleared_alert_does_not_trigger() -> None:
    """A printer.alert with state 'cleared' only resolves; it never fires a rule."""
    eng = engine(rule(on=["printer.alert"]))
    cleared = event("printer.alert", details={"alert": "Tank missing", "state": "cleared"})
    assert eng.process(cleared, T0) == []


def test_event_names_expose_details_and_account_name() -> None:
    """Names hold the account as `source`, the vendor, and detail keys at the top level."""
    names = event_names(event("print.progress", details={"milestone": 0.5}))
    assert (names["source"], names["vendor"], names["milestone"]) == ("lab", "formlabs", 0.5)
    assert names["print"]["elapsed"] == "1h 02m"


# -- hold-down ----------------------------------------------------------------------------------


def offline_rule(**options: object) -> Rule:
    return rule("offline", on=["printer.offline"], hold=600, **options)


def test_hold_down_fires_after_for() -> None:
    """A `for` rule fires at tick once the hold-down elapsed, not before."""
    eng = engine(offline_rule())
    assert eng.process(event("printer.offline"), T0) == []
    assert eng.next_deadline() == at(minutes=10)
    assert eng.tick(at(minutes=9, seconds=59)) == []
    deliveries = eng.tick(at(minutes=10))
    assert sinks(deliveries) == [("slack", "firing")]
    assert deliveries[0].created_at == at(minutes=10)
    assert eng.next_deadline() is None


@pytest.mark.parametrize(
    ("fired", "resolving", "fired_details", "resolving_details"),
    [
        ("printer.offline", "printer.online", {}, {}),
        (
            "printer.alert",
            "printer.alert",
            {"alert": "Tank missing", "state": "raised"},
            {"alert": "Tank missing", "state": "cleared"},
        ),
        ("source.unreachable", "source.recovered", {}, {}),
        ("source.auth_failed", "source.recovered", {}, {}),
        ("print.paused", "print.resumed", {}, {}),
        ("print.paused", "print.aborted", {}, {}),
        ("printer.offline", "printer.removed", {}, {}),
    ],
)
def test_hold_down_is_cancelled_by_the_resolving_event(
    fired: str, resolving: str, fired_details: dict[str, str], resolving_details: dict[str, str]
) -> None:
    """The resolving event for the same subject inside the hold-down cancels the firing."""
    eng = engine(rule("held", on=[fired], hold=600))
    eng.process(event(fired, details=fired_details), T0)
    eng.process(event(resolving, details=resolving_details), at(minutes=5))
    assert eng.tick(at(minutes=30)) == []
    assert eng.next_deadline() is None


def test_recovery_of_another_printer_does_not_cancel() -> None:
    """Only the same source and subject resolve a pending hold-down."""
    eng = engine(offline_rule())
    eng.process(event("printer.offline", "A"), T0)
    eng.process(event("printer.online", "B"), at(minutes=1))
    eng.process(event("printer.online", "A", source="factory"), at(minutes=2))
    assert sinks(eng.tick(at(minutes=10))) == [("slack", "firing")]


def test_clearing_a_different_alert_does_not_cancel() -> None:
    """A cleared alert resolves only the raised alert with the same text."""
    eng = engine(rule("alert", on=["printer.alert"], hold=60))
    eng.process(event("printer.alert", details={"alert": "Tank missing", "state": "raised"}), T0)
    eng.process(event("printer.alert", details={"alert": "Door open", "state": "cleared"}), at(10))
    assert sinks(eng.tick(at(60))) == [("slack", "firing")]


def test_event_no_longer_satisfying_when_cancels() -> None:
    """For a rule with `when`, a later same-type event failing it cancels the hold-down."""
    eng = engine(
        rule("err", on=["printer.status_changed"], when="changes.status.to == 'ERROR'", hold=300)
    )
    eng.process(event("printer.status_changed", changes={"status": ("IDLE", "ERROR")}), T0)
    eng.process(event("printer.status_changed", changes={"status": ("ERROR", "IDLE")}), at(60))
    assert eng.tick(at(600)) == []


def test_overdue_hold_down_fires_before_a_late_recovery() -> None:
    """process() first fires timers already due, so a late recovery cannot cancel them."""
    eng = engine(offline_rule(resolve=True))
    eng.process(event("printer.offline"), T0)
    deliveries = eng.process(event("printer.online"), at(minutes=11))
    assert sinks(deliveries) == [("slack", "firing"), ("slack", "resolved")]


def test_repeated_match_while_pending_keeps_the_first_deadline() -> None:
    """A second offline for the same printer does not restart the hold-down."""
    eng = engine(offline_rule())
    eng.process(event("printer.offline"), T0)
    eng.process(event("printer.offline"), at(minutes=5))
    assert eng.next_deadline() == at(minutes=10)


# -- throttle -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("second_after", "sent"),
    [(timedelta(minutes=1), False), (timedelta(minutes=29, seconds=59), False),
     (timedelta(minutes=30), True)],
)  # fmt: skip
def test_throttle_allows_one_notification_per_window(second_after: timedelta, sent: bool) -> None:
    """Within `throttle` of the last notification for a rule and subject, more are dropped."""
    eng = engine(rule(throttle=1800))
    eng.process(event("print.failed"), T0)
    assert bool(eng.process(event("print.failed"), T0 + second_after)) is sent


def test_throttle_is_per_subject() -> None:
    """Another printer is not throttled by the first one's notification."""
    eng = engine(rule(throttle=1800))
    eng.process(event("print.failed", "A"), T0)
    assert eng.process(event("print.failed", "B"), at(1))
    assert eng.counters.throttled == {}


def test_throttled_notifications_are_counted() -> None:
    """Each dropped notification counts in the throttled counter."""
    eng = engine(rule("t", throttle=1800))
    for second in range(3):
        eng.process(event("print.failed"), at(second))
    assert eng.counters.throttled == {"t": 2}


# -- repeat and resolve ---------------------------------------------------------------------


def test_repeat_renotifies_until_resolved() -> None:
    """A firing `repeat` rule notifies again every period and stops once resolved."""
    eng = engine(rule("down", on=["source.unreachable"], repeat=3600, resolve=True))
    assert sinks(eng.process(event("source.unreachable"), T0)) == [("slack", "firing")]
    first = eng.tick(at(hours=1))
    second = eng.tick(at(hours=2))
    assert [d.payload["repeat"] for d in first + second] == [1, 2]
    assert len({d.id for d in first + second}) == 2
    assert sinks(eng.process(event("source.recovered"), at(hours=2, minutes=30))) == [
        ("slack", "resolved")
    ]
    assert eng.tick(at(hours=5)) == []


def test_resolve_sends_a_resolved_notice() -> None:
    """The resolving event of a fired alert sends 'Resolved: ...' with the resolving event."""
    eng = engine(offline_rule(resolve=True, title="{printer.name} offline"))
    offline = event("printer.offline")
    eng.process(offline, T0)
    eng.tick(at(minutes=10))
    online = event("printer.online")
    [notice] = eng.process(online, at(minutes=20))
    assert notice.payload["status"] == "resolved"
    assert notice.payload["title"] == "Resolved: Printer Form4-A offline"
    assert notice.payload["event"] == online
    assert notice.payload["resolves"] == offline["id"]
    assert notice.id == delivery_id(online["id"], "offline", "slack", "resolved")


def test_no_resolved_notice_without_a_firing() -> None:
    """A recovery inside the hold-down cancels silently: nothing fired, nothing resolves."""
    eng = engine(offline_rule(resolve=True))
    eng.process(event("printer.offline"), T0)
    assert eng.process(event("printer.online"), at(minutes=5)) == []


def test_matching_again_while_firing_does_not_renotify() -> None:
    """A firing condition swallows duplicate triggering events until it resolves."""
    eng = engine(rule("a", on=["printer.alert"], resolve=True))
    raised = {"alert": "Tank missing", "state": "raised"}
    assert eng.process(event("printer.alert", details=raised), T0)
    assert eng.process(event("printer.alert", details=raised), at(60)) == []


# -- grouping -------------------------------------------------------------------------------


def grouped_rule(**options: object) -> Rule:
    return rule("outage", on=["printer.offline"], group_by=("source",), group_wait=30, **options)


def test_mass_outage_becomes_one_notification() -> None:
    """200 offline printers within group_wait produce one delivery per receiver, count 200."""
    eng = engine(grouped_rule())
    for n in range(200):
        assert eng.process(event("printer.offline", f"P{n:03d}"), at(n * 0.1)) == []
    [delivery] = eng.tick(at(30))
    group = delivery.payload["group"]
    assert group["count"] == 200
    assert group["subjects"][:2] == ["P000", "P001"]
    assert delivery.payload["title"] == "200 printers offline"
    assert delivery.payload["text"].endswith("and 180 more")


def test_groups_are_split_by_the_group_key() -> None:
    """Events whose group_by values differ go out in separate notifications."""
    eng = engine(grouped_rule())
    eng.process(event("printer.offline", "A", source="lab"), T0)
    eng.process(event("printer.offline", "B", source="factory"), T0)
    eng.process(event("printer.offline", "C", source="lab"), T0)
    counts = sorted(d.payload["group"]["count"] for d in eng.tick(at(30)))
    assert counts == [1, 2]


def test_group_of_one_uses_the_rules_own_title() -> None:
    """A batch with a single member reads like an ungrouped notification."""
    eng = engine(grouped_rule(title="{printer.name} offline"))
    eng.process(event("printer.offline", "A"), T0)
    [delivery] = eng.tick(at(30))
    assert delivery.payload["title"] == "Printer A offline"
    assert delivery.payload["group"] == {"count": 1, "subjects": ["A"]}


def test_group_title_template_sees_the_group() -> None:
    """`group_title` renders with {group.count} and the first event's fields."""
    eng = engine(grouped_rule(group_title="{group.count} down in {source}"))
    for name in "ABC":
        eng.process(event("printer.offline", name), T0)
    assert eng.tick(at(30))[0].payload["title"] == "3 down in lab"


def test_events_after_group_wait_start_a_new_batch() -> None:
    """An event arriving after the batch was sent opens the next batch."""
    eng = engine(grouped_rule())
    eng.process(event("printer.offline", "A"), T0)
    eng.process(event("printer.offline", "B"), at(31))
    counts = [d.payload["group"]["count"] for d in eng.tick(at(61))]
    assert counts == [1]


def test_grouped_resolutions_are_grouped_too() -> None:
    """A fleet coming back sends one grouped 'Resolved' notice."""
    eng = engine(grouped_rule(resolve=True))
    for name in "ABCD":
        eng.process(event("printer.offline", name), T0)
    eng.tick(at(30))
    for name in "ABCD":
        eng.process(event("printer.online", name), at(100))
    [notice] = eng.tick(at(130))
    assert notice.payload["status"] == "resolved"
    assert notice.payload["title"] == "Resolved: 4 printers offline"


def test_engine_rejects_naive_times() -> None:
    """`now` must be timezone-aware, so schedules and state never mix naive and UTC times."""
    eng = RuleEngine(RuleSet())
    with pytest.raises(ValueError, match="timezone-aware"):
        eng.tick(T0.replace(tzinfo=None))
