"""The command line: subcommands, what `check` prints, and exceptions turned into exit codes."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import types
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from printfleet import __version__, cli
from printfleet.core.model import Printer, PrinterStatus, RawJson, Snapshot, Vendor
from printfleet.errors import (
    AuthFailed,
    ConfigError,
    PrintfleetError,
    Problem,
    RuleError,
    SourceUnavailable,
)

FORMLABS_SECRET = "fl-client-secret-0a9b8c7d"
SLACK_URL = "https://hooks.slack.com/services/T01/B02/slackpathsecret"
MQTT_PASSWORD = "broker-pw-55aa66bb"


@pytest.fixture
def good_config(tmp_path: Path) -> Path:
    """A valid config with a Formlabs source, a Slack receiver and an MQTT password, all secret."""
    (tmp_path / "formlabs.secret").write_text(FORMLABS_SECRET)
    (tmp_path / "mqtt.pw").write_text(MQTT_PASSWORD)
    path = tmp_path / "config.toml"
    path.write_text(
        f"""
[daemon]
state_dir = "{tmp_path / "state"}"

[[source]]
name = "lab"
vendor = "formlabs"
client_id = "cid"
client_secret_file = "formlabs.secret"
base_url = "http://127.0.0.1:8111"

[mqtt]
url = "mqtt://printfleet:{MQTT_PASSWORD}@broker:1883"
password_file = "mqtt.pw"

[[receiver]]
name = "ops-slack"
kind = "slack"
url = "{SLACK_URL}"
"""
    )
    return path


@pytest.fixture
def broken_config(tmp_path: Path) -> Path:
    """A config with a misspelt key in [poll]."""
    path = tmp_path / "broken.toml"
    path.write_text(f'[daemon]\nstate_dir = "{tmp_path}"\n\n[poll]\nintervall = "15s"\n')
    return path


@pytest.fixture
def rule_packs(monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable[[Any], Any]], None]:
    """Installs a stand-in printfleet.rulepacks whose load_rule_set is the given function."""

    def install(load_rule_set: Callable[[Any], Any]) -> None:
        module = types.ModuleType("printfleet.rulepacks")
        module.load_rule_set = load_rule_set  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "printfleet.rulepacks", module)

    return install


def fake_module(monkeypatch: pytest.MonkeyPatch, name: str, **attrs: Any) -> None:
    module = types.ModuleType(name)
    for key, value in attrs.items():
        setattr(module, key, value)
    monkeypatch.setitem(sys.modules, name, module)


# --------------------------------------------------------------------------- check


def test_check_broken_config_exits_2_naming_file_key_and_reason(
    broken_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`check` on a broken config returns 2 and prints file:line: key: reason (fix: ...)."""
    assert cli.main(["check", "-c", str(broken_config)]) == 2
    err = capsys.readouterr().err
    assert f"{broken_config}:5: poll.intervall: unknown key (fix: did you mean 'interval'?)" in err


def test_check_good_config_exits_0_and_prints_no_secret(
    good_config: Path,
    capsys: pytest.CaptureFixture[str],
    rule_packs: Callable[[Callable[[Any], Any]], None],
) -> None:
    """`check` on a valid config returns 0 with a summary that contains no secret."""
    rule_packs(lambda settings, **_: types.SimpleNamespace(rules=[1, 2, 3], packs=["a.toml"]))
    assert cli.main(["check", "-c", str(good_config)]) == 0
    out, err = capsys.readouterr()
    for secret in (FORMLABS_SECRET, MQTT_PASSWORD, "slackpathsecret"):
        assert secret not in out + err
    assert "lab" in out
    assert "formlabs" in out
    assert "http://127.0.0.1:8111" in out
    assert "ops-slack  slack" in out
    assert "3 rules in 1 pack" in out
    assert "mqtt://printfleet@broker:1883" in out
    assert "127.0.0.1:9877" in out


