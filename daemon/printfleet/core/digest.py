"""Digests: one message per period summing up prints, downtime and warnings (pure).

Computed from what the store keeps: print history (:class:`~printfleet.core.history.PrintRecord`),
the small event log of :data:`LOGGED_TYPES` (:class:`LoggedEvent`, written in the poll commit)
and the current snapshots. Nothing here reads a clock or the store; the daemon's
:mod:`printfleet.digests` does that and enqueues the payload of
:mod:`printfleet.core.digest_render` through the outbox.

Definitions (documented in the README):

- a print counts in the period its ``finished_at`` falls in (``start <= t < end``);
- failure rate = failed / (finished + failed): an abort is a person's decision, not a failure;
- offline time is the part of the period between a ``printer.offline`` and the next
  ``printer.online`` (or ``printer.removed``). A printer's state at the period start comes from
  its last logged event before it, else the opposite of its first event in the period, else
  its current state (no event at all: it has been as it is now all along);
- warnings are ``material.low``, ``tank.attention`` and raised ``printer.alert`` events of the
  period, one line per distinct warning and printer;
- "still open" is the state at computation time: printers offline now, alerts raised now.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from printfleet.core.events import ChangeEvent
from printfleet.core.history import PrintRecord
from printfleet.core.model import Snapshot, empty_mapping, iso
from printfleet.core.rules.windows import Silence

#: Event types the event log keeps (everything a digest needs that print history lacks).
LOGGED_TYPES: Final = frozenset(
    {"printer.offline", "printer.online", "printer.removed", "material.low", "tank.attention"}
    | {"printer.alert"}
)
OFFLINE_TYPES: Final = frozenset({"printer.offline", "printer.online", "printer.removed"})
WARNING_TYPES: Final = frozenset({"material.low", "tank.attention", "printer.alert"})
#: How long the event log keeps events: a month of daily digests plus a few days' slack.
EVENT_LOG_RETENTION: Final = timedelta(days=35)
#: Fields a digest's ``match`` may test (a silence's, less those about one notification).
DIGEST_MATCH_FIELDS: Final = ("source", "vendor", "subject", "serial", "name", "group", "model")

NO_GROUP: Final = "(no group)"


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    """One row of the event log: what happened to whom, when, with the facts to show."""

    type: str
    source: str
    subject: str
    time: datetime
    details: Mapping[str, Any] = field(default_factory=empty_mapping)


def logged_events(events: Iterable[ChangeEvent]) -> list[LoggedEvent]:
    """The events of one poll cycle the event log keeps, with the printer's labels."""
    rows: list[LoggedEvent] = []
    for event in events:
        if event.type.value not in LOGGED_TYPES:
            continue
        details: dict[str, Any] = {
            k: v
            for k, v in event.details.items()
            if isinstance(v, str | int | float | bool) or v is None
        }
        if event.printer is not None:
            details["name"] = event.printer.name
            details["group"] = event.printer.group
        rows.append(LoggedEvent(event.type.value, event.source, event.subject, event.time, details))
    return rows


@dataclass(frozen=True, slots=True)
class DigestSpec:
    """One configured ``[[digest]]``: ``match`` is a silence-style matcher (empty: all)."""

    name: str
    receiver: str
    title: str
    match: Silence | None = None


@dataclass(slots=True)
class PrinterTally:
    source: str
    serial: str
    name: str
    group: str | None
    finished: int = 0
    failed: int = 0
    aborted: int = 0
    resin_ml: float = 0.0
    offline_s: float = 0.0
    warnings: list[str] = field(default_factory=list)

    @property
    def prints(self) -> int:
        return self.finished + self.failed + self.aborted

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "serial": self.serial,
            "name": self.name,
            "group": self.group,
            "finished": self.finished,
            "failed": self.failed,
            "aborted": self.aborted,
            "failure_rate": failure_rate(self.finished, self.failed),
            "resin_ml": round(self.resin_ml, 1),
            "offline_s": round(self.offline_s),
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True, slots=True)
class Digest:
    """A computed digest (:mod:`printfleet.core.digest_render` makes its JSON and text)."""

    name: str
    title: str
    start: datetime
    end: datetime
    printers: tuple[PrinterTally, ...]  # the ones with anything to report, most notable first
    groups: Mapping[str, tuple[int, int, int]]  # group -> (finished, failed, aborted)
    resin_ml: Mapping[str, float]  # material -> ml
    offline_now: tuple[tuple[str, str | None], ...]  # (printer label, offline since)
    alerts_now: tuple[tuple[str, str], ...]  # (printer label, alert text)
    missed: int = 0  # periods that ended while the daemon was stopped and got no digest

    @property
    def totals(self) -> tuple[int, int, int]:
        return (
            sum(p.finished for p in self.printers),
            sum(p.failed for p in self.printers),
            sum(p.aborted for p in self.printers),
        )

    @property
    def severity(self) -> str:
        """``warning`` when something failed or is still open, else ``info``."""
        return "warning" if self.totals[1] or self.offline_now or self.alerts_now else "info"


