"""Secret files: only regular files, read without blocking and bounded; loose modes warned."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from printfleet import cli
from printfleet.config import load_settings
from printfleet.config.secrets import (
    SECRET_FILE_MAX_SIZE,
    forget_loose_secret_files,
    read_secret_file,
    report_secret_file_permissions,
)
from printfleet.errors import ConfigError

SECRET = "fl-secret-3c4d5e6f"


@pytest.fixture(autouse=True)
def _no_loose_files_seen() -> Iterator[None]:
    forget_loose_secret_files(reported=True)
    yield
    forget_loose_secret_files(reported=True)


def config_naming(tmp_path: Path, secret_file: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        f"""
[daemon]
state_dir = "{tmp_path / "state"}"

[[source]]
name = "lab"
vendor = "formlabs"
client_id = "cid"
client_secret_file = "{secret_file}"
base_url = "http://127.0.0.1:8111"

[mqtt]
enabled = false
"""
    )
    return path


def in_thread_with_deadline(work: object, seconds: float = 10.0) -> BaseException | None:
    """Run ``work()`` in a thread; fail the test if it does not finish (a FIFO would block)."""
    result: list[BaseException | None] = []

    def target() -> None:
        try:
            work()  # type: ignore[operator]
            result.append(None)
        except BaseException as err:
            result.append(err)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "reading the secret file blocked"
    return result[0]


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    """A FIFO named as a secret file is a ConfigError naming it, not a hang."""
    fifo = tmp_path / "secret.fifo"
    os.mkfifo(fifo)
    err = in_thread_with_deadline(lambda: read_secret_file(fifo, key="client_secret_file"))
    assert isinstance(err, ConfigError)
    assert f"{fifo} is a FIFO, not a regular file" in str(err)
    assert "client_secret_file" in str(err)


def test_check_with_a_fifo_secret_exits_2_promptly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`printfleet check` on a config whose secret file is a FIFO returns 2 naming the file."""
    fifo = tmp_path / "secret.fifo"
    os.mkfifo(fifo)
    config = config_naming(tmp_path, fifo)
    codes: list[int] = []
    err = in_thread_with_deadline(lambda: codes.append(cli.main(["check", "-c", str(config)])))
    assert err is None
    assert codes == [2]
    assert "is a FIFO, not a regular file" in capsys.readouterr().err


def test_dev_zero_is_a_clear_config_error(tmp_path: Path) -> None:
    """/dev/zero as a secret file is refused as a device, not read until memory runs out."""
    with pytest.raises(ConfigError, match="/dev/zero is a character device, not a regular file"):
        read_secret_file(Path("/dev/zero"), key="client_secret_file")


def test_a_directory_is_refused(tmp_path: Path) -> None:
    """A directory named as a secret file is a ConfigError naming it."""
    with pytest.raises(ConfigError, match="is a directory"):
        read_secret_file(tmp_path, key="client_secret_file")


def test_a_file_over_the_size_cap_is_refused(tmp_path: Path) -> None:
    """A secret file larger than the cap is refused, naming the file and the limit's key."""
    big = tmp_path / "big.secret"
    big.write_bytes(b"x" * (SECRET_FILE_MAX_SIZE + 1))
    with pytest.raises(ConfigError) as caught:
        read_secret_file(big, key="client_secret_file")
    text = str(caught.value)
    assert f"{big} is larger than {SECRET_FILE_MAX_SIZE} bytes" in text
    assert "secret_file_max_size" in text
    small = tmp_path / "small.secret"
    small.write_text("0123456789abcdef")
    with pytest.raises(ConfigError, match="larger than 8 bytes"):
        read_secret_file(small, key="k", max_size=8)
    assert read_secret_file(small, key="k", max_size=16) == "0123456789abcdef"


def test_a_world_readable_secret_is_warned_once_at_start_up(tmp_path: Path) -> None:
    """A 0644 secret file is read, and logged once as config.secret_file_permissions."""
    secret = tmp_path / "formlabs.secret"
    secret.write_text(SECRET)
    secret.chmod(0o644)
    assert read_secret_file(secret, key="client_secret_file") == SECRET
    read_secret_file(secret, key="client_secret_file")  # read again by another component
    with structlog.testing.capture_logs() as logs:
        report_secret_file_permissions()
        report_secret_file_permissions()
    warnings = [e for e in logs if e["event"] == "config.secret_file_permissions"]
    assert warnings == [
        {
            "event": "config.secret_file_permissions",
            "log_level": "warning",
            "file": str(secret),
            "mode": "0644",
            "fix": f"chmod 600 {secret}",
        }
    ]


def test_a_private_secret_is_not_warned(tmp_path: Path) -> None:
    """A 0600 secret file gives no permission warning."""
    secret = tmp_path / "formlabs.secret"
    secret.write_text(SECRET)
    secret.chmod(0o600)
    load_settings(config_naming(tmp_path, secret), environ={})
    with structlog.testing.capture_logs() as logs:
        report_secret_file_permissions()
    assert not [e for e in logs if e["event"] == "config.secret_file_permissions"]


def test_check_prints_a_warning_line_for_a_loose_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`printfleet check` still succeeds, and prints the loose file, its mode and the fix."""
    secret = tmp_path / "formlabs.secret"
    secret.write_text(SECRET)
    secret.chmod(0o640)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    assert cli.main(["check", "-c", str(config_naming(tmp_path, secret))]) == 0
    out = capsys.readouterr().out
    assert (
        f"warning: secret file {secret} is readable by group or others (mode 0640); "
        f"fix: chmod 600 {secret}"
    ) in out
    assert SECRET not in out
