"""Loading rule packs: shipped packs load, and every mistake is reported with file, line, key."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import structlog
from test_rules_support import T0, at, event

from printfleet.config import ReceiverConfig, RulesConfig, Settings
from printfleet.core.rules.engine import RuleEngine
from printfleet.core.rules.model import RuleSet
from printfleet.errors import Problem, RuleError
from printfleet.rulepacks.loader import load_pack_text, load_rule_set, silences_from_state

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = sorted((ROOT / "rules").glob("*.toml"))
RECEIVERS = ("ops-slack", "mes")


def settings(*packs: str, timezone: str = "UTC") -> Settings:
    return Settings(
        receiver=tuple(
            ReceiverConfig(name=name, kind="slack", url="https://example.invalid/hook")
            for name in RECEIVERS
        ),
        rules=RulesConfig(packs=packs, timezone=timezone),
    )


def problems_of(text: str, file: str = "pack.toml") -> list[Problem]:
    with pytest.raises(RuleError) as info:
        load_pack_text(text, file, receivers=RECEIVERS)
    return info.value.problems


def only_problem(text: str) -> Problem:
    [problem] = problems_of(text)
    return problem


# -- shipped packs ------------------------------------------------------------------------------


def test_the_shipped_packs_exist() -> None:
    """default, slack, home-assistant and dental-lab packs are shipped in rules/."""
    assert {p.stem for p in SHIPPED} >= {"default", "slack", "home-assistant", "dental-lab"}


@pytest.mark.parametrize("pack", SHIPPED, ids=lambda p: p.name)
def test_each_shipped_pack_loads(pack: Path) -> None:
    """Every shipped pack loads against the receivers config.example.toml defines."""
    rule_set = load_rule_set(settings(str(pack)))
    assert rule_set.rules
    assert rule_set.packs == (str(pack),)


@pytest.mark.parametrize("pack", SHIPPED, ids=lambda p: p.name)
def test_each_shipped_pack_documents_itself(pack: Path) -> None:
    """Each pack starts with a header comment naming it and every rule has a description."""
    text = pack.read_text()
    assert text.startswith(f"# printfleet — {pack.name}:")
    rule_set = load_rule_set(settings(str(pack)))
    assert all(rule.description for rule in rule_set.rules)


def test_all_shipped_packs_load_together_from_the_example_config() -> None:
    """config.example.toml's receivers satisfy all shipped packs loaded at once (unique names)."""
    example = tomllib.loads((ROOT / "config.example.toml").read_text())
    receivers = tuple(ReceiverConfig(**r) for r in example["receiver"])
    config = Settings(receiver=receivers, rules=RulesConfig(packs=("rules/*.toml",)))
    rule_set = load_rule_set(config, base_dir=ROOT)
    assert len(rule_set.packs) == len(SHIPPED)
    assert len({r.name for r in rule_set.rules}) == len(rule_set.rules)


def test_dental_quiet_hours_silence_the_night_but_not_failures() -> None:
    """In the dental pack, resin-low is silenced at night; failed prints are not."""
    rule_set = load_rule_set(settings(str(ROOT / "rules" / "dental-lab.toml")))
    eng = RuleEngine(rule_set)
    night = T0.replace(hour=23)  # Monday 23:00 UTC, 00:00 in Berlin
    assert eng.process(event("material.low"), night) == []
    assert [d.sink for d in eng.process(event("print.failed"), night)] == ["ops-slack", "mes"]
    day = T0.replace(hour=10)
    assert eng.process(event("material.low"), day)


# -- what loads -----------------------------------------------------------------------------------


FULL_RULE = """
[[rule]]
name = "offline"
description = "printers offline"
on = ["printer.offline"]
when = "printer.group == 'Dental'"
for = "10m"
throttle = "1h"
repeat = "4h"
resolve = true
severity = "critical"
notify = ["ops-slack", "mes"]
mqtt = { topic = "lab/{printer.serial}/offline", retain = true, qos = 2 }
title = "{printer.name} offline"
text = "since {time}"
group_by = ["source", "printer.group"]
group_wait = "45s"
group_title = "{group.count} offline"
group_text = "{group.subjects}"
"""


