"""Loading rule packs: TOML files of ``[[rule]]`` and ``[[silence]]`` tables (DESIGN §8).

Everything is validated up front and **all** problems are reported together, each naming
the file, the line, the rule and the key, and saying how to fix it. Nothing half-loaded is
ever returned: either a complete :class:`~printfleet.core.rules.model.RuleSet` or a
:class:`~printfleet.errors.RuleError`.

Rule keys (see ``rules/*.toml`` for worked examples):

    name         unique across all packs
    on           event types or globs ("print.*"); required
    when         condition over the event (see :mod:`printfleet.rulepacks.when`)
    for          hold-down: notify only if not resolved within this long
    throttle     at most one notification per rule and subject in this window
    repeat       while not resolved, notify again every this long
    resolve      send a "resolved" notice when the resolving event arrives
    severity     info | warning | critical (default: the event's)
    notify       receiver names from the config; [] or omitted = log only
    mqtt         { topic = "lab/{printer.serial}/alerts", retain = false, qos = 1 }
    title, text  templates; group_title, group_text for grouped notifications
    group_by     fields whose values form a group, e.g. ["source"]; group_wait (default 30s)
    description  free text;  enabled = false keeps a rule validated but inactive

Silence keys: ``name``, ``match`` (field -> glob or list of globs), ``schedule`` (weekly
window or list of them), ``timezone``, ``starts_at``, ``ends_at``, ``comment``, ``hold``
(true: what it silences is sent as one summary per receiver when it ends, see
:mod:`printfleet.core.rules.holds`).

One file although long: every check of every key appends to the one problem list with the
file and line it found, and reporting all problems at once is what the loader is for.
"""

from __future__ import annotations

import glob
import re
import tomllib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import structlog

from printfleet.config import Settings
from printfleet.config.toml_lines import toml_error_line, toml_key, toml_key_lines, undecodable_line
from printfleet.core.durations import parse_duration
from printfleet.core.events import Severity
from printfleet.core.rules.model import (
    RESOLVABLE_TYPES,
    MqttAction,
    Rule,
    RuleSet,
    expand_event_patterns,
)
from printfleet.core.rules.names import check_field_path, typo_hint
from printfleet.core.rules.windows import Silence
from printfleet.errors import Problem, RuleError
from printfleet.rulepacks.errors import ExpressionError
from printfleet.rulepacks.templates import compile_template
from printfleet.rulepacks.when import compile_when

RULE_KEYS: tuple[str, ...] = (
    "name",
    "description",
    "enabled",
    "on",
    "when",
    "for",
    "throttle",
    "repeat",
    "resolve",
    "severity",
    "notify",
    "mqtt",
    "title",
    "text",
    "group_by",
    "group_wait",
    "group_title",
    "group_text",
)
MQTT_KEYS: tuple[str, ...] = ("topic", "retain", "qos")
SILENCE_KEYS: tuple[str, ...] = (
    "name",
    "match",
    "schedule",
    "timezone",
    "starts_at",
    "ends_at",
    "comment",
    "hold",
)
TOP_KEYS: tuple[str, ...] = ("rule", "silence")
DEFAULT_GROUP_WAIT = timedelta(seconds=30)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,79}$")
_WILDCARDS = frozenset("*?[")


