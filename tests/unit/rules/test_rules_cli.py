"""`printfleet rules test` dry runs and `printfleet silence add|list|remove`."""

from __future__ import annotations

import argparse
import io
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from test_rules_support import T0, at, event

from printfleet.cli.rules import rules_test
from printfleet.cli.silence import silence_command
from printfleet.config import DaemonConfig, ReceiverConfig, RulesConfig, Settings
from printfleet.errors import RuleError
from printfleet.rulepacks.loader import silences_from_state
from printfleet.store import Store

PACK = """
[[rule]]
name = "failed"
on = ["print.failed"]
notify = ["ops-slack"]
title = "{printer.name}: {print.name} failed"
text = "after {print.elapsed}"

[[rule]]
name = "offline"
on = ["printer.offline"]
for = "10m"
resolve = true
notify = ["ops-slack"]
mqtt = { topic = "lab/{printer.serial}/offline", retain = true }
title = "{printer.name} offline"
"""


def config(tmp_path: Path, pack: str = PACK) -> Settings:
    (tmp_path / "pack.toml").write_text(pack)
    return Settings(
        daemon=DaemonConfig(state_dir=tmp_path / "state"),
        receiver=(ReceiverConfig(name="ops-slack", kind="slack", url="https://x.invalid"),),
        rules=RulesConfig(packs=(str(tmp_path / "pack.toml"),)),
    )


def write_events(tmp_path: Path, *events: dict[str, Any]) -> Path:
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


def run_test(settings: Settings, events: Path) -> tuple[int, str]:
    out = io.StringIO()
    code = rules_test(settings, events, out)
    return code, out.getvalue()


def test_rules_test_shows_firing_rules_with_rendered_payloads(tmp_path: Path) -> None:
    """Each event lists the rules that fire, their receivers and the rendered title and text."""
    events = write_events(tmp_path, event("print.failed"))
    code, text = run_test(config(tmp_path), events)
    assert code == 0
    assert "print.failed" in text
    assert "failed  fired" in text
    assert "-> failed firing to ops-slack" in text
    assert "title:    Printer Form4-A: crown-42 failed" in text
    assert "text:     after 1h 02m" in text


def test_rules_test_simulates_hold_downs_on_event_time(tmp_path: Path) -> None:
    """A hold-down shows as pending, then fires at its due time before the next event."""
    events = write_events(
        tmp_path,
        event("printer.offline", time=T0),
        event("printer.online", time=at(minutes=30)),
    )
    code, text = run_test(config(tmp_path), events)
    assert code == 0
    assert "pending" in text
    assert "fires at 2026-11-23T10:10:00Z" in text
    timers = text.index("[timers] 2026-11-23T10:10:00Z")
    firing = "-> offline firing to ops-slack, mqtt lab/Form4-A/offline (qos 1, retained)"
    assert text.index(firing) > timers
    assert "-> offline resolved" in text


def test_rules_test_flushes_timers_at_the_end(tmp_path: Path) -> None:
    """Hold-downs still pending after the last event are fired and shown."""
    events = write_events(tmp_path, event("printer.offline", time=T0))
    _, text = run_test(config(tmp_path), events)
    assert "[end of events, flushing timers] 2026-11-23T10:10:00Z" in text
    assert "summary: 1 events; 2 deliveries" in text


def test_rules_test_reports_events_no_rule_matches(tmp_path: Path) -> None:
    """An event no rule applies to is listed as such."""
    events = write_events(tmp_path, event("print.started"))
    _, text = run_test(config(tmp_path), events)
    assert "(no rule applies)" in text


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "events.jsonl:2: not JSON"),
        ("[1, 2]", "events.jsonl:2: not a JSON object"),
        ('{"type": "print.failed"}', "events.jsonl:2: missing id, source, subject, time"),
        (
            '{"id": "1", "type": "print.exploded", "source": "s", "subject": "x", "time": "t"}',
            "events.jsonl:2: unknown event type 'print.exploded'",
        ),
        (
            '{"id": "1", "type": "print.failed", "source": "s", "subject": "x", "time": "noon"}',
            "events.jsonl:2: invalid time 'noon'",
        ),
    ],
)
def test_rules_test_rejects_bad_event_lines(tmp_path: Path, line: str, message: str) -> None:
    """Lines that are not CloudEvents are reported with their line number; exit code 1."""
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps(event("print.failed")) + "\n" + line + "\n")
    code, text = run_test(config(tmp_path), path)
    assert code == 1
    assert message in text


