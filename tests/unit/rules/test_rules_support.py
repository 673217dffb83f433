"""Builders shared by the rule engine tests (this module holds no tests itself)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from printfleet.core.events import ChangeEvent, EventType, Severity, event_id, to_cloudevent
from printfleet.core.model import Print, Printer, PrinterStatus, PrintStatus, Vendor
from printfleet.core.rules.engine import RuleEngine
from printfleet.core.rules.model import Rule, RuleSet
from printfleet.core.rules.windows import Silence
from printfleet.rulepacks.templates import compile_template
from printfleet.rulepacks.when import compile_when

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def at(seconds: float = 0, *, minutes: float = 0, hours: float = 0) -> datetime:
    """``T0`` plus an offset."""
    return T0 + timedelta(seconds=seconds, minutes=minutes, hours=hours)


def printer(serial: str = "Form4-A", **changes: Any) -> Printer:
    values: dict[str, Any] = {
        "serial": serial,
        "name": f"Printer {serial}",
        "vendor": Vendor.FORMLABS,
        "model": "Form 4",
        "model_code": "FORM-4-0",
        "status": PrinterStatus.PRINTING,
        "status_raw": "PRINTING",
        "online": True,
        "group": "Dental",
        "location": "Room 1",
        "raw": {"status_message": "Resin tank missing"},
    }
    values.update(changes)
    return Printer(**values)


def a_print(name: str = "crown-42", **changes: Any) -> Print:
    values: dict[str, Any] = {
        "id": f"print-{name}",
        "name": name,
        "status": PrintStatus.PRINTING,
        "status_raw": "PRINTING",
        "progress": 0.42,
        "elapsed_s": 3725.0,
        "remaining_s": 1800.0,
        "material": "Grey V5",
    }
    values.update(changes)
    return Print(**values)


_counter = iter(range(1, 10**9))


def event(
    kind: str | EventType,
    subject: str = "Form4-A",
    *,
    source: str = "lab",
    time: datetime = T0,
    group: str | None = "Dental",
    details: dict[str, Any] | None = None,
    with_print: bool = True,
    severity: Severity | None = None,
    changes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A CloudEvent dict as the pipeline hands it to the engine."""
    etype = EventType(kind)
    is_source = etype.value.startswith("source.")
    change_map = {}
    if changes:
        from printfleet.core.events import Change

        change_map = {k: Change(before=v[0], after=v[1]) for k, v in changes.items()}
    return to_cloudevent(
        ChangeEvent(
            id=event_id(source, subject, etype.value, next(_counter)),
            type=etype,
            source=source,
            vendor=Vendor.FORMLABS,
            subject=source if is_source else subject,
            time=time,
            severity=severity or Severity.INFO,
            printer=None if is_source else printer(subject, group=group),
            print=a_print() if with_print and not is_source else None,
            changes=change_map,
            details=details or {},
        )
    )


def rule(name: str = "r", on: Iterable[str] = ("print.failed",), **options: Any) -> Rule:
    """A rule with ``when``/``title``/``text``/``topic`` given as source text."""
    when = options.pop("when", None)
    for key in ("title", "text", "group_title", "group_text"):
        if isinstance(options.get(key), str):
            options[key] = compile_template(options[key])
    for key in ("hold", "throttle", "repeat", "group_wait"):
        if isinstance(options.get(key), int | float):
            options[key] = timedelta(seconds=options[key])
    options.setdefault("notify", ("slack",))
    return Rule(
        name=name,
        on=tuple(on),
        when=compile_when(when) if when else None,
        when_source=when,
        **options,
    )


def engine(*rules: Rule, silences: Iterable[Silence] = ()) -> RuleEngine:
    return RuleEngine(RuleSet(rules=rules, silences=tuple(silences)))


def sinks(deliveries: Iterable[Any]) -> list[tuple[str, str]]:
    """(sink, status) of each delivery, for compact assertions."""
    return [(d.sink, d.payload["status"]) for d in deliveries]
