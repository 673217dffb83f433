"""Loading the config: TOML + environment overrides + secret files, and errors people can act on."""

from __future__ import annotations

import re
import tomllib
import typing
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr

from printfleet.config import Settings
from printfleet.config.explain import DURATION_FIX
from printfleet.config.loader import DEFAULT_CONFIG, config_path, load_settings
from printfleet.config.secrets import read_secret, resolve_secret_file
from printfleet.config.toml_lines import toml_key_lines
from printfleet.errors import ConfigError, Problem
from printfleet.logs import redact

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "config.example.toml"
SECRET = "fl-secret-9f8e7d6c5b4a"

WriteConfig = Callable[[str], Path]


@pytest.fixture
def write_config(tmp_path: Path) -> WriteConfig:
    """Writes a config file (with a formlabs secret file beside it) and returns its path."""
    (tmp_path / "formlabs.secret").write_text(SECRET + "\n")

    def write(text: str) -> Path:
        path = tmp_path / "config.toml"
        path.write_text(f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n' + text)
        return path

    return write


LAB = """
[[source]]
name = "lab"
vendor = "formlabs"
client_id = "cid"
client_secret_file = "formlabs.secret"
"""


def problems_of(path: Path, environ: dict[str, str] | None = None) -> list[Problem]:
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ=environ or {})
    return caught.value.problems


# --------------------------------------------------------------------------- config path


@pytest.mark.parametrize(
    ("cli", "environ", "expected"),
    [
        ("/a/cli.toml", {"PRINTFLEET_CONFIG": "/b/env.toml"}, Path("/a/cli.toml")),
        (None, {"PRINTFLEET_CONFIG": "/b/env.toml"}, Path("/b/env.toml")),
        (None, {}, DEFAULT_CONFIG),
    ],
)
def test_config_path_precedence(cli: str | None, environ: dict[str, str], expected: Path) -> None:
    """-c wins over $PRINTFLEET_CONFIG, which wins over /etc/printfleet/config.toml."""
    assert config_path(cli, environ=environ) == expected


# --------------------------------------------------------------------------- environment


@pytest.mark.parametrize(
    ("var", "value", "read", "expected"),
    [
        (
            "PRINTFLEET_MQTT__URL",
            "mqtts://broker:8883",
            lambda s: s.mqtt.url,
            "mqtts://broker:8883",
        ),
        ("PRINTFLEET_POLL__INTERVAL", "10s", lambda s: s.poll.interval, timedelta(seconds=10)),
        ("PRINTFLEET_POLL__INTERVAL", "20", lambda s: s.poll.interval, timedelta(seconds=20)),
        ("PRINTFLEET_DAEMON__LOG_LEVEL", "debug", lambda s: s.daemon.log_level, "debug"),
        ("PRINTFLEET_MQTT__QOS", "2", lambda s: s.mqtt.qos, 2),
        ("PRINTFLEET_MQTT__ENABLED", "false", lambda s: s.mqtt.enabled, False),
        (
            "PRINTFLEET_THRESHOLDS__PROGRESS_MILESTONES",
            "[0.9, 0.1]",
            lambda s: s.thresholds.progress_milestones,
            (0.1, 0.9),
        ),
        ("PRINTFLEET_RULES__PACKS", "/r/*.toml", lambda s: s.rules.packs, ("/r/*.toml",)),
        (
            "PRINTFLEET_SOURCE__LAB__BASE_URL",
            "http://sim:1",
            lambda s: s.source[0].base_url,
            "http://sim:1",
        ),
        ("PRINTFLEET_SOURCE__0__CLIENT_ID", "12345", lambda s: s.source[0].client_id, "12345"),
    ],
)
def test_environment_overrides(
    write_config: WriteConfig, var: str, value: str, read: Callable[[Settings], Any], expected: Any
) -> None:
    """PRINTFLEET_<SECTION>__<KEY> replaces the file's value, typed as the key needs."""
    path = write_config(LAB + '[poll]\ninterval = "15s"\n[mqtt]\nurl = "mqtt://file:1883"\n')
    settings = load_settings(path, environ={var: value})
    assert read(settings) == expected


def test_bad_environment_value_names_the_variable(write_config: WriteConfig) -> None:
    """A bad override is reported against its environment variable and dotted key."""
    path = write_config(LAB)
    [problem] = problems_of(path, {"PRINTFLEET_POLL__OFFLINE_AFTER": "soon"})
    assert problem.file == "environment variable PRINTFLEET_POLL__OFFLINE_AFTER"
    assert problem.key == "poll.offline_after"
    assert problem.fix == DURATION_FIX


