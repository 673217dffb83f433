"""Print pictures in every chat format, through the ecosystem's own validators.

Slack through slack_sdk's block models (ImageBlock, ImageElement as section accessory), Teams
against the vendored Adaptive Cards 1.4.0 schema (Image), Discord against its embed shape.
The generic webhook sends the event unchanged, with or without pictures.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from slack_sdk.models.blocks import ImageBlock, SectionBlock
from tests.ecosystem import discord_problems, slack_problems, teams_problems

from printfleet.core.events import ChangeEvent, EventType, Severity, to_cloudevent
from printfleet.core.model import Print, Printer, PrinterStatus, PrintStatus, Vendor
from printfleet.core.pictures import PICTURE_URL_MAX, Pictures
from printfleet.sinks.formats import (
    PICTURE_ALT_MAX,
    discord_message,
    render,
    slack_message,
    teams_message,
)

THUMB = "https://cdn.example.com/thumbnails/g.png?expires=1&sig=abc"
PHOTO = "https://cdn.example.com/photos/g.png?expires=1&sig=def"
BOTH = Pictures(thumbnail=THUMB, photo=PHOTO)


def payload(name: str = "bracket v2", *, text: str | None = "Beaver finished") -> dict[str, Any]:
    printer = Printer(
        serial="Form4-CapableBeaver",
        name="Beaver",
        vendor=Vendor.FORMLABS,
        model="Form 4",
        model_code="FORM-4-0",
        status=PrinterStatus.IDLE,
        status_raw="IDLE",
        online=True,
    )
    run = Print(id="g-1", name=name, status=PrintStatus.FINISHED, status_raw="FINISHED")
    event = ChangeEvent(
        id="e-1",
        type=EventType.PRINT_FINISHED,
        source="lab",
        vendor=Vendor.FORMLABS,
        subject=printer.serial,
        time=datetime(2026, 1, 1, tzinfo=UTC),
        severity=Severity.INFO,
        printer=printer,
        print=run,
    )
    out: dict[str, Any] = {"event": to_cloudevent(event), "status": "firing"}
    if text is not None:
        out["text"] = text
    return out


PICTURE_SETS = [Pictures(thumbnail=THUMB), Pictures(photo=PHOTO), BOTH]


@pytest.mark.parametrize("pictures", PICTURE_SETS, ids=["thumbnail", "photo", "both"])
@pytest.mark.parametrize("text", ["Beaver finished", None], ids=["text", "no-text"])
def test_every_chat_format_validates_with_pictures(pictures: Pictures, text: str | None) -> None:
    p = payload(text=text)
    assert slack_problems(slack_message(p, pictures)) == []
    assert teams_problems(teams_message(p, pictures)) == []
    assert discord_problems(discord_message(p, pictures)) == []


def test_slack_photo_is_an_image_block_and_thumbnail_sits_beside_the_text() -> None:
    blocks = slack_message(payload(), BOTH)["attachments"][0]["blocks"]
    images = [b for b in blocks if b["type"] == "image"]
    assert len(images) == 1
    image = ImageBlock(**{k: v for k, v in images[0].items() if k != "type"})
    image.validate_json()
    assert image.image_url == PHOTO
    assert image.alt_text == "Photo after printing: bracket v2"
    section = next(b for b in blocks if b["type"] == "section")
    SectionBlock(**{k: v for k, v in section.items() if k != "type"}).validate_json()
    assert section["accessory"] == {
        "type": "image",
        "image_url": THUMB,
        "alt_text": "Preview: bracket v2",
    }


def test_slack_thumbnail_alone_is_the_image_block() -> None:
    blocks = slack_message(payload(), Pictures(thumbnail=THUMB))["attachments"][0]["blocks"]
    assert [b["image_url"] for b in blocks if b["type"] == "image"] == [THUMB]
    assert all("accessory" not in b for b in blocks)


def test_discord_photo_is_the_embed_image_and_thumbnail_the_embed_thumbnail() -> None:
    embed = discord_message(payload(), BOTH)["embeds"][0]
    assert embed["image"] == {"url": PHOTO}
    assert embed["thumbnail"] == {"url": THUMB}
    only = discord_message(payload(), Pictures(thumbnail=THUMB))["embeds"][0]
    assert "image" not in only
    assert only["thumbnail"] == {"url": THUMB}


def test_teams_card_carries_image_elements() -> None:
    body = teams_message(payload(), BOTH)["attachments"][0]["content"]["body"]
    images = [e for e in body if e["type"] == "Image"]
    assert images == [
        {"type": "Image", "url": THUMB, "altText": "Preview: bracket v2", "size": "Medium"},
        {
            "type": "Image",
            "url": PHOTO,
            "altText": "Photo after printing: bracket v2",
            "size": "Large",
        },
    ]


def test_without_pictures_nothing_changes() -> None:
    p = payload()
    for kind in ("slack", "teams", "discord"):
        assert render(kind, p) == render(kind, p, pictures=Pictures())
        assert render(kind, p) != render(kind, p, pictures=BOTH)


def test_the_generic_webhook_ignores_pictures() -> None:
    p = payload()
    assert render("webhook", p, pictures=BOTH) == render("webhook", p)


def test_hostile_print_names_make_plain_short_alt_text() -> None:
    """Alt text is plain text everywhere; a long name is cut, markup in it stays inert."""
    name = "<!channel> *bold* @everyone " + "x" * 500
    long_url = "https://cdn.example.com/" + "a" * (PICTURE_URL_MAX - 24)
    pictures = Pictures(thumbnail=long_url, photo=long_url)
    p = payload(name)
    slack = slack_message(p, pictures)
    assert slack_problems(slack) == []
    assert teams_problems(teams_message(p, pictures)) == []
    assert discord_problems(discord_message(p, pictures)) == []
    alts = [b["alt_text"] for b in slack["attachments"][0]["blocks"] if b["type"] == "image"]
    assert alts
    assert all(len(a) <= PICTURE_ALT_MAX for a in alts)
    assert len(json.loads(render("teams", p, pictures=pictures)[0])["attachments"]) == 1
