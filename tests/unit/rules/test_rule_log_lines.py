"""The pipeline logs each rule decision: rule.matched (info), rule.throttled / rule.silenced
(debug), so `rules/default.toml`'s promise of `rule.*` lines holds."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import structlog
from test_rules_support import T0, engine, rule

from printfleet.core.delivery import Delivery
from printfleet.core.events import ChangeEvent, EventType, Severity
from printfleet.core.fleet import AccountHealth
from printfleet.core.model import Vendor
from printfleet.core.rules.windows import Silence
from printfleet.pipeline import Pipeline
from printfleet.poller import Cycle
from printfleet.testing import FakeClock


class _Store:
    def commit(self, *, deliveries: Sequence[Delivery] = (), **_: Any) -> int:
        return len(deliveries)

    def load_state(self, key: str) -> Any:
        return None


def failed(event_id: str) -> Cycle:
    event = ChangeEvent(
        id=event_id,
        type=EventType.PRINT_FAILED,
        source="lab",
        vendor=Vendor.FORMLABS,
        subject="Form4-A",
        time=T0,
        severity=Severity.CRITICAL,
    )
    return Cycle(source="lab", snapshot=None, events=(event,), health=AccountHealth(), state={})


def rule_lines(logs: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [
        (entry["event"], entry["log_level"], entry["rule"])
        for entry in logs
        if entry["event"].startswith("rule.")
    ]


async def test_a_throttled_repeat_is_a_debug_line_after_the_matched_one() -> None:
    """The first failure is rule.matched at info naming the receiver; the second, inside the
    throttle window, is rule.throttled at debug."""
    pipeline = Pipeline(
        store=_Store(),
        rules=engine(rule("failed", throttle=3600)),
        clock=FakeClock(T0),
        mqtt_prefix=None,
    )
    with structlog.testing.capture_logs() as logs:
        await pipeline.handle(failed("e1"))
        await pipeline.handle(failed("e2"))
    assert rule_lines(logs) == [
        ("rule.matched", "info", "failed"),
        ("rule.throttled", "debug", "failed"),
    ]
    matched = next(e for e in logs if e["event"] == "rule.matched")
    assert (matched["outcome"], matched["detail"], matched["source"]) == (
        "fired",
        "to slack",
        "lab",
    )
    assert matched["subject"] == "Form4-A"


async def test_a_silenced_notification_is_a_debug_line_naming_the_silence() -> None:
    """A notification an active silence stops is rule.silenced, with the silence's id."""
    quiet = Silence(id="maintenance", ends_at=T0 + timedelta(days=1))
    pipeline = Pipeline(
        store=_Store(),
        rules=engine(rule("failed"), silences=[quiet]),
        clock=FakeClock(T0),
        mqtt_prefix=None,
    )
    with structlog.testing.capture_logs() as logs:
        await pipeline.handle(failed("e1"))
    assert rule_lines(logs) == [("rule.silenced", "debug", "failed")]
    assert next(e for e in logs if e["event"] == "rule.silenced")["detail"] == (
        "by silence maintenance"
    )


async def test_detected_changes_are_logged_under_their_type() -> None:
    """The event line's name is event.<type> (greppable), with the type also under `type`."""
    pipeline = Pipeline(store=_Store(), rules=engine(), clock=FakeClock(T0), mqtt_prefix=None)
    with structlog.testing.capture_logs() as logs:
        await pipeline.handle(failed("e1"))
    [line] = [e for e in logs if e.get("id") == "e1"]
    assert (line["event"], line["type"], line["log_level"]) == (
        "event.print.failed",
        "print.failed",
        "info",
    )


async def test_an_acknowledged_repeat_and_a_held_notification_are_info_lines() -> None:
    """An ack keeping a repeat back logs rule.acknowledged; a hold silence logs rule.held."""
    from printfleet.core.rules.acks import Ack

    night = Silence(id="night", starts_at=T0 + timedelta(hours=2), hold=True)
    eng = engine(rule("down", on=["print.failed"], repeat=3600, resolve=True), silences=[night])
    clock = FakeClock(T0)
    pipeline = Pipeline(store=_Store(), rules=eng, clock=clock, mqtt_prefix=None)
    await pipeline.handle(failed("e1"))
    eng.set_acks([Ack(id="a1", rule="down", created_at=T0, created_by="ann")])
    with structlog.testing.capture_logs() as logs:
        await clock.advance(3600)
        await pipeline.tick()
        eng.set_acks([])
        await clock.advance(3600)
        await pipeline.tick()
    assert rule_lines(logs) == [
        ("rule.acknowledged", "info", "down"),
        ("rule.held", "info", "down"),
    ]
    acknowledged = next(e for e in logs if e["event"] == "rule.acknowledged")
    assert acknowledged["detail"] == "repeat not sent: ack a1 by ann"
