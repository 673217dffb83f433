"""The ecosystem's own validators for every body printfleet sends, as one function per format.

Each ``*_problems`` function takes what printfleet would send and returns a list of problems
(empty when the receiver's validator accepts it), so a test can count "Teams 161/161" and
print the first problems when something fails:

- CloudEvents (generic webhooks and MQTT events): the ``cloudevents`` SDK reads the bytes both
  with its spec-validating core (``cloudevents.core.formats.json.JSONFormat`` into a v1.0
  ``CloudEvent``: required attributes, non-empty ``subject``, timezone-aware ``time``) and
  with the classic HTTP API (``cloudevents.v1.http.from_json``).
- Slack: every block through ``slack_sdk``'s Block Kit models (``Block.parse`` +
  ``validate_json()``, and the model must give back exactly the block, so no key is unknown
  to it), Block Kit's documented text limits, and no unescaped ``<``/``&`` where Slack parses
  markup (top-level ``text``, attachment ``fallback``, every mrkdwn text).
- Teams: the Adaptive Card against the official Adaptive Cards **1.4.0** JSON schema
  (``tests/vendor/adaptivecards/``), the Workflows ``message`` envelope, and the 28 KB size.
- Discord: every documented embed and message limit, and ``allowed_mentions`` parsing nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from cloudevents.v1.http import from_json
from slack_sdk.errors import SlackObjectFormationError
from slack_sdk.models.blocks import Block

ADAPTIVE_CARD_SCHEMA = Path(__file__).parent / "vendor/adaptivecards/adaptive-card-1.4.0.json"

# Slack Block Kit (https://api.slack.com/reference/block-kit/blocks) and message limits.
SLACK_TEXT_MAX = 40_000  # a message's top-level text (Slack truncates beyond)
SLACK_HEADER_MAX = 150
SLACK_SECTION_MAX = 3000
SLACK_SECTION_FIELDS_MAX = 10
SLACK_FIELD_MAX = 2000
SLACK_CONTEXT_ELEMENTS_MAX = 10
SLACK_BLOCKS_MAX = 50

# Discord (https://discord.com/developers/docs/resources/message#embed-object-embed-limits).
DISCORD_CONTENT_MAX = 2000
DISCORD_EMBEDS_MAX = 10
DISCORD_TITLE_MAX = 256
DISCORD_DESCRIPTION_MAX = 4096
DISCORD_FIELDS_MAX = 25
DISCORD_FIELD_NAME_MAX = 256
DISCORD_FIELD_VALUE_MAX = 1024
DISCORD_FOOTER_MAX = 2048
DISCORD_AUTHOR_MAX = 256
DISCORD_TOTAL_MAX = 6000

TEAMS_MESSAGE_MAX_BYTES = 28_000
TEAMS_CARD_VERSION = "1.4"

# An "&" that does not start one of Slack's three entities, or any "<" / ">".
_SLACK_UNESCAPED = re.compile(r"&(?!amp;|lt;|gt;)|[<>]")
# "@everyone" / "@here" as Discord would highlight them (the zero-width space breaks them).
_DISCORD_MASS_MENTION = re.compile(r"@(everyone|here)", re.IGNORECASE)


def cloudevent_problems(body: bytes) -> list[str]:
    """Why the ``cloudevents`` SDK rejects ``body`` as a structured-mode CloudEvent 1.0."""
    problems: list[str] = []
    try:
        event = JSONFormat().read(CloudEvent, body)
    except Exception as err:  # the SDK raises several unrelated types; any is a rejection
        return [f"cloudevents core: {type(err).__name__}: {err}"]
    try:
        legacy = from_json(body)
    except Exception as err:
        problems.append(f"cloudevents v1.http.from_json: {type(err).__name__}: {err}")
    else:
        if legacy["id"] != event.get_id():
            problems.append("the two SDK readers disagree on the id")
    if event.get_datacontenttype() != "application/json":
        problems.append(f"datacontenttype is {event.get_datacontenttype()!r}")
    if not isinstance(event.get_data(), Mapping):
        problems.append("data is not a JSON object")
    return problems


def slack_problems(message: Mapping[str, Any]) -> list[str]:
    """Why Slack (its ``slack_sdk`` block models and documented limits) rejects ``message``."""
    problems: list[str] = []
    text = message.get("text")
    if not isinstance(text, str) or not text:
        problems.append("no top-level text")
    else:
        problems += _slack_markup("text", text)
        if len(text) > SLACK_TEXT_MAX:
            problems.append(f"text has {len(text)} chars")
    attachments = message.get("attachments")
    if not isinstance(attachments, list) or len(attachments) != 1:
        return [*problems, "expected exactly one attachment"]
    attachment = attachments[0]
    problems += _slack_markup("fallback", str(attachment.get("fallback", "")))
    blocks = attachment.get("blocks", [])
    if not 0 < len(blocks) <= SLACK_BLOCKS_MAX:
        problems.append(f"{len(blocks)} blocks")
    for i, raw in enumerate(blocks):
        where = f"blocks[{i}] ({raw.get('type')})"
        try:
            block = Block.parse(raw)
            if block is None:
                problems.append(f"{where}: slack_sdk does not know this block")
                continue
            block.validate_json()
        except SlackObjectFormationError as err:
            problems.append(f"{where}: {err}")
            continue
        if block.to_dict() != raw:
            problems.append(f"{where}: slack_sdk reads it differently: {block.to_dict()}")
        problems += [f"{where}: {p}" for p in _slack_block_limits(raw)]
    return problems


def _slack_block_limits(block: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    kind = block["type"]
    if kind == "header":
        text = block["text"]
        if text["type"] != "plain_text" or not 0 < len(text["text"]) <= SLACK_HEADER_MAX:
            problems.append(f"header text {text['type']} of {len(text['text'])} chars")
    elif kind == "section":
        if "text" not in block and "fields" not in block:
            problems.append("section without text or fields")
        if "text" in block:
            text = block["text"]
            if not 0 < len(text["text"]) <= SLACK_SECTION_MAX:
                problems.append(f"section text of {len(text['text'])} chars")
            if text["type"] == "mrkdwn":
                problems += _slack_markup("section", text["text"])
        fields = block.get("fields", [])
        if len(fields) > SLACK_SECTION_FIELDS_MAX:
            problems.append(f"section with {len(fields)} fields")
        for field in fields:
            if not 0 < len(field["text"]) <= SLACK_FIELD_MAX:
                problems.append(f"section field of {len(field['text'])} chars")
            if field["type"] == "mrkdwn":
                problems += _slack_markup("section field", field["text"])
    elif kind == "context":
        elements = block["elements"]
        if not 0 < len(elements) <= SLACK_CONTEXT_ELEMENTS_MAX:
            problems.append(f"context with {len(elements)} elements")
        for element in elements:
            if not 0 < len(element["text"]) <= SLACK_SECTION_MAX:
                problems.append(f"context element of {len(element['text'])} chars")
            if element["type"] == "mrkdwn":
                problems += _slack_markup("context", element["text"])
    return problems


def _slack_markup(where: str, text: str) -> list[str]:
    found = _SLACK_UNESCAPED.search(text)
    return [f"{where}: unescaped {found.group()!r} at {found.start()}"] if found else []


@cache
def _card_validator() -> jsonschema.protocols.Validator:
    schema = json.loads(ADAPTIVE_CARD_SCHEMA.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    validator: jsonschema.protocols.Validator = cls(schema)
    return validator


def teams_problems(message: Mapping[str, Any]) -> list[str]:
    """Why Teams Workflows (the Adaptive Cards 1.4.0 schema and size limit) rejects it."""
    problems: list[str] = []
    size = len(json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode())
    if size >= TEAMS_MESSAGE_MAX_BYTES:
        problems.append(f"message is {size} bytes")
    if message.get("type") != "message":
        problems.append("envelope type is not 'message'")
    attachments = message.get("attachments")
    if not isinstance(attachments, list) or len(attachments) != 1:
        return [*problems, "expected exactly one attachment"]
    attachment = attachments[0]
    if attachment.get("contentType") != "application/vnd.microsoft.card.adaptive":
        problems.append(f"contentType {attachment.get('contentType')!r}")
    card = dict(attachment["content"])
    if card.get("version") != TEAMS_CARD_VERSION:
        problems.append(f"card declares version {card.get('version')!r}")
    # "msteams" is Teams' documented host extension (full-width cards), which the strict
    # generic schema does not know: checked here, validated without it.
    msteams = card.pop("msteams", None)
    if msteams not in (None, {"width": "Full"}):
        problems.append(f"msteams is {msteams!r}")
    for error in _card_validator().iter_errors(card):
        best = jsonschema.exceptions.best_match([error])
        problems.append(f"schema: {best.json_path}: {best.message[:300]}")
    return problems


def discord_problems(message: Mapping[str, Any]) -> list[str]:
    """Why Discord (its documented limits; nothing may ping) would reject or misuse it."""
    problems: list[str] = []
    if message.get("allowed_mentions") != {"parse": []}:
        problems.append(f"allowed_mentions is {message.get('allowed_mentions')!r}")
    content = message.get("content", "")
    if len(content) > DISCORD_CONTENT_MAX:
        problems.append(f"content of {len(content)} chars")
    embeds = message.get("embeds", [])
    if not content and not embeds:
        problems.append("neither content nor embeds")
    if len(embeds) > DISCORD_EMBEDS_MAX:
        problems.append(f"{len(embeds)} embeds")
    total = 0
    for i, embed in enumerate(embeds):
        title = embed.get("title", "")
        description = embed.get("description", "")
        footer = embed.get("footer", {}).get("text", "")
        author = embed.get("author", {}).get("name", "")
        fields = embed.get("fields", [])
        for what, text, limit in (
            ("title", title, DISCORD_TITLE_MAX),
            ("description", description, DISCORD_DESCRIPTION_MAX),
            ("footer", footer, DISCORD_FOOTER_MAX),
            ("author", author, DISCORD_AUTHOR_MAX),
        ):
            if len(text) > limit:
                problems.append(f"embeds[{i}].{what} of {len(text)} chars")
        if len(fields) > DISCORD_FIELDS_MAX:
            problems.append(f"embeds[{i}] has {len(fields)} fields")
        for j, field in enumerate(fields):
            if not 0 < len(field["name"]) <= DISCORD_FIELD_NAME_MAX:
                problems.append(f"embeds[{i}].fields[{j}].name of {len(field['name'])} chars")
            if not 0 < len(field["value"]) <= DISCORD_FIELD_VALUE_MAX:
                problems.append(f"embeds[{i}].fields[{j}].value of {len(field['value'])} chars")
        total += len(title) + len(description) + len(footer) + len(author)
        total += sum(len(f["name"]) + len(f["value"]) for f in fields)
        for text in (title, description, *(f["value"] for f in fields)):
            if _DISCORD_MASS_MENTION.search(text):
                problems.append(f"embeds[{i}] shows an unbroken mass mention")
        color = embed.get("color")
        if color is not None and not 0 <= color <= 0xFFFFFF:
            problems.append(f"embeds[{i}].color {color}")
        for what in ("image", "thumbnail"):
            # embed image/thumbnail objects: {"url": http(s) URL} (other keys are Discord's own)
            picture = embed.get(what)
            if picture is None:
                continue
            url = picture.get("url") if isinstance(picture, dict) else None
            if set(picture) != {"url"} or not isinstance(url, str):
                problems.append(f"embeds[{i}].{what} is {picture!r}, not {{'url': ...}}")
            elif not url.startswith(("https://", "http://")):
                problems.append(f"embeds[{i}].{what}.url is not an http(s) URL")
    if total > DISCORD_TOTAL_MAX:
        problems.append(f"embeds total {total} chars")
    return problems