def test_single_underscore_variable_suggests_the_right_name(write_config: WriteConfig) -> None:
    """PRINTFLEET_MQTT_URL is reported with the double-underscore spelling as the fix."""
    [problem] = problems_of(write_config(LAB), {"PRINTFLEET_MQTT_URL": "mqtt://x"})
    assert "PRINTFLEET_MQTT__URL" in problem.fix


def test_override_of_unknown_source_lists_the_names(write_config: WriteConfig) -> None:
    """An override addressing no [[source]] names the sources there are."""
    [problem] = problems_of(write_config(LAB), {"PRINTFLEET_SOURCE__SHOP__BASE_URL": "http://x"})
    assert "'shop'" in problem.message
    assert "lab" in problem.fix


def test_unrelated_environment_is_ignored(write_config: WriteConfig) -> None:
    """Variables without the PRINTFLEET_ prefix, and PRINTFLEET_CONFIG, are not overrides."""
    environ = {"PRINTFLEET_CONFIG": "/x.toml", "HOME": "/root", "MQTT__URL": "x"}
    assert load_settings(write_config(LAB), environ=environ).mqtt.url == "mqtt://localhost:1883"


# --------------------------------------------------------------------------- secret files


@pytest.mark.parametrize(
    ("path", "credentials", "base", "expected"),
    [
        ("/abs/s.secret", "/creds", "/etc/pf", "/abs/s.secret"),
        ("s.secret", "/creds", "/etc/pf", "/creds/s.secret"),
        ("s.secret", None, "/etc/pf", "/etc/pf/s.secret"),
        ("sub/s.secret", "/creds", "/etc/pf", "/etc/pf/sub/s.secret"),
        ("s.secret", None, None, "s.secret"),
    ],
)
def test_resolve_secret_file(
    path: str, credentials: str | None, base: str | None, expected: str
) -> None:
    """A bare name goes to $CREDENTIALS_DIRECTORY when set, other relative paths by the config."""
    resolved = resolve_secret_file(
        Path(path),
        Path(credentials) if credentials else None,
        base_dir=Path(base) if base else None,
    )
    assert resolved == Path(expected)


def test_bare_secret_name_is_found_in_credentials_directory(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    """With $CREDENTIALS_DIRECTORY set, a bare client_secret_file name is read from there."""
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "formlabs.secret").write_text("from-systemd-credential\n")
    settings = load_settings(write_config(LAB), environ={"CREDENTIALS_DIRECTORY": str(creds)})
    assert settings.source[0].client_secret_file == creds / "formlabs.secret"


def test_relative_secret_file_is_relative_to_the_config(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    """Without $CREDENTIALS_DIRECTORY a relative *_file is resolved beside the config file."""
    settings = load_settings(write_config(LAB), environ={})
    assert settings.source[0].client_secret_file == tmp_path / "formlabs.secret"


def test_missing_secret_file_is_a_config_problem(write_config: WriteConfig) -> None:
    """A *_file that does not exist is reported with its key and line at load time."""
    path = write_config(LAB.replace("formlabs.secret", "nope.secret"))
    [problem] = problems_of(path)
    assert problem.key == "source[0].client_secret_file"
    assert problem.line == 8
    assert "nope.secret does not exist" in problem.message


def test_empty_secret_file_is_a_config_problem(write_config: WriteConfig, tmp_path: Path) -> None:
    """A secret file holding only whitespace is reported."""
    (tmp_path / "formlabs.secret").write_text("\n")
    [problem] = problems_of(write_config(LAB))
    assert "empty" in problem.message


def test_loaded_secrets_are_registered_for_redaction(write_config: WriteConfig) -> None:
    """The content of secret files and inline secrets are redacted from logs after loading."""
    path = write_config(LAB + '[mqtt]\npassword = "inline-broker-pw"\n')
    load_settings(path, environ={})
    assert redact(f"a {SECRET} b inline-broker-pw") == "a *** b ***"


def test_carbon_secrets_file_must_be_json_without_echoing_it(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    """A secrets.json that is not JSON is reported without quoting its content."""
    (tmp_path / "carbon.json").write_text("client_secret: hunter2hunter2")
    path = write_config('[[source]]\nname = "f"\nvendor = "carbon"\nsecrets_file = "carbon.json"\n')
    [problem] = problems_of(path)
    assert problem.key == "source[0].secrets_file"
    assert "not valid JSON" in problem.message
    assert "hunter2" not in str(problem)


def test_read_secret_strips_and_registers(tmp_path: Path) -> None:
    """read_secret returns the file's stripped content and registers it for redaction."""
    (tmp_path / "s").write_text("  tok-123456789 \n")
    secret = read_secret(
        None, Path("s"), key="x_file", config_file=tmp_path / "c.toml", credentials_dir=None
    )
    assert secret is not None
    assert secret.get_secret_value() == "tok-123456789"
    assert redact("tok-123456789") == "***"


def test_read_secret_without_file_returns_the_value() -> None:
    """Without a file the inline value is returned as it is."""
    value = SecretStr("inline-value")
    assert read_secret(value, None, key="k", config_file=Path("c"), credentials_dir=None) is value


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("missing", None, "does not exist"),
        ("a-directory", "dir", "is a directory"),
        ("binary", b"hunter2hunter2\xff\xfe", "not UTF-8"),
        ("blank", b"  \n", "empty"),
    ],
)
def test_read_secret_failure_names_key_and_file_not_content(
    tmp_path: Path, name: str, content: bytes | str | None, reason: str
) -> None:
    """An unreadable secret file raises ConfigError naming the key and file, never the content."""
    path = tmp_path / name
    if content == "dir":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        read_secret(
            None,
            path,
            key="mqtt.password_file",
            config_file=tmp_path / "c.toml",
            credentials_dir=None,
        )
    text = str(caught.value)
    assert "mqtt.password_file" in text
    assert str(path) in text
    assert reason in text
    assert "hunter2" not in text


