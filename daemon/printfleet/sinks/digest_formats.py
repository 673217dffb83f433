"""Wire formats of a digest (payload ``kind = "digest"``, see :mod:`printfleet.core.digest`).

The same limits and escaping as :mod:`printfleet.sinks.formats` (whose helpers this uses): the
totals become Slack section fields / a Teams FactSet / Discord inline fields, and each
paragraph of the plain-text body (by group, by printer, still open) its own section, text
block or field, cut to the receiver's limit. The generic webhook gets the CloudEvent
``printfleet.digest`` as it is. :func:`digest_plain` is the rendering for text-only
receivers: ``(title, body, severity)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from printfleet.sinks import formats as f

SLACK_FIELDS_MAX: Final = 10  # section fields (https://api.slack.com/reference/block-kit/blocks)
SLACK_FIELD_MAX: Final = 2000


def is_digest(payload: Mapping[str, Any]) -> bool:
    return payload.get("kind") == "digest"


def digest_plain(payload: Mapping[str, Any]) -> tuple[str, str, str]:
    """``(title, body, severity)`` of a digest payload, cleaned of control characters."""
    n = f.notice(payload)
    return n.title, n.text, n.severity


def _totals(payload: Mapping[str, Any]) -> list[tuple[str, str]]:
    data = payload.get("event", {}).get("data", {})
    totals = data.get("totals") if isinstance(data, Mapping) else None
    if not isinstance(totals, Mapping):
        return []
    rate = totals.get("failure_rate")
    facts = [
        ("Finished", str(totals.get("finished", 0))),
        ("Failed", str(totals.get("failed", 0))),
        ("Aborted", str(totals.get("aborted", 0))),
        ("Failure rate", "n/a" if not isinstance(rate, int | float) else f"{rate * 100:.1f}%"),
        ("Resin used", f"{totals.get('resin_ml', 0):g} ml"),
        ("Offline time", _hours(totals.get("offline_s", 0))),
    ]
    still = data.get("open") if isinstance(data, Mapping) else None
    if isinstance(still, Mapping):
        offline = still.get("offline_count", len(still.get("offline") or ()))
        alerts = still.get("alerts_count", len(still.get("alerts") or ()))
        facts.append(("Offline now", str(offline)))
        facts.append(("Alerts now", str(alerts)))
    return facts


def _hours(seconds: Any) -> str:
    value = float(seconds) if isinstance(seconds, int | float) else 0.0
    return f"{value / 3600:.1f} h"


def _paragraphs(text: str) -> tuple[str, list[tuple[str, str]]]:
    """The summary paragraph, then ``(heading, lines)`` of each further paragraph."""
    parts = [p.strip() for p in text.split("\n\n") if p.strip()]
    if not parts:
        return "", []
    sections: list[tuple[str, str]] = []
    for part in parts[1:]:
        head, _, rest = part.partition("\n")
        sections.append((head.rstrip(":"), rest))
    return parts[0], sections


def slack_digest(payload: Mapping[str, Any]) -> dict[str, Any]:
    n = f.notice(payload)
    summary, sections = _paragraphs(n.text)
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": f.truncate(n.title, f.SLACK_HEADER_MAX)},
        }
    ]
    if summary:
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": f._slack_text(summary)}}
        )
    facts = _totals(payload)[:SLACK_FIELDS_MAX]
    if facts:
        blocks.append(
            {
                "type": "section",
                "fields": [
                    {
                        "type": "mrkdwn",
                        "text": f"*{label}*\n{f._slack_text(value, SLACK_FIELD_MAX)}",
                    }
                    for label, value in facts
                ],
            }
        )
    for head, lines in sections:
        text = f"*{f._slack_escape(head)}*\n" + f._slack_text(lines, f.SLACK_SECTION_MAX - 200)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": text}})
    blocks.append(
        {
            "type": "context",
            "elements": [
                {"type": "mrkdwn", "text": f"printfleet digest {f._slack_text(n.subject, 200)}"}
            ],
        }
    )
    fallback = f._slack_text(n.title)
    return {
        "text": fallback,
        "attachments": [
            {
                "color": f._HEX[n.severity],
                "fallback": fallback,
                "blocks": blocks[: f.SLACK_BLOCKS_MAX],
            }
        ],
    }


def teams_digest(payload: Mapping[str, Any]) -> dict[str, Any]:
    n = f.notice(payload)
    summary, sections = _paragraphs(n.text)
    body: list[dict[str, Any]] = [
        {
            "type": "Container",
            "style": f._TEAMS_STYLE[n.severity],
            "bleed": True,
            "items": [
                {
                    "type": "TextBlock",
                    "text": f._teams_text(n.title, f.TEAMS_HEADING_MAX),
                    "size": "Large",
                    "weight": "Bolder",
                    "wrap": True,
                }
            ],
        }
    ]
    if summary:
        body.append(
            {
                "type": "TextBlock",
                "text": f._teams_text(summary, f.TEAMS_FACT_MAX * 4).replace("\n", "\n\n"),
                "wrap": True,
            }
        )
    facts = _totals(payload)
    if facts:
        body.append(
            {
                "type": "FactSet",
                "facts": [
                    {"title": label, "value": f._teams_text(value, f.TEAMS_FACT_MAX)}
                    for label, value in facts
                ],
            }
        )
    # Three paragraphs share what the message may hold (module docs of formats: 28 KB).
    room = f.TEAMS_TEXT_MAX // 2
    for head, lines in sections:
        body.append({"type": "TextBlock", "text": f._teams_text(head, 100), "weight": "Bolder"})
        text = f._teams_text(lines, room).replace("\n", "\r")
        body.append({"type": "TextBlock", "text": text, "wrap": True})
    return {
        "type": "message",
        "summary": f.truncate(n.title, f.SLACK_HEADER_MAX),
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": f.TEAMS_CARD_VERSION,
                    "msteams": {"width": "Full"},
                    "body": body,
                },
            }
        ],
    }


def discord_digest(payload: Mapping[str, Any]) -> dict[str, Any]:
    n = f.notice(payload)
    summary, sections = _paragraphs(n.text)
    title = f._discord_text(n.title, f.DISCORD_TITLE_MAX)
    fields: list[dict[str, Any]] = [
        {"name": label, "value": f._discord_text(value, 100), "inline": True}
        for label, value in _totals(payload)
    ]
    for head, lines in sections:
        fields.append(
            {
                "name": f.truncate(head, f.DISCORD_FIELD_NAME_MAX),
                "value": f._discord_text(lines or "-", f.DISCORD_FIELD_VALUE_MAX),
                "inline": False,
            }
        )
    fields = fields[: f.DISCORD_FIELDS_MAX]
    footer = f.truncate(f"printfleet · digest {n.subject}", f.DISCORD_FOOTER_MAX)
    used = len(title) + len(footer) + sum(len(x["name"]) + len(x["value"]) for x in fields)
    # The whole embed is capped (6000): fields first, the summary gets what is left.
    while used > f.DISCORD_EMBED_TOTAL_MAX and fields:
        dropped = fields.pop()
        used -= len(dropped["name"]) + len(dropped["value"])
    room = max(0, min(f.DISCORD_DESCRIPTION_MAX, f.DISCORD_EMBED_TOTAL_MAX - used))
    embed: dict[str, Any] = {
        "title": title,
        "color": int(f._HEX[n.severity][1:], 16),
        "fields": fields,
        "footer": {"text": footer},
    }
    description = f._discord_text(summary, room) if summary and room else ""
    if description:
        embed["description"] = description
    if n.time:
        embed["timestamp"] = n.time
    return {"embeds": [embed], "allowed_mentions": {"parse": []}}


BUILDERS: Final = {"slack": slack_digest, "teams": teams_digest, "discord": discord_digest}
