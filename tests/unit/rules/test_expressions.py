"""`when` expressions and templates: what they can do, and every escape rejected at load."""

from __future__ import annotations

import ast
from typing import Any

import pytest
from test_rules_support import event

from printfleet.core.rules.names import event_names
from printfleet.rulepacks.errors import ExpressionError
from printfleet.rulepacks.templates import compile_template
from printfleet.rulepacks.when import compile_when

NAMES = event_names(
    event(
        "print.failed",
        details={"alert": "Tank missing", "milestone": 0.5},
        changes={"status": ("PRINTING", "IDLE")},
    )
)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("printer.group == 'Dental'", True),
        ("printer.group != 'Dental'", False),
        ("type == 'print.failed' and source == 'lab'", True),
        ("type in ['print.failed', 'print.aborted']", True),
        ("type not in ('print.finished',)", True),
        ("print.progress >= 0.4 and print.progress < 0.5", True),
        ("print.progress * 100 > 40", True),
        ("print.elapsed_s > duration('1h')", True),
        ("changes.status.from == 'PRINTING' and changes.status.to == 'IDLE'", True),
        ("printer.raw.status_message.startswith('Resin')", True),
        ("printer.raw['status_message'].lower() == 'resin tank missing'", True),
        ("lower(printer.name) == 'printer form4-a'", True),
        ("upper(vendor) == 'FORMLABS'", True),
        ("startswith(subject, 'Form4')", True),
        ("glob(subject, 'Form?-*')", True),
        ("'Tank' in alert", True),
        ("milestone == 0.5", True),
        ("len(printer.alerts) == 0", True),
        ("any([printer.online, False])", True),
        ("all([printer.online, False])", False),
        ("max(1, print.progress) == 1", True),
        ("round(print.progress, 1) == 0.4", True),
        ("'x' if printer.online else 'y'", True),
        ("not printer.online", False),
        ("print.elapsed == '1h 02m'", True),
        ("data.severity == severity", True),
        ("2 ** 10 == 1024", True),
    ],
)
def test_expressions_evaluate_over_the_envelope(source: str, expected: bool) -> None:
    """Allowed expressions see the event's names with dotted access into its dicts."""
    assert compile_when(source)(NAMES) is expected


@pytest.mark.parametrize(
    "source",
    [
        "printer.raw.nope == 'x'",
        "printer.tank.layers_printed > 1000",
        "print.progress > 0.5",
        "data.whatever.deeper == 1",
        "printer.raw.missing.startswith('x')",
        "'x' in printer.raw.missing",
        "len(printer.raw.missing) > 1",
        "print.remaining_s + 10 > 5",
        "glob(printer.raw.missing, '*')",
    ],
)
def test_missing_values_are_none_not_errors(source: str) -> None:
    """A missing key evaluates to None: comparisons and calls on it are false, not crashes."""
    names = event_names(event("printer.offline", with_print=False))
    assert compile_when(source)(names) is False


@pytest.mark.parametrize(
    "source",
    [
        "printer.name + 1 == 2",
        "printer.name * printer.queue_length == 'x'",
        "print.name * 3 == 'x'",
        "-printer.name == 1",
        "printer.raw % 2 == 0",
    ],
)
def test_runtime_type_errors_propagate_for_counting(source: str) -> None:
    """Nonsense on data (adding to a name, repeating a string) raises instead of building
    anything, so the engine can count it as a rule error."""
    with pytest.raises(TypeError):
        compile_when(source)({**NAMES, "printer": {**NAMES["printer"], "queue_length": 10**6}})


