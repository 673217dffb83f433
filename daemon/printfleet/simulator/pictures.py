"""Print pictures behind signed, expiring links, as a vendor's CDN serves them.

Formlabs hands out ``print_thumbnail.thumbnail`` and ``post_print_photo_url`` as signed links
(S3-style); the simulator serves them on the Formlabs port under ``/cdn/formlabs/``:

- ``/cdn/formlabs/thumbnails/<guid>.png?expires=<unix>&sig=<hex>`` (every run) and
  ``/cdn/formlabs/photos/<guid>.png?...`` (Form 4 family runs, once FINISHED).
- ``expires`` is judged by the simulator's clock. A link rendered at ``t`` expires at the end of
  the *next* ``picture_link_ttl_s`` bucket, so it lives between one and two TTLs and the same
  record rendered twice in a bucket carries the same link (the printer JSON cache relies on it).
- Expired: 403 with S3's XML ``AccessDenied`` / ``Request has expired``; a bad or missing
  signature: 403 ``SignatureDoesNotMatch``; an unknown print: 404 ``NoSuchKey``.
- The body is a 1x1 PNG (``image/png``); ``Range`` is honoured with 206.

Test knobs (:attr:`PictureCdn.mode`): ``"missing"`` answers 404, ``"not_image"`` a 200 HTML
page, ``"hang"`` stalls :attr:`PictureCdn.hang_s` real seconds before answering.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import struct
import zlib
from collections.abc import Callable
from typing import Final

from printfleet.simulator.wire import Request, Response

#: Where the links pointed before the simulator served them (render without a server).
STATIC_CDN: Final = "https://cdn.example.com/formlabs"
PREFIX: Final = "/cdn/formlabs/"
_PATH = re.compile(r"/cdn/formlabs/(?P<kind>thumbnails|photos)/(?P<guid>[0-9a-f-]{1,64})\.png")

#: ``(kind, guid, t)`` -> link; kind is ``thumbnails`` or ``photos``.
Links = Callable[[str, str, int], str]


def static_links(kind: str, guid: str, t: int) -> str:
    """Unsigned links to the placeholder CDN (renders without a running server)."""
    return f"{STATIC_CDN}/{kind}/{guid}.png"


def _png() -> bytes:
    def chunk(tag: bytes, data: bytes) -> bytes:
        body = tag + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)  # 1x1, 8-bit RGB
    pixels = zlib.compress(b"\x00\x1e\x88\xe5")  # filter byte + one blue pixel
    chunks = chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


PNG: Final = _png()


def _s3_error(status: int, code: str, message: str) -> Response:
    body = (
        "<?xml version='1.0' encoding='UTF-8'?>"
        f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    )
    return Response(status, body.encode(), content_type="application/xml")


class PictureCdn:
    """Signs picture links and serves them (call under the simulator lock)."""

    def __init__(self, key: bytes, ttl_s: int, known: Callable[[str], bool]) -> None:
        self.base_url = ""  # set when the Formlabs server has its port
        self.mode = "ok"
        self.hang_s = 30.0
        self._key = key
        self._ttl = max(1, ttl_s)
        self._known = known

    def __repr__(self) -> str:
        return f"PictureCdn(base_url={self.base_url!r}, mode={self.mode!r})"

    def _sig(self, path: str, expires: int) -> str:
        return hmac.new(self._key, f"{path}|{expires}".encode(), hashlib.sha256).hexdigest()[:40]

    def link(self, kind: str, guid: str, t: int) -> str:
        """The signed link to one picture as a record rendered at ``t`` carries it."""
        if not self.base_url:
            return static_links(kind, guid, t)
        path = f"{PREFIX}{kind}/{guid}.png"
        expires = (t // self._ttl + 2) * self._ttl
        return f"{self.base_url}{path}?expires={expires}&sig={self._sig(path, expires)}"

    def handle(self, request: Request, now: float) -> Response:
        """Answer a GET under :data:`PREFIX` at simulated time ``now``."""
        if request.method != "GET":
            return _s3_error(405, "MethodNotAllowed", "The specified method is not allowed.")
        match = _PATH.fullmatch(request.path)
        expires_text, sig = request.param("expires") or "", request.param("sig") or ""
        if match is None or not expires_text.isdigit():
            return _s3_error(403, "AccessDenied", "Request is missing required parameters")
        expires = int(expires_text)
        if not hmac.compare_digest(self._sig(request.path, expires), sig):
            return _s3_error(403, "SignatureDoesNotMatch", "The request signature does not match")
        if now > expires:
            return _s3_error(403, "AccessDenied", "Request has expired")
        response = self._picture(match.group("guid"))
        if response.status == 200 and "range" in request.headers:
            response.status = 206
            response.headers.append(("Content-Range", f"bytes 0-{len(PNG) - 1}/{len(PNG)}"))
        return response

    def _picture(self, guid: str) -> Response:
        if self.mode == "missing" or not self._known(guid):
            return _s3_error(404, "NoSuchKey", "The specified key does not exist.")
        if self.mode == "not_image":
            return Response(200, b"<html><body>Sign in</body></html>", content_type="text/html")
        response = Response(200, PNG, content_type="image/png")
        if self.mode == "hang":
            response.delay_s = self.hang_s
        return response