def load_rule_set(
    settings: Settings,
    *,
    base_dir: Path | None = None,
    extra_paths: Sequence[Path] = (),
    log: Any = None,
) -> RuleSet:
    """Load every pack named by ``[rules] packs`` (globs) plus ``extra_paths``.

    Relative patterns are relative to ``base_dir`` (the config file's directory; default the
    current directory). A glob matching nothing is logged as a warning; a plain path that
    does not exist is an error.

    Raises:
        RuleError: with every problem found in every pack.
    """
    log = log if log is not None else structlog.get_logger("printfleet.rulepacks")
    base = base_dir if base_dir is not None else Path.cwd()
    problems: list[Problem] = []
    files: list[Path] = []
    for pattern in settings.rules.packs:
        full = Path(pattern).expanduser()
        if not full.is_absolute():
            full = base / full
        if _WILDCARDS.intersection(pattern):
            matched = sorted(Path(p) for p in glob.glob(str(full), recursive=True))
            matched = [p for p in matched if p.is_file()]
            if not matched:
                log.warning("rules.no_packs_matched", pattern=pattern, base_dir=str(base))
            files.extend(matched)
        elif full.is_file():
            files.append(full)
        else:
            problems.append(
                Problem(
                    file=str(full),
                    key="rules.packs",
                    message="rule pack not found",
                    fix=f"create it, fix the path in [rules] packs, or use a glob "
                    f"(relative paths are relative to {base})",
                )
            )
    for path in extra_paths:
        if path.is_file():
            files.append(path)
        else:
            problems.append(
                Problem(file=str(path), key="", message="rule pack not found", fix="check the path")
            )
    unique: list[Path] = []
    seen: set[Path] = set()
    for path in files:
        resolved = path.resolve()
        if resolved not in seen:
            seen.add(resolved)
            unique.append(path)
    loader = _Loader(
        receivers=frozenset(r.name for r in settings.receiver),
        timezone=settings.rules.timezone,
        problems=problems,
    )
    for path in unique:
        try:
            data = path.read_bytes()
        except OSError as err:
            problems.append(
                Problem(
                    file=str(path), key="", message=f"cannot read: {err.strerror}", fix="check it"
                )
            )
            continue
        line = undecodable_line(data)
        if line is not None:
            problems.append(
                Problem(
                    file=str(path),
                    key="",
                    message="not UTF-8 text",
                    fix="save it as UTF-8 (that line has another encoding)",
                    line=line,
                )
            )
            continue
        text = data.decode("utf-8")
        loader.load_text(text, str(path))
    if problems:
        raise RuleError(problems)
    return RuleSet(
        rules=tuple(loader.rules),
        silences=tuple(loader.silences),
        packs=tuple(str(p) for p in unique),
    )


def load_pack_text(
    text: str,
    file: str,
    *,
    receivers: Collection[str] = (),
    timezone: str = "UTC",
) -> RuleSet:
    """Load one pack from its text (tests, ``printfleet check`` of a single file).

    Raises:
        RuleError: with every problem found.
    """
    problems: list[Problem] = []
    loader = _Loader(receivers=frozenset(receivers), timezone=timezone, problems=problems)
    loader.load_text(text, file)
    if problems:
        raise RuleError(problems)
    return RuleSet(rules=tuple(loader.rules), silences=tuple(loader.silences), packs=(file,))


def silences_from_state(value: Any) -> tuple[Silence, ...]:
    """Ad-hoc silences as stored under the state key ``"silences"`` (junk entries skipped)."""
    result: list[Silence] = []
    if not isinstance(value, list):
        return ()
    for item in value:
        if not isinstance(item, Mapping):
            continue
        try:
            result.append(Silence.from_dict(item))
        except (KeyError, TypeError, ValueError):
            continue
    return tuple(result)


# --------------------------------------------------------------------------------------------


class _Lines:
    """Finds the line of a table or key in a pack's text (tomllib does not report them)."""

    _HEADER = re.compile(r"^\s*\[\[\s*(rule|silence)\s*\]\]")
    _ANY_HEADER = re.compile(r"^\s*\[")

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.keys = toml_key_lines(text)
        self.headers: dict[str, list[int]] = {"rule": [], "silence": []}
        for number, line in enumerate(self.lines, start=1):
            if match := self._HEADER.match(line):
                self.headers[match.group(1)].append(number)

    def table(self, kind: str, index: int) -> int | None:
        found = self.headers.get(kind, [])
        return found[index] if index < len(found) else None

    def top(self, key: str) -> int | None:
        """The line of a top-level key (``"" = 1``, ``[extra]``, ``x.y = 2``), as tomllib
        reads the key: quoted, escaped and empty keys are found too."""
        return self.keys.get((key,))

    def key(self, kind: str, index: int, key: str) -> int | None:
        start = self.table(kind, index)
        if start is None:
            return None
        if (kind, index, key) in self.keys:
            return self.keys[(kind, index, key)]
        pattern = re.compile(
            rf"""^\s*(?:{re.escape(key)}|"{re.escape(key)}"|'{re.escape(key)}')\s*[=.]"""
        )
        sub = re.compile(rf"^\s*\[\s*{kind}\.{re.escape(key)}\s*\]")
        for number in range(start + 1, len(self.lines) + 1):
            line = self.lines[number - 1]
            if self._HEADER.match(line):
                break
            if pattern.match(line) or sub.match(line):
                return number
        return start


