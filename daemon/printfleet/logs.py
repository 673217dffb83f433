"""Logging: structlog for our code, the stdlib's loggers routed through the same pipeline, and a
redaction processor that keeps secrets out of every rendered line.

Output is JSON lines when the stream is not a terminal (systemd/journald, containers) and
colored key=value text when it is. Timestamps are ISO 8601 UTC.

Redaction is the last processor before rendering, so it sees every value a line will show,
including formatted tracebacks. It replaces with ``***``:

- every value passed to :func:`register_secret` (config secrets, minted tokens);
- ``Bearer <token>`` (the token part, 8+ characters);
- PEM private key blocks;
- JWTs (``eyJ...`` with three dot-separated base64url parts);
- the path of Slack, Discord and Microsoft Teams / Power Automate webhook URLs (the path *is*
  the credential).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from collections.abc import Mapping
from typing import Any, TextIO
from urllib.parse import quote

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from printfleet.core.identifiers import safe_text

REDACTED = "***"

#: Registered secrets shorter than this are ignored: redacting every "abc" would garble logs
#: while protecting nothing (no real credential is that short).
MIN_SECRET_LENGTH = 6
#: How many non-permanent secrets (tokens sources mint, typically daily) are remembered, newest
#: kept. A long-running daemon must not grow the list without bound, and a token this many
#: renewals old has long expired. Permanent secrets (from the config) are never dropped.
MAX_TEMPORARY_SECRETS = 64

# urllib3: Apprise's transport (through requests), which logs request paths at DEBUG.
_QUIET_LOGGERS = ("httpx", "httpcore", "aiomqtt", "urllib3")

# redact() checks for "://", "eyJ", "-----BEGIN" and "[Bb]earer"/"BEARER" with plain substring
# tests before running this, so a value with nothing credential-like costs well under a
# microsecond. Every alternative below contains one of those markers.
_PATTERNS = re.compile(
    r"(?P<pem>-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z))"
    r"|(?P<bearer>\b(?:[Bb]earer|BEARER)\s+)[A-Za-z0-9\-._~+/]{8,}=*"
    r"|(?P<jwt>\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*)"
    r"|(?P<hook>https?://(?:"
    r"hooks\.slack\.com"
    r"|(?:[\w-]+\.)?discord(?:app)?\.com/api(?:/v\d+)?/webhooks"
    r"|[\w.-]*webhook\.office\.com"
    r"|outlook\.office(?:365)?\.com/webhook"
    r"|[\w.-]+\.logic\.azure\.com(?::\d+)?"
    r"|[\w.-]+\.powerplatform\.com(?::\d+)?"
    r")/)[^\s\"'<>]+",
    re.DOTALL,
)


def _replace(match: re.Match[str]) -> str:
    keep = match.group("bearer") or match.group("hook") or ""
    return keep + REDACTED


class _SecretRegistry:
    """Secret values to redact, longest first. Thread-safe: readers take the current tuple."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._permanent: dict[str, None] = {}  # insertion-ordered sets
        self._temporary: dict[str, None] = {}
        self.ordered: tuple[str, ...] = ()

    def add(self, value: str, *, permanent: bool) -> None:
        # Also the forms a secret takes inside a URL or a JSON/repr string.
        variants = {value, quote(value, safe=""), json.dumps(value)[1:-1]}
        with self._lock:
            for variant in variants:
                if len(variant) < MIN_SECRET_LENGTH or variant in self._permanent:
                    continue
                self._temporary.pop(variant, None)
                (self._permanent if permanent else self._temporary)[variant] = None
            while len(self._temporary) > MAX_TEMPORARY_SECRETS * 3:
                del self._temporary[next(iter(self._temporary))]
            self.ordered = tuple(
                sorted([*self._permanent, *self._temporary], key=len, reverse=True)
            )

    def clear(self) -> None:
        with self._lock:
            self._permanent.clear()
            self._temporary.clear()
            self.ordered = ()


_secrets = _SecretRegistry()


