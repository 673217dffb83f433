"""Where a key is in a TOML document, and how TOML writes it: line numbers for error messages.

tomllib gives values, not positions; people fixing a config (or a rule pack) need the line.
This is a small scan good enough for that, shared by the config loader and the rule packs.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from printfleet.errors import Problem

Loc = tuple[str | int, ...]
"""A key's location: ``("source", 1, "client_id")`` is the client_id of the second [[source]]."""


def undecodable_line(data: bytes) -> int | None:
    """The 1-based line of the first byte sequence that is not UTF-8 (None if all decode)."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        return data[: err.start].count(b"\n") + 1
    return None


def undecodable_line_of(path: Path) -> int | None:
    try:
        return undecodable_line(path.read_bytes())
    except OSError:
        return None


def toml_error_line(err: tomllib.TOMLDecodeError, document: str) -> int | None:
    """The line a TOML error points at; "end of document" is the document's last line."""
    match = re.search(r"line (\d+)", str(err))
    if match:
        return int(match.group(1))
    if "end of document" in str(err):
        return max(1, len(document.splitlines()))
    return None


def toml_problem(file: str, err: tomllib.TOMLDecodeError, document: str) -> Problem:
    text = str(err)
    match = re.search(r"\(at line (\d+), column (\d+)\)", text)
    reason = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", text)
    if match is None:
        return Problem(
            file,
            "",
            f"TOML syntax error: {reason}",
            "fix the TOML syntax (the file ends in the middle of something)",
            toml_error_line(err, document),
        )
    line, column = int(match.group(1)), int(match.group(2))
    fix = "fix the TOML syntax there"
    if "overwrite" in reason or "twice" in reason or "redefin" in reason.lower():
        fix = "a key or table is defined twice; keep one"
    elif "Invalid value" in reason or "Expected" in reason:
        fix = 'check quoting there: strings need quotes, e.g. interval = "15s"'
    return Problem(file, "", f"TOML syntax error at column {column}: {reason}", fix, line)


def dotted_key(loc: Loc) -> str:
    """``("source", 1, "client_secret_file")`` → ``source[1].client_secret_file``.

    A key TOML cannot write bare is quoted as TOML would write it, so an empty or blank key
    stays visible: ``("poll", "")`` → ``poll.""``.
    """
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{toml_key(part)}" if out else toml_key(part)
    return out


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def toml_key(key: str) -> str:
    """``key`` as TOML writes it: bare when it may be (``interval``), else a quoted string
    (``""``, ``"two words"``, ``"\\u000a"``)."""
    if _BARE_KEY.fullmatch(key):
        return key
    out = []
    for char in key:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


_HEADER = re.compile(r"^\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_SEGMENT = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|'[^']*')"""
_KEY = re.compile(rf"^({_SEGMENT}(?:\s*\.\s*{_SEGMENT})*)\s*=")
_STRINGS = re.compile(r""""(?:[^"\\]|\\.)*"|'[^']*'""")


def toml_key_lines(text: str) -> dict[Loc, int]:
    """Line numbers (1-based) of the tables and keys in a TOML document.

    A simple scan, good for error messages: ``[[source]]`` tables are numbered in order, so
    ``("source", 1, "client_id")`` is the ``client_id`` of the second ``[[source]]``. Lines
    inside multi-line strings and arrays are skipped.
    """
    lines: dict[Loc, int] = {}
    counts: dict[Loc, int] = {}
    table: Loc = ()
    depth = 0
    in_string: str | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if in_string is not None:
            if line.count(in_string) % 2 == 1:
                in_string = None
            continue
        if depth > 0:
            depth += _bracket_depth(line)
            continue
        if not line or line.startswith("#"):
            continue
        header = _HEADER.match(line)
        if header:
            segments = _split_key(header.group(1))
            is_array = line.startswith("[[")
            path: Loc = ()
            for i, segment in enumerate(segments):
                path = (*path, segment)
                last = i == len(segments) - 1
                if last and is_array:
                    counts[path] = counts.get(path, -1) + 1
                    path = (*path, counts[path])
                elif path in counts:
                    path = (*path, counts[path])
            table = path
            lines.setdefault(table, number)
            continue
        key = _KEY.match(line)
        if key:
            lines.setdefault((*table, *_split_key(key.group(1))), number)
            value = line[key.end() :]
            for quote in ('"""', "'''"):
                if value.count(quote) % 2 == 1:
                    in_string = quote
            depth = max(0, _bracket_depth(value))
    return lines


def _split_key(key: str) -> list[str]:
    """The segments of a (dotted) TOML key as tomllib reads them: ``a."b.c".""`` →
    ``["a", "b.c", ""]``, escapes in quoted segments decoded."""
    try:
        node: Any = tomllib.loads(f"{key} = 0")
    except tomllib.TOMLDecodeError:
        parts = re.findall(r'"([^"]*)"|\'([^\']*)\'|([^.\s]+)', key)
        return [a or b or c for a, b, c in parts]
    segments: list[str] = []
    while isinstance(node, dict) and len(node) == 1:
        ((segment, node),) = node.items()
        segments.append(segment)
    return segments


def _bracket_depth(text: str) -> int:
    """How many more ``[`` than ``]`` a line opens, ignoring strings and comments."""
    code = _STRINGS.sub('""', text).split("#", 1)[0]
    return code.count("[") - code.count("]")