# --------------------------------------------------------------------------- problems


def test_unknown_key_names_file_line_key_and_suggestion(write_config: WriteConfig) -> None:
    """A misspelt key is reported with the file, its line, the dotted key and 'did you mean'."""
    path = write_config(LAB + '\n[poll]\nintervall = "15s"\n')
    [problem] = problems_of(path)
    assert problem == Problem(
        str(path), "poll.intervall", "unknown key", "did you mean 'interval'?", 11
    )
    assert str(problem).startswith(f"{path}:11: poll.intervall: unknown key")


def test_unknown_key_in_second_source_has_indexed_key(write_config: WriteConfig) -> None:
    """Keys in [[source]] tables are named source[N].key with the line inside that table."""
    path = write_config(LAB + LAB.replace('"lab"', '"shop"').replace("client_id", "clientid"))
    [problem] = problems_of(path)
    assert (problem.key, problem.line, problem.fix) == (
        "source[1].clientid",
        13,
        "did you mean 'client_id'?",
    )


def test_several_problems_are_reported_at_once(write_config: WriteConfig) -> None:
    """Every problem in the file is reported in one error, in file order."""
    path = write_config(
        LAB.replace("formlabs.secret", "gone.secret")
        + '[poll]\ninterval = "fast"\n[mqtt]\nqos = 7\n[metrix]\nlisten = ":1"\n'
    )
    keys = [p.key for p in problems_of(path)]
    assert keys == ["source[0].client_secret_file", "poll.interval", "mqtt.qos", "metrix"]


def test_toml_syntax_error_reports_its_line(write_config: WriteConfig) -> None:
    """Broken TOML is reported with the line it breaks on and a hint about quoting."""
    path = write_config("[poll]\ninterval = 15s\n")
    [problem] = problems_of(path)
    assert problem.line == 4
    assert "TOML syntax error" in problem.message
    assert "quotes" in problem.fix


@pytest.mark.parametrize("value", ['"fast"', '"5 parsecs"', '"-5s"', "-3"])
def test_bad_duration_lists_accepted_forms(write_config: WriteConfig, value: str) -> None:
    """A duration that does not parse says which forms are accepted."""
    [problem] = problems_of(write_config(f"[poll]\noffline_after = {value}\n"))
    assert problem.key == "poll.offline_after"
    assert problem.line == 4
    assert problem.fix == DURATION_FIX


def test_duplicate_source_names_reported_once_at_the_second(write_config: WriteConfig) -> None:
    """Two [[source]] tables with one name give one problem, on the second name's line."""
    [problem] = problems_of(write_config(LAB + LAB))
    assert (problem.key, problem.line) == ("source[1].name", 11)
    assert "duplicate" in problem.message


def test_single_brackets_for_source_suggests_double(write_config: WriteConfig) -> None:
    """[source] instead of [[source]] says to use double brackets."""
    [problem] = problems_of(write_config('[source]\nname = "lab"\n'))
    assert problem.key == "source"
    assert "[[source]]" in problem.fix


def test_missing_credentials_are_reported_on_the_source(write_config: WriteConfig) -> None:
    """A formlabs source without client_id is reported against that [[source]] table."""
    [problem] = problems_of(write_config('[[source]]\nname = "lab"\nvendor = "formlabs"\n'))
    assert (problem.key, problem.line) == ("source[0]", 3)
    assert "client_id" in problem.message


def test_missing_config_file(tmp_path: Path) -> None:
    """A config file that does not exist is one problem saying how to name another."""
    [problem] = problems_of(tmp_path / "absent.toml")
    assert problem.message == "config file not found"
    assert "-c FILE" in problem.fix