def failure_rate(finished: int, failed: int) -> float | None:
    """failed / (finished + failed), rounded to 3 places; ``None`` without such prints."""
    done = finished + failed
    return round(failed / done, 3) if done else None


def printer_fields(
    source: str,
    serial: str,
    *,
    vendor: str | None = None,
    name: str | None = None,
    group: str | None = None,
    model: str | None = None,
) -> dict[str, str | None]:
    """What a digest's ``match`` sees of one printer (the silence field names)."""
    return {
        "source": source,
        "vendor": vendor,
        "subject": serial,
        "serial": serial,
        "name": name,
        "group": group,
        "model": model,
    }


def compute_digest(
    spec: DigestSpec,
    *,
    start: datetime,
    end: datetime,
    records: Sequence[PrintRecord],
    events: Sequence[LoggedEvent],
    before: Sequence[LoggedEvent],
    snapshots: Mapping[str, Snapshot],
    missed: int = 0,
) -> Digest:
    """The digest of ``spec`` for ``start <= t < end``.

    ``events`` are the logged events of the period (any order), ``before`` the last offline
    event (:data:`OFFLINE_TYPES`) of each printer before ``start``; ``snapshots`` the current
    ones by source.
    """
    tallies: dict[tuple[str, str], PrinterTally] = {}
    known = {(s, serial): p for s, snap in snapshots.items() for serial, p in snap.printers.items()}
    vendors = {s: snap.vendor.value for s, snap in snapshots.items()}

    def wanted(source: str, serial: str, name: str | None, group: str | None) -> bool:
        if spec.match is None:
            return True
        printer = known.get((source, serial))
        fields = printer_fields(
            source,
            serial,
            vendor=vendors.get(source),
            name=printer.name if printer else name,
            group=printer.group if printer else group,
            model=printer.model if printer else None,
        )
        return spec.match.matches(fields)

    def tally(source: str, serial: str, name: str | None, group: str | None) -> PrinterTally:
        key = (source, serial)
        found = tallies.get(key)
        if found is None:
            printer = known.get(key)
            found = tallies[key] = PrinterTally(
                source,
                serial,
                printer.name if printer else (name or serial),
                printer.group if printer else group,
            )
        return found

    resin: dict[str, float] = defaultdict(float)
    for record in records:
        if not start <= record.finished_at < end:
            continue
        if not wanted(record.source, record.serial, record.printer_name, record.group):
            continue
        t = tally(record.source, record.serial, record.printer_name, record.group)
        if record.outcome == "finished":
            t.finished += 1
        elif record.outcome == "failed":
            t.failed += 1
        elif record.outcome == "aborted":
            t.aborted += 1
        if record.volume_ml is not None and record.volume_ml > 0:
            t.resin_ml += record.volume_ml
            resin[record.material or "unknown"] += record.volume_ml

    in_period = sorted((e for e in events if start <= e.time < end), key=lambda e: e.time)
    by_printer: dict[tuple[str, str], list[LoggedEvent]] = defaultdict(list)
    for event in in_period:
        by_printer[(event.source, event.subject)].append(event)
    last_before = {(e.source, e.subject): e for e in before if e.type in OFFLINE_TYPES}
    candidates = set(by_printer) | {
        k for k, e in last_before.items() if e.type == "printer.offline"
    }
    candidates |= {k for k, p in known.items() if not p.online}
    last_offline: dict[tuple[str, str], datetime] = {
        k: e.time for k, e in last_before.items() if e.type == "printer.offline"
    }
    for key in sorted(candidates):
        own = by_printer.get(key, [])
        names = _event_labels(own, last_before.get(key))
        if not wanted(key[0], key[1], *names):
            continue
        offline_s = _offline_seconds(own, last_before.get(key), known.get(key), start, end)
        for event in own:
            if event.type == "printer.offline":
                last_offline[key] = event.time
        warnings = _warnings(own)
        if offline_s <= 0 and not warnings:
            continue
        t = tally(key[0], key[1], *names)
        t.offline_s += offline_s
        t.warnings.extend(w for w in warnings if w not in t.warnings)

    groups: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for t in tallies.values():
        g = groups[t.group or NO_GROUP]
        g[0] += t.finished
        g[1] += t.failed
        g[2] += t.aborted

    offline_now: list[tuple[str, str | None]] = []
    alerts_now: list[tuple[str, str]] = []
    for key, printer in sorted(known.items()):
        if not wanted(key[0], key[1], printer.name, printer.group):
            continue
        shown = label(printer.name, key[1])
        if not printer.online:
            offline_now.append((shown, iso(last_offline.get(key))))
        alerts_now.extend((shown, alert) for alert in printer.alerts)

    ordered = sorted(
        tallies.values(),
        key=lambda t: (-t.failed, -len(t.warnings), -t.offline_s, -t.prints, t.source, t.serial),
    )
    return Digest(
        name=spec.name,
        title=spec.title,
        start=start,
        end=end,
        printers=tuple(ordered),
        groups={g: (v[0], v[1], v[2]) for g, v in sorted(groups.items())},
        resin_ml={m: round(v, 1) for m, v in sorted(resin.items())},
        offline_now=tuple(offline_now),
        alerts_now=tuple(alerts_now),
        missed=missed,
    )


