"""The rule engine: which events become notifications, when, and to whom.

Pure: no clock, no I/O, no logging. The caller passes ``now`` to every call and persists
:meth:`RuleEngine.state` (a JSON-able dict) after each call, so hold-down timers, repeats,
throttle windows and grouped batches survive a restart.

Vocabulary
    *event*        a CloudEvent dict as produced by :func:`printfleet.core.events.to_cloudevent`.
    *names*        the flat view of an event that ``when`` expressions and templates see
                   (:func:`event_names`): ``type``, ``source`` (the account name), ``vendor``,
                   ``subject``, ``time``, ``severity``, ``printer``, ``print``, ``changes``,
                   ``data`` and the event's detail keys (``alert``, ``milestone``...).
    *condition*    a rule that matched for one subject and is waiting (hold-down, ``for``) or
                   firing (kept for ``resolve``/``repeat``) until the resolving event arrives.
    *notification* one decision to tell the rule's receivers; it becomes one
                   :class:`~printfleet.core.delivery.Delivery` per receiver (and one for the
                   rule's own MQTT topic), or joins a group batch (``group_by``).

Resolution table (:data:`RESOLUTIONS`): ``printer.online`` resolves ``printer.offline``; a
cleared ``printer.alert`` resolves the same raised alert; ``source.recovered`` resolves
``source.unreachable`` and ``source.auth_failed``; ``print.resumed`` (or the print ending)
resolves ``print.paused``; ``printer.removed`` resolves everything open for that printer. For a
rule with ``when``, a later event of the same type for the same subject that no longer
satisfies ``when`` resolves too. Cleared alerts only resolve; they never trigger a rule.

Silences drop notifications (counted in :attr:`RuleEngine.counters`); they never affect the
plain event stream on MQTT, which is not rule-driven.
"""

from __future__ import annotations

import heapq
import itertools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from fnmatch import fnmatchcase
from types import MappingProxyType
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from printfleet.core.delivery import Delivery, delivery_id
from printfleet.core.durations import format_duration
from printfleet.core.events import EventType, Severity
from printfleet.core.model import Print, Printer, PrinterStatus, PrintStatus, Vendor

#: A compiled ``when`` expression: names of one event -> does the rule apply?
Predicate = Callable[[Mapping[str, Any]], bool]
#: A compiled template: names of one event -> text.
Renderer = Callable[[Mapping[str, Any]], str]

EVENT_TYPES: tuple[str, ...] = tuple(t.value for t in EventType)

#: resolving event type -> the event types it resolves (for the same source and subject).
RESOLUTIONS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "printer.online": ("printer.offline",),
        "printer.alert": ("printer.alert",),  # only a cleared alert, and only the same alert
        "source.recovered": ("source.unreachable", "source.auth_failed"),
        "print.resumed": ("print.paused",),
        "print.finished": ("print.paused",),
        "print.failed": ("print.paused",),
        "print.aborted": ("print.paused",),
        "printer.removed": ("printer.offline", "printer.alert", "print.paused"),
    }
)
#: Event types that some later event resolves: the ones ``resolve`` and ``repeat`` make sense on.
RESOLVABLE_TYPES: frozenset[str] = frozenset(t for ts in RESOLUTIONS.values() for t in ts)

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
        hint = _did_you_mean(top, known)
        return (
            f"unknown name '{top}'",
            f"{hint}use one of {', '.join(ENVELOPE_NAMES)}, or data.{top} for another key "
            "of the event data",
        )
    keys = FIELD_KEYS.get(top)
    if keys is not None and len(parts) > 1 and parts[1] not in keys:
        hint = _did_you_mean(parts[1], sorted(keys))
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


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'? " if close else ""


def expand_event_patterns(patterns: Iterable[str]) -> frozenset[str]:
    """The event types matched by ``patterns`` (exact names or globs like ``print.*``).

    Raises:
        ValueError: naming the first pattern that matches no event type.
    """
    types: set[str] = set()
    for pattern in patterns:
        matched = {t for t in EVENT_TYPES if fnmatchcase(t, pattern)}
        if not matched:
            hint = _did_you_mean(pattern, EVENT_TYPES)
            raise ValueError(
                f"unknown event type '{pattern}'; {hint}known types: {', '.join(EVENT_TYPES)}"
            )
        types |= matched
    return frozenset(types)


# --------------------------------------------------------------------------------------------
# Rules and silences


@dataclass(frozen=True, slots=True)
class MqttAction:
    """A rule's extra MQTT publish (``mqtt = { topic = ..., retain = ..., qos = ... }``)."""

    topic: Renderer
    retain: bool = False
    qos: int = 1


