"""Fuzzing config and rule-pack loading: bad input is always a ConfigError a person can act on.

Documents start from ``config.example.toml`` and the shipped ``rules/*.toml`` and are mutated
(keys deleted, renamed or invented; values replaced by other types, wrapped, emptied; entries
duplicated; text truncated, spliced, shuffled, or replaced by garbage or invalid UTF-8) before
going through :func:`~printfleet.config.loader.load_settings` and
:func:`~printfleet.rulepacks.load_rule_set`. Either the document loads, or a ``ConfigError``
(``RuleError`` for packs) comes out whose every problem names a file, says what is wrong, and
points at a key or a line. Nothing else may escape.
"""

from __future__ import annotations

import copy
import json
import math
import re
import shutil
import string
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from printfleet.config import Settings
from printfleet.config.loader import load_settings
from printfleet.errors import ConfigError, Problem, RuleError
from printfleet.logs import forget_secrets
from printfleet.rulepacks.loader import load_rule_set

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "config.example.toml"
PACKS = sorted((REPO / "rules").glob("*.toml"))
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# -- a tiny TOML writer (mutated documents must be written back as text) --------------------

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _string(key)


def _string(text: str) -> str:
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_key(str(k))} = {_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"not a TOML value: {value!r}")


def to_toml(doc: Mapping[str, Any]) -> str:
    """``doc`` as TOML: scalars first, then ``[table]`` and ``[[array of tables]]`` sections."""
    head, tables = [], []
    for key, value in doc.items():
        if isinstance(value, Mapping):
            tables.append(f"[{_key(key)}]")
            tables += [f"{_key(str(k))} = {_value(v)}" for k, v in value.items()]
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            for entry in value:
                tables.append(f"[[{_key(key)}]]")
                tables += [f"{_key(str(k))} = {_value(v)}" for k, v in entry.items()]
        else:
            head.append(f"{_key(key)} = {_value(value)}")
    return "\n".join([*head, *tables]) + "\n"


# -- strategies ------------------------------------------------------------------------------

#: Values that sit on the edges of what the schema and the rule language accept.
TRICKY = (
    *("", " ", "0", "-1", "1e400", "NaN", "true", "null", "None", "\x00", "\n", "ü" * 3),
    *("30s", "0s", "-5m", "1h30m", "250ms", "5", "1y", "999999999999999d", "1h1h", "s", "10 s"),
    *("mqtt://", "mqtts://127.0.0.1:99999", "http://", "ftp://x", "127.0.0.1:0", ":9877"),
    *("[::1]:80", "localhost:99999", "host:port", "::"),
    *("formlabs", "carbon", "prusa", "slack", "webhook", "teams", "discord", "mqtt"),
    *("debug", "info", "warning", "critical", "error", "json", "auto", "console"),
    *("UTC", "Europe/Berlin", "Mars/Olympus", "../../etc/passwd", "~/x", "$HOME/x"),
    *("lab", "factory", "ops-slack", "mes", "LAB", "a" * 41, "x" * 300),
    *("print.*", "*", "?", "printer.offline", "nope.nothing", "print.finished"),
    *("{printer.name}", "{", "}", "{{", "{printer.raw[", "{print.progress:.0%}", "{0}"),
    *("{__class__}", "{printer.__class__.__mro__}", "{print.progress:%%%}", "{source!r}"),
    *("1 == 1", "printer.status == 'PRINTING'", "print.progress >", "import os"),
    *("__import__('os').system('true')", "printer.raw.x.y.z", "(((((", "lambda: 1"),
    *("mon-fri 08:00-18:00", "sun 25:00-26:00", "2026-13-40T00:00:00Z", "09:00"),
)
KEYWORDS = (
    *("daemon", "source", "poll", "thresholds", "mqtt", "metrics", "receiver", "rules", "rule"),
    *("silence", "name", "vendor", "client_id", "client_secret", "client_secret_file"),
    *("secrets_file", "base_url", "url", "url_file", "kind", "packs", "timezone", "on"),
    *("when", "for", "throttle", "repeat", "resolve", "severity", "notify", "title", "text"),
    *("group_by", "group_wait", "match", "schedule", "starts_at", "ends_at", "topic", "qos"),
    *("retain", "interval", "state_dir", "log_level", "listen", "enabled", "headers"),
)
keys = st.one_of(
    st.sampled_from(KEYWORDS),
    st.text(alphabet=string.ascii_lowercase + "_-.", min_size=1, max_size=12),
    st.text(max_size=8),
)
scalars = st.one_of(
    st.sampled_from(TRICKY),
    st.text(max_size=20),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(),
    st.booleans(),
    st.datetimes(timezones=st.none() | st.just(UTC)),
    st.dates(),
    st.times(),
)
toml_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=8,
)


