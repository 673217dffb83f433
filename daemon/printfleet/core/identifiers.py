"""Names from outside (source names, serials, slots) made safe as MQTT topic levels and Home
Assistant ids, reversibly and without collisions.

Vendors send serials we do not control: ``a/b`` and ``a_b``, ``+`` and ``#``, control
characters (mosquitto drops the connection of a client publishing U+0001), lone surrogates
(not encodable as UTF-8 at all) and 70,000-character strings (MQTT caps a topic at 65,535
bytes). Every such name maps to exactly one topic level and back, and to one Home Assistant
id; ordinary serials (``Form4-CapableBeaver``) keep the topic level they always had.

Topic levels (:func:`topic_level`) are percent-encoded UTF-8 (``%XX``, upper-case) for ``%``,
``/``, ``+``, ``#``, ``~``, U+0000-U+001F, U+007F-U+009F, Unicode non-characters (U+FDD0-U+FDEF
and U+xFFFE/U+xFFFF, which mosquitto also refuses in topics) and lone surrogates (their
``surrogatepass`` bytes, ``%ED%A0%80`` for U+D800); everything else is unchanged. A level
longer than :data:`MAX_LEVEL_BYTES` is cut to its first :data:`KEEP_BYTES` bytes (never inside
a code point or an escape) plus ``~`` and 16 hex digits of the SHA-256 of the original, so a
shortened level never equals a natural one (a natural ``~`` is encoded as ``%7E``).

Home Assistant ids (:func:`ha_id`) use only ``[a-z0-9_]`` (entity ids allow no more, and no
``__`` or leading/trailing ``_``); whenever that changes the text, ``_`` and 8 hex digits of
its SHA-256 are appended, so ``a/b`` and ``a_b`` get different ids.

Pure: standard library only.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

#: Longest topic level we publish, in UTF-8 bytes (MQTT allows 65,535 for a whole topic;
#: Home Assistant and most brokers' ACL tooling are happier far below that).
MAX_LEVEL_BYTES: Final = 128
#: Bytes of the encoded level kept in front of ``~<hash>`` when a level is shortened.
KEEP_BYTES: Final = 100
#: Separator of a shortened level's hash; never produced by the encoding itself.
SHORTENED: Final = "~"
#: Longest Home Assistant id we emit.
MAX_HA_ID: Final = 64

_LEVEL_HASH_HEX: Final = 16
_HA_HASH_HEX: Final = 8

_RESERVED: Final = frozenset("%/+#~")
_HEX: Final = frozenset("0123456789ABCDEF")
_HA_UNSAFE: Final = re.compile(r"[^a-z0-9_]")
_HA_RUNS: Final = re.compile(r"_{2,}")
#: Lone surrogates: a vendor's undecodable text survives JSON decoding as these, and UTF-8
#: cannot encode them. The one pattern every writer of printfleet checks for.
SURROGATES: Final = re.compile(r"[\ud800-\udfff]")
# A whole level needs no work when it holds none of these (the common case, one regex scan).
_NEEDS_ENCODING: Final = re.compile(
    "[%/+#~\x00-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef\ufffe\uffff]"
    "|[\U0001fffe\U0001ffff\U0002fffe\U0002ffff\U0003fffe\U0003ffff\U0004fffe\U0004ffff"
    "\U0005fffe\U0005ffff\U0006fffe\U0006ffff\U0007fffe\U0007ffff\U0008fffe\U0008ffff"
    "\U0009fffe\U0009ffff\U000afffe\U000affff\U000bfffe\U000bffff\U000cfffe\U000cffff"
    "\U000dfffe\U000dffff\U000efffe\U000effff\U000ffffe\U000fffff\U0010fffe\U0010ffff]"
)


def _utf8(text: str) -> bytes:
    """UTF-8 bytes of any ``str``, lone surrogates included (as CESU-style 3-byte forms)."""
    return text.encode("utf-8", "surrogatepass")


def _must_encode(char: str) -> bool:
    code = ord(char)
    return (
        char in _RESERVED
        or code <= 0x1F
        or 0x7F <= code <= 0x9F
        or 0xD800 <= code <= 0xDFFF
        or 0xFDD0 <= code <= 0xFDEF
        or (code & 0xFFFE) == 0xFFFE
    )


def _escape(char: str) -> str:
    return "".join(f"%{byte:02X}" for byte in _utf8(char))


def _digest(text: str, hex_chars: int) -> str:
    return hashlib.sha256(_utf8(text)).hexdigest()[:hex_chars]


def topic_level(text: str) -> str:
    """``text`` as one MQTT topic level: reversible, never ``/``, ``+``, ``#`` or U+0000, valid
    UTF-8 and at most :data:`MAX_LEVEL_BYTES` bytes (see the module docstring for the rule).

    >>> topic_level("Form4-CapableBeaver")
    'Form4-CapableBeaver'
    >>> topic_level("a/b")
    'a%2Fb'
    """
    if _NEEDS_ENCODING.search(text) is None:
        pieces = list(text)
    else:
        pieces = [_escape(c) if _must_encode(c) else c for c in text]
    size = sum(len(p) if p.isascii() else len(p.encode()) for p in pieces)
    if size <= MAX_LEVEL_BYTES:
        return "".join(pieces)
    kept: list[str] = []
    used = 0
    for piece in pieces:  # whole characters and whole escapes only
        length = len(piece) if piece.isascii() else len(piece.encode())
        if used + length > KEEP_BYTES:
            break
        kept.append(piece)
        used += length
    return "".join(kept) + SHORTENED + _digest(text, _LEVEL_HASH_HEX)


def is_shortened(level: str) -> bool:
    """Whether ``level`` is a shortened one (``...~<hash>``), which cannot be decoded."""
    return SHORTENED in level


def from_topic_level(level: str) -> str:
    """The text whose :func:`topic_level` is ``level`` (the exact inverse).

    Raises:
        ValueError: ``level`` was shortened (the text is not in it; the real serial is in the
            payloads), or is not something :func:`topic_level` produces (a bad or needless
            escape, a reserved character left unencoded).
    """
    if is_shortened(level):
        raise ValueError(f"{level[:40]!r}... is a shortened topic level; it cannot be decoded")
    if "%" not in level:
        text = level
    else:
        out = bytearray()
        i = 0
        while i < len(level):
            char = level[i]
            if char == "%":
                pair = level[i + 1 : i + 3]
                if len(pair) != 2 or not set(pair) <= _HEX:
                    raise ValueError(f"bad escape at {i} in topic level {level[:40]!r}")
                out.append(int(pair, 16))
                i += 3
            else:
                out += char.encode("utf-8", "surrogatepass")
                i += 1
        try:
            text = out.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError as err:
            raise ValueError(f"escapes in {level[:40]!r} are not UTF-8") from err
    if topic_level(text) != level:  # one text, one level: reject non-canonical spellings
        raise ValueError(f"{level[:40]!r} is not a topic level this encoding produces")
    return text


def ha_id(text: str) -> str:
    """``text`` as a Home Assistant id: ``[a-z0-9_]``, no ``__``, no leading or trailing
    ``_``, at most :data:`MAX_HA_ID` characters; ``_`` + 8 hex digits of SHA-256 appended
    whenever the text had to change (so distinct texts get distinct ids).

    >>> ha_id("status")
    'status'
    >>> ha_id("a/b") != ha_id("a_b")
    True
    """
    cleaned = _HA_RUNS.sub("_", _HA_UNSAFE.sub("_", text.lower())).strip("_")
    if cleaned == text and 0 < len(text) <= MAX_HA_ID:
        return text
    room = MAX_HA_ID - _HA_HASH_HEX - 1
    head = cleaned[:room].rstrip("_")
    digest = _digest(text, _HA_HASH_HEX)
    return f"{head}_{digest}" if head else digest


def utf8(text: str) -> bytes:
    """``text`` as UTF-8 for the wire; JSON writers use :func:`json_bytes` instead. Lone
    surrogates become U+FFFD (a scalar payload must be valid UTF-8 for its subscribers)."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return safe_text(text).encode("utf-8")


def safe_text(text: str) -> str:
    """``text`` with lone surrogates replaced by U+FFFD, so it encodes as UTF-8 (metric label
    values, log lines). Lossy: use it for display only, never for a key."""
    if text.isascii():
        return text
    return SURROGATES.sub("\ufffd", text)