def test_rules_test_raises_for_broken_packs(tmp_path: Path) -> None:
    """Invalid rule packs raise RuleError (the CLI turns it into exit code 2)."""
    settings = config(tmp_path, '[[rule]]\nname = "x"\non = ["nope"]\n')
    with pytest.raises(RuleError):
        run_test(settings, write_events(tmp_path, event("print.failed")))


def test_rules_test_applies_pack_silences(tmp_path: Path) -> None:
    """Silences from the packs show as 'silenced' in the dry run."""
    pack = PACK + (
        "\n[[silence]]\nname = 'always'\nmatch = { rule = 'failed' }\n"
        "ends_at = 2100-01-01T00:00:00Z\n"
    )
    _, text = run_test(config(tmp_path, pack), write_events(tmp_path, event("print.failed")))
    assert "silenced" in text
    assert "by silence always" in text


LOG_ONLY_PACK = """
[[rule]]
name = "finished-log"
on = ["print.finished"]
notify = []
title = "{printer.name}: {print.name} finished"
text = "Took {print.elapsed} ({print.material})."
"""


def test_rules_test_reads_events_from_stdin(tmp_path: Path) -> None:
    """`rules test -` reads the events from standard input."""
    stdin = io.StringIO(json.dumps(event("print.failed")) + "\n")
    out = io.StringIO()
    assert rules_test(config(tmp_path), "-", out, stdin=stdin) == 0
    assert "-> failed firing to ops-slack" in out.getvalue()
    assert "summary: 1 events; 1 deliveries" in out.getvalue()


def test_rules_test_reports_stdin_problems_as_stdin(tmp_path: Path) -> None:
    """A bad line on standard input is named `<stdin>:N`."""
    out = io.StringIO()
    assert rules_test(config(tmp_path), "-", out, stdin=io.StringIO("nope\n")) == 1
    assert "<stdin>:1: not JSON" in out.getvalue()


def test_rules_test_accepts_mosquitto_sub_verbose_lines(tmp_path: Path) -> None:
    """Lines as `mosquitto_sub -v` prints them (topic, space, payload) are read as events."""
    path = tmp_path / "events.jsonl"
    path.write_text("printfleet/events/print/failed " + json.dumps(event("print.failed")) + "\n")
    code, text = run_test(config(tmp_path), path)
    assert code == 0
    assert "-> failed firing to ops-slack" in text


def test_rules_test_shows_title_and_text_of_log_only_rules(tmp_path: Path) -> None:
    """A log-only rule (notify = []) shows its rendered title and text, like a sent one."""
    events = write_events(tmp_path, event("print.finished"))
    code, text = run_test(config(tmp_path, LOG_ONLY_PACK), events)
    assert code == 0
    assert "finished-log  log-only" in text
    assert "title:    Printer Form4-A: crown-42 finished" in text
    assert "text:     Took 1h 02m (Grey V5)." in text
    assert "summary: 1 events; 1 log-only" in text
    assert "log-only: the rule matched; notify = [] sends nothing" in text


def test_rules_test_summary_explains_cancelled(tmp_path: Path) -> None:
    """A hold-down ended by its resolving event counts as cancelled, and the summary says why."""
    events = write_events(
        tmp_path,
        event("printer.offline", time=T0),
        event("printer.online", time=at(minutes=2)),
    )
    _, text = run_test(config(tmp_path), events)
    assert "offline  cancelled" in text
    summary = text[text.index("summary:") :]
    assert "1 cancelled" in summary
    assert "cancelled: a hold-down (`for`) was still waiting when the resolving event came" in (
        summary
    )


# -- silences -----------------------------------------------------------------------------------


def args(**values: Any) -> argparse.Namespace:
    defaults: dict[str, Any] = {"matchers": {}, "duration": None, "comment": None, "ids": []}
    defaults.update(values)
    return argparse.Namespace(**defaults)


def silence(settings: Settings, action: str, **values: Any) -> tuple[int, str]:
    out = io.StringIO()
    code = silence_command(settings, action, args(**values), out, now=values.pop("now", T0))
    return code, out.getvalue()


def stored(settings: Settings) -> Any:
    with Store.open(settings.daemon.state_dir / "state.sqlite3") as store:
        return store.load_state("silences")


def test_silence_add_persists_in_the_state_store(tmp_path: Path) -> None:
    """`silence add` stores an ad-hoc silence the daemon can read back."""
    settings = config(tmp_path)
    code, text = silence(
        settings,
        "add",
        matchers={"serial": "Form4-*"},
        duration=timedelta(hours=2),
        comment="tank change",
    )
    assert code == 0
    assert "until 2026-11-23T12:00:00Z" in text
    [loaded] = silences_from_state(stored(settings))
    assert loaded.match == {"serial": ("Form4-*",)}
    assert (loaded.starts_at, loaded.ends_at) == (T0, at(hours=2))
    assert loaded.comment == "tank change"
    assert loaded.active(at(hours=1))
    assert not loaded.active(at(hours=2))


