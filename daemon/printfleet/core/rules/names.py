"""What a ``when`` expression or a template sees of an event, and the checks on those names.

Rule packs are validated against these names at load time (:func:`check_field_path`), so the
tables here are the one place that says which names exist; the engine builds the same view of
each event at run time (:func:`event_names`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from printfleet.core.durations import format_duration
from printfleet.core.model import Print, Printer, PrinterStatus, PrintStatus, Vendor
from printfleet.errors import did_you_mean

#: Names every event offers to expressions and templates.
ENVELOPE_NAMES: tuple[str, ...] = (
    "id",
    "type",
    "source",
    "vendor",
    "subject",
    "time",
    "severity",
    "printer",
    "print",
    "changes",
    "data",
)
#: Detail keys of ``data`` also offered as top-level names (``None`` when an event lacks them).
#: Any other key of ``data`` is reachable as ``data.<key>``.
DETAIL_NAMES: tuple[str, ...] = (
    # printer.alert
    "alert",
    "state",
    # print.progress
    "milestone",
    # print.rated
    "verdict",
    "note",
    "by",
    "machine_outcome",
    # material.low
    "slot",
    "material",
    "remaining_ml",
    "ratio",
    "empty",
    "cartridge",
    # tank.attention
    "reason",
    "tank",
    "layers_printed",
    "age_days",
    "max_layers",
    "max_age_days",
    # source.*
    "error",
    "message",
    "after_failures",
)
#: Names only templates see: ``group`` (``{group.count}``, ``{group.subjects}``) in grouped ones.
TEMPLATE_ONLY_NAMES: tuple[str, ...] = ("group",)

_DUMMY_PRINTER = Printer(
    serial="s", name="n", vendor=Vendor.FORMLABS, model="m", model_code="m",
    status=PrinterStatus.IDLE, status_raw="IDLE", online=True,
)  # fmt: skip
_DUMMY_PRINT = Print(id="i", name="n", status=PrintStatus.PRINTING, status_raw="PRINTING")

#: Keys of the dicts below the top-level names, for catching typos at load time. ``None``
#: means free-form (vendor fields, detail data).
FIELD_KEYS: Mapping[str, frozenset[str] | None] = MappingProxyType(
    {
        "printer": frozenset(_DUMMY_PRINTER.as_dict(with_raw=True)),
        "print": frozenset(_DUMMY_PRINT.as_dict(with_raw=True)) | {"elapsed", "remaining"},
        "group": frozenset({"count", "subjects"}),
    }
)
_FREE_BELOW = frozenset({"raw", "materials", "tank", "alerts"})


def check_field_path(parts: Sequence[str], *, template: bool) -> tuple[str, str] | None:
    """Whether ``parts`` (a dotted path split on dots) names something an event can hold.

    Returns ``None`` when fine, else ``(message, fix)``. Unknown top-level names and unknown
    keys of ``printer``/``print`` are errors; ``printer.raw.*``, ``print.raw.*``, ``changes.*``
    and ``data.*`` are free-form.
    """
    if not parts or not parts[0]:
        return "empty field name", "name a field such as printer.name"
    for part in parts:
        if part.startswith("_"):
            return (
                f"'{part}': names starting with '_' are not allowed",
                "use the event's field names, e.g. printer.name",
            )
    top = parts[0]
    known = (*ENVELOPE_NAMES, *DETAIL_NAMES, *(TEMPLATE_ONLY_NAMES if template else ()))
    if top not in known:
        hint = typo_hint(top, known)
        return (
            f"unknown name '{top}'",
            f"{hint}use one of {', '.join(ENVELOPE_NAMES)}, or data.{top} for another key "
            "of the event data",
        )
    keys = FIELD_KEYS.get(top)
    if keys is not None and len(parts) > 1 and parts[1] not in keys:
        hint = typo_hint(parts[1], sorted(keys))
        return (
            f"'{top}' has no field '{parts[1]}'",
            f"{hint}known fields: {', '.join(sorted(keys))} "
            f"(vendor fields are under {top}.raw.<name>)",
        )
    if keys is not None and len(parts) > 2 and parts[1] not in _FREE_BELOW:
        return (
            f"'{top}.{parts[1]}' is a plain value with no fields below it",
            f"write {{{top}.{parts[1]}}}",
        )
    return None


def typo_hint(word: str, choices: Iterable[str]) -> str:
    """``"did you mean 'x'? "`` to start a fix with, or ``""`` when nothing is close."""
    close = did_you_mean(word, choices)
    return f"did you mean '{close}'? " if close else ""


def split_source(source: object) -> tuple[str, str | None]:
    """``printfleet/formlabs/lab`` -> ``("lab", "formlabs")``; anything else is kept whole."""
    text = source if isinstance(source, str) else ""
    parts = text.split("/")
    if len(parts) == 3 and parts[0] == "printfleet":
        return parts[2], parts[1]
    return text, None


def event_names(event: Mapping[str, Any]) -> dict[str, Any]:
    """The names a ``when`` expression or a template sees for ``event`` (see module doc).

    ``print`` gains ``elapsed`` and ``remaining`` (formatted durations). Missing parts are
    ``None``.
    """
    data = event.get("data")
    if type(data) is not dict and not isinstance(data, Mapping):
        data = {}
    source, vendor = split_source(event.get("source"))
    print_ = data.get("print")
    if print_ is not None and (type(print_) is dict or isinstance(print_, Mapping)):
        print_ = dict(print_)
        elapsed = print_.get("elapsed_s")
        if type(elapsed) is not float and not isinstance(elapsed, int | float):
            elapsed = _elapsed(print_, event.get("time"))
        print_["elapsed"] = None if elapsed is None else format_duration(elapsed)
        remaining = print_.get("remaining_s")
        print_["remaining"] = (
            format_duration(remaining)
            if type(remaining) is float or isinstance(remaining, int | float)
            else None
        )
    names: dict[str, Any] = {
        "id": event.get("id"),
        "type": event.get("type"),
        "source": source,
        "vendor": vendor,
        "subject": event.get("subject"),
        "time": event.get("time"),
        "severity": data.get("severity"),
        "printer": data.get("printer"),
        "print": print_,
        "changes": data.get("changes") or {},
        "data": data,
    }
    for key, value in data.items():
        if key not in names:
            names[key] = value
    return names


def _elapsed(print_: Mapping[str, Any], time: object) -> float | None:
    start = parse_time(print_.get("started_at"), strict=False)
    end = parse_time(print_.get("finished_at"), strict=False) or parse_time(time, strict=False)
    if start is None or end is None:
        return None
    return max(0.0, (end - start).total_seconds())


def parse_time(value: object, *, strict: bool = True) -> datetime | None:
    """An RFC 3339 time from stored or event data (``None`` for a missing one).

    ``strict`` (stored silences and engine state) rejects junk and naive times with a
    ``ValueError`` saying how to write one; otherwise (event data) junk is ``None`` and a naive
    time is taken as UTC.
    """
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        result = value
    else:
        try:
            result = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            if strict:
                raise ValueError(
                    f"invalid time {value!r}; use RFC 3339, e.g. 2026-01-01T00:00Z"
                ) from None
            return None
    if result.tzinfo is None:
        if strict:
            raise ValueError(f"time {value!r} needs a UTC offset, e.g. 2026-01-01T00:00Z")
        result = result.replace(tzinfo=UTC)
    return result


def required_time(value: object) -> datetime:
    """Like :func:`parse_time` (strict), but a missing time is a ``ValueError`` too."""
    result = parse_time(value)
    if result is None:
        raise ValueError("missing time")
    return result


def alert_cleared(data: Mapping[str, Any]) -> bool:
    """Whether a ``printer.alert`` event reports the alert cleared (not raised).

    The differ sets ``data.state`` to ``"raised"`` or ``"cleared"``; ``cleared: true`` is
    accepted too.
    """
    state = data.get("state")
    return state in ("cleared", "resolved") or data.get("cleared") is True


def lookup(names: Any, path: Sequence[str]) -> Any:
    """The value at a dotted ``path`` in ``names`` (``None`` when any step is missing)."""
    value: Any = names
    for part in path:
        if type(value) is dict or isinstance(value, Mapping):  # dict first: abc checks are slow
            value = value.get(part)
        elif isinstance(value, list | tuple) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value