def test_a_rule_with_every_key_loads() -> None:
    """All documented keys are accepted and land in the Rule."""
    [loaded] = load_pack_text(FULL_RULE, "p.toml", receivers=RECEIVERS).rules
    assert loaded.name == "offline"
    assert loaded.line == 2
    assert loaded.types == frozenset({"printer.offline"})
    assert (loaded.hold, loaded.throttle, loaded.repeat) == (
        timedelta(minutes=10),
        timedelta(hours=1),
        timedelta(hours=4),
    )
    assert loaded.resolve
    assert loaded.notify == ("ops-slack", "mes")
    assert loaded.mqtt is not None
    assert (loaded.mqtt.retain, loaded.mqtt.qos) == (True, 2)
    assert loaded.group_by == ("source", "printer.group")
    assert loaded.group_wait == timedelta(seconds=45)


def test_notify_may_be_omitted_for_log_only_rules() -> None:
    """A rule without notify loads and notifies nobody."""
    [loaded] = load_pack_text('[[rule]]\nname = "x"\non = "print.*"\n', "p.toml").rules
    assert loaded.notify == ()
    assert loaded.on == ("print.*",)


def test_group_wait_defaults_to_30_seconds() -> None:
    """group_by without group_wait waits 30 s."""
    text = '[[rule]]\nname = "g"\non = ["printer.offline"]\nnotify = ["mes"]\n'
    text += 'group_by = ["source"]\n'
    [loaded] = load_pack_text(text, "p.toml", receivers=RECEIVERS).rules
    assert loaded.group_wait == timedelta(seconds=30)


def test_disabled_rules_are_validated_but_not_loaded() -> None:
    """`enabled = false` keeps a rule out of the set (its name stays reserved)."""
    text = '[[rule]]\nname = "off"\non = ["print.failed"]\nenabled = false\n'
    assert load_pack_text(text, "p.toml").rules == ()


def test_silences_load_with_the_default_time_zone() -> None:
    """A silence without timezone uses [rules].timezone."""
    pack = "[[silence]]\nmatch = { serial = 'Form4-*' }\nschedule = 'Sat 00:00-Mon 06:00'\n"
    silence = load_pack_text(pack, "p.toml", timezone="Europe/Berlin").silences[0]
    assert silence.timezone == "Europe/Berlin"
    assert silence.id == "p.toml#1"
    assert silence.match == {"serial": ("Form4-*",)}


def test_local_one_off_times_are_in_the_silence_time_zone() -> None:
    """A TOML local date-time in starts_at/ends_at is wall-clock time of the silence's zone."""
    pack = (
        "[[silence]]\nname = 'xmas'\ntimezone = 'Europe/Berlin'\n"
        "starts_at = 2026-12-24T18:00:00\nends_at = 2026-12-27T08:00:00\n"
    )
    silence = load_pack_text(pack, "p.toml").silences[0]
    assert silence.starts_at is not None
    assert silence.starts_at.utcoffset() == timedelta(hours=1)