def _containers(node: Any) -> Iterator[Any]:
    """Every dict and list in ``node``, ``node`` first."""
    if isinstance(node, dict | list):
        yield node
        children = node.values() if isinstance(node, dict) else node
        for child in children:
            yield from _containers(child)


def mutate(doc: dict[str, Any], data: st.DataObject) -> dict[str, Any]:
    """A copy of ``doc`` with one to four structural mutations drawn from ``data``."""
    doc = copy.deepcopy(doc)
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        containers = list(_containers(doc))
        node = data.draw(st.sampled_from(containers), label="container")
        slots: list[Any] = list(node.keys()) if isinstance(node, dict) else list(range(len(node)))
        op = data.draw(
            st.sampled_from(
                ("add", "replace", "delete", "rename", "wrap", "stringify", "empty", "clone")
            ),
            label="op",
        )
        if op == "add" or not slots:
            if isinstance(node, dict):
                node[data.draw(keys, label="new key")] = data.draw(toml_values, label="value")
            else:
                node.append(data.draw(toml_values, label="value"))
            continue
        slot = data.draw(st.sampled_from(slots), label="slot")
        if op == "replace":
            node[slot] = data.draw(toml_values, label="value")
        elif op == "delete":
            del node[slot]
        elif op == "rename" and isinstance(node, dict):
            new = data.draw(
                st.sampled_from((slot.upper(), slot + "s", slot[:-1] or "x", "-" + slot))
            )
            node[new] = node.pop(slot)
        elif op == "wrap":
            node[slot] = [node[slot]]
        elif op == "stringify":
            node[slot] = json.dumps(node[slot], default=str)
        elif op == "empty":
            node[slot] = type(node[slot])() if isinstance(node[slot], dict | list | str) else ""
        elif op == "clone" and isinstance(node, list):
            node.append(copy.deepcopy(node[slot]))  # duplicate names, duplicate rules
    return doc


def mangle_text(text: str, data: st.DataObject) -> str | bytes:
    """``text`` damaged as a careless edit or a bad copy would: or plain garbage."""
    op = data.draw(
        st.sampled_from(
            ("truncate", "insert", "drop_line", "dup_line", "swap_lines", "garbage", "bytes")
        ),
        label="text op",
    )
    lines = text.splitlines(keepends=True)
    where = data.draw(st.integers(0, max(0, len(text) - 1)), label="position")
    line = data.draw(st.integers(0, max(0, len(lines) - 1)), label="line")
    if op == "truncate":
        return text[:where]
    if op == "insert":
        junk = data.draw(st.sampled_from(("[", "]", "=", '"', "[[", "\n[x]\n", "\x00", "'''")))
        return text[:where] + junk + text[where:]
    if op == "drop_line" and lines:
        return "".join(lines[:line] + lines[line + 1 :])
    if op == "dup_line" and lines:
        return "".join(lines[: line + 1] + lines[line:])
    if op == "swap_lines" and len(lines) > 1:
        other = data.draw(st.integers(0, len(lines) - 1), label="other line")
        lines[line], lines[other] = lines[other], lines[line]
        return "".join(lines)
    if op == "bytes":
        return text.encode()[:where] + data.draw(st.binary(min_size=1, max_size=16)) + b"\n"
    return data.draw(st.text(max_size=200), label="garbage")


# -- the property ----------------------------------------------------------------------------


def assert_actionable(err: ConfigError) -> None:
    """Every problem names a file, says what is wrong, and points at a key or a line."""
    assert err.problems, "a ConfigError without problems"
    for problem in err.problems:
        assert isinstance(problem.file, str), problem
        assert problem.file.strip(), problem
        assert isinstance(problem.message, str), problem
        assert problem.message.strip(), problem
        assert "Traceback" not in problem.message, problem
        assert (problem.key or "").strip() or problem.line is not None, repr(problem)
    assert str(err).strip()


@dataclass(frozen=True, repr=False)
class Workspace:
    """A directory where config.example.toml loads as-is (secret files, rule packs present)."""

    root: Path
    config_text: str
    config: dict[str, Any]
    packs: dict[str, str]
    settings: Settings

    def __repr__(self) -> str:  # hypothesis prints it with every failing example
        return f"Workspace({self.root})"

    def write(self, name: str, content: str | bytes) -> Path:
        path = self.root / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """config.example.toml with its /etc and /var paths moved into a temp directory."""
    root = tmp_path_factory.mktemp("fuzz")
    (root / "formlabs.secret").write_text("fl-secret-for-fuzzing\n")
    (root / "carbon-secrets.json").write_text('{"client_id": "c", "client_secret": "k"}')
    (root / "slack.url").write_text("https://hooks.slack.com/services/T0/B0/fuzz\n")
    (root / "mes-webhook.secret").write_text("mes-signing-key-for-fuzzing\n")
    shutil.copytree(REPO / "rules", root / "rules")
    text = (
        EXAMPLE.read_text()
        .replace("/etc/printfleet/", f"{root}/")
        .replace("/var/lib/printfleet", f"{root}/state")
    )
    config = root / "config.toml"
    config.write_text(text)
    forget_secrets()
    loaded = load_settings(config, environ={})  # the unmutated example must load
    forget_secrets()
    return Workspace(
        root=root,
        config_text=text,
        config=tomllib.loads(text),
        packs={p.name: p.read_text() for p in PACKS},
        settings=loaded,
    )