@dataclass
class _Loader:
    receivers: frozenset[str]
    timezone: str
    problems: list[Problem]
    rules: list[Rule] = field(default_factory=list)
    silences: list[Silence] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)  # rule name -> "file:line"

    def load_text(self, text: str, file: str) -> None:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            self.problems.append(
                Problem(
                    file=file,
                    key="",
                    message=f"not valid TOML: {err}",
                    fix="check quotes, brackets and commas on that line",
                    line=toml_error_line(err, text),
                )
            )
            return
        lines = _Lines(text)
        for key in data:
            if key not in TOP_KEYS:
                self.problems.append(
                    Problem(
                        file=file,
                        key=toml_key(key),
                        message="unknown top-level key",
                        fix=f"{typo_hint(key, TOP_KEYS)}a pack holds only [[rule]] and [[silence]] "
                        "tables",
                        line=lines.top(key),
                    )
                )
        for kind, build in (("rule", self._rule), ("silence", self._silence)):
            tables = data.get(kind, [])
            if isinstance(tables, dict):
                self.problems.append(
                    Problem(
                        file=file,
                        key=kind,
                        message=f"[{kind}] is a single table",
                        fix=f"write [[{kind}]] (double brackets) before each {kind}",
                    )
                )
                continue
            if not isinstance(tables, list):
                self.problems.append(
                    Problem(
                        file=file,
                        key=kind,
                        message="must be tables",
                        fix=f"write [[{kind}]] before each {kind}",
                    )
                )
                continue
            for index, table in enumerate(tables):
                if isinstance(table, dict):
                    build(table, _Where(file, lines, index))

    # -- rules ------------------------------------------------------------------------------

    def _rule(self, table: dict[str, Any], where: _Where) -> None:
        name = table.get("name")
        where.label = f"rule '{name}'" if isinstance(name, str) else f"rule #{where.index + 1}"
        before = len(self.problems)
        for key in table:
            if key not in RULE_KEYS:
                self._problem(
                    where,
                    toml_key(key),
                    "unknown key",
                    f"{typo_hint(key, RULE_KEYS)}remove it; rule keys are: {', '.join(RULE_KEYS)}",
                    line_key=key,
                )
        if not isinstance(name, str) or not _NAME_RE.match(name):
            self._problem(
                where,
                "name",
                "every rule needs a name (letters, digits, - _ . :)",
                'add name = "print-failed-to-slack"',
            )
            name = where.label
        elif name in self.names:
            self._problem(
                where,
                "name",
                f"duplicate rule name (also at {self.names[name]})",
                "rename one of them; names are unique across all packs",
            )
        else:
            self.names[name] = f"{where.file}:{where.table_line()}"
        on = self._strings(table, "on", where, required=True)
        types: frozenset[str] = frozenset()
        if on is not None:
            if not on:
                self._problem(where, "on", "lists no event types", 'write on = ["print.failed"]')
            for pattern in on:
                try:
                    types |= expand_event_patterns([pattern])
                except ValueError as err:
                    self._problem(where, "on", str(err), "use a type from the list or a glob")
        when = None
        when_text = self._string(table, "when", where)
        if when_text is not None:
            try:
                when = compile_when(when_text)
            except ExpressionError as err:
                self._problem(where, "when", f"{err} in {when_text!r}", err.fix)
        hold = self._duration(table, "for", where) or timedelta(0)
        throttle = self._duration(table, "throttle", where, positive=True)
        repeat = self._duration(table, "repeat", where, positive=True)
        resolve = self._bool(table, "resolve", where, default=False)
        enabled = self._bool(table, "enabled", where, default=True)
        severity = None
        sev_text = self._string(table, "severity", where)
        if sev_text is not None:
            try:
                severity = Severity(sev_text)
            except ValueError:
                self._problem(
                    where,
                    "severity",
                    f"unknown severity '{sev_text}'",
                    "use info, warning or critical",
                )
        notify = self._strings(table, "notify", where) or []
        for receiver in notify:
            if receiver == "mqtt":
                self._problem(
                    where,
                    "notify",
                    "'mqtt' is not a receiver",
                    "every event is already published to MQTT; to publish to a topic "
                    'of your own add mqtt = { topic = "lab/{printer.serial}/alerts" }',
                )
            elif receiver not in self.receivers:
                known = ", ".join(sorted(self.receivers)) or "none"
                self._problem(
                    where,
                    "notify",
                    f"unknown receiver '{receiver}'",
                    f"{typo_hint(receiver, self.receivers)}define it as a [[receiver]] in "
                    f"the config (configured: {known})",
                )
        if len(set(notify)) != len(notify):
            self._problem(where, "notify", "lists a receiver twice", "list each receiver once")
        mqtt = self._mqtt(table, where)
        templates = {
            key: self._template(table, key, where)
            for key in ("title", "text", "group_title", "group_text")
        }
        group_by = self._strings(table, "group_by", where) or []
        for path in group_by:
            problem = check_field_path(path.split("."), template=False)
            if problem is not None:
                self._problem(where, "group_by", f"{problem[0]} in '{path}'", problem[1])
        group_wait = self._duration(table, "group_wait", where, positive=True)
        if group_wait is not None and not group_by:
            self._problem(
                where,
                "group_wait",
                "group_wait without group_by",
                'add group_by = ["source"] or remove group_wait',
            )
        if group_by and not notify:
            self._problem(
                where,
                "group_by",
                "grouping needs notify receivers",
                "add notify = [...] or remove group_by (MQTT actions are never grouped)",
            )
        for key in ("group_title", "group_text"):
            if key in table and not group_by:
                self._problem(
                    where, key, f"{key} without group_by", f"add group_by or remove {key}"
                )
        if (resolve or repeat is not None) and when is None and types:
            never = sorted(types - RESOLVABLE_TYPES)
            if never:
                key = "resolve" if resolve else "repeat"
                self._problem(
                    where,
                    key,
                    f"{', '.join(never)} is never resolved, so {key} cannot work",
                    "limit on to resolvable types ("
                    + ", ".join(sorted(RESOLVABLE_TYPES))
                    + ") or add a when condition (a later event failing it resolves)",
                )
        if len(self.problems) > before or not enabled or not isinstance(name, str) or not on:
            return
        self.rules.append(
            Rule(
                name=name,
                on=tuple(on),
                pack=where.file,
                line=where.table_line(),
                when=when,
                when_source=when_text,
                hold=hold,
                throttle=throttle,
                repeat=repeat,
                resolve=resolve,
                severity=severity,
                notify=tuple(notify),
                mqtt=mqtt,
                title=templates["title"],
                text=templates["text"],
                group_by=tuple(group_by),
                group_wait=(group_wait or DEFAULT_GROUP_WAIT) if group_by else timedelta(0),
                group_title=templates["group_title"],
                group_text=templates["group_text"],
                description=self._string(table, "description", where) or "",
            )
        )

    def _mqtt(self, table: dict[str, Any], where: _Where) -> MqttAction | None:
        value = table.get("mqtt")
        if value is None:
            return None
        if not isinstance(value, dict):
            self._problem(
                where,
                "mqtt",
                "must be a table",
                'write mqtt = { topic = "lab/{printer.serial}/alerts" }',
            )
            return None
        for key in value:
            if key not in MQTT_KEYS:
                self._problem(
                    where,
                    f"mqtt.{toml_key(key)}",
                    "unknown key",
                    f"{typo_hint(key, MQTT_KEYS)}use topic, retain, qos",
                )
        topic_text = value.get("topic")
        topic = None
        if not isinstance(topic_text, str):
            self._problem(
                where,
                "mqtt.topic",
                "missing or not a string",
                'write topic = "lab/{printer.serial}/alerts"',
            )
        else:
            try:
                topic = compile_template(topic_text, topic=True)
            except ExpressionError as err:
                self._problem(where, "mqtt.topic", f"{err} in {topic_text!r}", err.fix)
        retain = value.get("retain", False)
        if not isinstance(retain, bool):
            self._problem(where, "mqtt.retain", "must be true or false", "write retain = false")
        qos = value.get("qos", 1)
        if qos not in (0, 1, 2) or isinstance(qos, bool):
            self._problem(where, "mqtt.qos", "must be 0, 1 or 2", "write qos = 1")
        if topic is None or not isinstance(retain, bool) or qos not in (0, 1, 2):
            return None
        return MqttAction(topic=topic, retain=retain, qos=int(qos))

    def _template(self, table: dict[str, Any], key: str, where: _Where) -> Any:
        text = self._string(table, key, where)
        if text is None:
            return None
        try:
            return compile_template(text)
        except ExpressionError as err:
            self._problem(
                where,
                key,
                f"{err.message} at character {err.position} of {text!r}"
                if err.position
                else f"{err.message} in {text!r}",
                err.fix,
            )
            return None

    # -- silences ---------------------------------------------------------------------------

    def _silence(self, table: dict[str, Any], where: _Where) -> None:
        name = table.get("name")
        where.label = (
            f"silence '{name}'" if isinstance(name, str) else f"silence #{where.index + 1}"
        )
        before = len(self.problems)
        for key in table:
            if key not in SILENCE_KEYS:
                self._problem(
                    where,
                    toml_key(key),
                    "unknown key",
                    f"{typo_hint(key, SILENCE_KEYS)}silence keys are: {', '.join(SILENCE_KEYS)}",
                    line_key=key,
                )
        match: dict[str, tuple[str, ...]] = {}
        raw_match = table.get("match", {})
        if not isinstance(raw_match, dict):
            self._problem(
                where,
                "match",
                "must be a table",
                'write match = { source = "lab", serial = "Form4-*" }',
            )
        else:
            for key, value in raw_match.items():
                if isinstance(value, str):
                    match[key] = (value,)
                elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
                    match[key] = tuple(value)
                else:
                    self._problem(
                        where,
                        f"match.{toml_key(key)}",
                        "must be a glob or a list of globs",
                        f'write {toml_key(key)} = "Form4-*"',
                    )
        schedule_value = table.get("schedule")
        schedule: list[str] = []
        if isinstance(schedule_value, str):
            schedule = [schedule_value]
        elif isinstance(schedule_value, list) and all(isinstance(s, str) for s in schedule_value):
            schedule = list(schedule_value)
        elif schedule_value is not None:
            self._problem(
                where,
                "schedule",
                "must be a string or a list of strings",
                'write schedule = "Mon-Fri 22:00-06:00"',
            )
        timezone = self._string(table, "timezone", where) or self.timezone
        starts_at = self._time(table, "starts_at", where, timezone)
        ends_at = self._time(table, "ends_at", where, timezone)
        if not schedule and starts_at is None and ends_at is None:
            self._problem(
                where,
                "schedule",
                "a silence needs schedule, starts_at or ends_at",
                'add schedule = "Sat 00:00-Mon 06:00" (or ends_at for a one-off)',
            )
        hold = table.get("hold", False)
        if not isinstance(hold, bool):
            self._problem(where, "hold", "must be true or false", "write hold = true")
        if len(self.problems) > before:
            return
        try:
            silence = Silence(
                id=name if isinstance(name, str) else f"{Path(where.file).name}#{where.index + 1}",
                match=match,
                schedule=tuple(schedule),
                timezone=timezone,
                starts_at=starts_at,
                ends_at=ends_at,
                comment=self._string(table, "comment", where) or "",
                origin=where.file,
                hold=hold is True,
            )
        except ValueError as err:
            text = str(err)
            key = (
                "timezone"
                if "time zone" in text
                else "match"
                if "match field" in text
                else "ends_at"
                if "ends_at" in text
                else "schedule"
            )
            self._problem(where, key, text, "see the example in rules/dental-lab.toml")
            return
        self.silences.append(silence)

    def _time(
        self, table: dict[str, Any], key: str, where: _Where, timezone: str
    ) -> datetime | None:
        value = table.get(key)
        if value is None:
            return None
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                self._problem(
                    where,
                    key,
                    f"invalid date-time {value!r}",
                    f"write {key} = 2026-12-24T18:00:00+01:00",
                )
                return None
        if isinstance(value, date) and not isinstance(value, datetime):
            value = datetime.combine(value, time(0))
        if not isinstance(value, datetime):
            self._problem(where, key, "must be a date-time", f"write {key} = 2026-12-24T18:00:00Z")
            return None
        if value.tzinfo is None:  # a local date-time means wall-clock time in the silence's zone
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            try:
                value = value.replace(tzinfo=ZoneInfo(timezone))
            except (ZoneInfoNotFoundError, ValueError):
                return None  # the time zone problem is reported by Silence itself
        return value

    # -- values -----------------------------------------------------------------------------

    def _problem(
        self, where: _Where, key: str, message: str, fix: str, *, line_key: str | None = None
    ) -> None:
        """A problem with ``key`` (shown as written in TOML) of the rule or silence at
        ``where``, on the line of ``line_key`` (default: the first part of ``key``)."""
        self.problems.append(
            Problem(
                file=where.file,
                key=f"{where.label}.{key}",
                message=message,
                fix=fix,
                line=where.key_line(key.split(".")[0] if line_key is None else line_key),
            )
        )

    def _string(self, table: dict[str, Any], key: str, where: _Where) -> str | None:
        value = table.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            self._problem(
                where, key, f"must be a string, not {_toml_type(value)}", f'write {key} = "..."'
            )
            return None
        return value

    def _strings(
        self, table: dict[str, Any], key: str, where: _Where, *, required: bool = False
    ) -> list[str] | None:
        value = table.get(key)
        if value is None:
            if required:
                self._problem(where, key, "missing", f'add {key} = ["..."]')
            return None
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self._problem(where, key, "must be a list of strings", f'write {key} = ["..."]')
            return None
        return list(value)

    def _bool(self, table: dict[str, Any], key: str, where: _Where, *, default: bool) -> bool:
        value = table.get(key, default)
        if not isinstance(value, bool):
            self._problem(
                where, key, f"must be true or false, not {_toml_type(value)}", f"write {key} = true"
            )
            return default
        return value

    def _duration(
        self, table: dict[str, Any], key: str, where: _Where, *, positive: bool = False
    ) -> timedelta | None:
        value = table.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            self._problem(where, key, "must be a duration", f'write {key} = "10m"')
            return None
        try:
            result = parse_duration(value)
        except ValueError as err:
            self._problem(where, key, str(err), f'write {key} = "10m"')
            return None
        if positive and result <= timedelta(0):
            self._problem(
                where, key, "must be longer than zero", f'write {key} = "10m" or remove it'
            )
            return None
        return result


@dataclass
class _Where:
    file: str
    lines: _Lines
    index: int
    label: str = ""

    def table_line(self) -> int | None:
        return self.lines.table(self._kind, self.index)

    def key_line(self, key: str) -> int | None:
        return self.lines.key(self._kind, self.index, key)

    @property
    def _kind(self) -> str:
        return "silence" if self.label.startswith("silence") else "rule"


def _toml_type(value: object) -> str:
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }.get(type(value), type(value).__name__)