def test_check_reports_rule_pack_problems(
    good_config: Path,
    capsys: pytest.CaptureFixture[str],
    rule_packs: Callable[[Callable[[Any], Any]], None],
) -> None:
    """A RuleError from the rule packs makes `check` return 2 with the problem printed."""

    def broken(settings: Any, **_: Any) -> Any:
        raise RuleError(
            Problem("rules/x.toml", "rule[0].on", "unknown event type", "use print.*", 3)
        )

    rule_packs(broken)
    assert cli.main(["check", "-c", str(good_config)]) == 2
    assert (
        "rules/x.toml:3: rule[0].on: unknown event type (fix: use print.*)"
        in capsys.readouterr().err
    )


def test_check_uses_printfleet_config_variable(
    broken_config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without -c, `check` reads the file named by $PRINTFLEET_CONFIG."""
    monkeypatch.setenv("PRINTFLEET_CONFIG", str(broken_config))
    assert cli.main(["check"]) == 2
    assert str(broken_config) in capsys.readouterr().err


def test_check_subprocess_exit_code(broken_config: Path) -> None:
    """`python -m printfleet check -c broken.toml` exits with status 2."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRINTFLEET_")}
    result = subprocess.run(
        [sys.executable, "-m", "printfleet", "check", "-c", str(broken_config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "poll.intervall" in result.stderr


# --------------------------------------------------------------------------- general


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """--version prints the version and returns 0."""
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"printfleet {__version__}"


def test_no_command_prints_usage_and_returns_2(capsys: pytest.CaptureFixture[str]) -> None:
    """Without a command the usage goes to stderr and the exit code is 2."""
    assert cli.main([]) == 2
    assert "usage: printfleet" in capsys.readouterr().err


def test_unknown_option_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """An option the command does not know is reported and returns 2."""
    assert cli.main(["check", "--frobnicate"]) == 2
    assert "--frobnicate" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("error", "code", "said"),
    [
        (
            ConfigError(Problem("c.toml", "poll.interval", "bad", "fix it", 3)),
            2,
            "c.toml:3: poll.interval: bad",
        ),
        (RuleError(Problem("r.toml", "rule[1]", "bad rule")), 2, "r.toml: rule[1]: bad rule"),
        (AuthFailed("lab", "invalid_client"), 3, "lab: invalid_client"),
        (SourceUnavailable("lab", "timeout"), 1, "printfleet: lab: timeout"),
        (PrintfleetError("the store is locked"), 1, "printfleet: the store is locked"),
        (KeyboardInterrupt(), 130, ""),
        (RuntimeError("kaboom"), 1, "RuntimeError: kaboom"),
    ],
)
def test_exceptions_become_exit_codes(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    error: BaseException,
    code: int,
    said: str,
) -> None:
    """Each kind of failure of a command maps to its documented exit code and message."""

    def fail(args: argparse.Namespace, extra: list[str]) -> int:
        raise error

    monkeypatch.setattr(cli, "_check", fail)
    assert cli.main(["check"]) == code
    assert said in capsys.readouterr().err


def test_unexpected_error_logs_the_traceback_redacted(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unexpected exception is logged with its traceback, secrets redacted."""

    def fail(args: argparse.Namespace, extra: list[str]) -> int:
        raise RuntimeError(f"header was Bearer {FORMLABS_SECRET}")

    monkeypatch.setattr(cli, "_check", fail)
    assert cli.main(["check"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert FORMLABS_SECRET not in err


def test_ctrl_c_stops_the_daemon_cleanly(monkeypatch: pytest.MonkeyPatch) -> None:
    """KeyboardInterrupt in a long-running command (run) is a clean exit 0."""

    def interrupted(args: argparse.Namespace, extra: list[str]) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_run", interrupted)
    assert cli.main(["run"]) == 0


# --------------------------------------------------------------------------- delegation


def test_run_loads_settings_and_calls_the_app(
    good_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`run -c FILE` validates the config and hands it to printfleet.app.run_daemon."""
    calls: list[tuple[Any, Path]] = []

    def run_daemon(settings: Any, *, config_file: Path) -> int:
        calls.append((settings, config_file))
        return 0

    fake_module(monkeypatch, "printfleet.app", run_daemon=run_daemon)
    assert cli.main(["run", "-c", str(good_config)]) == 0
    [(settings, config_file)] = calls
    assert config_file == good_config
    assert settings.source[0].name == "lab"


def test_run_with_broken_config_never_starts(
    broken_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`run` with an invalid config returns 2 without calling the app."""
    fake_module(monkeypatch, "printfleet.app", run_daemon=lambda *a, **k: pytest.fail("started"))
    assert cli.main(["run", "-c", str(broken_config)]) == 2


def test_demo_passes_its_options(monkeypatch: pytest.MonkeyPatch) -> None:
    """`demo` options reach printfleet.cli.demo.run_demo as keyword arguments."""
    calls: list[dict[str, Any]] = []

    def run_demo(**kw: Any) -> int:
        calls.append(kw)
        return 0

    fake_module(monkeypatch, "printfleet.cli.demo", run_demo=run_demo)
    argv = [
        "demo",
        "--printers",
        "5",
        "--speed",
        "120",
        "--duration",
        "2m",
        "--vendor",
        "carbon",
        "--no-mqtt",
        "--seed",
        "3",
        "--mqtt",
        "mqtts://broker.example:8883",
    ]
    assert cli.main(argv) == 0
    assert calls == [
        {
            "printers": 5,
            "speed": 120.0,
            "duration": 120.0,
            "vendor": "carbon",
            "mqtt": False,
            "mqtt_url": "mqtts://broker.example:8883",
            "seed": 3,
        }
    ]


def test_demo_refuses_a_url_that_is_not_a_broker(capsys: pytest.CaptureFixture[str]) -> None:
    """`demo --mqtt http://...` is a usage error naming the expected form, never the URL
    (it may carry a password)."""
    assert cli.main(["demo", "--mqtt", "http://user:pw-7f3a@broker:1883"]) == 2
    err = capsys.readouterr().err
    assert "mqtt://host:1883" in err
    assert "pw-7f3a" not in err


def test_simulate_passes_arguments_through(monkeypatch: pytest.MonkeyPatch) -> None:
    """`simulate` hands its options, and any it does not know, to the simulator's main(argv)."""
    seen: list[list[str]] = []

    def simulator_main(argv: list[str]) -> int:
        seen.append(argv)
        return 0

    monkeypatch.setattr(cli, "_simulator_main", lambda: simulator_main)
    assert cli.main(["simulate", "--vendor", "both", "--port", "8111", "--faults", "x"]) == 0
    assert seen == [["--vendor", "both", "--port", "8111", "--faults", "x"]]


def test_outbox_command_arguments(good_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`outbox replay --dead --sink S --id A B` reaches outbox_command with those values."""
    calls: list[tuple[str, dict[str, Any]]] = []

    def outbox_command(settings: Any, action: str, **kw: Any) -> int:
        calls.append((action, kw))
        return 0

    fake_module(monkeypatch, "printfleet.cli.outbox", outbox_command=outbox_command)
    argv = [
        "outbox",
        "replay",
        "-c",
        str(good_config),
        "--dead",
        "--sink",
        "mqtt",
        "--id",
        "a",
        "b",
    ]
    assert cli.main(argv) == 0
    [(action, kw)] = calls
    assert action == "replay"
    assert (kw["sink"], kw["dead"], kw["ids"]) == ("mqtt", True, ["a", "b"])


def test_silence_add_arguments(good_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`silence add source=lab serial=Form4-* --duration 2h` passes matchers and a timedelta."""
    calls: list[tuple[str, argparse.Namespace]] = []

    def silence_command(settings: Any, action: str, args: argparse.Namespace, out: Any) -> int:
        calls.append((action, args))
        return 0

    fake_module(monkeypatch, "printfleet.cli.silence", silence_command=silence_command)
    argv = [
        "silence",
        "add",
        "-c",
        str(good_config),
        "source=lab",
        "serial=Form4-*",
        "--duration",
        "2h",
        "--comment",
        "tank swap",
    ]
    assert cli.main(argv) == 0
    [(action, args)] = calls
    assert action == "add"
    assert args.matchers == {"source": "lab", "serial": "Form4-*"}
    assert (args.duration, args.comment) == (timedelta(hours=2), "tank swap")


def test_silence_matcher_must_be_key_value(capsys: pytest.CaptureFixture[str]) -> None:
    """A silence matcher without '=' is a usage error."""
    assert cli.main(["silence", "add", "Form4"]) == 2
    assert "KEY=GLOB" in capsys.readouterr().err


# --------------------------------------------------------------------------- snapshot


class _FakeSource:
    def __init__(self, name: str, error: Exception | None) -> None:
        self.name = name
        self.error = error
        self.closed = False

    async def fetch_printers(self) -> Snapshot:
        if self.error is not None:
            raise self.error
        return Snapshot(self.name, Vendor.FORMLABS, datetime(2026, 1, 1, tzinfo=UTC), {})

    async def aclose(self) -> None:
        self.closed = True


@pytest.mark.parametrize(
    ("error", "code"),
    [(None, 0), (AuthFailed("lab", "invalid_client"), 3), (SourceUnavailable("lab", "503"), 1)],
)
def test_snapshot_prints_json_and_maps_failures(
    good_config: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    error: Exception | None,
    code: int,
) -> None:
    """`snapshot` prints one JSON object keyed by source; rejected credentials exit 3."""
    made: list[_FakeSource] = []

    def make_source(config: Any, **kw: Any) -> _FakeSource:
        made.append(_FakeSource(config.name, error))
        return made[-1]

    fake_module(monkeypatch, "printfleet.sources.factory", make_source=make_source)
    assert cli.main(["snapshot", "-c", str(good_config)]) == code
    captured = capsys.readouterr()
    if error is None:
        assert json.loads(captured.out)["lab"]["source"] == "lab"
        assert "printfleet: lab: 0 printers" in captured.err
    else:
        assert json.loads(captured.out) == {}
    assert made[0].closed


def test_snapshot_raw_shows_the_vendor_record_as_received(
    good_config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`snapshot --raw` decodes the record text the source kept (RawJson) into the output."""
    record = '{"serial": "F1", "alias": "Grüße", "printer_status": {"status": "IDLE"}}'
    printer = Printer(
        serial="F1",
        name="Grüße",
        vendor=Vendor.FORMLABS,
        model="Form 4",
        model_code="FORM-4-0",
        status=PrinterStatus.IDLE,
        status_raw="IDLE",
        online=True,
        raw=RawJson(record),
    )

    class Source(_FakeSource):
        async def fetch_printers(self) -> Snapshot:
            taken = datetime(2026, 1, 1, tzinfo=UTC)
            return Snapshot(self.name, Vendor.FORMLABS, taken, {"F1": printer})

    fake_module(
        monkeypatch,
        "printfleet.sources.factory",
        make_source=lambda config, **kw: Source(config.name, None),
    )
    assert cli.main(["snapshot", "-c", str(good_config), "--raw"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["lab"]["printers"][0]["raw"] == json.loads(record)
    assert cli.main(["snapshot", "-c", str(good_config)]) == 0
    assert "raw" not in json.loads(capsys.readouterr().out)["lab"]["printers"][0]


def test_snapshot_of_unknown_source_is_a_config_error(
    good_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`snapshot --source NAME` for a name not configured returns 2 listing the names."""
    assert cli.main(["snapshot", "-c", str(good_config), "--source", "shop"]) == 2
    assert "use one of: lab" in capsys.readouterr().err
