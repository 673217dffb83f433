"""Every wire format as the ecosystem's own validators see it, for ordinary and hostile text.

The validators (``tests/ecosystem.py``): the ``cloudevents`` SDK, ``slack_sdk`` block models,
the official Adaptive Cards 1.4.0 JSON schema, Discord's documented limits.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.ecosystem import (
    cloudevent_problems,
    discord_problems,
    slack_problems,
    teams_problems,
)

from printfleet.core.events import (
    Change,
    ChangeEvent,
    EventType,
    Severity,
    encode_event,
    json_bytes,
    to_cloudevent,
)
from printfleet.core.model import (
    Print,
    Printer,
    PrinterStatus,
    PrintStatus,
    Queue,
    Snapshot,
    Vendor,
)
from printfleet.core.queues import queue_events
from printfleet.core.thresholds import DiffSettings
from printfleet.sinks.formats import (
    discord_message,
    notice,
    render,
    slack_message,
    teams_message,
)

T0 = datetime(2026, 11, 23, 10, 15, 2, tzinfo=UTC)

MENTIONS = ("<!channel>", "<@U024BE7LH>", "<https://x|y>", "@everyone", "@here", "<@123>")


def make_event(
    text: str = "Beaver",
    *,
    serial: str = "Form4-CapableBeaver",
    event_type: EventType = EventType.PRINT_FAILED,
) -> ChangeEvent:
    """A print.failed event whose vendor strings (names, message, status text) are ``text``."""
    printer = Printer(
        serial=serial,
        name=text,
        vendor=Vendor.FORMLABS,
        model=text,
        model_code="FORM-4-0",
        status=PrinterStatus.ERROR,
        status_raw=text,
        online=True,
        group=text,
    )
    run = Print(
        id="p-1",
        name=text,
        status=PrintStatus.FAILED,
        status_raw="ERROR",
        message=text,
    )
    return ChangeEvent(
        id="e-1",
        type=event_type,
        source="lab",
        vendor=Vendor.FORMLABS,
        subject=serial,
        time=T0,
        severity=Severity.CRITICAL,
        printer=printer,
        print=run,
        changes={"status": Change(PrinterStatus.PRINTING, PrinterStatus.ERROR)},
        details={"alert": text},
    )


def payload_for(event: ChangeEvent, **overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {"event": to_cloudevent(event), "status": "firing"}
    payload.update(overrides)
    return payload


def all_problems(payload: dict[str, Any]) -> dict[str, list[str]]:
    """Each format rendered and checked by its validator, as the sink would send it."""
    found = {
        "webhook": cloudevent_problems(render("webhook", payload)[0]),
        "slack": slack_problems(json.loads(render("slack", payload)[0])),
        "teams": teams_problems(json.loads(render("teams", payload)[0])),
        "discord": discord_problems(json.loads(render("discord", payload)[0])),
    }
    return {kind: problems for kind, problems in found.items() if problems}


@pytest.mark.parametrize("event_type", list(EventType))
def test_every_event_type_passes_every_validator(event_type: EventType) -> None:
    """Each event type, bare and as a rule-rendered resolved group, validates in every format."""
    event = make_event(event_type=event_type)
    assert all_problems(payload_for(event)) == {}
    grouped = payload_for(
        event,
        status="resolved",
        rule="r",
        title="Beaver: *done*",
        text="line 1\n- line 2",
        group={"count": 40, "subjects": [f"printer-{i}" for i in range(35)]},
    )
    assert all_problems(grouped) == {}


def test_teams_card_declares_1_4_and_uses_no_1_5_property() -> None:
    """The card says version 1.4 and carries nothing the 1.4 schema rejects (no heading style)."""
    card = teams_message(payload_for(make_event()))["attachments"][0]["content"]
    assert card["version"] == "1.4"
    assert "heading" not in json.dumps(card)
    assert teams_problems(teams_message(payload_for(make_event()))) == []


@pytest.mark.parametrize("mention", MENTIONS)
def test_slack_mentions_in_vendor_text_are_escaped_everywhere(mention: str) -> None:
    """A printer or print named like a mention cannot ping: escaped in text, fallback, blocks."""
    msg = slack_message(payload_for(make_event(mention)))
    assert slack_problems(msg) == []
    parsed = [msg["text"], msg["attachments"][0]["fallback"]]
    blocks = msg["attachments"][0]["blocks"]
    parsed += [b["text"]["text"] for b in blocks if b["type"] == "section"]
    parsed += [e["text"] for b in blocks if b["type"] == "context" for e in b["elements"]]
    for text in parsed:
        assert "<" not in text
        assert ">" not in text
    assert mention.replace("<", "&lt;").replace(">", "&gt;") in msg["text"]


def test_slack_top_level_text_of_a_rule_title_is_escaped() -> None:
    """A rule title rendering ``<!channel>`` reaches Slack's top-level text escaped."""
    msg = slack_message(payload_for(make_event(), title="<!channel> & <@U024BE7LH>"))
    assert msg["text"].startswith("&lt;!channel&gt; &amp; &lt;@U024BE7LH&gt;")


@pytest.mark.parametrize("mention", MENTIONS)
def test_discord_mentions_in_vendor_text_show_literally_and_ping_nobody(mention: str) -> None:
    """Mentions are escaped or broken in every embed text and allowed_mentions parses nothing."""
    msg = discord_message(payload_for(make_event(mention)))
    assert discord_problems(msg) == []
    embed = msg["embeds"][0]
    texts = [embed["title"], embed.get("description", ""), *(f["value"] for f in embed["fields"])]
    for text in texts:
        assert "@everyone" not in text
        assert "@here" not in text
        assert "<" not in text.replace("\\<", "")
    assert msg["allowed_mentions"] == {"parse": []}


