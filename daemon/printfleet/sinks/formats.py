"""Wire formats of webhook receivers: pure functions from a delivery payload to a JSON body.

Every builder takes the ``payload`` of a :class:`~printfleet.core.delivery.Delivery` (see its
docstring for the well-known keys) and returns what is POSTed. Nothing here performs I/O,
reads a clock or logs, so each format is tested as a table of payloads and expected shapes.

Limits are the receivers' documented ones; text over a limit is cut and ends with "…":

- Slack Block Kit: header text 150 chars, section text 3000, context elements 10, blocks 50
  (https://api.slack.com/reference/block-kit/blocks).
- Discord embeds: title 256, description 4096, 25 fields (name 256, value 1024), footer 2048,
  6000 characters per embed in total
  (https://discord.com/developers/docs/resources/message#embed-object-embed-limits).
- Teams (Workflows / Power Automate "post to a channel when a webhook request is received"):
  one Adaptive Card **1.4** in a ``message``. 1.4, not 1.5: the Workflows webhook renders
  nothing above 1.4 ("We're sorry, this card couldn't be displayed";
  https://github.com/microsoft/AdaptiveCards/issues/8965), so the card uses only 1.4
  elements and properties (no ``"style": "heading"``). The whole message must stay under
  about 28 KB, so every text is capped in characters such that even 4-byte characters keep
  the message below that (``TEAMS_*_MAX``).

Text comes from vendors (printer and print names, messages) through rule templates, so every
format treats it as plain text and escapes what its receiver would parse as markup:

- Slack: ``&``, ``<``, ``>`` as ``&amp;``, ``&lt;``, ``&gt;`` in every mrkdwn text *and* the
  top-level ``text`` and attachment ``fallback`` (Slack parses ``<!channel>``, ``<@U…>`` and
  ``<url|label>`` there too); header blocks are ``plain_text``, which Slack never parses.
- Discord: markdown characters backslash-escaped in title, description and field values,
  ``@everyone`` / ``@here`` broken with a zero-width space, and ``"allowed_mentions":
  {"parse": []}`` so nothing in the message can ping anyone.
- Teams: the Adaptive Card markdown subset (``*``, ``_``, ``[``, ``]``, ``\\`` and list
  markers at a line start) backslash-escaped in every TextBlock and fact. Teams only mentions
  people through ``msteams.entities``, which printfleet never sends.

Print pictures (:class:`~printfleet.core.pictures.Pictures`, fetched fresh by the sink just
before rendering; see :mod:`printfleet.sinks.pictures`): the post-print photo is the large
picture (Slack ``image`` block, Discord ``embed.image``, Teams ``Image`` of size Large), the
thumbnail the small one (Slack section accessory, Discord ``embed.thumbnail``, Teams ``Image``
of size Medium); a thumbnail alone is shown as the Slack image block. Only ungrouped ``print.*``
notifications carry pictures, so the Teams worst case above is unchanged (no subjects then).

Control characters other than newline and tab are dropped and lone surrogates become U+FFFD
in all human text, so any string renders into valid UTF-8 JSON within the limits.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from printfleet.core.events import json_bytes
from printfleet.core.pictures import NO_PICTURES, Pictures

ELLIPSIS: Final = "…"

SLACK_HEADER_MAX: Final = 150
SLACK_SECTION_MAX: Final = 3000
SLACK_CONTEXT_MAX: Final = 10
SLACK_BLOCKS_MAX: Final = 50

DISCORD_TITLE_MAX: Final = 256
DISCORD_DESCRIPTION_MAX: Final = 4096
DISCORD_FIELDS_MAX: Final = 25
DISCORD_FIELD_NAME_MAX: Final = 256
DISCORD_FIELD_VALUE_MAX: Final = 1024
DISCORD_FOOTER_MAX: Final = 2048
DISCORD_EMBED_TOTAL_MAX: Final = 6000

# Worst case in UTF-8 (4 bytes a character): heading 1.2 KB + text 12 KB + subjects 7.7 KB +
# facts 6 x 0.5 KB + JSON structure < 28 KB.
TEAMS_HEADING_MAX: Final = 300
TEAMS_TEXT_MAX: Final = 3000
TEAMS_SUBJECTS_MAX: Final = 30
TEAMS_SUBJECT_MAX: Final = 64
TEAMS_FACT_MAX: Final = 128
TEAMS_MESSAGE_MAX_BYTES: Final = 28_000
TEAMS_CARD_VERSION: Final = "1.4"

CLOUDEVENTS_CONTENT_TYPE: Final = "application/cloudevents+json"
JSON_CONTENT_TYPE: Final = "application/json"

# Colours: severity while firing, green once resolved.
_HEX = {"critical": "#D32F2F", "warning": "#F9A825", "info": "#1E88E5", "resolved": "#2E7D32"}
_TEAMS_STYLE = {"critical": "attention", "warning": "warning", "info": "accent", "resolved": "good"}
_TEAMS_COLOR = {"critical": "Attention", "warning": "Warning", "info": "Accent", "resolved": "Good"}


@dataclass(frozen=True, slots=True)
class Notice:
    """What a human notification says, extracted from a payload once for every format."""

    title: str
    text: str
    severity: str
    resolved: bool
    event_type: str
    event_id: str
    subject: str
    source: str
    time: str | None
    printer: str | None
    print_name: str | None
    rule: str | None
    subjects: tuple[str, ...]
    group_count: int

    @property
    def tone(self) -> str:
        """``resolved`` once resolved, else the severity (picks colours)."""
        return "resolved" if self.resolved else self.severity

    @property
    def heading(self) -> str:
        """The title as shown: ``Resolved: …`` for resolved notifications (the rule engine
        usually says so already; the prefix is never doubled)."""
        if not self.resolved or self.title.lower().startswith("resolved"):
            return self.title
        return f"Resolved: {self.title}"

    @property
    def fallback(self) -> str:
        """One line for notification previews and clients that cannot show rich content."""
        head = self.heading
        return f"{head} — {self.text}" if self.text else head


def notice(payload: Mapping[str, Any]) -> Notice:
    """The human-facing facts of ``payload`` (rule title/text when rendered, else derived).

    Raises:
        ValueError: the payload has no ``event`` mapping.
    """
    event = payload.get("event")
    if not isinstance(event, Mapping):
        raise ValueError("payload has no 'event' object")
    data = event.get("data")
    data = data if isinstance(data, Mapping) else {}
    printer = data.get("printer") if isinstance(data.get("printer"), Mapping) else None
    run = data.get("print") if isinstance(data.get("print"), Mapping) else None
    event_type = _clean(str(event.get("type", "event")))
    subject = _clean(str(event.get("subject", "")))
    source = _clean(str(event.get("source", "")))
    account = source.rsplit("/", 1)[-1] if source else ""

    printer_label: str | None = None
    if printer is not None:
        name = _text(printer.get("name")) or subject
        serial = _text(printer.get("serial"))
        printer_label = f"{name} ({serial})" if serial and serial != name else name
    print_name = _text(run.get("name")) if run is not None else None

    severity = _text(payload.get("severity")) or _text(data.get("severity")) or "info"
    if severity not in _HEX:
        severity = "info"
    subjects, count = _group(payload.get("group"))
    # A Formlabs group's queue event has no printer; its subject is the group id (a uuid),
    # so the group's name is what a person recognises.
    queue = data.get("queue") if isinstance(data.get("queue"), Mapping) else None
    queue_name = _text(queue.get("name")) if queue is not None else None
    who = (
        (_text(printer.get("name")) if printer is not None else None)
        or queue_name
        or subject
        or account
    )
    title = _text(payload.get("title")) or (
        f"{count}x {_humanize(event_type)}" if subjects else f"{who}: {_humanize(event_type)}"
    )
    text = _text(payload.get("text"))
    if text is None:
        text = _describe(data, print_name)
        if not text and queue is not None:
            oldest = _text(queue.get("oldest_at"))
            since = f", oldest since {oldest}" if oldest else ""
            text = _clean(f"jobs queued: {queue.get('items')}{since}")
    return Notice(
        title=title,
        text=text,
        severity=severity,
        resolved=payload.get("status") == "resolved",
        event_type=event_type,
        event_id=_clean(str(event.get("id", ""))),
        subject=subject,
        source=account,
        time=_text(event.get("time")),
        printer=printer_label,
        print_name=print_name,
        rule=_text(payload.get("rule")),
        subjects=subjects,
        group_count=count,
    )


def cloudevent_body(payload: Mapping[str, Any]) -> bytes:
    """The generic webhook body: exactly the CloudEvent JSON, encoded like MQTT's.

    Uses the compact encoding of :func:`printfleet.core.events.encode_event`, so the bytes are
    the same as the MQTT event message.
    """
    event = payload.get("event")
    if not isinstance(event, Mapping):
        raise ValueError("payload has no 'event' object")
    return json_bytes(event)


def slack_message(payload: Mapping[str, Any], pictures: Pictures = NO_PICTURES) -> dict[str, Any]:
    """A Slack incoming-webhook message: Block Kit inside a coloured attachment + fallback text."""
    n = notice(payload)
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": truncate(n.heading, SLACK_HEADER_MAX),
                "emoji": True,
            },
        }
    ]
    if n.text:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _slack_text(n.text)}})
    blocks += _slack_pictures(n, pictures, blocks[-1] if n.text else None)
    if n.subjects:
        blocks.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": _slack_text(_bullets(n, "• "))},
            }
        )
    blocks.append(
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": f"*{label}:* {_slack_text(value, SLACK_SECTION_MAX // 2)}",
                }
                for label, value in _facts(n)[:SLACK_CONTEXT_MAX]
            ],
        }
    )
    fallback = _slack_text(n.fallback)
    return {
        "text": fallback,
        "attachments": [
            {
                "color": _HEX[n.tone],
                "fallback": fallback,
                "blocks": blocks[:SLACK_BLOCKS_MAX],
            }
        ],
    }


def teams_message(payload: Mapping[str, Any], pictures: Pictures = NO_PICTURES) -> dict[str, Any]:
    """A Teams Workflows message carrying one Adaptive Card (schema 1.4, see module docs)."""
    n = notice(payload)
    body: list[dict[str, Any]] = [
        {
            "type": "Container",
            "style": _TEAMS_STYLE[n.tone],
            "bleed": True,
            "items": [
                {
                    "type": "TextBlock",
                    "text": _teams_text(n.heading, TEAMS_HEADING_MAX),
                    "size": "Large",
                    "weight": "Bolder",
                    "color": _TEAMS_COLOR[n.tone],
                    "wrap": True,
                }
            ],
        }
    ]
    if n.text:
        # Adaptive Card markdown needs a blank line for a line break.
        text = _teams_text(n.text, TEAMS_TEXT_MAX).replace("\n", "\n\n")
        body.append({"type": "TextBlock", "text": text, "wrap": True})
    for url, size, alt in (
        (pictures.thumbnail, "Medium", _alt(n, "Preview")),
        (pictures.photo, "Large", _alt(n, "Photo after printing")),
    ):
        if url is not None:
            body.append({"type": "Image", "url": url, "altText": alt, "size": size})
    if n.subjects:
        shown = n.subjects[:TEAMS_SUBJECTS_MAX]
        lines = [f"- {_teams_text(s, TEAMS_SUBJECT_MAX)}" for s in shown]
        if n.group_count > len(shown):
            lines.append(f"- … and {n.group_count - len(shown)} more")
        body.append({"type": "TextBlock", "text": "\r".join(lines), "wrap": True})
    body.append(
        {
            "type": "FactSet",
            "facts": [
                {"title": label, "value": _teams_text(value, TEAMS_FACT_MAX)}
                for label, value in _facts(n)
            ],
        }
    )
    return {
        "type": "message",
        "summary": truncate(n.fallback, SLACK_HEADER_MAX),
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": TEAMS_CARD_VERSION,
                    "msteams": {"width": "Full"},
                    "body": body,
                },
            }
        ],
    }


def discord_message(payload: Mapping[str, Any], pictures: Pictures = NO_PICTURES) -> dict[str, Any]:
    """A Discord webhook message with one embed; mentions in user text never ping anyone."""
    n = notice(payload)
    title = _discord_text(n.heading, DISCORD_TITLE_MAX)
    fields: list[dict[str, Any]] = [
        {
            "name": truncate(label, DISCORD_FIELD_NAME_MAX),
            "value": _discord_text(value, DISCORD_FIELD_VALUE_MAX),
            "inline": True,
        }
        for label, value in _facts(n)
    ]
    if n.subjects:
        fields.append(
            {
                "name": "Sources" if n.event_type.startswith("source.") else "Printers",
                "value": _discord_text(_bullets(n, "• "), DISCORD_FIELD_VALUE_MAX),
                "inline": False,
            }
        )
    fields = fields[:DISCORD_FIELDS_MAX]
    footer = truncate(f"printfleet · {n.event_type}", DISCORD_FOOTER_MAX)
    used = len(title) + len(footer) + sum(len(f["name"]) + len(f["value"]) for f in fields)
    room = max(0, min(DISCORD_DESCRIPTION_MAX, DISCORD_EMBED_TOTAL_MAX - used))
    embed: dict[str, Any] = {
        "title": title,
        "color": int(_HEX[n.tone][1:], 16),
        "fields": fields,
        "footer": {"text": footer},
    }
    description = _discord_text(n.text, room) if n.text and room else ""
    if description:
        embed["description"] = description
    if n.time:
        embed["timestamp"] = n.time
    # URLs do not count toward the 6000 characters (only texts do).
    if pictures.photo is not None:
        embed["image"] = {"url": pictures.photo}
    if pictures.thumbnail is not None:
        embed["thumbnail"] = {"url": pictures.thumbnail}
    return {"embeds": [embed], "allowed_mentions": {"parse": []}}


def render(
    kind: str, payload: Mapping[str, Any], *, pictures: Pictures = NO_PICTURES
) -> tuple[bytes, str]:
    """The body and ``Content-Type`` for receiver ``kind`` (webhook, slack, teams, discord).

    ``pictures`` are shown by the chat formats; the generic webhook sends the event unchanged.

    Raises:
        ValueError: unknown kind, or a payload without an ``event``.
    """
    if kind == "webhook":
        return cloudevent_body(payload), CLOUDEVENTS_CONTENT_TYPE
    if payload.get("kind") == "digest":
        from printfleet.sinks.digest_formats import BUILDERS  # it builds on this module

        # A digest has no pictures; kinds without a digest layout render it as any notice.
        if kind in BUILDERS:
            return _compact(BUILDERS[kind](payload)), JSON_CONTENT_TYPE
    builders = {"slack": slack_message, "teams": teams_message, "discord": discord_message}
    try:
        build = builders[kind]
    except KeyError:
        raise ValueError(f"unknown receiver kind {kind!r}") from None
    return _compact(build(payload, pictures)), JSON_CONTENT_TYPE


def truncate(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, ending with "…" when it was cut."""
    if len(text) <= limit:
        return text
    if limit <= 0:
        return ""
    return text[: limit - 1].rstrip() + ELLIPSIS