def load_config(ws: Workspace, content: str | bytes, environ: Mapping[str, str]) -> None:
    path = ws.write("fuzzed.toml", content)
    try:
        load_settings(path, environ=environ)
    except ConfigError as err:
        assert_actionable(err)


def load_pack(ws: Workspace, content: str | bytes, timezone: str | None = None) -> None:
    path = ws.write("fuzzed-pack.toml", content)
    rules = ws.settings.rules.model_copy(
        update={"packs": (str(path),), **({"timezone": timezone} if timezone is not None else {})}
    )
    try:
        load_rule_set(ws.settings.model_copy(update={"rules": rules}), base_dir=ws.root)
    except RuleError as err:
        assert_actionable(err)


def test_writer_round_trips_the_shipped_documents(workspace: Workspace) -> None:
    """The TOML writer reproduces the example config and every shipped pack exactly."""
    assert tomllib.loads(to_toml(workspace.config)) == workspace.config
    for text in workspace.packs.values():
        doc = tomllib.loads(text)
        assert tomllib.loads(to_toml(doc)) == doc


def test_shipped_packs_load_under_the_example_config(workspace: Workspace) -> None:
    """Every shipped pack loads with the example's receivers (the fuzz starts from valid input)."""
    for name, text in workspace.packs.items():
        load_pack(workspace, text)
        rules = workspace.settings.rules.model_copy(
            update={"packs": (str(workspace.root / "rules" / name),)}
        )
        assert load_rule_set(
            workspace.settings.model_copy(update={"rules": rules}), base_dir=workspace.root
        ).rules


ENV_NAMES = st.builds(
    lambda section, key: f"PRINTFLEET_{section}__{key}".upper(),
    st.sampled_from(
        ("daemon", "poll", "mqtt", "metrics", "rules", "source", "receiver", "thresholds", "x")
    ),
    st.sampled_from(
        (
            "interval",
            "url",
            "qos",
            "listen",
            "packs",
            "log_level",
            "lab__base_url",
            "0__name",
            "9__name",
            "factory__vendor",
            "ops_slack__kind",
            "mes__headers",
            "nope",
            "",
        )
    ),
)


@FUZZ
@given(data=st.data())
def test_mutated_config_loads_or_fails_clearly(workspace: Workspace, data: st.DataObject) -> None:
    """A structurally mutated example config (and env overrides) loads or fails clearly."""
    environ = data.draw(
        st.dictionaries(ENV_NAMES, st.sampled_from(TRICKY) | st.text(max_size=12), max_size=3),
        label="environ",
    )
    load_config(workspace, to_toml(mutate(workspace.config, data)), environ)


@FUZZ
@given(data=st.data())
def test_damaged_config_text_fails_clearly(workspace: Workspace, data: st.DataObject) -> None:
    """Truncated, spliced, shuffled or garbage config text loads or fails clearly."""
    load_config(workspace, mangle_text(workspace.config_text, data), {})


@FUZZ
@given(data=st.data())
def test_mutated_rule_pack_loads_or_fails_clearly(
    workspace: Workspace, data: st.DataObject
) -> None:
    """A structurally mutated shipped rule pack loads or fails with a clear RuleError."""
    name = data.draw(st.sampled_from(sorted(workspace.packs)), label="pack")
    doc = mutate(tomllib.loads(workspace.packs[name]), data)
    timezone = data.draw(st.none() | st.sampled_from(TRICKY), label="timezone")
    load_pack(workspace, to_toml(doc), timezone)


@FUZZ
@given(data=st.data())
def test_damaged_rule_pack_text_fails_clearly(workspace: Workspace, data: st.DataObject) -> None:
    """Truncated, spliced, shuffled or garbage rule-pack text loads or fails clearly."""
    name = data.draw(st.sampled_from(sorted(workspace.packs)), label="pack")
    load_pack(workspace, mangle_text(workspace.packs[name], data))


# -- cases the fuzz found, pinned ------------------------------------------------------------


def _problems(load: Any) -> list[Problem]:
    try:
        load()
    except ConfigError as err:
        return err.problems
    return []


def _config_problems(ws: Workspace, content: str | bytes, **environ: str) -> list[Problem]:
    path = ws.write("known.toml", content)
    return _problems(lambda: load_settings(path, environ=environ))