@dataclass(frozen=True, slots=True)
class Rule:
    """One ``[[rule]]`` of a rule pack, with expressions and templates already compiled.

    ``on`` holds the patterns as written; ``types`` the event types they expand to. A rule
    with ``hold``, ``resolve`` or ``repeat`` keeps a condition per subject (see module doc).
    ``notify = ()`` and no ``mqtt`` makes a log-only rule: it is counted and traced, nothing
    is sent.
    """

    name: str
    on: tuple[str, ...]
    pack: str = "<memory>"
    line: int | None = None
    when: Predicate | None = None
    when_source: str | None = None
    hold: timedelta = timedelta(0)
    throttle: timedelta | None = None
    repeat: timedelta | None = None
    resolve: bool = False
    severity: Severity | None = None
    notify: tuple[str, ...] = ()
    mqtt: MqttAction | None = None
    title: Renderer | None = None
    text: Renderer | None = None
    group_by: tuple[str, ...] = ()
    group_wait: timedelta = timedelta(0)
    group_title: Renderer | None = None
    group_text: Renderer | None = None
    description: str = ""
    types: frozenset[str] = field(init=False, repr=False, compare=False)
    #: Whether the rule keeps a per-subject condition (hold-down, resolve or repeat).
    stateful: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "types", expand_event_patterns(self.on))
        stateful = self.hold > timedelta(0) or self.resolve or self.repeat is not None
        object.__setattr__(self, "stateful", stateful)


#: Keys a silence's ``match`` may test, each against a glob.
SILENCE_FIELDS: tuple[str, ...] = (
    "source",
    "vendor",
    "subject",
    "serial",
    "name",
    "group",
    "model",
    "type",
    "severity",
    "rule",
)

_WEEK = 7 * 1440
_TIME = r"(\d{1,2}):(\d{2})"
_SPAN_RE = re.compile(rf"^([A-Za-z]+)\s+{_TIME}\s*-\s*([A-Za-z]+)\s+{_TIME}$")
_DAILY_RE = re.compile(rf"^(?:(.+?)\s+)?{_TIME}\s*-\s*{_TIME}$")
_SCHEDULE_HELP = (
    "write e.g. 'Sat 00:00-Mon 06:00' (one span), 'Mon-Fri 22:00-06:00' (each of those days, "
    "may cross midnight), '22:00-06:00' (every day) or 'Mon,Wed 12:00-13:00'"
)


_FULL_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _day(word: str) -> int:
    text = word.strip().lower()
    for index, full in enumerate(_FULL_DAYS):
        if len(text) >= 3 and full.startswith(text):
            return index
    raise ValueError(f"unknown day '{word.strip()}'; use Mon, Tue, Wed, Thu, Fri, Sat, Sun")


def _minutes(hours: str, minutes: str) -> int:
    h, m = int(hours), int(minutes)
    if m > 59 or h > 24 or (h == 24 and m != 0):
        raise ValueError(f"invalid time '{hours}:{minutes}'; use 00:00 to 24:00")
    return h * 60 + m


def _day_set(text: str) -> list[int]:
    words = text.strip().lower()
    if words in ("daily", "every day", "everyday", "*"):
        return list(range(7))
    if words == "weekdays":
        return list(range(5))
    if words == "weekends":
        return [5, 6]
    days: list[int] = []
    for part in text.split(","):
        if "-" in part:
            first, last = (_day(p) for p in part.split("-", 1))
            days.extend((first + i) % 7 for i in range((last - first) % 7 + 1))
        else:
            days.append(_day(part))
    return days


def parse_schedule(text: str) -> tuple[tuple[int, int], ...]:
    """Weekly windows as ``(start, end)`` minutes since Monday 00:00, end exclusive.

    Windows crossing midnight or the week's end are split so every pair has start < end.

    Raises:
        ValueError: saying which forms are accepted.
    """
    raw: list[tuple[int, int]] = []
    text = text.strip()
    if match := _SPAN_RE.match(text):
        d1, h1, m1, d2, h2, m2 = match.groups()
        start = _day(d1) * 1440 + _minutes(h1, m1)
        end = _day(d2) * 1440 + _minutes(h2, m2)
        raw.append((start, end if end > start else end + _WEEK))
    elif match := _DAILY_RE.match(text):
        days_text, h1, m1, h2, m2 = match.groups()
        t1, t2 = _minutes(h1, m1), _minutes(h2, m2)
        for day in _day_set(days_text) if days_text else range(7):
            start = day * 1440 + t1
            raw.append((start, day * 1440 + t2 if t2 > t1 else day * 1440 + t2 + 1440))
    else:
        raise ValueError(f"invalid schedule '{text}'; {_SCHEDULE_HELP}")
    windows: list[tuple[int, int]] = []
    for start, end in raw:
        if end > _WEEK:
            windows.append((start, _WEEK))
            windows.append((0, end - _WEEK))
        else:
            windows.append((start, end))
    return tuple(sorted(windows))


def _zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone '{name}'; use an IANA name such as 'Europe/Berlin' or 'UTC'"
        ) from None


