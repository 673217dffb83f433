"""``printfleet rules test``: what the rule packs would do with recorded events, sending nothing.

A dry run: it feeds a JSONL file of CloudEvents through the configured rule packs on a
simulated clock (each event's ``time``), fires hold-downs, repeats and grouped batches when they
fall due, flushes what is still pending at the end, and prints every decision with the rendered
titles and texts. Nothing is sent and no state is written.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from printfleet.config import Settings
from printfleet.core.delivery import Delivery
from printfleet.core.events import EventType
from printfleet.core.model import iso
from printfleet.core.rules.engine import Decision, RuleEngine
from printfleet.core.rules.model import RuleSet
from printfleet.errors import EXIT_ERROR, EXIT_OK
from printfleet.rulepacks.loader import load_rule_set

_MAX_TIMER_STEPS = 10_000


def rules_test(
    settings: Settings,
    events_path: Path,
    out: TextIO,
    *,
    base_dir: Path | None = None,
    rule_set: RuleSet | None = None,
) -> int:
    """Dry-run ``events_path`` (one CloudEvent JSON object per line) through the rule packs.

    Returns 0, or 1 when the events file has lines that are not CloudEvents (each is reported
    with its line number and nothing is run).

    Raises:
        RuleError: the rule packs are invalid (the CLI turns it into exit code 2).
        OSError: the events file cannot be read.
    """
    if rule_set is None:
        rule_set = load_rule_set(settings, base_dir=base_dir)
    events, problems = read_events(events_path)
    if problems:
        for problem in problems:
            print(problem, file=out)
        return EXIT_ERROR
    packs = ", ".join(rule_set.packs) or "none"
    print(
        f"rule packs: {packs} ({len(rule_set.rules)} rules, {len(rule_set.silences)} silences)",
        file=out,
    )
    engine = RuleEngine(rule_set)
    totals: dict[str, int] = {}
    clock: datetime | None = None
    for number, (time, event) in enumerate(events, start=1):
        now = time if clock is None or time > clock else clock
        _run_timers(engine, now, out, totals)
        clock = now
        print(
            f"\n[{number}] {iso(now)}  {event.get('type')}  {event.get('source')}  "
            f"{event.get('subject')}",
            file=out,
        )
        trace: list[Decision] = []
        deliveries = engine.process(event, now, trace=trace)
        _report(trace, deliveries, out, totals, indent="    ")
        if not trace:
            print("    (no rule applies)", file=out)
    if clock is not None:
        horizon = clock + _flush_horizon(rule_set)
        _run_timers(engine, horizon, out, totals, final=True)
    summary = ", ".join(f"{count} {what}" for what, count in sorted(totals.items()))
    print(f"\nsummary: {len(events)} events; {summary or 'no deliveries'}", file=out)
    return EXIT_OK


def read_events(path: Path) -> tuple[list[tuple[datetime, dict[str, Any]]], list[str]]:
    """The events of a JSONL file with their times, and a message per unusable line."""
    events: list[tuple[datetime, dict[str, Any]]] = []
    problems: list[str] = []
    known = {t.value for t in EventType}
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            where = f"{path}:{number}"
            try:
                event = json.loads(text)
            except json.JSONDecodeError as err:
                problems.append(f"{where}: not JSON ({err.msg}, column {err.colno})")
                continue
            if not isinstance(event, dict):
                problems.append(f"{where}: not a JSON object (fix: one CloudEvent per line)")
                continue
            missing = [k for k in ("id", "type", "source", "subject", "time") if k not in event]
            if missing:
                problems.append(
                    f"{where}: missing {', '.join(missing)} (fix: write CloudEvents as "
                    "printfleet publishes them, e.g. from `mosquitto_sub -t 'printfleet/events/#'`)"
                )
                continue
            if event["type"] not in known:
                problems.append(
                    f"{where}: unknown event type {event['type']!r} (fix: use one of "
                    f"{', '.join(sorted(known))})"
                )
                continue
            try:
                time = datetime.fromisoformat(str(event["time"]).replace("Z", "+00:00"))
            except ValueError:
                problems.append(f"{where}: invalid time {event['time']!r} (fix: RFC 3339)")
                continue
            if time.tzinfo is None:
                time = time.replace(tzinfo=UTC)
            events.append((time, event))
    return events, problems


def _flush_horizon(rule_set: RuleSet) -> timedelta:
    longest = timedelta(0)
    for rule in rule_set.rules:
        longest = max(longest, rule.hold + rule.group_wait)
    return longest + timedelta(seconds=1)


def _run_timers(
    engine: RuleEngine,
    until: datetime,
    out: TextIO,
    totals: dict[str, int],
    *,
    final: bool = False,
) -> None:
    for _ in range(_MAX_TIMER_STEPS):
        deadline = engine.next_deadline()
        if deadline is None or deadline > until:
            break
        trace: list[Decision] = []
        deliveries = engine.tick(deadline, trace=trace)
        if trace:
            label = "end of events, flushing timers" if final else "timers"
            print(f"\n[{label}] {iso(deadline)}", file=out)
            _report(trace, deliveries, out, totals, indent="    ")


def _report(
    trace: Sequence[Decision],
    deliveries: Sequence[Delivery],
    out: TextIO,
    totals: dict[str, int],
    *,
    indent: str,
) -> None:
    width = max((len(d.rule) for d in trace), default=0)
    shown: set[tuple[str, str, str]] = set()
    for decision in trace:
        print(
            f"{indent}{decision.rule:<{width}}  {decision.outcome:<10} {decision.subject}"
            + (f"  {decision.detail}" if decision.detail else ""),
            file=out,
        )
        if decision.outcome in ("silenced", "throttled", "cancelled", "error"):
            totals[decision.outcome] = totals.get(decision.outcome, 0) + 1
    # one block per rule decision: receivers, title, text
    by_key: dict[tuple[str, str, str], list[Delivery]] = {}
    for delivery in deliveries:
        payload = delivery.payload
        key = (str(payload.get("rule")), str(payload.get("status")), delivery.event_id)
        by_key.setdefault(key, []).append(delivery)
    for (rule, status, _), group in by_key.items():
        if (rule, status, _) in shown:
            continue
        shown.add((rule, status, _))
        first = group[0].payload
        sinks = []
        for delivery in sorted(group, key=lambda d: d.sink == "mqtt"):
            if delivery.sink == "mqtt":
                flags = f"qos {delivery.payload.get('qos')}" + (
                    ", retained" if delivery.payload.get("retain") else ""
                )
                sinks.append(f"mqtt {delivery.payload.get('topic')} ({flags})")
            else:
                sinks.append(delivery.sink)
            totals["deliveries"] = totals.get("deliveries", 0) + 1
        group_info = first.get("group")
        count = f" [group of {group_info['count']}]" if isinstance(group_info, Mapping) else ""
        print(f"{indent}  -> {rule} {status}{count} to {', '.join(sinks)}", file=out)
        print(f"{indent}     severity: {first.get('severity')}", file=out)
        print(f"{indent}     title:    {first.get('title')}", file=out)
        for number, line in enumerate(str(first.get("text") or "").splitlines() or [""]):
            print(f"{indent}     {'text:' if number == 0 else '':<9} {line}", file=out)
