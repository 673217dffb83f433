"""`printfleet ack` run as a command against a real state database, and its effect on the engine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from printfleet import cli
from printfleet.config import load_settings
from printfleet.core.events import ChangeEvent, EventType, Severity, event_id, to_cloudevent
from printfleet.core.model import Printer, PrinterStatus, Vendor
from printfleet.core.rules.acks import ACKS_KEY, acks_from_state
from printfleet.core.rules.engine import RuleEngine
from printfleet.rulepacks.loader import load_rule_set, silences_from_state
from printfleet.store import FILENAME, Store

PACK = """
[[rule]]
name = "offline"
on = ["printer.offline"]
repeat = "1h"
resolve = true
notify = ["ops-slack"]

[[rule]]
name = "failed"
on = ["print.failed"]
notify = ["ops-slack"]
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "pack.toml").write_text(PACK)
    path = tmp_path / "config.toml"
    path.write_text(
        f"""
[daemon]
state_dir = "{tmp_path / "state"}"

[[receiver]]
name = "ops-slack"
kind = "slack"
url = "https://hooks.slack.com/services/T000/B000/secretpath"

[rules]
packs = ["pack.toml"]
"""
    )
    return path


def offline(serial: str, when: datetime) -> dict[str, Any]:
    printer = Printer(
        serial=serial,
        name=f"Printer {serial}",
        vendor=Vendor.FORMLABS,
        model="Form 4",
        model_code="FORM-4-0",
        status=PrinterStatus.OFFLINE,
        status_raw="OFFLINE",
        online=False,
        group="Dental",
    )
    return to_cloudevent(
        ChangeEvent(
            id=event_id("lab", serial, "printer.offline", when.isoformat()),
            type=EventType.PRINTER_OFFLINE,
            source="lab",
            vendor=Vendor.FORMLABS,
            subject=serial,
            time=when,
            severity=Severity.WARNING,
            printer=printer,
        )
    )


def daemon_engine(config: Path) -> tuple[RuleEngine, Path]:
    """An engine as the daemon builds it, with Form4-A and Form4-B offline and firing."""
    settings = load_settings(config)
    engine = RuleEngine(load_rule_set(settings, base_dir=config.parent))
    fired = datetime.now(UTC) - timedelta(minutes=10)
    for serial in ("Form4-A", "Form4-B"):
        assert engine.process(offline(serial, fired), fired)
    db = settings.daemon.state_dir / FILENAME
    settings.daemon.state_dir.mkdir(parents=True, exist_ok=True)
    with Store.open(db) as store:
        store.commit(state={"rules": engine.state()})
    return engine, db


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out + err


def stored(db: Path, key: str) -> Any:
    with Store.open(db) as store:
        return store.load_state(key)


def test_ack_stores_an_ack_the_daemon_applies(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`ack offline serial=Form4-A` stores an ack; the engine then skips A's repeats, not B's."""
    engine, db = daemon_engine(config)
    code, out = run(
        capsys, "ack", "offline", "serial=Form4-A", "--comment", "tank", "--by", "ann", "-c",
        str(config),
    )  # fmt: skip
    assert code == 0, out
    assert "acknowledged 1 firing alert of rule 'offline' (Form4-A)" in out
    assert "until resolved" in out
    [ack] = acks_from_state(stored(db, ACKS_KEY))
    assert (ack.rule, dict(ack.match), ack.comment, ack.created_by) == (
        "offline",
        {"serial": ("Form4-A",)},
        "tank",
        "ann",
    )
    engine.set_acks(acks_from_state(stored(db, ACKS_KEY)))  # what the daemon's watcher does
    repeats = engine.tick(datetime.now(UTC) + timedelta(hours=1))
    assert [d.payload["event"]["subject"] for d in repeats] == ["Form4-B"]


def test_silence_list_shows_acks_and_silence_remove_ends_them(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Acks are listed with the silences, marked `ack`; `silence remove ID` removes an ack too."""
    _, db = daemon_engine(config)
    assert run(capsys, "silence", "add", "source=lab", "--hold", "-c", str(config))[0] == 0
    assert run(capsys, "ack", "offline", "--until", "2h", "-c", str(config))[0] == 0
    code, out = run(capsys, "silence", "list", "-c", str(config))
    assert code == 0
    _header, silence_row, ack_row = out.splitlines()
    assert "source=lab (hold)" in silence_row
    [ack] = acks_from_state(stored(db, ACKS_KEY))
    assert ack_row.startswith(ack.id)
    assert " ack " in ack_row
    assert "rule=offline" in ack_row
    assert ack.ends_at is not None
    assert ack.ends_at - ack.created_at == timedelta(hours=2)
    [silence] = silences_from_state(stored(db, "silences"))
    assert silence.hold
    code, out = run(capsys, "ack", "list", "-c", str(config))
    assert code == 0
    assert ack.id in out
    assert silence.id not in out
    assert run(capsys, "silence", "remove", ack.id, "-c", str(config))[0] == 0
    assert acks_from_state(stored(db, ACKS_KEY)) == ()
    assert len(silences_from_state(stored(db, "silences"))) == 1


def test_ack_remove(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`ack remove ID` ends an ack; an unknown id exits 1."""
    _, db = daemon_engine(config)
    run(capsys, "ack", "offline", "-c", str(config))
    [ack] = acks_from_state(stored(db, ACKS_KEY))
    assert run(capsys, "ack", "remove", ack.id, "-c", str(config)) == (0, f"removed {ack.id}\n")
    code, out = run(capsys, "ack", "remove", "nope", "-c", str(config))
    assert code == 1
    assert "no ack with id 'nope'" in out


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["ack", "ofline"], 2, "unknown rule 'ofline'; did you mean 'offline'?"),
        (["ack", "failed"], 2, "rule 'failed' has no repeat"),
        (["ack", "offline", "serial=Form3-*"], 1, "no firing alert of rule 'offline' matches"),
        (["ack", "offline", "serail=X"], 2, "did you mean 'serial'"),
        (["ack", "offline", "Form4-A"], 2, "is not KEY=GLOB"),
        (["ack", "offline", "--until", "soon"], 2, "--until"),
    ],
)
def test_ack_errors(
    config: Path, capsys: pytest.CaptureFixture[str], argv: list[str], code: int, message: str
) -> None:
    """Unknown rules (with a suggestion), pointless acks and bad matchers exit per errors.py."""
    _, db = daemon_engine(config)
    got, out = run(capsys, *argv, "-c", str(config))
    assert (got, message in out) == (code, True), out
    assert acks_from_state(stored(db, ACKS_KEY)) == ()
    assert "secretpath" not in out


def test_ack_is_documented_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    """`printfleet ack --help` says what an ack does."""
    assert cli.main(["ack", "--help"]) == 0
    out = capsys.readouterr().out
    assert "repeat" in out
    assert "--until" in out


def test_the_daemons_silence_watcher_picks_up_acks(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Daemon._refresh_silences (run every 30 s) reads the acks `ack` stored, like silences."""
    from printfleet.app import Daemon

    engine, db = daemon_engine(config)
    assert run(capsys, "ack", "offline", "serial=Form4-B", "-c", str(config))[0] == 0
    daemon = Daemon(load_settings(config))
    with Store.open(db) as store:
        daemon.store, daemon.engine = store, engine
        daemon._refresh_silences()
    repeats = engine.tick(datetime.now(UTC) + timedelta(hours=1))
    assert [d.payload["event"]["subject"] for d in repeats] == ["Form4-A"]
