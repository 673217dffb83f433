"""The shipped rules for parts left on the platform and for ratings behave as documented."""

from __future__ import annotations

from pathlib import Path

from test_rules_support import at, event

from printfleet.config import ReceiverConfig, RulesConfig, Settings
from printfleet.core.alerts import ALERT_NEEDS_CONFIRMATION, ALERT_PARTS_ON_PLATFORM
from printfleet.core.delivery import Delivery
from printfleet.core.rules.engine import RuleEngine
from printfleet.rulepacks.loader import load_rule_set

ROOT = Path(__file__).resolve().parents[3]


def slack() -> RuleEngine:
    settings = Settings(
        receiver=(ReceiverConfig(name="ops-slack", kind="slack", url="https://example.invalid/h"),),
        rules=RulesConfig(packs=(str(ROOT / "rules" / "slack.toml"),)),
    )
    return RuleEngine(load_rule_set(settings))


def alert(text: str, state: str, minutes: float) -> dict[str, object]:
    return event("printer.alert", time=at(minutes=minutes), details={"alert": text, "state": state})


def rules_of(deliveries: list[Delivery]) -> list[str]:
    return [d.payload["rule"] for d in deliveries]


def test_parts_removed_within_30_minutes_say_nothing() -> None:
    eng = slack()
    assert eng.process(alert(ALERT_PARTS_ON_PLATFORM, "raised", 0), at()) == []
    assert eng.process(alert(ALERT_PARTS_ON_PLATFORM, "cleared", 20), at(minutes=20)) == []
    assert eng.tick(at(minutes=45)) == []


def test_parts_left_30_minutes_fire_once_and_resolve_when_cleared() -> None:
    eng = slack()
    eng.process(alert(ALERT_PARTS_ON_PLATFORM, "raised", 0), at())
    # Another alert of the same printer neither fires the parts rule nor cancels it.
    other = eng.process(alert(ALERT_NEEDS_CONFIRMATION, "raised", 1), at(minutes=1))
    assert rules_of(other) == ["slack-printer-alert"]
    fired = eng.tick(at(minutes=31))
    assert rules_of(fired) == ["slack-parts-left-on-platform"]
    assert "parts still on the build platform" in fired[0].payload["title"]
    resolved = eng.process(alert(ALERT_PARTS_ON_PLATFORM, "cleared", 50), at(minutes=50))
    assert rules_of(resolved) == ["slack-parts-left-on-platform"]
    assert resolved[0].payload["title"].startswith("Resolved:")


def test_a_finished_print_rated_failure_is_sent_other_ratings_are_not() -> None:
    eng = slack()
    surprise = {"verdict": "FAILURE", "machine_outcome": "finished", "by": "kim", "note": "warped"}
    sent = eng.process(event("print.rated", details=surprise), at())
    assert rules_of(sent) == ["slack-print-rated-failure"]
    assert "kim: warped" in sent[0].payload["text"]
    fine = {"verdict": "SUCCESS", "machine_outcome": "finished", "by": None, "note": None}
    assert eng.process(event("print.rated", details=fine), at(1)) == []
    known = {"verdict": "FAILURE", "machine_outcome": "failed", "by": None, "note": None}
    assert eng.process(event("print.rated", details=known), at(2)) == []