# -- what is rejected -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key", "line", "message", "fix"),
    [
        (
            '[[rule]]\nname = "r"\non = ["print.failed"]\nnotify = ["ops-slak"]\n',
            "rule 'r'.notify",
            4,
            "unknown receiver 'ops-slak'",
            "did you mean 'ops-slack'?",
        ),
        (
            '[[rule]]\nname = "r"\non = ["print.failde"]\n',
            "rule 'r'.on",
            3,
            "unknown event type 'print.failde'",
            "",
        ),
        (
            '[[rule]]\nname = "r"\non = ["print.failed"]\nwhen = "printer.__class__"\n',
            "rule 'r'.when",
            4,
            "'__class__': names starting with '_' are not allowed at column 9",
            "field names",
        ),
        (
            '[[rule]]\nname = "r"\non = ["print.failed"]\ntitle = "{printer.nmae}"\n',
            "rule 'r'.title",
            4,
            "'printer' has no field 'nmae' at character 1",
            "did you mean 'name'?",
        ),
        (
            '[[rule]]\nname = "r"\non = ["print.failed"]\nnotfy = ["mes"]\n',
            "rule 'r'.notfy",
            4,
            "unknown key",
            "did you mean 'notify'?",
        ),
        (
            '[[rule]]\nname = "r"\non = ["print.failed"]\nnotify = ["mqtt"]\n',
            "rule 'r'.notify",
            4,
            "'mqtt' is not a receiver",
            "mqtt = { topic",
        ),
        (
            '[[rule]]\nname = "r"\non = ["print.finished"]\nrepeat = "1h"\n',
            "rule 'r'.repeat",
            4,
            "print.finished is never resolved",
            "add a when condition",
        ),
        (
            '[[rule]]\nname = "r"\non = ["print.failed"]\nfor = "ten minutes"\n',
            "rule 'r'.for",
            4,
            "invalid duration 'ten minutes'",
            "",
        ),
        (
            '[[rule]]\nname = "r"\non = ["print.failed"]\nseverity = "high"\n',
            "rule 'r'.severity",
            4,
            "unknown severity 'high'",
            "critical",
        ),
        (
            '[[rule]]\nname = "r"\non = ["print.failed"]\n[rule.mqtt]\ntopic = "a/#"\n',
            "rule 'r'.mqtt.topic",
            4,
            "cannot contain + or #",
            "",
        ),
        (
            '[[rule]]\nname = "r"\non = ["print.failed"]\nmqtt = { topic = "a", qos = 3 }\n',
            "rule 'r'.mqtt.qos",
            4,
            "must be 0, 1 or 2",
            "",
        ),
        (
            '[[rule]]\nname = "r"\non = ["print.failed"]\ngroup_wait = "1m"\n',
            "rule 'r'.group_wait",
            4,
            "group_wait without group_by",
            "",
        ),
        (
            '[[rule]]\nname = "r"\non = ["print.failed"]\nnotify = ["mes"]\n'
            'group_by = ["printr"]\n',
            "rule 'r'.group_by",
            5,
            "unknown name 'printr'",
            "",
        ),
        ('[[rule]]\non = ["print.failed"]\n', "rule #1.name", 1, "every rule needs a name", ""),
        ('[[rule]]\nname = "r"\n', "rule 'r'.on", 1, "missing", ""),
        ('[[rule]]\nname = "r"\non = [1]\n', "rule 'r'.on", 3, "must be a list of strings", ""),
        (
            '[[rule]]\nname = "r"\non = ["print.failed"]\nresolve = "yes"\n',
            "rule 'r'.resolve",
            4,
            "must be true or false",
            "",
        ),
        ("[rule]\nname = 'r'\n", "rule", None, "[rule] is a single table", "[[rule]]"),
        ("[[rules]]\nname = 'r'\n", "rules", None, "unknown top-level key", "did you mean 'rule'"),
        (
            "[[silence]]\nschedule = 'Sat 00:00-Mon 06:00'\ntimezone = 'Mars/Base'\n",
            "silence #1.timezone",
            3,
            "unknown time zone 'Mars/Base'",
            "",
        ),
        (
            "[[silence]]\nname = 'q'\nschedule = 'Funday 10:00-11:00'\n",
            "silence 'q'.schedule",
            3,
            "unknown day 'Funday'",
            "",
        ),
        (
            "[[silence]]\nmatch = { serail = 'x' }\nends_at = 2026-01-01T00:00:00Z\n",
            "silence #1.match",
            2,
            "unknown match field 'serail'",
            "",
        ),
        ("[[silence]]\nmatch = { serial = 'x' }\n", "silence #1.schedule", 1, "needs schedule", ""),
        (
            "[[silence]]\nschedule = '22:00-06:00'\ncoment = 'x'\n",
            "silence #1.coment",
            3,
            "unknown key",
            "did you mean 'comment'",
        ),
    ],
)
def test_problems_name_the_file_rule_key_line_and_fix(
    text: str, key: str, line: int | None, message: str, fix: str
) -> None:
    """Each kind of mistake is one problem naming file, line, rule, key, message and fix."""
    problem = only_problem(text)
    assert problem.file == "pack.toml"
    assert problem.key == key
    assert problem.line == line
    assert message in problem.message
    assert fix in problem.fix
    assert problem.fix


def test_toml_syntax_errors_name_the_line() -> None:
    """Invalid TOML is reported with the parser's line number."""
    problem = only_problem('[[rule]]\nname = "r"\non = ["print.failed" "x"]\n')
    assert problem.line == 3
    assert "not valid TOML" in problem.message