def test_expression_is_parsed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Evaluating a compiled expression never parses it again."""
    compiled = compile_when("printer.group == 'Dental'")

    def no_parse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("parsed again")

    monkeypatch.setattr(ast, "parse", no_parse)
    assert compiled(NAMES) is True


@pytest.mark.parametrize(
    ("source", "message", "column"),
    [
        ("printer.__class__", "'__class__': names starting with '_' are not allowed", 9),
        ("print.__globals__ == 1", "'__globals__': names starting with '_'", 7),
        ("__builtins__", "'__builtins__': names starting with '_'", 1),
        ("__import__('os')", "'__import__': names starting with '_'", 1),
        ("printer.raw['__class__']", "'__class__': keys starting with '_'", 13),
        ("'{0.__class__}'.format(printer)", "method 'format' is not allowed (format strings", 17),
        ("'{x}'.format_map(printer)", "method 'format_map' is not allowed", 7),
        ("f'{printer.__class__}' == 'x'", "f-strings are not allowed", 1),
        ("f'{printer}' == 'x'", "f-strings are not allowed", 1),
        ("'%s' % printer", "'%' formatting is not allowed", 1),
        ("2 ** 1000000 > 1", "the exponent of ** must be a number up to 100", 1),
        ("9 ** 9 ** 9 > 1", "the exponent of ** must be a number up to 100", 1),
        ("(9 ** 99) ** 99 > 1", "nested ** is not allowed", 1),
        ("print.progress ** printer.queue_length > 1", "the exponent of ** must be", 1),
        ("'a' * 100000000 == 'a'", "multiplying strings or lists is not allowed", 1),
        ("[1] * 100000000 == [1]", "multiplying strings or lists is not allowed", 1),
        ("lambda: 1", "lambda is not allowed", 1),
        ("[x for x in printer.alerts]", "comprehensions are not allowed", 1),
        ("any(x for x in printer.alerts)", "comprehensions are not allowed", 4),
        ("{k: 1 for k in printer}", "comprehensions are not allowed", 1),
        ("(x := 1)", "':=' is not allowed", 2),
        ("printer.alerts[0:100000]", "only constant keys may be used in [...]", 1),
        ("printer.raw[printer.name]", "only constant keys may be used in [...]", 1),
        ("open('/etc/passwd')", "unknown function 'open'", 1),
        ("eval('1')", "unknown function 'eval'", 1),
        ("getattr(printer, 'x')", "unknown function 'getattr'", 1),
        ("printer.name.replace('a', 'b')", "method 'replace' is not allowed", 14),
        ("lower(x=printer.name)", "keyword arguments are not allowed", 1),
        ("lower(*printer.alerts)", "'*' unpacking is not allowed", 7),
        ("{'a': 1} == printer", "dict literals are not allowed", 1),
        ("import os", "syntax error", 1),
        ("printer.group = 'x'", "syntax error", None),
        ("printer.group == 'Dental'; 1", "syntax error", None),
        ("1 << 100000", "'<<' is not allowed", 1),
        ("lower == 'x'", "'lower' is a function", 1),
        ("b'x' == printer.name", "bytes constants are not allowed", 1),
    ],
)
def test_escapes_are_rejected_at_load_time(source: str, message: str, column: int | None) -> None:
    """Each known escape or resource trick is refused by compile_when with a position."""
    with pytest.raises(ExpressionError) as info:
        compile_when(source)
    assert message in str(info.value)
    if column is not None:
        assert info.value.position == column
    assert info.value.fix


@pytest.mark.parametrize(
    ("source", "message", "fix"),
    [
        ("foo == 1", "unknown name 'foo'", "data.foo"),
        ("printer.nmae == 'x'", "'printer' has no field 'nmae'", "did you mean 'name'"),
        ("print.progres > 0.5", "'print' has no field 'progres'", "did you mean 'progress'"),
        ("printer.name.first == 'x'", "'printer.name' is a plain value", ""),
        ("true", "unknown name 'true'", "write True"),
        ("lowr(printer.name) == 'x'", "unknown function 'lowr'", "did you mean 'lower'"),
        ("len() == 0", "len() takes 1 argument(s), got 0", ""),
        ("", "empty expression", ""),
        ("x" * 3000, "longer than 2000 characters", ""),
        ("print.elapsed_s > duration('soon')", "invalid duration 'soon'", "duration('90m')"),
    ],
)
def test_mistakes_are_explained(source: str, message: str, fix: str) -> None:
    """Typos get a message naming the problem and a fix with a suggestion."""
    with pytest.raises(ExpressionError) as info:
        compile_when(source)
    assert message in str(info.value)
    assert fix in info.value.fix


def test_multiline_expression_reports_line_and_column() -> None:
    """An error on the second line of a multi-line `when` names that line and column."""
    with pytest.raises(ExpressionError, match="at line 2, column 13"):
        compile_when("printer.group == 'Dental'\nand printer.__class__")


def test_multiline_expressions_are_allowed() -> None:
    """A `when` written over several lines (TOML multi-line string) evaluates normally."""
    assert compile_when("printer.group == 'Dental'\n  and print.progress > 0.4\n")(NAMES)


@pytest.mark.parametrize("word", ["from", "in", "is", "not", "class"])
def test_keyword_field_names_are_reachable(word: str) -> None:
    """Fields named like Python keywords (changes.status.from) work with dotted access."""
    names = {"changes": {"status": {word: "PRINTING"}}}
    assert compile_when(f"changes.status.{word} == 'PRINTING'")(names) is True


# -- templates --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "rendered"),
    [
        ("{printer.name}: {print.name} failed", "Printer Form4-A: crown-42 failed"),
        ("{print.progress:.0%}", "42%"),
        ("{print.progress:.2f}", "0.42"),
        ("{print.elapsed} elapsed, {print.remaining} left", "1h 02m elapsed, 30m 00s left"),
        ("{changes.status.from} -> {changes.status.to}", "PRINTING -> IDLE"),
        ("{printer.raw.status_message}", "Resin tank missing"),
        ("{printer.raw.nothing_here}", "—"),
        ("{printer.tank.serial}", "—"),
        ("{printer.online}", "yes"),
        ("{printer.alerts}", ""),
        ("{alert} / {milestone:.0%}", "Tank missing / 50%"),
        ("{printer.name:>20}", "     Printer Form4-A"),
        ("{printer.name:.0%}", "Printer Form4-A"),
        ("{{literal}} {source}", "{literal} lab"),
        ("{group.count}", "—"),
        ("no fields", "no fields"),
    ],
)
def test_templates_render_fields_and_specs(text: str, rendered: str) -> None:
    """Templates render dotted fields, format specs, and '—' for missing values."""
    assert compile_template(text)(NAMES) == rendered


@pytest.mark.parametrize(
    ("text", "message", "position"),
    [
        ("{0}", "empty or numbered {} field", 1),
        ("x {}", "empty or numbered {} field", 3),
        ("{printer.name!r}", "conversion '!r' is not allowed", 1),
        ("{printer.name!s}", "conversion '!s' is not allowed", 1),
        ("{printer[name]}", "indexing 'printer[name]' is not allowed", 1),
        ("{printer.__class__}", "'__class__': names starting with '_'", 1),
        ("{printer.__class__.__init__.__globals__}", "names starting with '_'", 1),
        ("{print.raw._secret}", "'_secret': names starting with '_'", 1),
        ("hello {foo}", "unknown name 'foo'", 7),
        ("{printer.nmae}", "'printer' has no field 'nmae'", 1),
        ("{print.progress:{width}}", "nested fields in a format spec", 1),
        ("{print.progress:99999999}", "invalid format spec ':99999999'", 1),
        ("{print.progress:!!}", "invalid format spec", 1),
        ("{printer.name", "invalid template", None),
        ("oops }", "invalid template", None),
        ("{printer. name}", "invalid field 'printer. name'", 1),
    ],
)
def test_bad_templates_are_rejected(text: str, message: str, position: int | None) -> None:
    """Templates allow only dotted fields of the envelope with simple specs."""
    with pytest.raises(ExpressionError) as info:
        compile_template(text)
    assert message in str(info.value)
    assert info.value.position == position
    assert info.value.fix


def test_group_names_are_known_to_templates() -> None:
    """`{group.count}` renders in grouped notifications."""
    assert compile_template("{group.count} down")({**NAMES, "group": {"count": 3}}) == "3 down"


def test_long_values_are_truncated() -> None:
    """A huge vendor value cannot blow up a message."""
    names = {**NAMES, "printer": {"raw": {"blob": "x" * 100_000}}}
    assert len(compile_template("{printer.raw.blob}")(names)) == 1000


@pytest.mark.parametrize(
    ("value", "topic"),
    [("Form4-A", "lab/Form4-A/alerts"), ("a/b+c#d e", "lab/a_b_c_d_e/alerts"),
     (None, "lab/unknown/alerts")],
)  # fmt: skip
def test_topic_templates_make_values_topic_safe(value: str | None, topic: str) -> None:
    """Values substituted into a topic cannot add levels or wildcards."""
    template = compile_template("lab/{printer.serial}/alerts", topic=True)
    assert template({"printer": {"serial": value}}) == topic


@pytest.mark.parametrize("text", ["lab/+/x", "lab/#", "/lab/{subject}", "lab//{subject}", " "])
def test_invalid_topics_are_rejected(text: str) -> None:
    """Topic templates with wildcards or empty levels are load errors."""
    with pytest.raises(ExpressionError, match="MQTT topic"):
        compile_template(text, topic=True)
