"""`check` finds what `run` would reject, and both say a metrics bind failure in one line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from printfleet import cli
from printfleet.cli.check import describe_listen

WriteConfig = Callable[[str], Path]


@pytest.fixture
def write_config(tmp_path: Path) -> WriteConfig:
    """A config without sources or MQTT (line 4 is [metrics] when the text starts with it)."""

    def write(text: str) -> Path:
        path = tmp_path / "config.toml"
        path.write_text(
            f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n[mqtt]\nenabled = false\n' + text
        )
        return path

    return write


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port on 127.0.0.1 that another program is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_a_pack_glob_matching_nothing_is_a_plain_warning_line(
    write_config: WriteConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    """check still passes, and says so in a `warning:` line with file:line, not a JSON log line."""
    path = write_config('[rules]\npacks = ["missing/*.toml"]\n')
    assert cli.main(["check", "-c", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[0] == f"{path}: OK (1 warning below)"
    assert (
        f"warning: {path}:6: rules.packs: '{path.parent}/missing/*.toml' matches no file, "
        "so no rules come from it (fix: fix the pattern or remove it from the list)"
    ) in out.splitlines()
    assert "{" not in out + err  # no JSON log line anywhere


def test_check_says_what_port_0_means(
    write_config: WriteConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    """Port 0 is shown as a free port picked at start-up, not as a literal `:0`."""
    path = write_config('[metrics]\nlisten = "127.0.0.1:0"\n[rules]\npacks = []\n')
    assert cli.main(["check", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    assert "127.0.0.1:0" not in out
    assert "http://127.0.0.1:<free port>/metrics (port 0: a free port is picked at start-up" in out


@pytest.mark.parametrize(
    ("listen", "shown"),
    [
        ("127.0.0.1:9877", "http://127.0.0.1:9877/metrics"),
        (":9877", "http://0.0.0.0:9877/metrics (all interfaces)"),
        ("[::1]:9877", "http://[::1]:9877/metrics"),
    ],
)
def test_listen_addresses_are_shown_as_urls(listen: str, shown: str) -> None:
    """Every listen form becomes the URL a scraper would use."""
    assert describe_listen(listen) == shown


def test_check_probe_reports_a_port_in_use_as_exit_2(
    write_config: WriteConfig, busy_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """`check --probe` binds [metrics] listen as run will, and a port in use is one line, exit 2."""
    path = write_config(f'[metrics]\nlisten = "127.0.0.1:{busy_port}"\n[rules]\npacks = []\n')
    assert cli.main(["check", "-c", str(path)]) == 0  # without --probe no bind is tried
    capsys.readouterr()
    assert cli.main(["check", "--probe", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"{path}:6: metrics.listen: cannot listen on 127.0.0.1:{busy_port}: the address is "
        f"already in use (fix: stop the program listening there (`ss -ltnp 'sport = "
        f":{busy_port}'` names it; it may be another printfleet) or set [metrics] listen to a "
        "free port)"
    ]


def test_check_probe_passes_on_a_free_port(
    write_config: WriteConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bindable address passes the probe (and is released again)."""
    path = write_config('[metrics]\nlisten = "127.0.0.1:0"\n[rules]\npacks = []\n')
    assert cli.main(["check", "--probe", "-c", str(path)]) == 0


def test_run_with_the_metrics_port_in_use_exits_2_with_one_line(
    write_config: WriteConfig, busy_port: int
) -> None:
    """`printfleet run` on a port in use exits 2 (which systemd does not restart) with the
    problem on one stderr line and no traceback."""
    path = write_config(f'[metrics]\nlisten = "127.0.0.1:{busy_port}"\n[rules]\npacks = []\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRINTFLEET_")}
    result = subprocess.run(
        [sys.executable, "-m", "printfleet", "run", "-c", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stderr.splitlines() == [
        f"{path}:6: metrics.listen: cannot listen on 127.0.0.1:{busy_port}: the address is "
        f"already in use (fix: stop the program listening there (`ss -ltnp 'sport = "
        f":{busy_port}'` names it; it may be another printfleet) or set [metrics] listen to a "
        "free port)"
    ]


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[mqtt]\nurl = "http://broker"\n', "mqtt.url"),
        ('[metrics]\nlisten = "127.0.0.1:99999"\n', "metrics.listen"),
        ('[rules]\ntimezone = "Europe/Berln"\n', "rules.timezone"),
    ],
)
def test_check_rejects_what_run_would_with_file_and_line(
    tmp_path: Path, text: str, key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """check exits 2 on a broker URL, listen address or time zone that run cannot use."""
    path = tmp_path / "config.toml"
    path.write_text(f'[daemon]\nstate_dir = "{tmp_path}"\n{text}')
    assert cli.main(["check", "-c", str(path)]) == 2
    assert capsys.readouterr().err.startswith(f"{path}:4: {key}: ")