def test_all_problems_are_collected() -> None:
    """Every problem of every rule is reported at once, not just the first."""
    text = (
        '[[rule]]\nname = "a"\non = ["nope"]\nnotify = ["ghost"]\n'
        '[[rule]]\nname = "b"\non = ["print.failed"]\nwhen = "1 +"\ntitle = "{x}"\n'
    )
    problems = problems_of(text)
    assert [(p.key, p.line) for p in problems] == [
        ("rule 'a'.on", 3),
        ("rule 'a'.notify", 4),
        ("rule 'b'.when", 8),
        ("rule 'b'.title", 9),
    ]


def test_rule_names_are_unique_across_packs(tmp_path: Path) -> None:
    """The same rule name in two packs is an error naming where the first one is."""
    for name in ("a.toml", "b.toml"):
        (tmp_path / name).write_text('\n[[rule]]\nname = "same"\non = ["print.failed"]\n')
    with pytest.raises(RuleError) as info:
        load_rule_set(settings("*.toml"), base_dir=tmp_path)
    [problem] = info.value.problems
    assert problem.file == str(tmp_path / "b.toml")
    assert f"also at {tmp_path / 'a.toml'}:2" in problem.message


def test_problems_from_several_files_are_reported_together(tmp_path: Path) -> None:
    """A broken pack does not hide problems in the next one."""
    (tmp_path / "a.toml").write_text('[[rule]]\nname = "a"\non = ["nope"]\n')
    (tmp_path / "b.toml").write_text('[[rule]]\nname = "b"\non = ["print.failed"]\nx = 1\n')
    with pytest.raises(RuleError) as info:
        load_rule_set(settings("*.toml"), base_dir=tmp_path)
    assert [Path(p.file).name for p in info.value.problems] == ["a.toml", "b.toml"]


def test_problem_text_reads_well() -> None:
    """str(problem) is 'file:line: rule 'r'.key: message (fix: ...)'."""
    problem = only_problem('[[rule]]\nname = "r"\non = ["print.failed"]\nnotify = ["x"]\n')
    assert str(problem).startswith("pack.toml:4: rule 'r'.notify: unknown receiver 'x' (fix: ")


# -- files and globs ------------------------------------------------------------------------------


def test_relative_globs_are_relative_to_the_config_directory(tmp_path: Path) -> None:
    """Relative patterns in [rules] packs resolve against base_dir, in sorted order."""
    (tmp_path / "rules").mkdir()
    for name in ("b.toml", "a.toml"):
        (tmp_path / "rules" / name).write_text(
            f'[[rule]]\nname = "{name}"\non = ["print.failed"]\n'
        )
    rule_set = load_rule_set(settings("rules/*.toml"), base_dir=tmp_path)
    assert [r.name for r in rule_set.rules] == ["a.toml", "b.toml"]


def test_an_empty_glob_is_a_warning(tmp_path: Path) -> None:
    """A glob matching no file loads an empty set and logs a warning."""
    with structlog.testing.capture_logs() as logs:
        rule_set = load_rule_set(settings("none/*.toml"), base_dir=tmp_path)
    assert rule_set == RuleSet()
    assert logs[0]["event"] == "rules.no_packs_matched"
    assert logs[0]["log_level"] == "warning"


def test_a_missing_plain_path_is_an_error(tmp_path: Path) -> None:
    """A pattern without wildcards that names no file is an error with a fix."""
    with pytest.raises(RuleError) as info:
        load_rule_set(settings("missing.toml"), base_dir=tmp_path)
    [problem] = info.value.problems
    assert problem.key == "rules.packs"
    assert problem.message == "rule pack not found"


def test_extra_paths_are_loaded_after_the_configured_ones(tmp_path: Path) -> None:
    """extra_paths add packs (e.g. from the command line)."""
    extra = tmp_path / "extra.toml"
    extra.write_text('[[rule]]\nname = "extra"\non = ["print.failed"]\n')
    rule_set = load_rule_set(settings(), base_dir=tmp_path, extra_paths=[extra])
    assert [r.name for r in rule_set.rules] == ["extra"]


