"""The rule engine's state as JSON-able data, and reading it back after a restart.

Apart from the engine because what is stored, and what of it a changed rule set still needs
(a SIGHUP reload goes through here too), is a format question versioned by
:data:`STATE_VERSION`, separate from when rules fire. What hold silences keep is stored beside
these tables under ``"held"`` by :mod:`~printfleet.core.rules.holds` (added in a compatible way:
an engine state without it is as before).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from printfleet.core.model import iso
from printfleet.core.rules.model import Rule
from printfleet.core.rules.names import parse_time, required_time
from printfleet.core.rules.records import Batch, Cond

STATE_VERSION = 1


def dump_state(
    rules: Mapping[str, Rule],
    conds: Iterable[Cond],
    throttle: Mapping[tuple[str, str, str], datetime],
    batches: Iterable[Batch],
    now: datetime | None,
) -> dict[str, Any]:
    """Conditions, throttle windows still open at ``now`` and batches as JSON-able data."""
    windows = []
    for (rule_name, source, subject), last in throttle.items():
        rule = rules.get(rule_name)
        if rule is None or rule.throttle is None:
            continue
        if now is not None and last + rule.throttle <= now:
            continue
        windows.append([rule_name, source, subject, iso(last)])
    return {
        "version": STATE_VERSION,
        "conditions": [
            {
                "rule": c.rule,
                "source": c.source,
                "subject": c.subject,
                "type": c.type,
                "disc": c.disc,
                "phase": c.phase,
                "since": iso(c.since),
                "due": iso(c.due),
                "notified": c.notified,
                "repeats": c.repeats,
                "event": dict(c.event),
            }
            for c in conds
        ],
        "throttle": windows,
        "batches": [
            {
                "rule": b.rule,
                "status": b.status,
                "values": list(b.values),
                "due": iso(b.due),
                "event": dict(b.event),
                "render": dict(b.render),
                "status_id": b.status_id,
                "members": [list(m) for m in b.members],
            }
            for b in batches
        ],
    }


@dataclass(slots=True)
class Restored:
    """What :func:`restore_state` kept, in stored order (the engine schedules it in this order)."""

    conds: list[Cond] = field(default_factory=list)
    throttle: dict[tuple[str, str, str], datetime] = field(default_factory=dict)
    batches: list[Batch] = field(default_factory=list)


def restore_state(state: Mapping[str, Any], rules: Mapping[str, Rule]) -> Restored:
    """Read :func:`dump_state` output, dropping what ``rules`` no longer need.

    Pending hold-downs are re-timed with the rule's current ``for``; firing conditions are kept
    only where the rule still resolves or repeats. Unreadable entries are dropped, never raised:
    a damaged state must not stop the daemon.
    """
    restored = Restored()
    if state.get("version") != STATE_VERSION:
        return restored
    for item in _entries(state, "conditions"):
        try:
            rule = rules.get(item["rule"])
            if rule is None:
                continue
            cond = Cond(
                rule=str(item["rule"]),
                source=str(item["source"]),
                subject=str(item["subject"]),
                type=str(item["type"]),
                disc=str(item.get("disc") or ""),
                phase="firing" if item["phase"] == "firing" else "pending",
                since=required_time(item["since"]),
                due=parse_time(item.get("due")),
                event=dict(item["event"]),
                notified=bool(item.get("notified")),
                repeats=int(item.get("repeats") or 0),
            )
        except (KeyError, TypeError, ValueError):
            continue  # an unreadable entry must not stop the daemon; it is dropped
        if cond.type not in rule.types:
            continue
        if cond.phase == "pending":
            if not rule.hold:
                continue
            cond.due = cond.since + rule.hold
        elif not (rule.resolve or rule.repeat is not None):
            continue
        elif rule.repeat is None:
            cond.due = None
        elif cond.due is None:
            cond.due = cond.since + rule.repeat
        restored.conds.append(cond)
    for entry in _entries(state, "throttle"):
        try:
            rule_name, source, subject, last = entry
            when = parse_time(last)
        except (TypeError, ValueError):
            continue
        rule = rules.get(rule_name)
        if rule is not None and rule.throttle is not None and when is not None:
            restored.throttle[(str(rule_name), str(source), str(subject))] = when
    for item in _entries(state, "batches"):
        try:
            rule = rules.get(item["rule"])
            if rule is None or not rule.group_by:
                continue
            batch = Batch(
                rule=str(item["rule"]),
                status="resolved" if item["status"] == "resolved" else "firing",
                values=tuple(str(v) for v in item["values"]),
                due=required_time(item["due"]),
                event=dict(item["event"]),
                render=dict(item.get("render") or item["event"]),
                status_id=str(item.get("status_id") or item["status"]),
                members=[(str(a), str(b), str(c)) for a, b, c in item["members"]],
            )
        except (KeyError, TypeError, ValueError):
            continue
        restored.batches.append(batch)
    return restored


def _entries(state: Mapping[str, Any], key: str) -> list[Any]:
    value = state.get(key)
    return value if isinstance(value, list) else []