def _pack_problems(ws: Workspace, content: str | bytes) -> list[Problem]:
    path = ws.write("known-pack.toml", content)
    rules = ws.settings.rules.model_copy(update={"packs": (str(path),)})
    return _problems(
        lambda: load_rule_set(ws.settings.model_copy(update={"rules": rules}), base_dir=ws.root)
    )


def _state_dir(ws: Workspace) -> str:
    return f'[daemon]\nstate_dir = "{ws.root}"\n'


@pytest.mark.parametrize("value", ["{ a = 1 }", '["5s"]'])
def test_a_duration_given_as_table_or_array_is_a_config_error(
    workspace: Workspace, value: str
) -> None:
    """interval = { ... } or [ ... ] is a ConfigError naming poll.interval (not a crash)."""
    problems = _config_problems(workspace, _state_dir(workspace) + f"[poll]\ninterval = {value}\n")
    assert [p.key for p in problems] == ["poll.interval"]


def test_a_duration_override_given_as_table_is_a_config_error(workspace: Workspace) -> None:
    """PRINTFLEET_POLL__INTERVAL='{a=1}' is a ConfigError naming the variable (not a crash)."""
    problems = _config_problems(workspace, _state_dir(workspace), PRINTFLEET_POLL__INTERVAL="{a=1}")
    assert "PRINTFLEET_POLL__INTERVAL" in problems[0].file


@pytest.mark.parametrize("value", ["inf", "1e300", '"999999999999999d"'])
@pytest.mark.parametrize("kind", ["config", "pack"])
def test_an_endless_duration_is_a_config_error(workspace: Workspace, kind: str, value: str) -> None:
    """A duration too long for a timedelta is a ConfigError (a pack's: a RuleError, so a SIGHUP
    reload keeps the running rules instead of crashing)."""
    if kind == "config":
        text = _state_dir(workspace) + f"[poll]\ninterval = {value}\n"
        assert [p.key for p in _config_problems(workspace, text)] == ["poll.interval"]
    else:
        text = f'[[rule]]\nname = "x"\non = ["print.finished"]\nthrottle = {value}\n'
        assert [p.line for p in _pack_problems(workspace, text)] == [4]


def test_a_nan_duration_in_a_pack_is_explained(workspace: Workspace) -> None:
    """throttle = nan is explained in the rule language's words (what a duration looks like)."""
    text = '[[rule]]\nname = "x"\non = ["print.finished"]\nthrottle = nan\n'
    (problem,) = _pack_problems(workspace, text)
    assert "convert" not in problem.message
    assert "duration" in problem.message


def test_a_duration_given_as_boolean_is_rejected(workspace: Workspace) -> None:
    """interval = true is rejected rather than read as one second."""
    problems = _config_problems(workspace, _state_dir(workspace) + "[poll]\ninterval = true\n")
    assert [p.key for p in problems] == ["poll.interval"]


def test_an_unknown_section_from_the_environment_names_the_variable(
    workspace: Workspace,
) -> None:
    """PRINTFLEET_X__INTERVAL names the variable, not the config file, as the culprit."""
    problems = _config_problems(workspace, _state_dir(workspace), PRINTFLEET_X__INTERVAL="1")
    assert "PRINTFLEET_X__INTERVAL" in problems[0].file


@pytest.mark.parametrize("kind", ["config", "pack"])
def test_a_toml_error_at_the_end_points_at_the_last_line(workspace: Workspace, kind: str) -> None:
    """An unterminated string on the last line is reported at that line."""
    if kind == "config":
        text = _state_dir(workspace) + 'log_level = "info'
        problems = _config_problems(workspace, text)
    else:
        text = '[[rule]]\nname = "x"\non = ["print.finished"]\ntitle = "oops'
        problems = _pack_problems(workspace, text)
    assert [p.line for p in problems] == [text.count("\n") + 1]


@pytest.mark.parametrize("kind", ["config", "pack"])
def test_a_file_that_is_not_utf8_points_at_the_bad_line(workspace: Workspace, kind: str) -> None:
    """A stray Latin-1 byte is reported at its line, in words (no codec message)."""
    if kind == "config":
        problems = _config_problems(workspace, _state_dir(workspace).encode() + b'x = "\xfe"\n')
    else:
        problems = _pack_problems(workspace, b'[[rule]]\nname = "\xfe"\n')
    assert [p.line for p in problems] == [3 if kind == "config" else 2]
    assert "codec" not in problems[0].message


def test_an_empty_top_level_key_in_a_pack_is_located(workspace: Workspace) -> None:
    """A top-level key "" in a rule pack is reported with its line, the key written as in TOML."""
    problems = _pack_problems(workspace, '"" = 1\n')
    assert [(p.key, p.line) for p in problems] == [('""', 1)]