@dataclass(frozen=True, slots=True)
class Silence:
    """Drops matching notifications while active.

    Active when inside ``starts_at``..``ends_at`` (each optional) and, if ``schedule`` is given,
    inside one of its weekly windows in ``timezone`` (wall-clock time, so DST moves with it).
    ``match`` maps fields of :data:`SILENCE_FIELDS` to globs (any glob may match); an empty
    ``match`` silences everything.
    """

    id: str
    match: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))
    schedule: tuple[str, ...] = ()
    timezone: str = "UTC"
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    comment: str = ""
    origin: str = ""
    created_by: str = ""
    windows: tuple[tuple[int, int], ...] = field(init=False, repr=False, compare=False)
    tz: tzinfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.match) - set(SILENCE_FIELDS))
        if unknown:
            hint = _did_you_mean(unknown[0], SILENCE_FIELDS)
            raise ValueError(
                f"unknown match field '{unknown[0]}'; {hint}use {', '.join(SILENCE_FIELDS)}"
            )
        for when in (self.starts_at, self.ends_at):
            if when is not None and when.tzinfo is None:
                raise ValueError("starts_at/ends_at need a UTC offset, e.g. 2026-12-24T18:00:00Z")
        if self.starts_at and self.ends_at and self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        object.__setattr__(self, "match", MappingProxyType(dict(self.match)))
        object.__setattr__(
            self, "windows", tuple(w for text in self.schedule for w in parse_schedule(text))
        )
        object.__setattr__(self, "tz", _zone(self.timezone))

    def active(self, now: datetime) -> bool:
        """Whether the silence is in force at ``now``."""
        if self.starts_at is not None and now < self.starts_at:
            return False
        if self.ends_at is not None and now >= self.ends_at:
            return False
        if not self.windows:
            return True
        local = now.astimezone(self.tz)
        minute = local.weekday() * 1440 + local.hour * 60 + local.minute
        return any(start <= minute < end for start, end in self.windows)

    def expired(self, now: datetime) -> bool:
        """Whether the silence can never be active again."""
        return self.ends_at is not None and now >= self.ends_at

    def matches(self, fields: Mapping[str, str | None]) -> bool:
        """Whether every matcher accepts the corresponding field of a notification."""
        for key, globs in self.match.items():
            value = fields.get(key)
            if value is None or not any(fnmatchcase(value, g) for g in globs):
                return False
        return True

    def as_dict(self) -> dict[str, Any]:
        """JSON form (how ad-hoc silences are stored)."""
        return {
            "id": self.id,
            "match": {k: list(v) for k, v in self.match.items()},
            "schedule": list(self.schedule),
            "timezone": self.timezone,
            "starts_at": _iso(self.starts_at),
            "ends_at": _iso(self.ends_at),
            "comment": self.comment,
            "origin": self.origin,
            "created_by": self.created_by,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Silence:
        """The inverse of :meth:`as_dict`.

        Raises:
            ValueError: when a field is missing or invalid.
        """
        match = {
            str(k): (v,) if isinstance(v, str) else tuple(str(g) for g in v)
            for k, v in dict(data.get("match") or {}).items()
        }
        return cls(
            id=str(data["id"]),
            match=match,
            schedule=tuple(str(s) for s in data.get("schedule") or ()),
            timezone=str(data.get("timezone") or "UTC"),
            starts_at=_parse_time(data.get("starts_at")),
            ends_at=_parse_time(data.get("ends_at")),
            comment=str(data.get("comment") or ""),
            origin=str(data.get("origin") or "adhoc"),
            created_by=str(data.get("created_by") or ""),
        )


@dataclass(frozen=True, slots=True)
class RuleSet:
    """Everything the loaded rule packs define."""

    rules: tuple[Rule, ...] = ()
    silences: tuple[Silence, ...] = ()
    packs: tuple[str, ...] = ()


# --------------------------------------------------------------------------------------------
# Event names


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
    start = _parse_time(print_.get("started_at"), strict=False)
    end = _parse_time(print_.get("finished_at"), strict=False) or _parse_time(time, strict=False)
    if start is None or end is None:
        return None
    return max(0.0, (end - start).total_seconds())


def _parse_time(value: object, *, strict: bool = True) -> datetime | None:
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


def _required_time(value: object) -> datetime:
    result = _parse_time(value)
    if result is None:
        raise ValueError("missing time")
    return result


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    text = value.astimezone(UTC).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


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


# --------------------------------------------------------------------------------------------
# Default wording

_DEFAULT_TITLES: Mapping[str, str] = MappingProxyType(
    {
        "printer.added": "{name} added",
        "printer.removed": "{name} removed",
        "printer.status_changed": "{name} is now {status}",
        "printer.offline": "{name} is offline",
        "printer.online": "{name} is back online",
        "printer.alert": "{name}: {alert}",
        "print.started": "{name}: {print} started",
        "print.progress": "{name}: {print} at {progress}",
        "print.paused": "{name}: {print} paused",
        "print.resumed": "{name}: {print} resumed",
        "print.finished": "{name}: {print} finished",
        "print.failed": "{name}: {print} failed",
        "print.aborted": "{name}: {print} aborted",
        "material.low": "{name}: resin low",
        "tank.attention": "{name}: tank needs attention",
        "source.unreachable": "{source}: vendor API unreachable",
        "source.recovered": "{source}: vendor API reachable again",
        "source.auth_failed": "{source}: credentials rejected",
    }
)
_GROUP_PHRASES: Mapping[str, str] = MappingProxyType(
    {
        "printer.added": "printers added",
        "printer.removed": "printers removed",
        "printer.status_changed": "printers changed status",
        "printer.offline": "printers offline",
        "printer.online": "printers back online",
        "printer.alert": "printers with alerts",
        "print.started": "prints started",
        "print.progress": "prints progressed",
        "print.paused": "prints paused",
        "print.resumed": "prints resumed",
        "print.finished": "prints finished",
        "print.failed": "prints failed",
        "print.aborted": "prints aborted",
        "material.low": "printers low on resin",
        "tank.attention": "tanks need attention",
        "source.unreachable": "sources unreachable",
        "source.recovered": "sources recovered",
        "source.auth_failed": "sources with rejected credentials",
    }
)
_NONE = "—"


def default_title(names: Mapping[str, Any]) -> str:
    """The title of a rule that has no ``title`` template."""
    printer = _mapping(names.get("printer"))
    print_ = _mapping(names.get("print"))
    progress = print_.get("progress")
    values = {
        "name": str(printer.get("name") or names.get("subject") or _NONE),
        "status": str(printer.get("status") or _NONE),
        "print": str(print_.get("name") or "print"),
        "progress": f"{progress:.0%}" if isinstance(progress, int | float) else _NONE,
        "alert": str(names.get("alert") or "alert"),
        "source": str(names.get("source") or _NONE),
    }
    pattern = _DEFAULT_TITLES.get(str(names.get("type")), "{name}: " + str(names.get("type")))
    return pattern.format_map(values)


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def default_text(names: Mapping[str, Any]) -> str:
    """The text of a rule that has no ``text`` template."""
    return f"{names.get('type')} for {names.get('subject')} at {names.get('time')}"


# --------------------------------------------------------------------------------------------
# The engine


Outcome = Literal[
    "fired",
    "log-only",
    "pending",
    "grouped",
    "group-sent",
    "repeat",
    "resolved",
    "cancelled",
    "throttled",
    "silenced",
    "duplicate",
    "error",
]


@dataclass(frozen=True, slots=True)
class Decision:
    """What the engine decided for one rule and subject (collected when a ``trace`` is given)."""

    at: datetime
    rule: str
    subject: str
    outcome: Outcome
    detail: str = ""


@dataclass(frozen=True, slots=True)
class RuleCounters:
    """Cumulative counts per rule name since the engine started."""

    matched: Mapping[str, int]
    notified: Mapping[str, int]
    silenced: Mapping[str, int]
    throttled: Mapping[str, int]
    errors: Mapping[str, int]


@dataclass(slots=True)
class _Cond:
    """A rule waiting (``pending``) or ``firing`` for one subject; engine-private, mutable."""

    rule: str
    source: str
    subject: str
    type: str
    disc: str
    phase: Literal["pending", "firing"]
    since: datetime
    due: datetime | None
    event: Mapping[str, Any]
    notified: bool = False
    repeats: int = 0
    seq: int = -1

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        return (self.rule, self.source, self.subject, self.type, self.disc)


@dataclass(slots=True)
class _Batch:
    """Notifications of one rule and group key waiting ``group_wait`` to go out together."""

    rule: str
    status: Literal["firing", "resolved"]
    values: tuple[str, ...]
    due: datetime
    event: Mapping[str, Any]  # the first member's event (the payload's ``event``)
    render: Mapping[str, Any]  # the event its wording is rendered from (the firing one)
    status_id: str
    members: list[tuple[str, str, str]] = field(default_factory=list)  # source, subject, name
    seq: int = -1

    @property
    def key(self) -> tuple[str, str, tuple[str, ...]]:
        return (self.rule, self.status, self.values)


@dataclass(slots=True)
class _Run:
    """What one process/tick call collects."""

    now: datetime
    silences: Sequence[Silence]
    trace: list[Decision] | None
    out: list[Delivery] = field(default_factory=list)

    def note(
        self, rule: str, subject: str, outcome: Outcome, detail: str = "", *args: object
    ) -> None:
        """Record a decision; ``detail`` is formatted with ``args`` only when tracing."""
        if self.trace is not None:
            if args:
                detail = detail.format(*(_iso(a) if isinstance(a, datetime) else a for a in args))
            self.trace.append(Decision(self.now, rule, subject, outcome, detail))


class _Occurrence:
    """One event with its names built lazily (only when some rule needs them)."""

    __slots__ = ("_names", "data", "event", "id", "source", "subject", "type")

    def __init__(self, event: Mapping[str, Any]) -> None:
        self.event = event
        data = event.get("data")
        self.data: Mapping[str, Any] = data if isinstance(data, Mapping) else {}
        self.type = str(event.get("type") or "")
        self.id = str(event.get("id") or "")
        self.source = split_source(event.get("source"))[0]
        self.subject = str(event.get("subject") or "")
        self._names: dict[str, Any] | None = None

    @property
    def names(self) -> dict[str, Any]:
        if self._names is None:
            self._names = event_names(self.event)
        return self._names

    @property
    def disc(self) -> str:
        return str(self.data.get("alert") or "") if self.type == "printer.alert" else ""


STATE_VERSION = 1
_PRUNE_EVERY = timedelta(minutes=5)
_MAX_GROUP_LINES = 20


class RuleEngine:
    """Maps events to deliveries; holds timers, throttle windows, firing state and batches.

    Single-threaded: call from one task. Every call takes ``now``; :meth:`process` first fires
    whatever fell due before ``now`` (so a late tick cannot let a recovery cancel a hold-down
    that had already elapsed). Persist :meth:`state` after every call that returned
    deliveries or changed timers (cheap to call).
    """

    def __init__(
        self,
        rules: RuleSet,
        *,
        state: Mapping[str, Any] | None = None,
        silences: Sequence[Silence] = (),
    ) -> None:
        self._set_rules(rules)
        self._adhoc: tuple[Silence, ...] = tuple(silences)
        self._conds: dict[tuple[str, str, str, str, str], _Cond] = {}
        self._batches: dict[tuple[str, str, tuple[str, ...]], _Batch] = {}
        self._throttle: dict[tuple[str, str, str], datetime] = {}
        self._timers: list[tuple[datetime, int, str, tuple[Any, ...]]] = []
        self._seq = itertools.count()
        self._now: datetime | None = None
        self._next_prune: datetime | None = None
        self._matched: dict[str, int] = {}
        self._notified: dict[str, int] = {}
        self._silenced: dict[str, int] = {}
        self._throttled: dict[str, int] = {}
        self._errors: dict[str, int] = {}
        if state:
            self._load(state)

    # -- configuration ----------------------------------------------------------------------

    def _set_rules(self, rules: RuleSet) -> None:
        self.rules = rules
        self._rules = {r.name: r for r in rules.rules}
        by_type: dict[str, list[Rule]] = {t: [] for t in EVENT_TYPES}
        resolvers: dict[str, list[Rule]] = {t: [] for t in RESOLUTIONS}
        for rule in rules.rules:
            for t in EVENT_TYPES:
                if t in rule.types:
                    by_type[t].append(rule)
            if rule.stateful:
                for resolving, resolved in RESOLUTIONS.items():
                    if rule.types.intersection(resolved):
                        resolvers[resolving].append(rule)
        self._by_type = {t: tuple(rs) for t, rs in by_type.items() if rs}
        self._resolvers = {t: tuple(rs) for t, rs in resolvers.items() if rs}

    def replace_rules(self, rules: RuleSet) -> None:
        """Switch to a new rule set (SIGHUP), keeping state of rules that still exist.

        Pending hold-downs of a kept rule are re-timed with its new ``for``; firing state is
        kept where the rule still resolves or repeats; state of removed rules is dropped.
        """
        state = self.state()
        self._set_rules(rules)
        self._conds.clear()
        self._batches.clear()
        self._throttle.clear()
        self._timers.clear()
        self._load(state)

    def set_silences(self, silences: Sequence[Silence]) -> None:
        """Replace the ad-hoc silences (from the state store) applied on every call."""
        self._adhoc = tuple(silences)

    # -- metrics ----------------------------------------------------------------------------

    @property
    def matches(self) -> Mapping[str, int]:
        """Cumulative matches per rule (``printfleet_rule_matches_total{rule}``)."""
        return MappingProxyType(self._matched)

    @property
    def counters(self) -> RuleCounters:
        """A copy of all cumulative counters."""
        return RuleCounters(
            matched=dict(self._matched),
            notified=dict(self._notified),
            silenced=dict(self._silenced),
            throttled=dict(self._throttled),
            errors=dict(self._errors),
        )

    # -- entry points -----------------------------------------------------------------------

    def process(
        self,
        event: Mapping[str, Any],
        now: datetime,
        *,
        silences: Sequence[Silence] = (),
        trace: list[Decision] | None = None,
    ) -> list[Delivery]:
        """Deliveries caused by ``event`` at ``now`` (plus timers that fell due before it).

        ``silences`` are added to the rule set's and the ad-hoc ones for this call. When
        ``trace`` is a list, a :class:`Decision` is appended for every rule decision.
        """
        run = self._begin(now, silences, trace)
        self._run_due(run)
        occ = _Occurrence(event)
        clearing = occ.type == "printer.alert" and alert_cleared(occ.data)
        if (occ.type != "printer.alert" or clearing) and occ.type in self._resolvers:
            resolved = RESOLUTIONS[occ.type]
            wildcard = occ.type == "printer.removed"
            for rule in self._resolvers[occ.type]:
                for etype in resolved:
                    if etype in rule.types:
                        self._resolve(rule, occ, etype, None if wildcard else occ.disc, run)
        if clearing:
            return run.out
        for rule in self._by_type.get(occ.type, ()):
            if rule.when is None:
                matched: bool | None = True
            else:
                try:
                    matched = bool(rule.when(occ.names))
                except Exception as err:  # a data-dependent failure must not stop the others
                    matched = None
                    self._errors[rule.name] = self._errors.get(rule.name, 0) + 1
                    run.note(rule.name, occ.subject, "error", f"when: {type(err).__name__}: {err}")
            if matched:
                self._matched[rule.name] = self._matched.get(rule.name, 0) + 1
                self._trigger(rule, occ, run)
            elif matched is False and rule.stateful:
                self._resolve(rule, occ, occ.type, occ.disc, run)
        return run.out

    def tick(
        self,
        now: datetime,
        *,
        silences: Sequence[Silence] = (),
        trace: list[Decision] | None = None,
    ) -> list[Delivery]:
        """Fire everything due at ``now``: hold-downs, repeats and grouped batches."""
        run = self._begin(now, silences, trace)
        self._run_due(run)
        self._prune_throttle(now)
        return run.out

    def next_deadline(self) -> datetime | None:
        """When :meth:`tick` next has something to do (``None``: nothing scheduled)."""
        while self._timers and not self._timer_valid(self._timers[0]):
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    # -- conditions -------------------------------------------------------------------------

    def _begin(
        self, now: datetime, silences: Sequence[Silence], trace: list[Decision] | None
    ) -> _Run:
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware (UTC)")
        self._now = now
        active = (*self.rules.silences, *self._adhoc, *silences)
        return _Run(now=now, silences=active, trace=trace)

    def _trigger(self, rule: Rule, occ: _Occurrence, run: _Run) -> None:
        if not rule.stateful:
            self._notify(rule, "firing", occ, run)
            return
        key = (rule.name, occ.source, occ.subject, occ.type, occ.disc)
        if key in self._conds:
            run.note(rule.name, occ.subject, "duplicate", "already {}", self._conds[key].phase)
            return
        cond = _Cond(
            rule=rule.name,
            source=occ.source,
            subject=occ.subject,
            type=occ.type,
            disc=occ.disc,
            phase="pending",
            since=run.now,
            due=None,
            event=occ.event,
        )
        if rule.hold > timedelta(0):
            cond.due = run.now + rule.hold
            self._conds[key] = cond
            self._schedule_cond(cond)
            run.note(rule.name, occ.subject, "pending", "fires at {} unless resolved", cond.due)
        else:
            self._fire(rule, cond, run.now, run, occ=occ)

    def _fire(
        self,
        rule: Rule,
        cond: _Cond,
        at: datetime,
        run: _Run,
        *,
        occ: _Occurrence | None = None,
    ) -> None:
        notified = self._notify(rule, "firing", occ or _Occurrence(cond.event), run, at=at)
        if rule.resolve or rule.repeat is not None:
            cond.phase = "firing"
            cond.notified = notified
            cond.since = at
            cond.due = None
            if rule.repeat is not None:
                cond.due = at + rule.repeat
                if cond.due <= run.now:  # fired late (restart): no burst of catch-up repeats
                    cond.due = run.now + rule.repeat
            self._conds[cond.key] = cond
            self._schedule_cond(cond)
        else:
            self._conds.pop(cond.key, None)

    def _resolve(
        self, rule: Rule, occ: _Occurrence, etype: str, disc: str | None, run: _Run
    ) -> None:
        if disc is None:
            keys = [
                k
                for k in self._conds
                if k[0] == rule.name
                and k[1] == occ.source
                and k[2] == occ.subject
                and k[3] == etype
            ]
        else:
            keys = [(rule.name, occ.source, occ.subject, etype, disc)]
        for key in keys:
            cond = self._conds.pop(key, None)
            if cond is None:
                continue
            if cond.phase == "pending":
                run.note(rule.name, occ.subject, "cancelled", "{} before the hold-down", occ.type)
            elif rule.resolve and cond.notified:
                self._notify(rule, "resolved", occ, run, render=_Occurrence(cond.event))
            else:
                run.note(rule.name, occ.subject, "resolved", "no resolved notice")

    # -- notifications ----------------------------------------------------------------------

    def _notify(
        self,
        rule: Rule,
        status: Literal["firing", "resolved"],
        occ: _Occurrence,
        run: _Run,
        *,
        render: _Occurrence | None = None,
        at: datetime | None = None,
        repeat: int = 0,
    ) -> bool:
        """Throttle, silence, then send (or batch) one notification; True when not dropped.

        ``occ`` is the event the notification is about (for ``resolved``: the resolving
        event); its wording comes from ``render`` (the firing event) when given.
        """
        at = at or run.now
        wording = render or occ
        if rule.severity is not None:
            severity = rule.severity.value
        else:
            severity = str(wording.data.get("severity") or "info")
        tkey = (rule.name, occ.source, occ.subject)
        throttled = status == "firing" and repeat == 0 and rule.throttle is not None
        if throttled and rule.throttle is not None:
            last = self._throttle.get(tkey)
            if last is not None and at < last + rule.throttle:
                self._throttled[rule.name] = self._throttled.get(rule.name, 0) + 1
                run.note(rule.name, occ.subject, "throttled", "last sent {}", last)
                return False
        if run.silences:
            fields = _silence_fields(wording.names, rule.name, severity)
            for silence in run.silences:
                if silence.matches(fields) and silence.active(at):
                    self._silenced[rule.name] = self._silenced.get(rule.name, 0) + 1
                    run.note(rule.name, occ.subject, "silenced", "by silence {}", silence.id)
                    return False
        if throttled:
            self._throttle[tkey] = at
        self._notified[rule.name] = self._notified.get(rule.name, 0) + 1
        status_id = status if repeat == 0 else f"repeat-{repeat}"
        if not rule.notify and rule.mqtt is None:  # log-only: render only for a trace
            if run.trace is not None:
                title = self._render(rule, wording.names, status)[0]
                outcome: Outcome = "resolved" if status == "resolved" else "log-only"
                run.note(rule.name, occ.subject, outcome, f"log only: '{title}'")
            return True
        grouped = bool(rule.group_by and rule.notify)
        if grouped:
            self._join_batch(rule, status, occ, wording, status_id, at, run)
            if rule.mqtt is None:
                return True
        title, text = self._render(rule, wording.names, status)
        base: dict[str, Any] = {
            "event": dict(occ.event),
            "status": status,
            "rule": rule.name,
            "severity": severity,
            "title": title,
            "text": text,
        }
        if repeat:
            base["repeat"] = repeat
        if render is not None:
            base["resolves"] = render.id
        key = f"{occ.source}/{occ.subject}"
        if rule.mqtt is not None:
            topic = _safe_render(rule.mqtt.topic, wording.names, f"{rule.name}/{occ.subject}")
            run.out.append(
                Delivery(
                    id=delivery_id(occ.id, rule.name, "mqtt", status_id),
                    sink="mqtt",
                    event_id=occ.id,
                    key=key,
                    created_at=run.now,
                    payload={
                        **base,
                        "topic": topic,
                        "retain": rule.mqtt.retain,
                        "qos": rule.mqtt.qos,
                    },
                )
            )
        if not grouped:
            for receiver in rule.notify:
                run.out.append(
                    Delivery(
                        id=delivery_id(occ.id, rule.name, receiver, status_id),
                        sink=receiver,
                        event_id=occ.id,
                        key=key,
                        created_at=run.now,
                        payload=base,
                    )
                )
        if run.trace is not None and not grouped:
            outcome = "repeat" if repeat else "resolved" if status == "resolved" else "fired"
            targets = [*rule.notify, *(["mqtt"] if rule.mqtt else [])]
            run.note(rule.name, occ.subject, outcome, f"to {', '.join(targets)}")
        return True

    def _render(self, rule: Rule, names: Mapping[str, Any], status: str) -> tuple[str, str]:
        title = _safe_render(rule.title or default_title, names, default_title)
        text = _safe_render(rule.text or default_text, names, default_text)
        if status == "resolved":
            title = f"Resolved: {title}"
        return title, text

    def _join_batch(
        self,
        rule: Rule,
        status: Literal["firing", "resolved"],
        occ: _Occurrence,
        wording: _Occurrence,
        status_id: str,
        at: datetime,
        run: _Run,
    ) -> None:
        names = wording.names
        values = tuple(_text(lookup(names, path.split("."))) for path in rule.group_by)
        key = (rule.name, status, values)
        batch = self._batches.get(key)
        if batch is None:
            batch = _Batch(
                rule=rule.name,
                status=status,
                values=values,
                due=at + rule.group_wait,
                event=occ.event,
                render=wording.event,
                status_id=status_id,
            )
            self._batches[key] = batch
            batch.seq = next(self._seq)
            heapq.heappush(self._timers, (batch.due, batch.seq, "batch", key))
        printer = names.get("printer")
        name = printer.get("name") if isinstance(printer, Mapping) else None
        batch.members.append((occ.source, occ.subject, str(name or occ.subject)))
        run.note(rule.name, occ.subject, "grouped", "sent with its group at {}", batch.due)

    def _flush_batch(self, batch: _Batch, run: _Run) -> None:
        rule = self._rules.get(batch.rule)
        self._batches.pop(batch.key, None)
        if rule is None or not batch.members:
            return
        count = len(batch.members)
        subjects = [m[1] for m in batch.members]
        group = {"count": count, "subjects": subjects}
        names = {**event_names(batch.render), "group": group}
        if count == 1:
            title, text = self._render(rule, names, batch.status)
        else:
            phrase = _GROUP_PHRASES.get(str(names.get("type")), f"x {names.get('type')}")
            title = f"{count} {phrase}"
            if rule.group_title is not None:
                title = _safe_render(rule.group_title, names, title)
            if batch.status == "resolved":
                title = f"Resolved: {title}"
            shown = [m[2] for m in batch.members[:_MAX_GROUP_LINES]]
            more = f" and {count - len(shown)} more" if count > len(shown) else ""
            text = ", ".join(shown) + more
            if rule.group_text is not None:
                text = _safe_render(rule.group_text, names, text)
        occ = _Occurrence(batch.event)
        severity = rule.severity.value if rule.severity else str(names.get("severity") or "info")
        payload: dict[str, Any] = {
            "event": dict(batch.event),
            "status": batch.status,
            "rule": rule.name,
            "severity": severity,
            "title": title,
            "text": text,
            "group": group,
        }
        if batch.status == "resolved":
            payload["resolves"] = batch.render.get("id")
        for receiver in rule.notify:
            run.out.append(
                Delivery(
                    id=delivery_id(occ.id, rule.name, receiver, f"{batch.status_id}/group"),
                    sink=receiver,
                    event_id=occ.id,
                    key=f"{occ.source}/{occ.subject}",
                    created_at=run.now,
                    payload=payload,
                )
            )
        label = subjects[0] if count == 1 else f"{count} subjects"
        run.note(rule.name, label, "group-sent", f"to {', '.join(rule.notify)}")

    # -- timers -----------------------------------------------------------------------------

    def _schedule_cond(self, cond: _Cond) -> None:
        if cond.due is None:
            cond.seq = -1
            return
        cond.seq = next(self._seq)
        heapq.heappush(self._timers, (cond.due, cond.seq, "cond", cond.key))

    def _timer_valid(self, timer: tuple[datetime, int, str, tuple[Any, ...]]) -> bool:
        _, seq, kind, key = timer
        entry = self._conds.get(key) if kind == "cond" else self._batches.get(key)
        return entry is not None and entry.seq == seq

    def _run_due(self, run: _Run) -> None:
        timers = self._timers
        while timers and timers[0][0] <= run.now:
            timer = heapq.heappop(timers)
            if not self._timer_valid(timer):
                continue
            due, _, kind, key = timer
            if kind == "batch":
                self._flush_batch(self._batches[key], run)
                continue
            cond = self._conds[key]
            rule = self._rules.get(cond.rule)
            if rule is None:
                self._conds.pop(cond.key, None)
            elif cond.phase == "pending":
                self._fire(rule, cond, due, run)
            elif rule.repeat is not None:
                cond.repeats += 1
                occ = _Occurrence(cond.event)
                if self._notify(rule, "firing", occ, run, at=due, repeat=cond.repeats):
                    cond.notified = True
                cond.due = due + rule.repeat
                if cond.due <= run.now:
                    cond.due = run.now + rule.repeat
                self._schedule_cond(cond)

    def _prune_throttle(self, now: datetime) -> None:
        """Forget throttle windows that ended (at most every few minutes: it is a full scan)."""
        if len(self._throttle) < 1024 or (self._next_prune and now < self._next_prune):
            return
        self._next_prune = now + _PRUNE_EVERY
        for key, last in list(self._throttle.items()):
            rule = self._rules.get(key[0])
            if rule is None or rule.throttle is None or last + rule.throttle <= now:
                del self._throttle[key]

    # -- persistence ------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Timers, firing conditions, throttle windows and batches as JSON-able data."""
        now = self._now
        throttle = []
        for (rule_name, source, subject), last in self._throttle.items():
            rule = self._rules.get(rule_name)
            if rule is None or rule.throttle is None:
                continue
            if now is not None and last + rule.throttle <= now:
                continue
            throttle.append([rule_name, source, subject, _iso(last)])
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
                    "since": _iso(c.since),
                    "due": _iso(c.due),
                    "notified": c.notified,
                    "repeats": c.repeats,
                    "event": dict(c.event),
                }
                for c in self._conds.values()
            ],
            "throttle": throttle,
            "batches": [
                {
                    "rule": b.rule,
                    "status": b.status,
                    "values": list(b.values),
                    "due": _iso(b.due),
                    "event": dict(b.event),
                    "render": dict(b.render),
                    "status_id": b.status_id,
                    "members": [list(m) for m in b.members],
                }
                for b in self._batches.values()
            ],
        }

    def _load(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state` output, dropping what the current rules no longer need."""
        if state.get("version") != STATE_VERSION:
            return
        for item in _entries(state, "conditions"):
            try:
                rule = self._rules.get(item["rule"])
                if rule is None:
                    continue
                cond = _Cond(
                    rule=str(item["rule"]),
                    source=str(item["source"]),
                    subject=str(item["subject"]),
                    type=str(item["type"]),
                    disc=str(item.get("disc") or ""),
                    phase="firing" if item["phase"] == "firing" else "pending",
                    since=_required_time(item["since"]),
                    due=_parse_time(item.get("due")),
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
            self._conds[cond.key] = cond
            self._schedule_cond(cond)
        for entry in _entries(state, "throttle"):
            try:
                rule_name, source, subject, last = entry
                when = _parse_time(last)
            except (TypeError, ValueError):
                continue
            rule = self._rules.get(rule_name)
            if rule is not None and rule.throttle is not None and when is not None:
                self._throttle[(str(rule_name), str(source), str(subject))] = when
        for item in _entries(state, "batches"):
            try:
                rule = self._rules.get(item["rule"])
                if rule is None or not rule.group_by:
                    continue
                batch = _Batch(
                    rule=str(item["rule"]),
                    status="resolved" if item["status"] == "resolved" else "firing",
                    values=tuple(str(v) for v in item["values"]),
                    due=_required_time(item["due"]),
                    event=dict(item["event"]),
                    render=dict(item.get("render") or item["event"]),
                    status_id=str(item.get("status_id") or item["status"]),
                    members=[(str(a), str(b), str(c)) for a, b, c in item["members"]],
                )
            except (KeyError, TypeError, ValueError):
                continue
            batch.seq = next(self._seq)
            self._batches[batch.key] = batch
            heapq.heappush(self._timers, (batch.due, batch.seq, "batch", batch.key))


def _entries(state: Mapping[str, Any], key: str) -> list[Any]:
    value = state.get(key)
    return value if isinstance(value, list) else []


def _silence_fields(names: Mapping[str, Any], rule: str, severity: str) -> dict[str, str | None]:
    printer = _mapping(names.get("printer"))
    subject = names.get("subject")
    return {
        "source": _opt(names.get("source")),
        "vendor": _opt(names.get("vendor")),
        "subject": _opt(subject),
        "serial": _opt(printer.get("serial") or subject),
        "name": _opt(printer.get("name")),
        "group": _opt(printer.get("group")),
        "model": _opt(printer.get("model")),
        "type": _opt(names.get("type")),
        "severity": severity,
        "rule": rule,
    }


def _opt(value: object) -> str | None:
    return None if value is None else str(value)


def _text(value: object) -> str:
    return _NONE if value is None else str(value)


def _safe_render(renderer: Renderer, names: Mapping[str, Any], fallback: str | Renderer) -> str:
    """Render; a template that fails on surprising data falls back (string or default)."""
    try:
        return renderer(names)
    except Exception:  # templates are validated at load; data surprises must not drop alerts
        return fallback if isinstance(fallback, str) else fallback(names)
