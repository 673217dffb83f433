"""Which picture links printfleet accepts from a vendor, and how they appear in logs."""

from __future__ import annotations

import pytest

from printfleet.core.pictures import (
    PICTURE_URL_MAX,
    REJECT_MALFORMED,
    REJECT_NOT_TEXT,
    REJECT_SCHEME,
    REJECT_TOO_LONG,
    Pictures,
    check_picture_url,
    picture_url,
    redacted,
)

SIGNED = "https://cdn.example.com/p/abc.png?X-Amz-Signature=deadbeef&X-Amz-Expires=3600"


@pytest.mark.parametrize(
    "url",
    [
        SIGNED,
        "HTTPS://CDN.EXAMPLE.COM/a.png",
        "https://cdn.example.com:8443/a.png",
        "http://127.0.0.1:8123/cdn/formlabs/thumbnails/x.png?expires=1&sig=2",
        "http://localhost/a.png",
        "http://[::1]:9/a.png",
    ],
)
def test_https_and_loopback_http_are_accepted(url: str) -> None:
    assert check_picture_url(url) == (url, None)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("http://cdn.example.com/a.png", REJECT_SCHEME),
        ("ftp://cdn.example.com/a.png", REJECT_SCHEME),
        ("javascript:alert(1)", REJECT_MALFORMED),
        ("data:image/png;base64,AAAA", REJECT_MALFORMED),
        ("/relative/a.png", REJECT_MALFORMED),
        ("https://user:pass@cdn.example.com/a.png", REJECT_MALFORMED),
        ("https://cdn.example.com/a b.png", REJECT_MALFORMED),
        ("https://cdn.example.com/\u00e9.png", REJECT_MALFORMED),
        ("https://cdn.example.com:port/a.png", REJECT_MALFORMED),
        ("https://cdn.example.com/" + "a" * PICTURE_URL_MAX, REJECT_TOO_LONG),
        (42, REJECT_NOT_TEXT),
        ({"thumbnail": "https://x/y"}, REJECT_NOT_TEXT),
    ],
)
def test_anything_else_is_dropped_with_a_reason(value: object, reason: str) -> None:
    assert check_picture_url(value) == (None, reason)
    assert picture_url(value) is None


@pytest.mark.parametrize("value", [None, ""])
def test_no_link_is_not_a_rejection(value: object) -> None:
    assert check_picture_url(value) == (None, None)


def test_the_longest_accepted_link_is_the_cap() -> None:
    url = "https://cdn.example.com/" + "a" * (PICTURE_URL_MAX - len("https://cdn.example.com/"))
    assert len(url) == PICTURE_URL_MAX
    assert picture_url(url) == url


def test_redacted_drops_the_signature() -> None:
    shown = redacted(SIGNED)
    assert shown == "https://cdn.example.com/p/abc.png?<redacted>"
    assert "deadbeef" not in shown
    assert (
        redacted("https://cdn.example.com:8443/a.png#frag") == "https://cdn.example.com:8443/a.png"
    )


def test_pictures_are_falsy_when_empty() -> None:
    assert not Pictures()
    assert Pictures(photo=SIGNED)
