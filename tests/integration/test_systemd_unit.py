"""The shipped systemd unit is valid and hardened (systemd-analyze verify and security)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import in_ci

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "systemd" / "printfleet.service"


@pytest.fixture
def analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        if in_ci():
            pytest.fail("systemd-analyze is missing in CI")
        pytest.skip("systemd-analyze is not installed")
    return path


@pytest.fixture
def unit_with_local_binary(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this environment's printfleet.

    verify checks that ExecStart's binary exists; a test machine has printfleet in its
    virtualenv rather than /usr/local/bin, so only that path is substituted.
    """
    binary = Path(sys.executable).with_name("printfleet")
    assert binary.exists(), "printfleet console script not installed in this environment"
    text = UNIT.read_text().replace("/usr/local/bin/printfleet", str(binary))
    target = tmp_path / "printfleet.service"
    target.write_text(text)
    return target


def test_unit_passes_systemd_analyze_verify(analyze: str, unit_with_local_binary: Path) -> None:
    """`systemd-analyze verify` reports nothing for the shipped unit."""
    result = subprocess.run(
        [analyze, "verify", str(unit_with_local_binary)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "printfleet.service" not in result.stderr, result.stderr


def test_unit_exposure_score_is_at_most_2(analyze: str) -> None:
    """`systemd-analyze security --offline=true` rates the unit's exposure at 2.0 or lower."""
    result = subprocess.run(
        [analyze, "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0


def test_unit_does_not_restart_on_config_or_auth_errors() -> None:
    """Exit codes 2 (bad config) and 3 (credentials rejected) do not cause a crash loop."""
    text = UNIT.read_text()
    assert re.search(r"^RestartPreventExitStatus=2 3$", text, re.M)
    assert re.search(r"^Type=notify$", text, re.M)
    assert re.search(r"^ExecReload=.*-HUP", text, re.M)
