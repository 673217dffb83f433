"""Webhook wire formats: generic CloudEvent bytes, Slack, Teams and Discord shapes and limits."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from printfleet.core.events import ChangeEvent, EventType, Severity, encode_event, to_cloudevent
from printfleet.core.model import Print, Printer, PrinterStatus, PrintStatus, Vendor
from printfleet.sinks import formats
from printfleet.sinks.formats import (
    DISCORD_DESCRIPTION_MAX,
    DISCORD_EMBED_TOTAL_MAX,
    DISCORD_FIELD_VALUE_MAX,
    DISCORD_FIELDS_MAX,
    DISCORD_TITLE_MAX,
    SLACK_BLOCKS_MAX,
    SLACK_CONTEXT_MAX,
    SLACK_HEADER_MAX,
    SLACK_SECTION_MAX,
    discord_message,
    notice,
    render,
    slack_message,
    teams_message,
    truncate,
)

T0 = datetime(2026, 11, 23, 10, 15, 2, tzinfo=UTC)


def make_event(event_type: EventType = EventType.PRINT_FAILED) -> ChangeEvent:
    printer = Printer(
        serial="Form4-CapableBeaver",
        name="Beaver",
        vendor=Vendor.FORMLABS,
        model="Form 4",
        model_code="FORM-4-0",
        status=PrinterStatus.ERROR,
        status_raw="ERROR",
        online=True,
        group="Dental",
    )
    run = Print(
        id="p-1", name="crowns <batch 7> & co", status=PrintStatus.FAILED, status_raw="ERROR"
    )
    return ChangeEvent(
        id="e-1",
        type=event_type,
        source="lab",
        vendor=Vendor.FORMLABS,
        subject=printer.serial,
        time=T0,
        severity=Severity.CRITICAL,
        printer=printer,
        print=run,
    )


def make_payload(**overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "event": to_cloudevent(make_event()),
        "status": "firing",
        "rule": "print-failed",
        "severity": "critical",
        "title": "Beaver: crowns failed",
        "text": "Failed after 2h",
    }
    payload.update(overrides)
    return payload


def test_generic_body_is_the_exact_cloudevent_bytes() -> None:
    """The generic body is byte-for-byte what MQTT publishes for the same event."""
    event = make_event()
    body, content_type = render("webhook", {"event": to_cloudevent(event), "status": "firing"})
    assert body == encode_event(event)
    assert content_type == "application/cloudevents+json"


def test_generic_body_survives_a_json_round_trip_unchanged() -> None:
    """A payload read back from the outbox's JSON still renders the same bytes."""
    event = make_event()
    stored = json.loads(json.dumps({"event": to_cloudevent(event)}))
    assert render("webhook", stored)[0] == encode_event(event)


def test_slack_message_has_header_section_context_and_severity_colour() -> None:
    """A Slack message is Block Kit in a coloured attachment with a fallback text."""
    msg = slack_message(make_payload())
    attachment = msg["attachments"][0]
    blocks = attachment["blocks"]
    assert msg["text"].startswith("Beaver: crowns failed")
    assert attachment["color"] == "#D32F2F"
    assert [b["type"] for b in blocks] == ["header", "section", "context"]
    assert blocks[0]["text"] == {
        "type": "plain_text",
        "text": "Beaver: crowns failed",
        "emoji": True,
    }
    assert blocks[1]["text"]["text"] == "Failed after 2h"
    context = " ".join(e["text"] for e in blocks[2]["elements"])
    assert "*Severity:* critical" in context
    assert "Beaver (Form4-CapableBeaver)" in context
    assert "crowns &lt;batch 7&gt; &amp; co" in context


def test_slack_header_is_cut_to_150_characters_with_an_ellipsis() -> None:
    """A long title fits Slack's header limit and ends with an ellipsis."""
    header = slack_message(make_payload(title="x" * 400))["attachments"][0]["blocks"][0]
    assert len(header["text"]["text"]) == SLACK_HEADER_MAX
    assert header["text"]["text"].endswith("…")


