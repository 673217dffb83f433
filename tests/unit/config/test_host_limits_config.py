"""[limits] *_host_requests_per_second: the documented defaults, 0 = off, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from printfleet.config import load_settings
from printfleet.errors import ConfigError


def _config(tmp_path: Path, limits: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f'[daemon]\nstate_dir = "{tmp_path}"\n[limits]\n{limits}\n')
    return path


def test_host_rates_default_to_90_percent_of_formlabs_and_off_for_carbon(tmp_path: Path) -> None:
    """Formlabs documents 100/s per IP (90 by default); Carbon no per-IP limit (0: off)."""
    settings = load_settings(_config(tmp_path, ""), environ={})
    assert settings.limits.formlabs_host_requests_per_second == 90
    assert settings.limits.carbon_host_requests_per_second == 0


def test_host_rates_are_read_from_the_file_and_the_environment(tmp_path: Path) -> None:
    """Whole and fractional rates, and 0 to switch the shared limit off."""
    path = _config(tmp_path, "formlabs_host_requests_per_second = 0\n")
    settings = load_settings(
        path, environ={"PRINTFLEET_LIMITS__CARBON_HOST_REQUESTS_PER_SECOND": "12.5"}
    )
    assert settings.limits.formlabs_host_requests_per_second == 0
    assert settings.limits.carbon_host_requests_per_second == 12.5


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("formlabs_host_requests_per_second = -1", "formlabs_host_requests_per_second"),
        ('formlabs_host_requests_per_second = "fast"', "formlabs_host_requests_per_second"),
        ("carbon_host_requests_per_second = -0.5", "carbon_host_requests_per_second"),
        ("carbon_host_requests_per_second = 1e9", "carbon_host_requests_per_second"),
    ],
)
def test_a_bad_host_rate_names_the_file_and_the_key(tmp_path: Path, line: str, key: str) -> None:
    """A negative, absurd or non-numeric rate is a config problem at limits.<key> in the file."""
    path = _config(tmp_path, line)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    (problem,) = caught.value.problems
    assert key in problem.key
    assert "limits" in problem.key
    assert str(path) in str(problem)
