"""Quiet hours that hold: what a ``hold = true`` silence kept, and its summary when it ends.

A silence with ``hold`` does not drop the receiver notifications it matches: the engine keeps
them here (:class:`Hold`, one per silence) and, once the silence is no longer active, sends
**one summary per receiver** they were going to (:func:`summary_payload`). An alert that
resolved while held is taken out again (nobody needs to hear in the morning about a printer
that was offline for ten minutes at 3 am); when every held item was taken out, no summary is
sent at all: an empty summary would only teach people to ignore summaries. Repeats of an
alert already held only count up (``count``). MQTT publishes of rules are never held: they
are machine-facing and a consumer acting on them wants them now.

Holds are part of the engine's persisted state (:mod:`~printfleet.core.rules.state`), so a
restart in the middle of the night keeps them. Each hold keeps at most :data:`HOLD_ITEMS_MAX`
items; more are only counted (a flapping printer must not grow the state without bound).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any, Literal

from printfleet.core.events import event_id
from printfleet.core.model import iso
from printfleet.core.rules.names import required_time

#: Items one hold keeps; beyond it the summary says "... and N more".
HOLD_ITEMS_MAX = 500
#: Lines of a summary's text (receivers cut long texts anyway; this keeps them readable).
SUMMARY_LINES_MAX = 40
#: The CloudEvent type of a summary (the body generic webhooks receive; never on MQTT).
SUMMARY_EVENT_TYPE = "notifications.held"

_SEVERITY_ORDER = {"info": 0, "warning": 1, "critical": 2}


@dataclass(slots=True)
class HeldItem:
    """One notification a hold kept (engine-private, mutable: ``count`` grows with repeats)."""

    rule: str
    status: Literal["firing", "resolved"]
    source: str
    subject: str
    type: str
    disc: str
    severity: str
    title: str
    text: str
    at: datetime
    event_id: str
    receivers: tuple[str, ...]
    count: int = 1
    #: Whether it holds the alert's first notice (not only reminders of one already sent).
    first: bool = True

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        """The key of the engine condition it belongs to (what resolves it)."""
        return (self.rule, self.source, self.subject, self.type, self.disc)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "status": self.status,
            "source": self.source,
            "subject": self.subject,
            "type": self.type,
            "disc": self.disc,
            "severity": self.severity,
            "title": self.title,
            "text": self.text,
            "at": iso(self.at),
            "event_id": self.event_id,
            "receivers": list(self.receivers),
            "count": self.count,
            "first": self.first,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HeldItem:
        return cls(
            rule=str(data["rule"]),
            status="resolved" if data.get("status") == "resolved" else "firing",
            source=str(data["source"]),
            subject=str(data["subject"]),
            type=str(data["type"]),
            disc=str(data.get("disc") or ""),
            severity=str(data.get("severity") or "info"),
            title=str(data.get("title") or ""),
            text=str(data.get("text") or ""),
            at=required_time(data["at"]),
            event_id=str(data.get("event_id") or ""),
            receivers=tuple(str(r) for r in data["receivers"]),
            count=max(1, int(data.get("count") or 1)),
            first=data.get("first") is not False,
        )


@dataclass(slots=True)
class Hold:
    """What one ``hold`` silence kept since ``since`` (its first item)."""

    silence: str
    since: datetime
    items: list[HeldItem] = field(default_factory=list)
    overflow: int = 0

    def add(self, item: HeldItem, *, repeat: bool) -> None:
        if repeat:
            for held in self.items:
                if held.key == item.key and held.status == "firing":
                    held.count += 1
                    return
        if len(self.items) >= HOLD_ITEMS_MAX:
            self.overflow += 1
        else:
            self.items.append(item)

    def drop(self, key: tuple[str, str, str, str, str]) -> tuple[bool, bool]:
        """Take out the firing items of condition ``key`` (it resolved): (any taken, was one
        of them its first notice, i.e. nobody was ever told)."""
        taken = [i for i in self.items if i.key == key and i.status == "firing"]
        if taken:
            self.items = [i for i in self.items if not (i.key == key and i.status == "firing")]
        return bool(taken), any(i.first for i in taken)

    def as_dict(self) -> dict[str, Any]:
        return {
            "silence": self.silence,
            "since": iso(self.since),
            "items": [i.as_dict() for i in self.items],
            "overflow": self.overflow,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Hold:
        hold = cls(silence=str(data["silence"]), since=required_time(data["since"]))
        for item in data.get("items") or ():
            try:
                hold.items.append(HeldItem.from_dict(item))
            except (KeyError, TypeError, ValueError):
                continue  # one unreadable item must not lose the others
        hold.overflow = int(data.get("overflow") or 0)
        return hold


def restore_holds(value: Any) -> list[Hold]:
    """Holds as :meth:`Hold.as_dict` wrote them (unreadable ones dropped, never raised)."""
    holds: list[Hold] = []
    for data in value if isinstance(value, list) else ():
        try:
            hold = Hold.from_dict(data)
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
        if hold.items or hold.overflow:
            holds.append(hold)
    return holds


def summary_payload(
    hold: Hold, receiver: str, now: datetime, tz: tzinfo | None
) -> dict[str, Any] | None:
    """The payload of ``receiver``'s summary of ``hold`` (``None``: nothing for it).

    Times are shown in ``tz`` (the silence's zone: "what happened at 03:12" means local time).
    The payload has the well-known keys every receiver format reads (``event``, ``title``,
    ``text``, ``severity``, ``status``) plus ``held`` with every item as data.
    """
    items = [i for i in hold.items if receiver in i.receivers]
    if not items:
        return None
    overflow = hold.overflow
    count = sum(i.count for i in items)
    severity = max((i.severity for i in items), key=lambda s: _SEVERITY_ORDER.get(s, 0))
    if severity not in _SEVERITY_ORDER:
        severity = "info"
    alerts = len(items) + overflow
    title = (
        f"{alerts} notification{'s' if alerts != 1 else ''} held during quiet hours "
        f"({hold.silence})"
    )
    lines = [_line(i, tz) for i in items[:SUMMARY_LINES_MAX]]
    more = len(items) - len(lines) + overflow
    if more > 0:
        lines.append(f"… and {more} more")
    summary_id = event_id("held", hold.silence, iso(hold.since), receiver)
    data = {
        "severity": severity,
        "silence": hold.silence,
        "since": iso(hold.since),
        "until": iso(now),
        "count": count,
        "overflow": overflow,
        "items": [
            {k: v for k, v in i.as_dict().items() if k not in ("receivers", "disc")} for i in items
        ],
    }
    event = {
        "specversion": "1.0",
        "id": summary_id,
        "source": "printfleet/rules/quiet-hours",
        "type": SUMMARY_EVENT_TYPE,
        "subject": hold.silence,
        "time": iso(now),
        "datacontenttype": "application/json",
        "data": data,
    }
    return {
        "event": event,
        "status": "summary",
        "rule": None,
        "severity": severity,
        "title": title,
        "text": "\n".join(lines),
        "held": {"silence": hold.silence, "since": iso(hold.since), "count": count},
    }


def _line(item: HeldItem, tz: tzinfo | None) -> str:
    when = item.at.astimezone(tz) if tz is not None else item.at
    resolved = item.status == "resolved" and not item.title.lower().startswith("resolved")
    head = "Resolved: " if resolved else ""
    times = f" ({item.count} times)" if item.count > 1 else ""
    return f"• {when:%a %H:%M} [{item.severity}] {head}{item.title}{times}"
