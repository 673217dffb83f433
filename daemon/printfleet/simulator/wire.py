"""HTTP-level values shared by the server and the vendor APIs: requests, responses, formats.

The vendor APIs are plain functions from :class:`Request` to :class:`Response`; the server in
:mod:`printfleet.simulator.server` owns sockets, the gateway adds faults, limits and logging.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

JsonObject = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Request:
    """One parsed HTTP request. Header names are lower-case."""

    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]
    body: bytes
    client: str
    target: str  # the request target as sent (path and query)

    def param(self, name: str) -> str | None:
        """The first value of a query parameter, or None."""
        values = self.query.get(name)
        return values[0] if values else None


@dataclass(slots=True)
class Response:
    """What to send back. ``reset`` drops the connection instead; ``delay_s`` is real time.

    ``stream`` (fault knobs only) replaces ``body`` with chunks produced while they are sent,
    ``stream_length`` bytes long (``None``: no Content-Length, the body ends when the
    connection closes); ``trickle_s`` sends the body one byte every that many real seconds.
    """

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)
    reset: bool = False
    delay_s: float = 0.0
    stream: Iterable[bytes] | None = None
    stream_length: int | None = None
    trickle_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Moment:
    """The two clocks a request is judged by.

    ``sim`` is fleet time (what the printers report); ``protocol`` judges token lifetimes, JWT
    ``exp``, cursor expiry and rate-limit windows (the simulated clock unless configured ``wall``).
    """

    sim: float
    protocol: float

    @property
    def sim_s(self) -> int:
        return int(self.sim)


def dumps(value: object) -> bytes:
    """Compact JSON bytes, as the vendors send."""
    return json.dumps(value, separators=(",", ":"), check_circular=False).encode()


def json_response(
    status: int, value: object, headers: list[tuple[str, str]] | None = None
) -> Response:
    """A JSON response."""
    return Response(status, dumps(value), headers=list(headers or []))


def html_response(status: int, text: str) -> Response:
    """The HTML error pages web stacks and load balancers send (not JSON on purpose)."""
    return Response(status, text.encode(), content_type="text/html; charset=utf-8")


def iso_seconds(t: int | None) -> str | None:
    """Formlabs style: ``2025-06-18T14:29:41Z``."""
    if t is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def iso_millis(t: int | None) -> str | None:
    """Carbon style: ``2025-06-17T14:29:52.000Z``."""
    if t is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(t))


def parse_instant(text: str) -> float | None:
    """Lenient ISO-8601 (``Z``, offsets, fractions, bare dates; naive means UTC) to epoch seconds.

    Returns None when the text is not a date or date-time.
    """
    text = text.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
        # Strict about "+": an unencoded "+00:00" arrives as a space, and real servers reject it.
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()