def test_discord_markdown_in_vendor_text_is_escaped() -> None:
    """Masked links, bold and headings from a vendor string are shown, not rendered."""
    msg = discord_message(payload_for(make_event("# **[free](https://evil.example)**")))
    title = "\\# \\*\\*\\[free\\]\\(https://evil.example\\)\\*\\*: print failed"
    assert msg["embeds"][0]["title"] == title


def test_teams_markdown_in_vendor_text_is_escaped() -> None:
    """Links, emphasis and list markers in vendor text are escaped in TextBlocks and facts."""
    card = teams_message(payload_for(make_event("- *x* [y](https://evil.example)")))
    content = card["attachments"][0]["content"]
    heading = content["body"][0]["items"][0]["text"]
    assert heading == "\\- \\*x\\* \\[y\\](https://evil.example): print failed"
    facts = {f["title"]: f["value"] for f in content["body"][-1]["facts"]}
    assert facts["Print"] == "\\- \\*x\\* \\[y\\](https://evil.example)"


HOSTILE = {
    "100k ascii": "x" * 100_000,
    "100k astral": "😀" * 100_000,
    "100k lone surrogates": "\ud800" * 100_000,
    "100k controls": "\x00\x01\x1b\x7f\x85" * 20_000,
    "100k backslashes": "\\" * 100_000,
    "100k ampersands": "&" * 100_000,
    "100k stars": "*" * 100_000,
    "10k mentions": "<!channel>@everyone" * 10_000,
    "100k newlines": "\n- " * 33_334,
    "mixed": "a\ud800b\x00c😀<&>*_[]\\" * 7_000,
}


@pytest.mark.parametrize("text", list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_vendor_strings_stay_valid_and_within_limits(text: str) -> None:
    """100k-character names of any code point render valid bodies in every format."""
    event = make_event(text, serial=text[:70_000])
    payload = payload_for(
        event, title=text, text=text, group={"count": 300, "subjects": [text] * 300}
    )
    assert all_problems(payload) == {}
    assert all_problems(payload_for(event)) == {}


# Any code point, lone surrogates and controls included (hypothesis leaves surrogates out by
# default), short and long.
_any_char = st.one_of(
    st.characters(codec=None, categories=None, exclude_categories=()),
    st.sampled_from(["\ud800", "\udfff", "\x00", "\x85", "<", "&", "\\", "*", "@"]),
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.text(_any_char, min_size=1, max_size=400),
    text=st.text(_any_char, max_size=5000),
    subjects=st.lists(st.text(_any_char, min_size=1, max_size=100), max_size=60),
    resolved=st.booleans(),
)
def test_any_code_point_renders_valid_bodies(
    name: str, text: str, subjects: list[str], resolved: bool
) -> None:
    """Whatever vendors and rules put in, every format passes its validator."""
    event = make_event(name, serial=name)
    payload = payload_for(
        event,
        status="resolved" if resolved else "firing",
        title=name,
        text=text,
        group={"count": len(subjects), "subjects": subjects} if subjects else None,
    )
    assert all_problems(payload) == {}


def test_lone_surrogate_serial_keeps_its_exact_value_in_the_cloudevent() -> None:
    """A serial with a lone surrogate encodes as valid UTF-8 JSON that reads back exactly."""
    event = make_event(serial="\ud800X")
    body = encode_event(event)
    body.decode("utf-8")  # valid UTF-8, or this raises
    assert json.loads(body)["subject"] == "\ud800X"
    assert cloudevent_problems(body) == []
    assert render("webhook", payload_for(event))[0] == body


def test_json_bytes_is_plain_utf8_json_for_ordinary_text() -> None:
    """Without surrogates the bytes are exactly compact ``json.dumps`` in UTF-8."""
    value = {"a": "Grün ✓ 😀", "b": [1, None, "\n"]}
    expected = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    assert json_bytes(value) == expected


def test_an_empty_subject_is_left_out_of_the_cloudevent() -> None:
    """CloudEvents forbids an empty ``subject``; an event without one omits the attribute."""
    event = make_event(serial="")
    assert "subject" not in to_cloudevent(event)
    assert cloudevent_problems(encode_event(event)) == []


def test_queue_events_without_a_printer_validate_and_name_the_group() -> None:
    """A Formlabs group's queue.backlog has no printer: the notice names the group."""
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    queue = Queue("3f6c2a1e", "Prototyping Lab", 1, ("A",), t0 - timedelta(hours=1), t0)
    later = Queue("3f6c2a1e", "Prototyping Lab", 12, ("A",), t0 - timedelta(hours=1), t0)
    before = Snapshot("lab", Vendor.FORMLABS, t0, {}, queues={queue.key: queue})
    after = Snapshot("lab", Vendor.FORMLABS, t0, {}, queues={later.key: later})
    (event,) = queue_events(before, after, DiffSettings())
    payload = payload_for(event)
    assert all_problems(payload) == {}
    shown = notice(payload)
    assert shown.title == "Prototyping Lab: queue backlog"
    assert shown.text == "jobs queued: 12, oldest since 2025-12-31T23:00:00Z"
