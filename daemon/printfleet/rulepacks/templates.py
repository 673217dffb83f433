"""Title, text and MQTT topic templates of rule packs, compiled once when a pack is loaded.

Templates use :class:`string.Formatter` syntax restricted to dotted field paths with an
optional format spec: ``{printer.name}``, ``{print.progress:.0%}``, ``{changes.status.from}``.
Missing values render as ``—``. Every field path is checked against what an event offers when
the pack loads, so a typo is a load error with a position, never a surprise at 3 a.m.
"""

from __future__ import annotations

import json
import math
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from printfleet.core.rules.names import check_field_path, lookup
from printfleet.rulepacks.errors import ExpressionError

MAX_VALUE_CHARS = 1000
MAX_RENDERED_CHARS = 4000
MISSING = "—"

_FIELD_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z0-9_-]+)*$")
_SPEC_RE = re.compile(
    r"^(?:.?[<>=^])?[+\- ]?z?#?0?(?P<width>\d{1,3})?[,_]?"
    r"(?:\.(?P<prec>\d{1,2}))?[bcdeEfFgGnosxX%]?$"
)
_TOPIC_UNSAFE = re.compile(r"[/+#\s\x00]")


@dataclass(frozen=True, slots=True)
class Template:
    """A compiled template; call it with an event's names to get the text."""

    source: str
    parts: tuple[tuple[str, tuple[str, ...] | None, str], ...]  # literal, field path, spec
    topic: bool = False

    @property
    def fields(self) -> tuple[str, ...]:
        """The dotted field paths the template uses."""
        return tuple(".".join(p) for _, p, _ in self.parts if p is not None)

    def __call__(self, names: Mapping[str, Any]) -> str:
        out: list[str] = []
        for literal, path, spec in self.parts:
            if literal:
                out.append(literal)
            if path is None:
                continue
            value: Any = names
            for part in path:
                if type(value) is dict or isinstance(value, Mapping):
                    value = value.get(part)
                else:
                    value = lookup(value, (part,)) if isinstance(value, list | tuple) else None
                if value is None:
                    break
            if type(value) is str and not spec and not self.topic and len(value) <= MAX_VALUE_CHARS:
                out.append(value)  # the common case, without the general formatting below
            else:
                out.append(self._value(value, spec))
        text = "".join(out)
        return text if len(text) <= MAX_RENDERED_CHARS else text[: MAX_RENDERED_CHARS - 1] + "…"

    def _value(self, value: Any, spec: str) -> str:
        if value is None:
            return "unknown" if self.topic else MISSING
        if spec:
            try:
                text = format(value, spec)
            except (TypeError, ValueError):
                text = _plain(value)
        else:
            text = _plain(value)
        if len(text) > MAX_VALUE_CHARS:
            text = text[: MAX_VALUE_CHARS - 1] + "…"
        if self.topic:
            text = _TOPIC_UNSAFE.sub("_", text) or "unknown"
        return text


def _plain(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    if isinstance(value, list | tuple):
        return ", ".join(MISSING if v is None else _plain(v) for v in value)
    if isinstance(value, Mapping):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    return str(value)


def compile_template(text: str, *, topic: bool = False) -> Template:
    """Parse and validate a template (``topic=True``: an MQTT topic, values made topic-safe).

    Raises:
        ExpressionError: naming the bad field or syntax and its position in the text.
    """
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as err:
        raise ExpressionError(
            f"invalid template: {err}", "write {{ and }} for literal braces"
        ) from None
    parts: list[tuple[str, tuple[str, ...] | None, str]] = []
    position = 1
    for literal, field_name, spec, conversion in parsed:
        position += len(literal)
        if field_name is None:
            parts.append((literal, None, ""))
            continue
        where = position
        if conversion is not None:
            raise ExpressionError(
                f"conversion '!{conversion}' is not allowed", f"write {{{field_name}}}", where
            )
        if not field_name or field_name.isdigit():
            raise ExpressionError(
                "empty or numbered {} field", "name a field such as {printer.name}", where
            )
        if "[" in field_name or "]" in field_name:
            raise ExpressionError(
                f"indexing '{field_name}' is not allowed",
                "use dotted paths such as {printer.raw.status_message}",
                where,
            )
        if not _FIELD_RE.match(field_name):
            raise ExpressionError(
                f"invalid field '{field_name}'",
                "use a dotted path of names such as {print.name}",
                where,
            )
        path = tuple(field_name.split("."))
        problem = check_field_path(path, template=True)
        if problem is not None:
            message, fix = problem
            raise ExpressionError(message, fix, where)
        spec = spec or ""
        _check_spec(spec, where)
        parts.append((literal, path, spec))
        position += len(field_name) + len(spec) + (1 if spec else 0) + 2
    if topic:
        _check_topic(text, parts)
    return Template(source=text, parts=tuple(parts), topic=topic)


def _check_spec(spec: str, where: int) -> None:
    if not spec:
        return
    if "{" in spec or "}" in spec:
        raise ExpressionError(
            "nested fields in a format spec are not allowed",
            "write a literal spec such as :.0%",
            where,
        )
    if not _SPEC_RE.match(spec):
        raise ExpressionError(
            f"invalid format spec ':{spec}'",
            "use e.g. :.0% (percent), :.1f (decimals), :>10 (width up to 999)",
            where,
        )
    for sample in (0.5, 7, "x"):
        try:
            format(sample, spec)
            return
        except (TypeError, ValueError):
            continue
    raise ExpressionError(
        f"invalid format spec ':{spec}'", "use e.g. :.0% (percent) or :.1f (decimals)", where
    )


def _check_topic(text: str, parts: Sequence[tuple[str, tuple[str, ...] | None, str]]) -> None:
    sample = "".join(literal + ("x" if path is not None else "") for literal, path, _ in parts)
    if "+" in sample or "#" in sample:
        raise ExpressionError(
            "MQTT topics to publish to cannot contain + or #", "remove the wildcard"
        )
    if not sample.strip() or sample.startswith("/") or sample.endswith("/") or "//" in sample:
        raise ExpressionError(
            "invalid MQTT topic (empty level or leading/trailing '/')",
            "write e.g. lab/{printer.serial}/alerts",
        )