# -- helpers ---------------------------------------------------------------------------------


def _compact(obj: Any) -> bytes:
    return json_bytes(obj)


# C0 (but newline and tab), DEL and C1 controls: nothing a chat client shows, and JSON spends
# six bytes on each. Lone surrogates cannot be encoded as UTF-8 at all.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


# No format shows more of one text than Discord's description (4096 chars), nor more subjects
# than fit Slack's 3000-char section: longer input is cut first, so a 100k-char vendor string
# costs no more to render than a short one.
_TEXT_READ_MAX: Final = 5000
_SUBJECT_READ_MAX: Final = 256
_SUBJECTS_READ_MAX: Final = 1000


def _clean(text: str, limit: int = _TEXT_READ_MAX) -> str:
    """``text`` without control characters, lone surrogates as U+FFFD, cut to ``limit``.

    The cut keeps one character more than any format shows, so truncating still adds "…".
    """
    return _LONE_SURROGATE.sub("\ufffd", _CONTROL.sub("", text[: limit * 2]))[: limit + 1]


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = _clean(str(value)).strip()
    return text or None


def _humanize(event_type: str) -> str:
    return event_type.replace(".", " ").replace("_", " ")


def _group(group: Any) -> tuple[tuple[str, ...], int]:
    """Subjects and count of a grouped notification (a mapping or a plain list of subjects)."""
    if isinstance(group, Mapping):
        raw = group.get("subjects", ())
        subjects = _subjects(raw) if isinstance(raw, Sequence) else ()
        count = group.get("count")
        total = len(raw) if isinstance(raw, Sequence) else 0
        return subjects, int(count) if isinstance(count, int) else total
    if isinstance(group, Sequence) and not isinstance(group, str):
        return _subjects(group), len(group)
    return (), 0


