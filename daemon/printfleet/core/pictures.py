"""Print pictures: which links printfleet accepts from a vendor, and how it names them in logs.

Formlabs sends a thumbnail of every print (``print_thumbnail.thumbnail``) and, on printers with
a camera, a photo after the print (``post_print_photo_url``). Both are signed links that expire
(S3-style: the query string carries the signature). The signature *is* the credential, so a
link is only ever logged through :func:`redacted`.

Pure: no I/O. The sources validate with :func:`picture_url`; the chat sinks show what
:class:`Pictures` holds.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

#: Longest link accepted. Signed S3/CloudFront links run to ~1.5 KB; Slack refuses an
#: ``image_url`` over 3000 characters, Discord's embed URLs are capped at 2048.
PICTURE_URL_MAX: Final = 2048

#: Why a vendor's link was dropped (log values and tests; never the link itself).
REJECT_NOT_TEXT: Final = "not a string"
REJECT_TOO_LONG: Final = "too long"
REJECT_SCHEME: Final = "not https"
REJECT_MALFORMED: Final = "malformed"

_LOOPBACK_NAMES: Final = frozenset({"localhost", "localhost.localdomain"})


@dataclass(frozen=True, slots=True)
class Pictures:
    """The links a notification shows, already checked to answer with an image."""

    thumbnail: str | None = None  # the print's preview render
    photo: str | None = None  # the camera photo after the print

    def __bool__(self) -> bool:
        return self.thumbnail is not None or self.photo is not None


NO_PICTURES: Final = Pictures()


class PictureUnavailable(Exception):
    """The current links of a print could not be learned; ``reason`` is safe to log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_picture_url(value: object) -> tuple[str | None, str | None]:
    """``(url, None)`` when ``value`` is a link printfleet may fetch and show, else
    ``(None, reason)``; ``(None, None)`` when there is no link at all (null or empty).

    Accepted: ``https`` anywhere, and plain ``http`` only to a loopback host (the simulator
    and local test servers; a vendor link in clear text elsewhere could be read and altered on
    the way). No user info (``user:pass@``), a host, at most :data:`PICTURE_URL_MAX` chars.
    Chat services fetch the link themselves, so anything else would be wasted or unsafe.
    """
    if value is None or value == "":
        return None, None
    if not isinstance(value, str):
        return None, REJECT_NOT_TEXT
    if len(value) > PICTURE_URL_MAX:
        return None, REJECT_TOO_LONG
    if not value.isascii() or any(c <= " " or c == "\x7f" for c in value):
        return None, REJECT_MALFORMED
    try:
        parts = urlsplit(value)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        return None, REJECT_MALFORMED
    if not host or "@" in parts.netloc:
        return None, REJECT_MALFORMED
    scheme = parts.scheme.lower()
    if scheme == "https" or (scheme == "http" and _loopback(host)):
        return value, None
    return None, REJECT_SCHEME


def picture_url(value: object) -> str | None:
    """``value`` when :func:`check_picture_url` accepts it, else ``None``."""
    return check_picture_url(value)[0]


def redacted(url: str) -> str:
    """``url`` without its query and fragment (where signed links carry their credential)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable link>"
    host = parts.hostname or ""
    port = f":{parts.port}" if _has_port(url) else ""
    return f"{parts.scheme}://{host}{port}{parts.path}" + ("?<redacted>" if parts.query else "")


def _has_port(url: str) -> bool:
    try:
        return urlsplit(url).port is not None
    except ValueError:
        return False


def is_loopback_http(url: str | None) -> bool:
    """``url`` is plain http to this host (a simulator's base URL)."""
    if not url:
        return False
    parts = urlsplit(url)
    return parts.scheme.lower() == "http" and _loopback(parts.hostname or "")