def test_a_broken_reload_leaves_the_running_engine_alone(tmp_path: Path) -> None:
    """A reload that fails raises RuleError before replace_rules, so the old rules keep working."""
    pack = tmp_path / "p.toml"
    pack.write_text('[[rule]]\nname = "r"\non = ["print.failed"]\nnotify = ["mes"]\n')
    eng = RuleEngine(load_rule_set(settings("p.toml"), base_dir=tmp_path))
    pack.write_text('[[rule]]\nname = "r"\non = ["print.failed"]\nnotify = ["gone"]\n')
    with pytest.raises(RuleError):
        eng.replace_rules(load_rule_set(settings("p.toml"), base_dir=tmp_path))
    assert [d.sink for d in eng.process(event("print.failed"), at(1))] == ["mes"]


def test_stored_adhoc_silences_are_read_leniently() -> None:
    """silences_from_state skips junk entries and reads valid ones."""
    stored = [
        {"id": "a", "match": {"serial": ["X"]}, "ends_at": "2026-01-01T00:00:00Z"},
        {"id": "b", "match": {"bogus": ["X"]}},
        "junk",
    ]
    assert [s.id for s in silences_from_state(stored)] == ["a"]
    assert silences_from_state(None) == ()


def test_a_silence_may_hold() -> None:
    """`hold = true` makes a hold silence; anything but a boolean names the key and line."""
    pack = "[[silence]]\nname = 'night'\nschedule = '22:00-06:00'\nhold = true\n"
    assert load_pack_text(pack, "p.toml").silences[0].hold is True
    assert load_pack_text(pack.replace("hold = true\n", ""), "p.toml").silences[0].hold is False
    problem = only_problem(pack.replace("hold = true", "hold = 'yes'"))
    assert (problem.key, problem.line, problem.message) == (
        "silence 'night'.hold",
        4,
        "must be true or false",
    )


def test_the_opt_in_phone_pack_loads_with_its_receivers() -> None:
    """rules/opt-in/phone.toml loads with a "phone" receiver: failures ring at night, an
    offline printer is held for the 06:00 summary."""
    pack = ROOT / "rules" / "opt-in" / "phone.toml"
    assert pack.read_text().startswith("# printfleet — phone.toml:")
    config = Settings(
        receiver=(ReceiverConfig(name="phone", kind="apprise", url="ntfys://ntfy.sh/printers"),),
        rules=RulesConfig(packs=(str(pack),)),
    )
    rule_set = load_rule_set(config)
    assert all(rule.description for rule in rule_set.rules)
    assert [s.hold for s in rule_set.silences] == [True]
    eng = RuleEngine(rule_set)
    night = T0.replace(hour=23)  # Monday 23:00 UTC, 00:00 in Berlin
    assert [d.sink for d in eng.process(event("print.failed"), night)] == ["phone"]
    eng.process(event("printer.offline"), night)
    assert eng.tick(night + timedelta(minutes=15)) == []  # held
    [summary] = eng.tick(datetime(2026, 11, 24, 5, 0, tzinfo=UTC))  # 06:00 Berlin
    assert summary.payload["title"] == "1 notification held during quiet hours (phone-night)"


def test_the_opt_in_phone_pack_rings_for_printer_errors_but_not_for_every_print_end() -> None:
    """An alert such as "waiting for resolution" rings the phone; the two alerts every print
    ends with (parts left on the platform, not ready until then) do not."""
    pack = ROOT / "rules" / "opt-in" / "phone.toml"
    config = Settings(
        receiver=(ReceiverConfig(name="phone", kind="apprise", url="ntfys://ntfy.sh/printers"),),
        rules=RulesConfig(packs=(str(pack),)),
    )
    eng = RuleEngine(load_rule_set(config))
    noon = T0.replace(hour=11)  # 12:00 Berlin: outside the hold window
    raised = {"alert": "waiting for resolution", "state": "raised"}
    assert [d.sink for d in eng.process(event("printer.alert", details=raised), noon)] == ["phone"]
    for alert in ("parts on build platform", "not ready to print"):
        details = {"alert": alert, "state": "raised"}
        assert eng.process(event("printer.alert", "Form4-B", details=details), noon) == []


def test_the_opt_in_phone_pack_is_not_among_the_default_packs() -> None:
    """The default glob (rules/*.toml) does not pick it up: the example config lacks "phone"."""
    assert all(p.parent.name == "rules" for p in SHIPPED)
