"""[[digest]] in the config: references, schedules and matchers are checked at load."""

from __future__ import annotations

from pathlib import Path

import pytest

from printfleet.config.loader import load_settings
from printfleet.errors import ConfigError

RECEIVER = '[[receiver]]\nname = "team"\nkind = "slack"\nurl = "https://hooks.example/x"\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n{RECEIVER}{text}')
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    return [str(p) for p in caught.value.problems]


def test_a_digest_loads(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[[digest]]\nname = "morning"\nreceiver = "team"\nschedule = "Mon-Fri 07:30 Europe/Berlin"'
        '\nmatch = { group = ["lab-*", "dental"] }\ntitle = "Lab morning"\n',
    )
    digest = load_settings(path, environ={}).digest[0]
    assert digest.globs() == {"group": ("lab-*", "dental")}
    assert digest.title == "Lab morning"


def test_an_unknown_receiver_names_file_line_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, '[[digest]]\nname = "m"\nreceiver = "teem"\nschedule = "07:30"\n')
    assert problems(path) == [
        f"{path}:9: digest[0].receiver: unknown receiver 'teem' "
        "(fix: did you mean 'team'? use the name of a [[receiver]]: team)"
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('schedule = "Mon-Fri 7:30-8:00"', "invalid schedule"),
        ('schedule = "07:30 Mars/Olympus"', "unknown time zone"),
        ('schedule = "07:30"\nmatch = { groop = "x" }', "unknown match field 'groop'"),
        ('schedule = "07:30"\nmatch = { severity = "x" }', "unknown match field 'severity'"),
    ],
)
def test_bad_values_are_reported_on_their_key(tmp_path: Path, line: str, message: str) -> None:
    path = write(tmp_path, f'[[digest]]\nname = "m"\nreceiver = "team"\n{line}\n')
    found = problems(path)
    assert len(found) == 1
    assert str(path) in found[0]
    assert message in found[0]
    assert "digest[0]." in found[0]


def test_check_lists_digests_with_their_zone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from printfleet import cli

    path = write(
        tmp_path,
        '[mqtt]\nenabled = false\n[rules]\npacks = []\ntimezone = "Europe/Paris"\n'
        '[[digest]]\nname = "morning"\nreceiver = "team"\nschedule = "Mon-Fri 07:30"\n'
        '[[digest]]\nname = "weekly"\nreceiver = "team"\nschedule = "Mon 08:00 UTC"\n',
    )
    assert cli.main(["check", "-c", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "  digests    2" in out
    assert "    morning  to team, Mon-Fri 07:30 Europe/Paris" in out
    assert "    weekly   to team, Mon 08:00 UTC" in out