def test_slack_section_is_cut_to_3000_characters_without_breaking_an_entity() -> None:
    """Escaped text longer than 3000 chars is cut before a partial ``&amp;``."""
    section = slack_message(make_payload(text="a" * 2997 + "&&&&"))["attachments"][0]["blocks"][1]
    assert section["text"]["text"] == "a" * 2997 + "…"  # not "…&a…"


def test_slack_escapes_control_characters_in_text() -> None:
    """``<``, ``>`` and ``&`` in rule text cannot form Slack links or mentions."""
    section = slack_message(make_payload(text="<!channel> & <http://x|y>"))["attachments"][0][
        "blocks"
    ][1]
    assert section["text"]["text"] == "&lt;!channel&gt; &amp; &lt;http://x|y&gt;"


def test_slack_resolved_is_green_and_says_resolved_once() -> None:
    """A resolved notification is green and its title starts with "Resolved:" exactly once."""
    plain = slack_message(make_payload(status="resolved"))
    prefixed = slack_message(make_payload(status="resolved", title="Resolved: Beaver failed"))
    assert plain["attachments"][0]["color"] == "#2E7D32"
    assert plain["attachments"][0]["blocks"][0]["text"]["text"] == "Resolved: Beaver: crowns failed"
    assert prefixed["attachments"][0]["blocks"][0]["text"]["text"] == "Resolved: Beaver failed"


def test_slack_grouped_payload_lists_the_subjects() -> None:
    """A grouped notification lists each subject and how many more there are."""
    group = {"count": 5, "subjects": ["A", "B", "C"]}
    blocks = slack_message(make_payload(group=group))["attachments"][0]["blocks"]
    listing = blocks[2]["text"]["text"]
    assert listing == "• A\n• B\n• C\n… and 2 more"


def test_teams_message_is_an_adaptive_card_in_a_message() -> None:
    """Teams gets a Workflows message with one Adaptive Card 1.4 attachment."""
    msg = teams_message(make_payload())
    assert msg["type"] == "message"
    attachment = msg["attachments"][0]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard"
    assert card["version"] == "1.4"
    header = card["body"][0]
    assert header["style"] == "attention"
    assert header["items"][0]["text"] == "Beaver: crowns failed"
    facts = {f["title"]: f["value"] for f in card["body"][-1]["facts"]}
    assert facts["Printer"] == "Beaver (Form4-CapableBeaver)"
    assert facts["Severity"] == "critical"


def test_teams_resolved_uses_the_good_style() -> None:
    """A resolved Teams card is styled "good" and titled as resolved."""
    card = teams_message(make_payload(status="resolved"))["attachments"][0]["content"]
    assert card["body"][0]["style"] == "good"
    assert card["body"][0]["items"][0]["text"].startswith("Resolved: ")


def test_teams_grouped_card_lists_the_subjects() -> None:
    """A grouped Teams card has a list of the grouped subjects."""
    card = teams_message(make_payload(group={"count": 2, "subjects": ["A", "B"]}))
    texts = [b.get("text", "") for b in card["attachments"][0]["content"]["body"]]
    assert "- A\r- B" in texts


def test_discord_message_has_one_embed_and_no_mentions() -> None:
    """Discord gets one embed (title, description, colour, fields, timestamp), pinging nobody."""
    msg = discord_message(make_payload())
    embed = msg["embeds"][0]
    assert embed["title"] == "Beaver: crowns failed"
    assert embed["description"] == "Failed after 2h"
    assert embed["color"] == 0xD32F2F
    assert embed["timestamp"] == "2026-11-23T10:15:02Z"
    assert {"name": "Severity", "value": "critical", "inline": True} in embed["fields"]
    assert msg["allowed_mentions"] == {"parse": []}


def test_discord_resolved_is_green() -> None:
    """A resolved Discord embed is green and titled as resolved."""
    embed = discord_message(make_payload(status="resolved"))["embeds"][0]
    assert embed["color"] == 0x2E7D32
    assert embed["title"].startswith("Resolved: ")