def _subjects(raw: Sequence[Any]) -> tuple[str, ...]:
    return tuple(_clean(str(s), _SUBJECT_READ_MAX) for s in raw[:_SUBJECTS_READ_MAX])


def _describe(data: Mapping[str, Any], print_name: str | None) -> str:
    """Plain text for an event without a rule-rendered ``text``: the changes, one per line."""
    lines: list[str] = []
    changes = data.get("changes")
    if isinstance(changes, Mapping):
        for name, change in list(changes.items())[:50]:
            if isinstance(change, Mapping):
                line = f"{name}: {change.get('from')} → {change.get('to')}"
                lines.append(_clean(line, _SUBJECT_READ_MAX))
    if print_name and not lines:
        lines.append(f"print: {print_name}")
    return _clean("\n".join(lines))


#: Alt text of a picture: short, a screen reader reads it out.
PICTURE_ALT_MAX: Final = 120


def _alt(n: Notice, what: str) -> str:
    """Plain alt text (every service shows it as is, never as markup)."""
    return truncate(f"{what}: {n.print_name}" if n.print_name else what, PICTURE_ALT_MAX)


def _slack_pictures(
    n: Notice, pictures: Pictures, text_section: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """The photo as an ``image`` block, the thumbnail beside the text (or as the block when
    there is no photo or no text to sit beside)."""
    blocks: list[dict[str, Any]] = []
    thumbnail, photo = pictures.thumbnail, pictures.photo
    if thumbnail is not None and photo is not None and text_section is not None:
        text_section["accessory"] = {
            "type": "image",
            "image_url": thumbnail,
            "alt_text": _alt(n, "Preview"),
        }
        thumbnail = None
    for url, alt in ((thumbnail, _alt(n, "Preview")), (photo, _alt(n, "Photo after printing"))):
        if url is not None:
            blocks.append({"type": "image", "image_url": url, "alt_text": alt})
    return blocks


def _facts(n: Notice) -> list[tuple[str, str]]:
    facts = [("Severity", "resolved" if n.resolved else n.severity)]
    if n.printer:
        facts.append(("Printer", n.printer))
    if n.print_name:
        facts.append(("Print", n.print_name))
    if n.source:
        facts.append(("Source", n.source))
    facts.append(("Event", n.event_type))
    if n.subjects:
        facts.append(("Count", str(n.group_count)))
    return facts


def _bullets(n: Notice, bullet: str) -> str:
    lines = [f"{bullet}{s}" for s in n.subjects]
    if n.group_count > len(n.subjects):
        lines.append(f"… and {n.group_count - len(n.subjects)} more")
    return "\n".join(lines)


_PARTIAL_ENTITY = re.compile(r"&[a-z]*$")


def _slack_escape(text: str) -> str:
    """Slack mrkdwn control characters (https://api.slack.com/reference/surfaces/formatting)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _slack_text(text: str, limit: int = SLACK_SECTION_MAX) -> str:
    """Escaped mrkdwn of at most ``limit`` chars, never ending inside an ``&…;`` entity."""
    escaped = _slack_escape(text)
    if len(escaped) <= limit:
        return escaped
    cut = _PARTIAL_ENTITY.sub("", escaped[: limit - 1]).rstrip()
    return cut + ELLIPSIS


# Discord markdown (https://support.discord.com/hc/en-us/articles/210298617): a backslash
# before ASCII punctuation shows it literally. ``<`` covers ``<@id>``, ``<#channel>``,
# ``<@&role>``, ``<:emoji:id>`` and ``<t:…>`` tokens; headings, lists and quotes only start a
# line. ``@everyone``/``@here`` get a zero-width space (allowed_mentions already stops the
# ping, this stops the highlight).
_DISCORD_INLINE = re.compile(r"([\\*_~`|\[\]()<])")
_DISCORD_MASS_MENTION = re.compile(r"@(everyone|here)", re.IGNORECASE)


def _discord_escape(text: str) -> str:
    """``text`` shown literally by Discord's markdown, mass mentions defused."""
    escaped = _escape_line_starts(_DISCORD_INLINE.sub(r"\\\1", text))
    return _DISCORD_MASS_MENTION.sub("@\u200b\\1", escaped)


def _discord_text(text: str, limit: int) -> str:
    """Escaped Discord text of at most ``limit`` chars, never ending in half an escape."""
    return _cut_escaped(_discord_escape(text), limit)


# Teams: the Adaptive Card markdown subset (bold, italic, links, lists;
# https://learn.microsoft.com/adaptive-cards/authoring-cards/text-features). Escaping more
# would show backslashes on clients that do not unescape every punctuation character.
_TEAMS_INLINE = re.compile(r"([\\*_\[\]])")
# A marker at a line start: quote, heading or bullet ("-", "+"), or an ordered-list number
# ("12. "; markdown escapes the dot, since a backslash before a digit is shown as is).
_LINE_START = re.compile(r"^([ \t]*)(?:([-+>#])|(\d+)\.(?=[ \t]|$))", re.MULTILINE)


def _escape_line_starts(text: str) -> str:
    """List, quote and heading markers at a line start escaped (markdown of either service)."""

    def escape(m: re.Match[str]) -> str:
        if m.group(2) is not None:
            return f"{m.group(1)}\\{m.group(2)}"
        return f"{m.group(1)}{m.group(3)}\\."

    return _LINE_START.sub(escape, text)


def _teams_escape(text: str) -> str:
    """``text`` shown literally by Adaptive Card markdown."""
    return _escape_line_starts(_TEAMS_INLINE.sub(r"\\\1", text))


def _teams_text(text: str, limit: int) -> str:
    """Escaped Adaptive Card text of at most ``limit`` chars, never ending in half an escape."""
    return _cut_escaped(_teams_escape(text), limit)


_TRAILING_BACKSLASHES = re.compile(r"\\+$")


def _cut_escaped(escaped: str, limit: int) -> str:
    """``escaped`` cut like :func:`truncate`, dropping a dangling escape at the cut."""
    if len(escaped) <= limit:
        return escaped
    if limit <= 0:
        return ""
    cut = escaped[: limit - 1]
    tail = _TRAILING_BACKSLASHES.search(cut)
    if tail is not None and len(tail.group()) % 2:
        cut = cut[:-1]  # an odd run ends in the first half of "\\x"
    return cut.rstrip() + ELLIPSIS
