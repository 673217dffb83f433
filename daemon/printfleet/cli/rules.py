"""``printfleet rules test``: what the rule packs would do with recorded events, sending nothing.

A dry run: it feeds a JSONL file of CloudEvents (``-``: standard input) through the configured
rule packs on a simulated clock (each event's ``time``), fires hold-downs, repeats and grouped
batches when they fall due, flushes what is still pending at the end, and prints every decision
with the rendered titles and texts (log-only rules included).
Nothing is sent and no state is written.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping, Sequence
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
STDIN = "-"

#: What the outcomes counted in the summary line mean (``cancelled`` puzzled users most).
OUTCOME_MEANINGS: dict[str, str] = {
    "log-only": "the rule matched; notify = [] sends nothing (counted and logged only)",
    "cancelled": "a hold-down (`for`) was still waiting when the resolving event came "
    "(e.g. printer.online before printer.offline had lasted `for`), so nothing was sent",
    "silenced": "a silence matched, nothing was sent",
    "held": "a hold silence matched: kept for the summary sent when the silence ends",
    "acknowledged": "an ack (printfleet ack) covers the alert: its repeat was not sent",
    "throttled": "the rule already notified about this printer within `throttle`",
    "error": "the rule could not be evaluated (see the line above)",
}


def rules_test(
    settings: Settings,
    events_path: Path | str,
    out: TextIO,
    *,
    base_dir: Path | None = None,
    rule_set: RuleSet | None = None,
    stdin: TextIO | None = None,
) -> int:
    """Dry-run ``events_path`` (one CloudEvent JSON object per line; ``-`` reads ``stdin``,
    default ``sys.stdin``) through the rule packs.

    Returns 0, or 1 when the events file has lines that are not CloudEvents (each is reported
    with its line number and nothing is run).

    Raises:
        RuleError: the rule packs are invalid (the CLI turns it into exit code 2).
        OSError: the events file cannot be read.
    """
    if rule_set is None:
        rule_set = load_rule_set(settings, base_dir=base_dir)
    if str(events_path) == STDIN:
        events, problems = parse_events(stdin or sys.stdin, "<stdin>")
    else:
        events, problems = read_events(Path(events_path))
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
        release = engine.next_release()
        if release is not None:  # show the held summaries, however far the window's end is
            trace = []
            deliveries = engine.tick(release, trace=trace)
            print(f"\n[end of events, hold silences end] {iso(release)}", file=out)
            _report(trace, deliveries, out, totals, indent="    ")
    summary = ", ".join(f"{count} {what}" for what, count in sorted(totals.items()))
    print(f"\nsummary: {len(events)} events; {summary or 'no deliveries'}", file=out)
    for what in sorted(totals):
        if what in OUTCOME_MEANINGS:
            print(f"  {what}: {OUTCOME_MEANINGS[what]}", file=out)
    return EXIT_OK


def read_events(path: Path) -> tuple[list[tuple[datetime, dict[str, Any]]], list[str]]:
    """The events of a JSONL file with their times, and a message per unusable line."""
    with path.open(encoding="utf-8") as handle:
        return parse_events(handle, str(path))


def parse_events(
    lines: Iterable[str], name: str
) -> tuple[list[tuple[datetime, dict[str, Any]]], list[str]]:
    """The events of JSONL ``lines`` (``name`` in messages), and a message per unusable line.

    A line may start with the MQTT topic, as ``mosquitto_sub -v`` prints it
    (``printfleet/events/print/failed {...}``); the topic is ignored.
    """
    events: list[tuple[datetime, dict[str, Any]]] = []
    problems: list[str] = []
    known = {t.value for t in EventType}
    for number, line in enumerate(lines, start=1):
        text = _without_topic(line.strip())
        if not text or text.startswith("#"):
            continue
        where = f"{name}:{number}"
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


def _without_topic(text: str) -> str:
    """``text`` without a leading ``topic `` (``mosquitto_sub -v`` output), else unchanged."""
    if text.startswith(("{", "#")):
        return text
    topic, sep, rest = text.partition(" ")
    if sep and "/" in topic and rest.lstrip().startswith("{"):
        return rest.lstrip()
    return text


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
        rendered = decision.title is not None
        print(
            f"{indent}{decision.rule:<{width}}  {decision.outcome:<10} {decision.subject}"
            + (f"  {decision.detail}" if decision.detail and not rendered else ""),
            file=out,
        )
        if rendered:  # a log-only rule: its wording shows nowhere else
            print(f"{indent}  -> {decision.rule}: log only (notify = [])", file=out)
            _print_wording(decision.title, decision.text, out, indent)
        if decision.outcome in (
            "log-only",
            "silenced",
            "held",
            "acknowledged",
            "throttled",
            "cancelled",
            "error",
        ):
            totals[decision.outcome] = totals.get(decision.outcome, 0) + 1
    # one block per rule decision: receivers, title, text
    by_key: dict[tuple[str, str, str], list[Delivery]] = {}
    for delivery in deliveries:
        payload = delivery.payload
        # A held summary belongs to no rule: it is named after its silence.
        held = payload.get("held")
        name = payload.get("rule") or (
            f"silence {held.get('silence')}" if isinstance(held, Mapping) else None
        )
        key = (str(name), str(payload.get("status")), delivery.event_id)
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
        _print_wording(first.get("title"), first.get("text"), out, indent)


def _print_wording(title: object, text: object, out: TextIO, indent: str) -> None:
    print(f"{indent}     title:    {title}", file=out)
    for number, line in enumerate(str(text or "").splitlines() or [""]):
        print(f"{indent}     {'text:' if number == 0 else '':<9} {line}", file=out)