def test_discord_grouped_embed_has_a_printers_field() -> None:
    """A grouped Discord embed lists the subjects in a field."""
    embed = discord_message(make_payload(group=["A", "B"]))["embeds"][0]
    assert {"name": "Printers", "value": "• A\n• B", "inline": False} in embed["fields"]


def test_defaults_come_from_the_event_when_the_rule_rendered_nothing() -> None:
    """Without a rule title/text, the title names printer and event and the text the changes."""
    event = to_cloudevent(make_event(EventType.PRINTER_STATUS_CHANGED))
    event["data"]["changes"] = {"status": {"from": "IDLE", "to": "ERROR"}}
    n = notice({"event": event})
    assert n.title == "Beaver: printer status changed"
    assert n.text == "status: IDLE → ERROR"
    assert n.severity == "critical"


def test_unknown_kind_is_rejected() -> None:
    """Rendering for a kind that does not exist raises ValueError."""
    with pytest.raises(ValueError, match="unknown receiver kind"):
        render("pager", make_payload())


def test_payload_without_event_is_rejected() -> None:
    """A payload lacking the CloudEvent cannot be rendered."""
    with pytest.raises(ValueError, match="no 'event'"):
        render("slack", {"title": "x"})


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [("abc", 3, "abc"), ("abcd", 3, "ab…"), ("ab  cd", 4, "ab…"), ("abc", 0, "")],
)
def test_truncate_cuts_to_the_limit_with_an_ellipsis(text: str, limit: int, expected: str) -> None:
    """``truncate`` keeps text within the limit and marks the cut."""
    assert truncate(text, limit) == expected


# Printable text up to three UTF-8 bytes a character (what rules realistically render).
_chars = st.characters(categories=("L", "M", "N", "P", "S", "Zs"), max_codepoint=0xFFFF)


@settings(max_examples=60, deadline=None)
@given(
    title=st.text(_chars, min_size=1, max_size=600),
    text=st.text(_chars, max_size=9000),
    subjects=st.lists(st.text(_chars, min_size=1, max_size=80), max_size=300),
    resolved=st.booleans(),
)
def test_every_format_stays_within_its_limits(
    title: str, text: str, subjects: list[str], resolved: bool
) -> None:
    """Whatever the rule renders, Slack, Discord and Teams payloads respect their limits."""
    payload = make_payload(
        title=title,
        text=text,
        status="resolved" if resolved else "firing",
        group={"count": len(subjects), "subjects": subjects} if subjects else None,
    )
    slack = slack_message(payload)
    blocks = slack["attachments"][0]["blocks"]
    assert len(blocks) <= SLACK_BLOCKS_MAX
    for block in blocks:
        if block["type"] == "header":
            assert len(block["text"]["text"]) <= SLACK_HEADER_MAX
        elif block["type"] == "section":
            assert 0 < len(block["text"]["text"]) <= SLACK_SECTION_MAX
        else:
            assert len(block["elements"]) <= SLACK_CONTEXT_MAX
    embed = discord_message(payload)["embeds"][0]
    assert len(embed["title"]) <= DISCORD_TITLE_MAX
    assert len(embed.get("description", "")) <= DISCORD_DESCRIPTION_MAX
    assert len(embed["fields"]) <= DISCORD_FIELDS_MAX
    assert all(len(f["value"]) <= DISCORD_FIELD_VALUE_MAX for f in embed["fields"])
    total = len(embed["title"]) + len(embed.get("description", "")) + len(embed["footer"]["text"])
    total += sum(len(f["name"]) + len(f["value"]) for f in embed["fields"])
    assert total <= DISCORD_EMBED_TOTAL_MAX
    assert len(formats.render("teams", payload)[0]) < 28_000


def test_rendered_bodies_are_compact_utf8_json() -> None:
    """Slack, Teams and Discord bodies are JSON with non-ASCII kept as UTF-8."""
    for kind in ("slack", "teams", "discord"):
        body, content_type = render(kind, make_payload(text="Grün ✓"))
        assert content_type == "application/json"
        assert "Grün ✓".encode() in body
        assert json.loads(body)
