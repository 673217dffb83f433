"""A computed :class:`~printfleet.core.digest.Digest` as JSON data, plain text and a payload.

The plain text is what text-only receivers show and what the chat formats split into
sections (:mod:`printfleet.sinks.digest_formats`); its lists are capped so a 10,000-printer
fleet still makes a message a person reads and every receiver accepts.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from printfleet.core.digest import NO_GROUP, Digest, PrinterTally, failure_rate, label
from printfleet.core.events import event_id
from printfleet.core.model import iso

DIGEST_EVENT_TYPE: Final = "printfleet.digest"
#: Rows per list in the JSON data (printers, offline now, alerts now); the counts say the rest.
PRINTERS_JSON_MAX: Final = 1000
#: Longest text in the JSON data (names, groups, warnings, alerts); longer ones end in "…".
TEXT_JSON_MAX: Final = 256
#: Lines per list in the text (printers, groups) and per kind of open item; each line is cut
#: at LINE_MAX characters, so the whole text stays under 5,000 characters (what the chat
#: formats read of a text) however large the fleet or long its names.
LINES_MAX: Final = 10
OPEN_LINES_MAX: Final = 8
LINE_MAX: Final = 120


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m"


def _rate(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate * 100:.1f}%"


def digest_data(digest: Digest) -> dict[str, Any]:
    """The JSON ``data`` of the digest's CloudEvent: lists capped at :data:`PRINTERS_JSON_MAX`
    rows and every text at :data:`TEXT_JSON_MAX` characters (a digest repeats vendor names
    once per printer; an event carries one printer's)."""
    finished, failed, aborted = digest.totals
    shown = digest.printers[:PRINTERS_JSON_MAX]
    data: dict[str, Any] = {
        "digest": digest.name,
        "title": digest.title,
        "severity": digest.severity,
        "period": {"start": iso(digest.start), "end": iso(digest.end)},
        "missed_periods": digest.missed,
        "totals": {
            "finished": finished,
            "failed": failed,
            "aborted": aborted,
            "failure_rate": failure_rate(finished, failed),
            "resin_ml": round(sum(digest.resin_ml.values()), 1),
            "offline_s": round(sum(p.offline_s for p in digest.printers)),
            "warnings": sum(len(p.warnings) for p in digest.printers),
        },
        "groups": [
            {
                "group": g,
                "finished": f,
                "failed": x,
                "aborted": a,
                "failure_rate": failure_rate(f, x),
            }
            for g, (f, x, a) in list(digest.groups.items())[:PRINTERS_JSON_MAX]
        ],
        "groups_omitted": max(0, len(digest.groups) - PRINTERS_JSON_MAX),
        "resin_ml": dict(digest.resin_ml),
        "printers": [p.as_dict() for p in shown],
        "printers_omitted": len(digest.printers) - len(shown),
        "open": {
            "offline": [
                {"printer": p, "since": s} for p, s in digest.offline_now[:PRINTERS_JSON_MAX]
            ],
            "offline_count": len(digest.offline_now),
            "alerts": [
                {"printer": p, "alert": a} for p, a in digest.alerts_now[:PRINTERS_JSON_MAX]
            ],
            "alerts_count": len(digest.alerts_now),
        },
    }
    return {key: _capped(value) for key, value in data.items()}


def _capped(value: Any) -> Any:
    if isinstance(value, str):
        return value if len(value) <= TEXT_JSON_MAX else value[: TEXT_JSON_MAX - 1] + "…"
    if isinstance(value, dict):
        return {_capped(k): _capped(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_capped(v) for v in value]
    return value


def digest_text(digest: Digest, *, tz: Any = None) -> tuple[str, str, str]:
    """``(title, body, severity)`` in plain text: what text-only receivers show.

    ``tz`` is the schedule's zone, for the period as people read it.
    """
    start = digest.start.astimezone(tz) if tz else digest.start
    end = digest.end.astimezone(tz) if tz else digest.end
    title = f"{digest.title} — {end:%a %Y-%m-%d}"
    finished, failed, aborted = digest.totals
    zone = end.tzname() or ""
    lines = [
        f"Period: {start:%a %Y-%m-%d %H:%M} to {end:%a %Y-%m-%d %H:%M} {zone}".rstrip(),
        f"Prints: {finished} finished, {failed} failed, {aborted} aborted "
        f"(failure rate {_rate(failure_rate(finished, failed))})",
    ]
    if digest.missed:
        lines.append(f"({digest.missed} earlier period(s) passed while printfleet was stopped)")
    if digest.resin_ml:
        used = ", ".join(f"{m} {v:g} ml" for m, v in digest.resin_ml.items())
        lines.append(f"Resin used: {used}")
    # What is still open first: it is what someone acts on this morning.
    lines.append("")
    lines.extend(open_lines(digest))
    if len(digest.groups) > 1 or (digest.groups and NO_GROUP not in digest.groups):
        lines.append("")
        lines.append("By group:")
        for g, (f, x, a) in list(digest.groups.items())[:LINES_MAX]:
            lines.append(_cut(f"- {g}: {f} finished, {x} failed, {a} aborted"))
        if len(digest.groups) > LINES_MAX:
            lines.append(f"- … and {len(digest.groups) - LINES_MAX} more groups")
    if digest.printers:
        lines.append("")
        lines.append("By printer:")
        for p in digest.printers[:LINES_MAX]:
            lines.append(_cut(f"- {printer_line(p)}"))
        if len(digest.printers) > LINES_MAX:
            lines.append(f"- … and {len(digest.printers) - LINES_MAX} more printers")
    return title, "\n".join(lines).strip(), digest.severity


def _cut(line: str) -> str:
    return line if len(line) <= LINE_MAX else line[: LINE_MAX - 1] + "…"


def printer_line(p: PrinterTally) -> str:
    """One printer's summary: prints, offline time, warnings."""
    parts = [f"{p.finished} finished, {p.failed} failed, {p.aborted} aborted"]
    if p.resin_ml:
        parts.append(f"{p.resin_ml:g} ml")
    if p.offline_s:
        parts.append(f"offline {_duration(p.offline_s)}")
    if p.warnings:
        parts.append("; ".join(p.warnings))
    return f"{label(p.name, p.serial)}: " + ", ".join(parts)


def open_lines(digest: Digest) -> list[str]:
    """What is still open now, as text lines (capped)."""
    if not digest.offline_now and not digest.alerts_now:
        return ["Still open: nothing."]
    lines = ["Still open:"]
    for printer, since in digest.offline_now[:OPEN_LINES_MAX]:
        when = f" since {since}" if since else ""
        lines.append(_cut(f"- offline: {printer[: LINE_MAX - 40]}{when}"))
    if len(digest.offline_now) > OPEN_LINES_MAX:
        lines.append(f"- … and {len(digest.offline_now) - OPEN_LINES_MAX} more offline")
    for printer, alert in digest.alerts_now[:OPEN_LINES_MAX]:
        lines.append(_cut(f"- alert: {printer[:60]}: {alert}"))
    if len(digest.alerts_now) > OPEN_LINES_MAX:
        lines.append(f"- … and {len(digest.alerts_now) - OPEN_LINES_MAX} more alerts")
    return lines


def digest_event_id(name: str, end: datetime) -> str:
    """The stable id of the digest ``name`` for the period ending at ``end``."""
    return event_id("printfleet", name, "digest", iso(end))


def digest_payload(digest: Digest, *, now: datetime, tz: Any = None) -> dict[str, Any]:
    """The delivery payload: a CloudEvent ``printfleet.digest`` plus title/text/severity.

    ``kind = "digest"`` tells the chat formats to render the digest layout; the rendered
    ``title``/``text``/``severity`` are what a plain-text receiver shows.
    """
    title, text, severity = digest_text(digest, tz=tz)
    return {
        "kind": "digest",
        "event": {
            "specversion": "1.0",
            "id": digest_event_id(digest.name, digest.end),
            "source": f"printfleet/digest/{digest.name}",
            "type": DIGEST_EVENT_TYPE,
            "subject": digest.name,
            "time": iso(now),
            "datacontenttype": "application/json",
            "data": digest_data(digest),
        },
        "digest": digest.name,
        "title": title,
        "text": text,
        "severity": severity,
    }
