"""[limits]: sizes as people write them, the contract's defaults, clear errors."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from printfleet.config import LimitsConfig, load_settings
from printfleet.core.sizes import format_size, parse_size
from printfleet.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("256MiB", 256 * 1024**2),
        ("64KiB", 65536),
        ("64kib", 65536),
        ("1GB", 10**9),
        ("1 GiB", 1024**3),
        ("64kB", 64_000),
        ("64KB", 64_000),
        ("1.5MiB", 1_572_864),
        ("512B", 512),
        ("4096", 4096),
        (4096, 4096),
        (0, 0),
    ],
)
def test_sizes_parse(text: str | int, size: int) -> None:
    """IEC units are 1024-based, SI ones 1000-based, a bare number is bytes."""
    assert parse_size(text) == size


@pytest.mark.parametrize(
    "value", ["", "MiB", "12 parsecs", "-1KiB", "1.5", "1e3", True, 1.5, None, [], -1, "2PiB"]
)
def test_bad_sizes_say_which_forms_are_accepted(value: object) -> None:
    """Anything else is a ValueError naming the accepted forms."""
    with pytest.raises(ValueError, match=r"(KiB|larger than 1 PiB)"):
        parse_size(value)


@pytest.mark.parametrize("size", [256 * 1024**2, 65536, 1000, 1536])
def test_sizes_format_back_to_what_parses(size: int) -> None:
    """format_size (how the config serializes a size) parses back to the same bytes."""
    assert parse_size(format_size(size)) == size


def test_limits_defaults_are_the_contract() -> None:
    """The defaults are the ones the docs and the hostile suite rely on."""
    limits = LimitsConfig()
    assert limits.response_max_size == 256 * 1024**2
    assert limits.json_max_depth == 64
    assert limits.reply_max_size == 64 * 1024
    assert limits.secret_file_max_size == 64 * 1024
    assert limits.vendor_clock_skew == timedelta(days=1)


def test_limits_are_read_from_the_file_and_the_environment(tmp_path: Path) -> None:
    """[limits] keys take size and duration text; PRINTFLEET_LIMITS__* overrides them."""
    path = tmp_path / "config.toml"
    path.write_text(
        f'[daemon]\nstate_dir = "{tmp_path}"\n'
        '[limits]\nresponse_max_size = "1GB"\nvendor_clock_skew = "2h"\n'
    )
    settings = load_settings(path, environ={"PRINTFLEET_LIMITS__REPLY_MAX_SIZE": "1KiB"})
    assert settings.limits.response_max_size == 10**9
    assert settings.limits.vendor_clock_skew == timedelta(hours=2)
    assert settings.limits.reply_max_size == 1024


def test_a_bad_size_names_the_key_and_the_forms(tmp_path: Path) -> None:
    """A size that does not parse is a config problem naming limits.response_max_size."""
    path = tmp_path / "config.toml"
    path.write_text(f'[daemon]\nstate_dir = "{tmp_path}"\n[limits]\nresponse_max_size = "big"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    (problem,) = caught.value.problems
    assert "response_max_size" in problem.key
    assert "MiB" in problem.message + problem.fix
