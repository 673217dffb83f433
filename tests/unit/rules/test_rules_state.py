"""Rule state survives restarts and reloads: timers, throttles, firing conditions, batches."""

from __future__ import annotations

import json
from typing import Any

import pytest
from test_rules_support import T0, at, event, rule, sinks

from printfleet.core.rules.engine import RuleEngine
from printfleet.core.rules.model import Rule, RuleSet


def restart(eng: RuleEngine, *rules: Rule) -> RuleEngine:
    """A new engine from the old one's state, through JSON as the store keeps it."""
    state: dict[str, Any] = json.loads(json.dumps(eng.state()))
    return RuleEngine(RuleSet(rules=rules or eng.rules.rules), state=state)


def test_state_is_json() -> None:
    """state() holds only JSON types, with a version."""
    eng = RuleEngine(RuleSet(rules=(rule(on=["printer.offline"], hold=600),)))
    eng.process(event("printer.offline"), T0)
    state = eng.state()
    assert json.loads(json.dumps(state)) == state
    assert state["version"] == 1


def test_pending_hold_down_survives_restart() -> None:
    """After a restart a pending hold-down fires at its original time, not later or earlier."""
    eng = RuleEngine(RuleSet(rules=(rule(on=["printer.offline"], hold=600),)))
    eng.process(event("printer.offline"), T0)
    fresh = restart(eng)
    assert fresh.next_deadline() == at(minutes=10)
    assert fresh.tick(at(minutes=9)) == []
    assert sinks(fresh.tick(at(minutes=10))) == [("slack", "firing")]


def test_recovery_after_restart_still_cancels() -> None:
    """The resolving event arriving after a restart cancels the restored hold-down."""
    eng = RuleEngine(RuleSet(rules=(rule(on=["printer.offline"], hold=600),)))
    eng.process(event("printer.offline"), T0)
    fresh = restart(eng)
    fresh.process(event("printer.online"), at(minutes=5))
    assert fresh.tick(at(minutes=20)) == []


def test_throttle_survives_restart() -> None:
    """A throttle window started before a restart still drops notifications after it."""
    eng = RuleEngine(RuleSet(rules=(rule(throttle=1800),)))
    eng.process(event("print.failed"), T0)
    fresh = restart(eng)
    assert fresh.process(event("print.failed"), at(minutes=10)) == []
    assert fresh.process(event("print.failed"), at(minutes=31))


def test_firing_condition_survives_restart() -> None:
    """A fired `resolve` rule still sends its resolved notice after a restart."""
    eng = RuleEngine(RuleSet(rules=(rule(on=["printer.offline"], resolve=True),)))
    eng.process(event("printer.offline"), T0)
    fresh = restart(eng)
    assert sinks(fresh.process(event("printer.online"), at(minutes=5))) == [("slack", "resolved")]


def test_repeat_schedule_survives_restart() -> None:
    """The next repeat after a restart is due when it was before."""
    eng = RuleEngine(RuleSet(rules=(rule(on=["source.unreachable"], repeat=3600),)))
    eng.process(event("source.unreachable"), T0)
    fresh = restart(eng)
    assert fresh.next_deadline() == at(hours=1)
    assert [d.payload["repeat"] for d in fresh.tick(at(hours=1))] == [1]


def test_late_restart_does_not_burst_repeats() -> None:
    """Coming back hours late sends at most one overdue repeat, then the normal cadence."""
    eng = RuleEngine(RuleSet(rules=(rule(on=["source.unreachable"], repeat=3600),)))
    eng.process(event("source.unreachable"), T0)
    fresh = restart(eng)
    assert len(fresh.tick(at(hours=5))) == 1
    assert fresh.next_deadline() == at(hours=6)


def test_group_batch_survives_restart() -> None:
    """Members collected before a restart are sent in the same grouped notification."""
    grouped = rule("g", on=["printer.offline"], group_by=("source",), group_wait=30)
    eng = RuleEngine(RuleSet(rules=(grouped,)))
    eng.process(event("printer.offline", "A"), T0)
    fresh = restart(eng)
    fresh.process(event("printer.offline", "B"), at(10))
    [delivery] = fresh.tick(at(30))
    assert delivery.payload["group"] == {"count": 2, "subjects": ["A", "B"]}


def test_state_of_removed_rules_is_dropped() -> None:
    """Restoring state with a rule set lacking the rule drops its timers."""
    eng = RuleEngine(RuleSet(rules=(rule("gone", on=["printer.offline"], hold=600),)))
    eng.process(event("printer.offline"), T0)
    fresh = restart(eng, rule("other"))
    assert fresh.next_deadline() is None


def test_replace_rules_retimes_pending_hold_downs() -> None:
    """A reload that changes `for` keeps the pending condition and applies the new duration."""
    eng = RuleEngine(RuleSet(rules=(rule("off", on=["printer.offline"], hold=600),)))
    eng.process(event("printer.offline"), T0)
    eng.replace_rules(RuleSet(rules=(rule("off", on=["printer.offline"], hold=300),)))
    assert eng.next_deadline() == at(minutes=5)
    assert sinks(eng.tick(at(minutes=5))) == [("slack", "firing")]


def test_replace_rules_keeps_throttle_windows() -> None:
    """A reload keeps throttle windows of rules that still throttle."""
    eng = RuleEngine(RuleSet(rules=(rule("t", throttle=1800),)))
    eng.process(event("print.failed"), T0)
    eng.replace_rules(RuleSet(rules=(rule("t", throttle=1800), rule("new"))))
    assert [d.payload["rule"] for d in eng.process(event("print.failed"), at(60))] == ["new"]


@pytest.mark.parametrize(
    "state",
    [
        {"version": 99, "conditions": [{"rule": "r"}]},
        {"version": 1, "conditions": [{"rule": "r", "phase": "pending"}]},
        {"version": 1, "conditions": ["junk"], "throttle": [["r"]], "batches": [{}]},
        {"version": 1, "throttle": [["r", "lab", "A", "not a time"]]},
    ],
)
def test_unreadable_state_entries_are_ignored(state: dict[str, Any]) -> None:
    """Broken or foreign state never stops the engine; the bad entries are dropped."""
    eng = RuleEngine(RuleSet(rules=(rule("r", throttle=60),)), state=state)
    assert eng.next_deadline() is None
    assert eng.process(event("print.failed"), T0)
