"""``printfleet rules test`` and ``printfleet silence add|list|remove``.

``rules test`` is a dry run: it feeds a JSONL file of CloudEvents through the configured rule
packs on a simulated clock (each event's ``time``), fires hold-downs, repeats and grouped
batches when they fall due, flushes what is still pending at the end, and prints every
decision with the rendered titles and texts. Nothing is sent and no state is written.

Ad-hoc silences live in the state database under the key ``"silences"`` (a JSON list of
:meth:`printfleet.core.rules.Silence.as_dict`); the daemon picks them up with
:func:`printfleet.rulepacks.silences_from_state`.
"""

from __future__ import annotations

import argparse
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, TextIO

from printfleet.config import Settings
from printfleet.core.delivery import Delivery
from printfleet.core.events import EventType
from printfleet.core.rules.engine import Decision, RuleEngine
from printfleet.core.rules.model import RuleSet
from printfleet.core.rules.windows import Silence
from printfleet.rulepacks.loader import load_rule_set, silences_from_state

SILENCES_KEY = "silences"
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_INVALID = 2
_MAX_TIMER_STEPS = 10_000


# --------------------------------------------------------------------------------------------
# rules test


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
            f"\n[{number}] {_iso(now)}  {event.get('type')}  {event.get('source')}  "
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
            print(f"\n[{label}] {_iso(deadline)}", file=out)
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


def _iso(value: datetime) -> str:
    text = value.astimezone(UTC).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


# --------------------------------------------------------------------------------------------
# silences


class SilenceStore(Protocol):
    """What ``silence`` needs of :class:`printfleet.store.Store`."""

    def load_state(self, key: str) -> Any | None: ...

    def commit(self, *, state: dict[str, Any] | None = None) -> int: ...

    def close(self) -> None: ...


def _open_store(settings: Settings) -> SilenceStore:
    from printfleet.store import Store

    return Store.open(settings.daemon.state_dir / "state.sqlite3")


def silence_command(
    settings: Settings,
    action: str,
    args: argparse.Namespace,
    out: TextIO,
    *,
    now: datetime | None = None,
    open_store: Callable[[Settings], SilenceStore] = _open_store,
) -> int:
    """``silence add`` (``args.matchers: dict[str, str]``, ``args.duration: timedelta``,
    ``args.comment``), ``silence list`` and ``silence remove`` (``args.ids``).

    Ad-hoc silences start now and end after ``duration``; expired ones are pruned on every
    change. Returns 0, 1 for an unknown id, 2 for an invalid matcher or duration.

    Raises:
        StoreError: the state database cannot be used.
    """
    now = now or datetime.now(UTC)
    store = open_store(settings)
    try:
        current = list(silences_from_state(store.load_state(SILENCES_KEY)))
        if action == "add":
            return _add(store, current, args, out, now)
        if action == "list":
            return _list(current, out, now, show_expired=bool(getattr(args, "all", False)))
        if action == "remove":
            return _remove(store, current, list(getattr(args, "ids", []) or []), out, now)
        print(f"unknown silence action {action!r}; use add, list or remove", file=out)
        return EXIT_INVALID
    finally:
        store.close()


def _add(
    store: SilenceStore,
    current: list[Silence],
    args: argparse.Namespace,
    out: TextIO,
    now: datetime,
) -> int:
    matchers = getattr(args, "matchers", {}) or {}
    if not isinstance(matchers, Mapping):
        matchers = dict(matchers)
    duration = getattr(args, "duration", None) or timedelta(hours=1)
    if not isinstance(duration, timedelta) or duration <= timedelta(0):
        print("the duration must be longer than zero, e.g. --duration 2h", file=out)
        return EXIT_INVALID
    try:
        silence = Silence(
            id=uuid.uuid4().hex[:8],
            match={str(k): (str(v),) for k, v in matchers.items()},
            starts_at=now,
            ends_at=now + duration,
            comment=str(getattr(args, "comment", None) or ""),
            origin="adhoc",
            created_by=str(getattr(args, "author", None) or ""),
        )
    except ValueError as err:
        print(f"invalid silence: {err}", file=out)
        return EXIT_INVALID
    kept = [s for s in current if not s.expired(now)]
    kept.append(silence)
    store.commit(state={SILENCES_KEY: [s.as_dict() for s in kept]})
    print(
        f"added silence {silence.id}: {_describe_match(silence)} until {_iso(now + duration)}",
        file=out,
    )
    return EXIT_OK


def _list(current: Sequence[Silence], out: TextIO, now: datetime, *, show_expired: bool) -> int:
    rows = [s for s in current if show_expired or not s.expired(now)]
    if not rows:
        print("no ad-hoc silences", file=out)
        return EXIT_OK
    print(f"{'ID':<10} {'STATE':<9} {'UNTIL':<21} {'MATCH':<40} COMMENT", file=out)
    for silence in rows:
        state = (
            "expired" if silence.expired(now) else "active" if silence.active(now) else "scheduled"
        )
        until = _iso(silence.ends_at) if silence.ends_at else "-"
        print(
            f"{silence.id:<10} {state:<9} {until:<21} {_describe_match(silence):<40} "
            f"{silence.comment}",
            file=out,
        )
    return EXIT_OK


def _remove(
    store: SilenceStore, current: list[Silence], ids: list[str], out: TextIO, now: datetime
) -> int:
    known = {s.id for s in current}
    unknown = [i for i in ids if i not in known]
    kept = [s for s in current if s.id not in ids and not s.expired(now)]
    removed = [i for i in ids if i in known]
    if removed:
        store.commit(state={SILENCES_KEY: [s.as_dict() for s in kept]})
        print(f"removed {', '.join(removed)}", file=out)
    for silence_id in unknown:
        print(f"no silence with id {silence_id!r} (see `printfleet silence list`)", file=out)
    return EXIT_ERROR if unknown else EXIT_OK


def _describe_match(silence: Silence) -> str:
    if not silence.match:
        return "everything"
    return " ".join(f"{k}={','.join(v)}" for k, v in silence.match.items())