def test_state_dir_parent_must_exist(write_config: WriteConfig, tmp_path: Path) -> None:
    """daemon.state_dir whose parent directory is missing is a config problem."""
    path = write_config("")
    path.write_text(f'[daemon]\nstate_dir = "{tmp_path}/no/such/state"\n')
    [problem] = problems_of(path)
    assert (problem.key, problem.line) == ("daemon.state_dir", 2)
    assert "does not exist" in problem.message


def test_wrongly_typed_secret_is_not_echoed(write_config: WriteConfig) -> None:
    """A secret key with a value of the wrong type is reported without the value."""
    [problem] = problems_of(write_config('[mqtt]\npassword = ["hunter2hunter2"]\n'))
    assert problem.key == "mqtt.password"
    assert "hunter2" not in str(problem)


@pytest.mark.parametrize(
    ("text", "loc", "line"),
    [
        ("a = 1\n[t]\nb = 2\n", ("a",), 1),
        ("a = 1\n[t]\nb = 2\n", ("t", "b"), 3),
        ("[[s]]\nx = 1\n[[s]]\nx = 2\n", ("s", 1, "x"), 4),
        ("[[s]]\nx = 1\n[s.h]\ny = 2\n", ("s", 0, "h", "y"), 4),
        ('a = """\nb = 1\n"""\nc = [\n  1,\n]\nd = 3\n', ("d",), 7),
        ('"quoted key" = 1\n', ("quoted key",), 1),
    ],
)
def test_toml_key_lines(text: str, loc: tuple[str | int, ...], line: int) -> None:
    """Keys map to their line, with [[tables]] numbered and multi-line values skipped."""
    assert toml_key_lines(text)[loc] == line


def test_toml_key_lines_ignore_text_inside_multiline_strings() -> None:
    """A 'key = value' line inside a multi-line string is not taken for a key."""
    assert ("b",) not in toml_key_lines('a = """\nb = 1\n"""\n')


# --------------------------------------------------------------------------- the example


def _example_with_secret_files(tmp_path: Path) -> Path:
    """config.example.toml with its /etc/printfleet/ files created under ``tmp_path``.

    Bare file names (the secrets) are created next to the config, where they are looked up
    when ``$CREDENTIALS_DIRECTORY`` is unset.
    """
    text = EXAMPLE.read_text().replace("/etc/printfleet/", f"{tmp_path}/")
    for key, value in _file_keys(tomllib.loads(text)):
        content = (
            '{"client_id": "c", "client_secret": "-----BEGIN PRIVATE KEY-----\\nx\\n'
            '-----END PRIVATE KEY-----"}'
            if key == "secrets_file"
            else "example-secret-value\n"
        )
        (tmp_path / value).write_text(content)
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def _file_keys(node: Any) -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key.endswith("_file") and isinstance(value, str):
                yield key, value
            else:
                yield from _file_keys(value)
    elif isinstance(node, list):
        for item in node:
            yield from _file_keys(item)


def test_example_config_loads(tmp_path: Path) -> None:
    """config.example.toml is valid once the secret files it names exist."""
    settings = load_settings(_example_with_secret_files(tmp_path), environ={})
    assert [(s.name, s.vendor) for s in settings.source] == [
        ("lab", "formlabs"),
        ("factory", "carbon"),
    ]
    assert {r.kind for r in settings.receiver} == {"slack", "webhook"}


def _sections() -> Iterator[tuple[str, type[BaseModel]]]:
    for name, info in Settings.model_fields.items():
        args = typing.get_args(info.annotation)  # tuple[SourceConfig, ...] -> SourceConfig
        model = args[0] if args else info.annotation
        assert isinstance(model, type)
        assert issubclass(model, BaseModel)
        yield name, model


def _documented_keys() -> set[tuple[str, str]]:
    """(section, key) for every key in the example, commented out or not."""
    keys: set[tuple[str, str]] = set()
    section = ""
    for line in EXAMPLE.read_text().splitlines():
        header = re.match(r"^\s*#?\s*\[\[?([a-z_]+)\]\]?\s*$", line)
        if header:
            section = header.group(1)
            continue
        key = re.match(r"^\s*#?\s*([a-z0-9_]+)\s*=", line)
        if key:
            keys.add((section, key.group(1)))
    return keys


@pytest.mark.parametrize(
    ("section", "key"),
    [(name, key) for name, model in _sections() for key in model.model_fields],
)
def test_example_documents_every_key(section: str, key: str) -> None:
    """Every key of every config section appears in config.example.toml under its section."""
    assert (section, key) in _documented_keys()
