"""The Apprise sink's pure parts: priority per service, the plain-text message, redaction."""

from __future__ import annotations

from typing import Any

import apprise
import pytest
from pydantic import SecretStr

from printfleet.sinks.apprise_sink import (
    NOTIFY_TYPES,
    PRIORITIES,
    AppriseSink,
    message_for,
    secret_parts,
    with_priority,
)


def parsed(url: str) -> dict[str, Any]:
    result = apprise.plugins.url_to_dict(url)
    assert result is not None, url
    return dict(result)


def effective(url: str, tone: str) -> Any:
    """The priority (or level) the Apprise plugin ends up with for ``tone``."""
    plugin = apprise.Apprise.instantiate(with_priority(parsed(url), tone))
    assert plugin is not None
    return getattr(plugin, "level", None) or plugin.priority  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("ntfys://ntfy.sh/topic", {"info": "default", "warning": "high", "critical": "max"}),
        ("pover://user@token", {"info": 0, "warning": 0, "critical": 1}),
        ("gotify://host/apptokenvalue", {"info": 5, "warning": 5, "critical": 8}),
        ("prowl://" + "a" * 40, {"info": 0, "warning": 0, "critical": 2}),
        ("bark://host/devicekey", {"info": "active", "critical": "critical"}),
    ],
)
def test_each_service_gets_its_priority_per_severity(url: str, expected: dict[str, Any]) -> None:
    for tone, value in expected.items():
        assert effective(url, tone) == value, (url, tone)
    # Resolved is never urgent.
    assert effective(url, "resolved") == effective(url, "info")


def test_a_priority_in_the_url_is_kept_for_every_severity() -> None:
    for tone in NOTIFY_TYPES:
        assert effective("ntfys://ntfy.sh/topic?priority=min", tone) == "min"
        assert effective("pover://user@token?Priority=-2", tone) == -2


def test_services_without_a_priority_are_left_alone() -> None:
    url = "tgram://123456789:AAbbCCddEEffGGhhIIjjKKllMMnnOOppQQr/12345"
    assert with_priority(parsed(url), "critical") == parsed(url)
    assert set(PRIORITIES) >= {"ntfy", "ntfys", "pover", "gotify", "gotifys"}


def test_every_severity_has_a_notify_type_and_a_priority() -> None:
    for _schema, (_param, levels) in PRIORITIES.items():
        assert set(levels) == set(NOTIFY_TYPES)


def test_message_is_plain_text_with_the_facts() -> None:
    payload = {
        "event": {
            "type": "printer.alert",
            "subject": "Form4-X",
            "source": "printfleet/formlabs/lab",
            "data": {"printer": {"name": "Beaver", "serial": "Form4-X"}},
        },
        "severity": "critical",
        "title": "Beaver: resin tank *empty*",
        "text": "Refill <now>",
        "group": {"subjects": ["Form4-X", "Form4-Y"], "count": 3},
    }
    message = message_for(payload)
    assert message.title == "Beaver: resin tank *empty*"
    assert message.tone == "critical"
    assert message.body.splitlines() == [
        "Refill <now>",
        "• Form4-X",
        "• Form4-Y",
        "… and 1 more",
        "",
        "Printer: Beaver (Form4-X) · Source: lab · Event: printer.alert",
    ]
    resolved = message_for({**payload, "status": "resolved"})
    assert resolved.tone == "resolved"
    assert resolved.title.startswith("Resolved: ")


def test_long_texts_are_cut() -> None:
    message = message_for({"event": {"type": "x"}, "title": "t" * 1000, "text": "b" * 10_000})
    assert len(message.title) <= 250
    assert len(message.body) <= 4000


def test_secret_parts_cover_every_piece_of_the_url() -> None:
    url = "mailtos://user:p%40ss-word@smtp.example.com:465/?to=ops-team@example.com&pass=xyzzy99"
    parts = secret_parts(url)
    for piece in ("p%40ss-word", "p@ss-word", "ops-team@example.com", "xyzzy99", "user:p%40ss"):
        assert any(piece in p for p in parts), piece
    assert all(len(p) >= 4 for p in parts)


@pytest.mark.parametrize(
    "url",
    ["", "not a url", "nosuchservice://secretish/y", "tgram://notatoken"],
)
def test_check_url_says_why_without_quoting_the_url(url: str) -> None:
    problem = AppriseSink.check_url(SecretStr(url))
    assert problem is not None
    for part in ("secretish", "notatoken", "not a url"):
        assert part not in problem


def test_check_url_accepts_the_documented_examples() -> None:
    for url in (
        "ntfys://ntfy.sh/printers-ab12",
        "tgram://123456789:AAbbCCddEEffGGhhIIjjKKllMMnnOOppQQr/12345",
        "pover://userkey@apptoken",
        "mailtos://user:password@example.com?to=ops@example.com",
        "gotifys://gotify.example.com/apptoken",
    ):
        assert AppriseSink.check_url(SecretStr(url)) is None, url
