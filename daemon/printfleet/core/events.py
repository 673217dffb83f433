"""Change events: the typed facts the differ produces and every sink carries.

On the wire each event is a CloudEvents 1.0 JSON object in structured mode; the same bytes
go to MQTT and to generic webhooks (see :func:`encode_event`). Rules match against that
envelope, so what a user sees in a payload is exactly what a rule can test.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from printfleet.core.identifiers import SURROGATES
from printfleet.core.model import Print, Printer, Vendor, empty_mapping, iso


class EventType(StrEnum):
    """Every kind of change printfleet reports; the values are the contract strings."""

    PRINTER_ADDED = "printer.added"
    PRINTER_REMOVED = "printer.removed"
    PRINTER_STATUS_CHANGED = "printer.status_changed"
    PRINTER_OFFLINE = "printer.offline"
    PRINTER_ONLINE = "printer.online"
    PRINTER_ALERT = "printer.alert"
    PRINT_STARTED = "print.started"
    PRINT_PROGRESS = "print.progress"
    PRINT_PAUSED = "print.paused"
    PRINT_RESUMED = "print.resumed"
    PRINT_FINISHED = "print.finished"
    PRINT_FAILED = "print.failed"
    PRINT_ABORTED = "print.aborted"
    PRINT_RATED = "print.rated"
    MATERIAL_LOW = "material.low"
    TANK_ATTENTION = "tank.attention"
    QUEUE_BACKLOG = "queue.backlog"
    QUEUE_EMPTY = "queue.empty"
    VENDOR_EVENT = "vendor.event"
    SOURCE_UNREACHABLE = "source.unreachable"
    SOURCE_RECOVERED = "source.recovered"
    SOURCE_AUTH_FAILED = "source.auth_failed"

    @property
    def topic_suffix(self) -> str:
        """``print.finished`` -> ``print/finished`` (the MQTT event topic below the prefix)."""
        return self.value.replace(".", "/")


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


DEFAULT_SEVERITY: Mapping[EventType, Severity] = {
    EventType.PRINTER_OFFLINE: Severity.WARNING,
    EventType.PRINTER_ALERT: Severity.WARNING,
    EventType.PRINT_FAILED: Severity.CRITICAL,
    EventType.PRINT_ABORTED: Severity.WARNING,
    EventType.MATERIAL_LOW: Severity.WARNING,
    EventType.TANK_ATTENTION: Severity.WARNING,
    EventType.QUEUE_BACKLOG: Severity.WARNING,
    EventType.SOURCE_UNREACHABLE: Severity.WARNING,
    EventType.SOURCE_AUTH_FAILED: Severity.CRITICAL,
}


@dataclass(frozen=True, slots=True)
class Change:
    """One field's value before and after."""

    before: Any
    after: Any


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One real change in the fleet.

    ``id`` is stable for the same change (see :func:`event_id`), so a redelivery after a crash
    repeats it and receivers can deduplicate. ``subject`` is the printer serial, or the source
    name for ``source.*`` events. ``details`` carries type-specific facts that have no field of
    their own (milestone, alert text and state, material slot, error kind); they appear as
    top-level keys of the envelope's ``data``.
    """

    id: str
    type: EventType
    source: str
    vendor: Vendor
    subject: str
    time: datetime
    severity: Severity
    printer: Printer | None = None
    print: Print | None = None
    changes: Mapping[str, Change] = field(default_factory=empty_mapping)
    details: Mapping[str, Any] = field(default_factory=empty_mapping)


_NAMESPACE = uuid.UUID("6f1c3a2e-8d4b-4e7a-9c1f-2b5d7e9a0c43")


def event_id(source: str, subject: str, kind: str, *discriminators: object) -> str:
    """A stable id: the same change always gets the same id.

    ``discriminators`` must pin down *which* occurrence this is (print id, new status,
    milestone, alert text and its raise/clear sequence...), never the time it was observed.
    """
    key = "\x1f".join([source, subject, kind, *(str(d) for d in discriminators)])
    # uuid5() itself, except that a lone surrogate in a vendor's serial is hashed as its
    # surrogatepass bytes instead of raising UnicodeEncodeError (same ids for all other keys).
    data = _NAMESPACE.bytes + key.encode("utf-8", "surrogatepass")
    digest = hashlib.sha1(data, usedforsecurity=False).digest()  # what uuid5 uses
    return str(uuid.UUID(bytes=digest[:16], version=5))


def to_cloudevent(event: ChangeEvent) -> dict[str, Any]:
    """The CloudEvents 1.0 structured-mode envelope of ``event`` (a JSON-ready dict)."""
    data: dict[str, Any] = {"severity": event.severity.value}
    if event.printer is not None:
        data["printer"] = event.printer.as_dict(with_raw=True)
    if event.print is not None:
        data["print"] = event.print.as_dict(with_raw=True)
    data["changes"] = {
        name: {"from": _jsonable(c.before), "to": _jsonable(c.after)}
        for name, c in event.changes.items()
    }
    for key, value in event.details.items():
        data.setdefault(key, _jsonable(value))
    return {
        "specversion": "1.0",
        "id": event.id,
        "source": f"printfleet/{event.vendor.value}/{event.source}",
        "type": event.type.value,
        # CloudEvents: "subject", if present, MUST be a non-empty string.
        **({"subject": event.subject} if event.subject else {}),
        "time": iso(event.time),
        "datacontenttype": "application/json",
        "data": data,
    }


def encode_event(event: ChangeEvent) -> bytes:
    """The exact bytes published to MQTT and POSTed to generic webhooks."""
    return json_bytes(to_cloudevent(event))


# A lone surrogate (e.g. a serial "\ud800X" decoded from a vendor's "\\ud800" escape) is valid
# in a Python str and in JSON text, but UTF-8 cannot encode it. In JSON output such a character
# can only sit inside a string literal, so writing it as its \uXXXX escape keeps the value
# exact (json.loads gives the same str back) and the bytes valid UTF-8.
def json_text(value: Any, *, default: Callable[[Any], Any] | None = None) -> str:
    """Compact JSON of ``value`` with non-ASCII kept, except lone surrogates, written as their
    ``\\udXXX`` escapes so the text encodes as UTF-8 (SQLite, files) and reads back exact."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=default)
    if text.isascii():
        return text
    return SURROGATES.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def json_bytes(value: Any, *, check_circular: bool = True) -> bytes:
    """Compact UTF-8 JSON of ``value`` (non-ASCII kept as UTF-8), for any str content.

    The same bytes as ``json.dumps(value, separators=(",", ":"), ensure_ascii=False)`` encoded
    as UTF-8 whenever that works; lone surrogates, which UTF-8 cannot encode, are written as
    ``\\udXXX`` escapes instead of raising ``UnicodeEncodeError``. ``check_circular=False``
    saves time on values known to be trees (the MQTT sink's hot path).
    """
    text = json.dumps(
        value, separators=(",", ":"), ensure_ascii=False, check_circular=check_circular
    )
    try:
        return text.encode()
    except UnicodeEncodeError:
        return SURROGATES.sub(lambda m: f"\\u{ord(m.group()):04x}", text).encode()


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value