def register_secret(value: str, *, permanent: bool = False) -> None:
    """Redact ``value`` from every log line from now on (surrounding whitespace is ignored).

    Tokens a source mints are registered as they are (the newest
    :data:`MAX_TEMPORARY_SECRETS` are kept); secrets from the config are ``permanent``.
    """
    value = value.strip()
    if value:
        _secrets.add(value, permanent=permanent)


def forget_secrets() -> None:
    """Drop every registered secret (tests; a config reload re-registers what it loads)."""
    _secrets.clear()


def redact(text: str) -> str:
    """``text`` with registered secrets and secret-looking strings replaced by ``***``.

    Returns ``text`` itself (no copy) when there is nothing to redact.
    """
    if len(text) < MIN_SECRET_LENGTH:
        return text
    for secret in _secrets.ordered:
        if secret in text:
            text = text.replace(secret, REDACTED)
    if "://" in text or "eyJ" in text or "-----BEGIN" in text or "earer" in text or "EARER" in text:
        text = _PATTERNS.sub(_replace, text)
    return text


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {key: _redact_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return type(value)(_redact_value(item) for item in value) if value else value
    # Anything else is rendered through repr() (exceptions, dataclasses, ...): check that text,
    # and keep the object itself when it is clean so renderers treat it as usual.
    text = repr(value)
    cleaned = redact(text)
    return value if cleaned is text or cleaned == text else cleaned


def redact_processor(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: redact every value of the event dict, recursively."""
    for key, value in event_dict.items():
        cleaned = _redact_value(value)
        if cleaned is not value:
            event_dict[key] = cleaned
    return event_dict


#: Longest string value a log line carries. A vendor can send a 70,000-character serial; journald
#: splits lines over 48 KiB, which would break the one-JSON-object-per-line log. A traceback may
#: be longer (it quotes code and the error), but is bounded too.
MAX_VALUE_CHARS = 2000
MAX_TRACEBACK_CHARS = 16_000


def text_processor(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Replace lone surrogates (a vendor's undecodable serial) in string values by U+FFFD, so
    every line encodes as UTF-8 on stdout in any format (no lost line, no logging error), and
    cut values longer than :data:`MAX_VALUE_CHARS` (tracebacks: :data:`MAX_TRACEBACK_CHARS`)."""
    for name, value in event_dict.items():
        if not isinstance(value, str):
            continue
        cap = MAX_TRACEBACK_CHARS if name == "exception" else MAX_VALUE_CHARS
        if len(value) > cap:
            value = f"{value[:cap]}… ({len(value)} characters)"
            event_dict[name] = value
        if not value.isascii():
            event_dict[name] = safe_text(value)
    return event_dict


def _level_number(level: str) -> int:
    number = logging.getLevelName(level.upper())
    if not isinstance(number, int):
        raise ValueError(f"unknown log level {level!r}; use debug, info, warning or error")
    return number


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler we install so reconfiguring replaces it instead of adding another."""


def configure_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Send structlog and stdlib logging at ``level`` or above to ``stream`` (default stdout).

    ``fmt`` is ``json``, ``console`` or ``auto`` (JSON unless ``stream`` is a terminal).
    Calling it again replaces the previous configuration.
    """
    stream = sys.stdout if stream is None else stream
    number = _level_number(level)
    if fmt == "auto":
        fmt = "console" if _isatty(stream) else "json"
    if fmt not in ("json", "console"):
        raise ValueError(f"unknown log format {fmt!r}; use auto, json or console")

    renderer: Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=_isatty(stream))

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(number),
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # Tracebacks become text *before* redaction so secrets in them are caught.
            structlog.processors.format_exc_info,
            redact_processor,
            text_processor,
            renderer,
        ],
    )
    handler = _Handler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(number)
    for name in _QUIET_LOGGERS:
        # httpx logs every request URL at INFO; keep that (and its peers) out of our logs.
        logging.getLogger(name).setLevel(max(logging.WARNING, number))


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