def _event_labels(
    events: Sequence[LoggedEvent], before: LoggedEvent | None
) -> tuple[str | None, str | None]:
    for event in [*reversed(events), *([before] if before else [])]:
        name = event.details.get("name")
        if isinstance(name, str):
            group = event.details.get("group")
            return name, group if isinstance(group, str) else None
    return None, None


def _offline_seconds(
    events: Sequence[LoggedEvent],
    before: LoggedEvent | None,
    printer: Any,
    start: datetime,
    end: datetime,
) -> float:
    changes = [e for e in events if e.type in OFFLINE_TYPES]
    if before is not None:
        offline = before.type == "printer.offline"
    elif changes:
        offline = changes[0].type != "printer.offline"
    else:
        offline = printer is not None and not printer.online
    since: datetime | None = start if offline else None
    total = 0.0
    for event in changes:
        if event.type == "printer.offline":
            since = since or event.time
        elif since is not None:
            total += (event.time - since).total_seconds()
            since = None
    if since is not None:
        total += (end - since).total_seconds()
    return total


def _warnings(events: Sequence[LoggedEvent]) -> list[str]:
    lines: list[str] = []
    for event in events:
        d = event.details
        line: str | None = None
        if event.type == "material.low":
            what = d.get("material") or d.get("slot") or "material"
            if d.get("empty"):
                line = f"material empty: {what}"
            elif isinstance(d.get("remaining_ml"), int | float):
                line = f"material low: {what} ({d['remaining_ml']:g} ml left)"
            else:
                line = f"material low: {what}"
        elif event.type == "tank.attention":
            tank = d.get("tank") or "tank"
            if d.get("reason") == "layers":
                line = f"tank {tank}: {d.get('layers_printed')} layers printed"
            else:
                line = f"tank {tank}: {d.get('age_days')} days old"
        elif event.type == "printer.alert" and d.get("state") == "raised":
            line = f"alert: {d.get('alert')}"
        if line is not None and line not in lines:
            lines.append(line)
    return lines


def label(name: str, serial: str) -> str:
    """How a printer is named in a digest: its name, and the serial when they differ."""
    return name if name == serial else f"{name} ({serial})"