def test_silence_list_shows_active_silences(tmp_path: Path) -> None:
    """`silence list` prints id, state, end and matchers."""
    settings = config(tmp_path)
    silence(settings, "add", matchers={"source": "lab"}, duration=timedelta(hours=1))
    code, text = silence(settings, "list")
    assert code == 0
    assert "active" in text
    assert "source=lab" in text
    assert "2026-11-23T11:00:00Z" in text


def test_silence_remove_ends_a_silence(tmp_path: Path) -> None:
    """`silence remove ID` deletes it from the store."""
    settings = config(tmp_path)
    silence(settings, "add", matchers={"source": "lab"})
    [added] = silences_from_state(stored(settings))
    code, _text = silence(settings, "remove", ids=[added.id])
    assert code == 0
    assert silences_from_state(stored(settings)) == ()


def test_silence_remove_unknown_id_fails(tmp_path: Path) -> None:
    """Removing an id that does not exist exits 1 and says how to find ids."""
    code, text = silence(config(tmp_path), "remove", ids=["nope"])
    assert code == 1
    assert "no silence with id 'nope'" in text


def test_silence_add_rejects_unknown_fields(tmp_path: Path) -> None:
    """A matcher on an unknown field exits 2 with a suggestion."""
    code, text = silence(config(tmp_path), "add", matchers={"serail": "X"})
    assert code == 2
    assert "did you mean 'serial'" in text


def test_expired_silences_are_pruned_on_add(tmp_path: Path) -> None:
    """Adding a silence drops the ones that already ended."""
    settings = config(tmp_path)
    silence(settings, "add", matchers={"source": "a"}, duration=timedelta(minutes=5))
    silence(settings, "add", matchers={"source": "b"}, now=at(hours=1))
    assert [s.match["source"] for s in silences_from_state(stored(settings))] == [("b",)]


def test_silence_list_columns_fit_long_matchers_and_comments(tmp_path: Path) -> None:
    """A long matcher or comment is cut with an ellipsis; every row keeps the header's columns."""
    settings = config(tmp_path)
    long_serial = "Form4-" + "VeryLongSerialNumber" * 5
    silence(settings, "add", matchers={"source": "lab"}, comment="short")
    silence(
        settings,
        "add",
        matchers={"source": "production-floor-east", "serial": long_serial},
        comment="replacing the tank\nand the cartridge " + "x" * 200,
    )
    _, text = silence(settings, "list")
    header, *rows = text.splitlines()
    assert len(rows) == 2
    match_at, comment_at = header.index("MATCH"), header.index("COMMENT")
    for row in rows:
        assert row[match_at - 2 : match_at] == "  "  # the column starts where its header does
        assert row[match_at] != " "
        assert row[comment_at - 2 : comment_at] == "  "
    long_row = rows[1]
    assert long_serial not in long_row
    assert "…" in long_row[match_at:comment_at]
    assert long_row.endswith("…")
    assert len(long_row) <= comment_at + 60
    assert "replacing the tank and the cartridge" in long_row  # the line break became a space


def test_silence_list_columns_shrink_to_short_content(tmp_path: Path) -> None:
    """With short matchers the table is narrow: no fixed 40-character MATCH column."""
    settings = config(tmp_path)
    silence(settings, "add", matchers={"source": "lab"}, comment="tank change")
    _, text = silence(settings, "list")
    header, row = text.splitlines()
    assert header.index("COMMENT") - header.index("MATCH") == len("source=lab") + 2
    assert row.endswith("source=lab  tank change")


def test_rules_test_shows_held_notifications_and_their_summary(tmp_path: Path) -> None:
    """A hold silence shows 'held' for the event and the summary at the window's end."""
    pack = PACK + ("\n[[silence]]\nname = 'night'\nschedule = 'Mon 09:00-Mon 18:00'\nhold = true\n")
    _, text = run_test(config(tmp_path, pack), write_events(tmp_path, event("print.failed")))
    assert "held" in text
    assert "by silence night until it ends" in text
    assert "[end of events, hold silences end] 2026-11-23T18:00:00Z" in text
    assert "-> silence night summary to ops-slack" in text
    assert "1 notification held during quiet hours (night)" in text
