"""Digest payloads as every receiver's own validator sees them (ordinary, hostile, huge)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from tests.ecosystem import cloudevent_problems, discord_problems, slack_problems, teams_problems
from tests.unit.digest.helpers import END, START, event, printer, record, snapshots, spec

from printfleet.core.digest import compute_digest
from printfleet.core.digest_render import digest_payload
from printfleet.sinks.digest_formats import digest_plain
from printfleet.sinks.formats import render

HOSTILE = "<!channel> *bold* _x_ [link](http://x) @everyone &amp; \\ # 1. <@123>\x07"


def payload_of(n_printers: int = 3, name: str | None = None) -> dict[str, Any]:
    serials = [f"S{i:05d}" for i in range(n_printers)]
    records = [
        record(s, outcome, START + timedelta(minutes=i), group=f"g{i % 7}", volume=1.5, n=i)
        for i, s in enumerate(serials)
        for outcome in ("finished", "failed", "aborted")
    ]
    events = [
        event("printer.offline", s, START + timedelta(hours=1), material="x") for s in serials
    ]
    events += [
        event("material.low", s, START, material=name or "Grey", empty=True) for s in serials
    ]
    printers = [printer(s, online=False, alerts=(name or "not ready",), name=name) for s in serials]
    d = compute_digest(
        spec(),
        start=START,
        end=END,
        records=records,
        events=events,
        before=[],
        snapshots=snapshots(*printers),
    )
    return digest_payload(d, now=END)


CASES = {
    "small": lambda: payload_of(3),
    "hostile": lambda: payload_of(3, HOSTILE),
    "10k printers": lambda: payload_of(10_000),
    "hostile 300": lambda: payload_of(300, HOSTILE * 20),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def payload(request: pytest.FixtureRequest) -> dict[str, Any]:
    return CASES[request.param]()


def test_generic_webhook_is_a_valid_cloudevent(payload: dict[str, Any]) -> None:
    body, content_type = render("webhook", payload)
    assert content_type == "application/cloudevents+json"
    assert cloudevent_problems(body) == []
    event = json.loads(body)
    assert event["type"] == "printfleet.digest"
    assert event["subject"] == "daily"
    assert len(event["data"]["printers"]) <= 1000
    assert len(event["data"]["open"]["offline"]) <= 1000
    assert (
        event["data"]["open"]["offline_count"]
        == len(payload["event"]["data"]["printers"])
        + (payload["event"]["data"]["printers_omitted"])
    )
    assert len(body) < 1_000_000


def test_slack(payload: dict[str, Any]) -> None:
    message = json.loads(render("slack", payload)[0])
    assert slack_problems(message) == []
    blocks = message["attachments"][0]["blocks"]
    assert blocks[0]["type"] == "header"
    assert any("fields" in b for b in blocks)  # the totals


def test_teams(payload: dict[str, Any]) -> None:
    message = json.loads(render("teams", payload)[0])
    assert teams_problems(message) == []
    body = message["attachments"][0]["content"]["body"]
    assert any(b["type"] == "FactSet" for b in body)


def test_discord(payload: dict[str, Any]) -> None:
    message = json.loads(render("discord", payload)[0])
    assert discord_problems(message) == []
    assert message["allowed_mentions"] == {"parse": []}


def test_plain_rendering_for_text_receivers(payload: dict[str, Any]) -> None:
    title, body, severity = digest_plain(payload)
    assert title.startswith("Lab digest")
    assert "Still open:" in body
    assert "\x07" not in body
    assert severity == "warning"
    assert len(body) < 6000  # capped lines, whatever the fleet size
