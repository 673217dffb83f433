"""Values `run` cannot use are config problems at load time, on the config file's line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from printfleet.config.loader import load_settings, problem_at
from printfleet.errors import ConfigError

WriteConfig = Callable[[str], Path]


@pytest.fixture
def write_config(tmp_path: Path) -> WriteConfig:
    """Writes config.toml (line 1 is [daemon], line 2 its state_dir) and returns its path."""

    def write(text: str) -> Path:
        path = tmp_path / "config.toml"
        path.write_text(f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n' + text)
        return path

    return write


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    return [str(p) for p in caught.value.problems]


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        (
            '[mqtt]\nurl = "http://broker:1883"\n',
            "config.toml:4: mqtt.url: not a broker URL (http://; MQTT needs mqtt:// or mqtts://)"
            " (fix: write mqtt://host:1883, or mqtts://host:8883 for TLS)",
        ),
        (
            '[mqtt]\nurl = "mqtt://:1883"\n',
            "config.toml:4: mqtt.url: the broker URL has no host",
        ),
        (
            '[mqtt]\nurl = "mqtt://broker:99999"\n',
            "config.toml:4: mqtt.url: invalid port in the broker URL",
        ),
        (
            '[metrics]\nlisten = "127.0.0.1:99999"\n',
            "config.toml:4: metrics.listen: invalid listen address '127.0.0.1:99999': "
            "port 99999 is out of range (fix: write host:port",
        ),
        (
            '[metrics]\nlisten = "localhost"\n',
            "config.toml:4: metrics.listen: invalid listen address 'localhost': "
            "the port is missing or not a number",
        ),
        (
            '[rules]\npacks = []\ntimezone = "Europe/Berln"\n',
            "config.toml:5: rules.timezone: unknown time zone 'Europe/Berln' "
            "(fix: did you mean 'Europe/Berlin'? use an IANA name",
        ),
    ],
)
def test_values_run_cannot_use_are_reported_on_their_line(
    write_config: WriteConfig, section: str, expected: str
) -> None:
    """A broker URL with another scheme, an unusable listen address and an unknown time zone
    are each one problem naming the config file's line, the key and the fix."""
    path = write_config(section)
    [problem] = problems(path)
    assert problem.startswith(f"{path.parent}/{expected}")


def test_a_broker_url_problem_never_repeats_the_url(write_config: WriteConfig) -> None:
    """The URL may carry the broker password, so the problem names only its scheme."""
    path = write_config('[mqtt]\nurl = "http://user:hunter2-secret@broker:1883"\n')
    [problem] = problems(path)
    assert "hunter2-secret" not in problem
    assert "broker:1883" not in problem


@pytest.mark.parametrize(
    ("line", "fix"),
    [
        ("material_low_ratio = 15", "use a number from 0 to 1, e.g. material_low_ratio = 0.15"),
        ("material_low_ratio = -0.1", "use a number from 0 to 1, e.g. material_low_ratio = 0.15"),
        ("tank_max_layers = 0", "use a whole number of at least 1, e.g. tank_max_layers = 75000"),
    ],
)
def test_an_out_of_range_number_says_what_is_allowed(
    write_config: WriteConfig, line: str, fix: str
) -> None:
    """The fix for a bounded number names the allowed range and an example, not the key's
    description again."""
    [problem] = problems(write_config(f"[thresholds]\n{line}\n"))
    assert problem.endswith(f"(fix: {fix})")


@pytest.mark.parametrize(
    "value", ["mqtt://broker", "mqtts://broker:8883", "tcp://10.0.0.2:1884", "ssl://b"]
)
def test_broker_urls_the_sink_accepts_still_load(write_config: WriteConfig, value: str) -> None:
    """The schemes the MQTT sink connects with pass the check."""
    assert load_settings(write_config(f'[mqtt]\nurl = "{value}"\n'), environ={}).mqtt.url == value


@pytest.mark.parametrize("value", ["127.0.0.1:9877", ":9877", "[::1]:9877", "127.0.0.1:0"])
def test_listen_forms_load(write_config: WriteConfig, value: str) -> None:
    """host:port, :port, [v6]:port and port 0 are valid listen addresses."""
    settings = load_settings(write_config(f'[metrics]\nlisten = "{value}"\n'), environ={})
    assert settings.metrics.listen == value


def test_a_problem_found_after_loading_is_placed_on_the_keys_line(
    write_config: WriteConfig,
) -> None:
    """problem_at gives a later problem (a port in use) the file and line of its key."""
    path = write_config('\n[metrics]\nlisten = "127.0.0.1:9877"\n')
    problem = problem_at(path, ("metrics", "listen"), "cannot listen", "pick another", environ={})
    assert str(problem) == f"{path}:5: metrics.listen: cannot listen (fix: pick another)"


def test_a_problem_with_an_environment_value_names_the_variable(
    write_config: WriteConfig,
) -> None:
    """When PRINTFLEET_METRICS__LISTEN set the value, the problem names that variable."""
    path = write_config("")
    environ = {"PRINTFLEET_METRICS__LISTEN": "127.0.0.1:9877"}
    problem = problem_at(path, ("metrics", "listen"), "cannot listen", environ=environ)
    assert str(problem) == (
        "environment variable PRINTFLEET_METRICS__LISTEN: metrics.listen: cannot listen"
    )
