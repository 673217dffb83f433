"""HTTP webhook sinks: generic signed CloudEvents, Slack, Microsoft Teams and Discord.

One :class:`WebhookSink` per configured ``[[receiver]]``. It renders the payload with
:mod:`printfleet.sinks.formats`, POSTs it once and translates the outcome:

============================================  =================================================
outcome                                       raised
============================================  =================================================
2xx                                           nothing (delivered)
network error, timeout, dropped connection    ``DeliveryFailed(retryable=True)``
the deadline passed (connect + every read)    ``DeliveryFailed(retryable=True)``
429                                           retryable, ``retry_after`` from ``Retry-After``
5xx                                           retryable (``retry_after`` when the server sent it)
other 4xx, 3xx                                not retryable, ``status`` + first 500 chars of body
an invalid URL                                not retryable
============================================  =================================================

``timeout`` is the total deadline of one attempt (connect, send and every read of the reply):
httpx's own timeout is per read, so a receiver trickling its reply could otherwise hold the
sink for ever. Of the reply, at most ``reply_max_size`` bytes are read (the dead-letter
excerpt comes from them); the rest is never read, so a receiver streaming a gigabyte costs
nothing.

Retrying is the outbox's job, not this class's. The target URL is a secret for Slack, Teams and
Discord (whoever has it can post), so it is kept as a ``SecretStr`` and never appears in an error,
a log line or a repr. httpx itself logs request URLs at INFO: the application keeps the
``httpx`` logger at WARNING.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from types import MappingProxyType, TracebackType
from typing import Final, Self

import httpx
from pydantic import SecretStr

from printfleet.clock import Clock
from printfleet.core.backoff import MAX_RETRY_AFTER_S, clamp_wait, parse_retry_after
from printfleet.core.delivery import Delivery
from printfleet.core.pictures import NO_PICTURES, Pictures
from printfleet.errors import DeliveryFailed
from printfleet.lifecycle import Lifecycle
from printfleet.sinks import formats
from printfleet.sinks.pictures import PictureFetcher

KINDS: Final = frozenset({"webhook", "slack", "teams", "discord"})
#: The kinds that show print pictures (the generic webhook carries the event as is).
PICTURE_KINDS: Final = frozenset({"slack", "teams", "discord"})
RESPONSE_EXCERPT: Final = 500
#: The default of ``[limits] reply_max_size``.
DEFAULT_REPLY_MAX_SIZE: Final = 64 * 1024
SIGNATURE_HEADER: Final = "X-Printfleet-Signature"
_NO_HEADERS: Mapping[str, str] = MappingProxyType({})


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The ``X-Printfleet-Signature`` value: ``t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">``.

    Receivers recompute the HMAC over the raw body with the shared secret, compare in constant
    time and reject a ``t`` too far from their own clock (replay protection).
    """
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


class WebhookSink:
    """POSTs deliveries to one receiver in its format (``kind``: webhook, slack, teams, discord).

    The ``client`` is shared and owned by the caller; entering the sink does not open it and
    leaving does not close it. ``secret`` signs generic webhooks (ignored for other kinds).
    ``pictures`` fetches fresh print pictures for chat kinds (``None``: messages without them).
    """

    def __init__(
        self,
        name: str,
        kind: str,
        url: SecretStr,
        *,
        client: httpx.AsyncClient,
        secret: SecretStr | None = None,
        headers: Mapping[str, str] = _NO_HEADERS,
        timeout: float = 10.0,
        reply_max_size: int = DEFAULT_REPLY_MAX_SIZE,
        clock: Clock,
        version: str,
        pictures: PictureFetcher | None = None,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown receiver kind {kind!r}; use one of {sorted(KINDS)}")
        self._name = name
        self._kind = kind
        self._url = url
        self._client = client
        self._secret = secret
        self._headers = dict(headers)
        self._timeout = timeout
        self._reply_max = reply_max_size
        self._clock = clock
        self._user_agent = f"printfleet/{version}"
        self._life = Lifecycle(f"webhook sink {name!r}")
        self._pictures = pictures if kind in PICTURE_KINDS else None

    @property
    def name(self) -> str:
        return self._name

    @property
    def kind(self) -> str:
        return self._kind

    def __repr__(self) -> str:
        return f"WebhookSink(name={self._name!r}, kind={self._kind!r})"

    async def __aenter__(self) -> Self:
        self._life.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._life.close()

    def request_for(
        self, delivery: Delivery, pictures: Pictures = NO_PICTURES
    ) -> tuple[bytes, dict[str, str]]:
        """The body and headers that :meth:`deliver` POSTs (no I/O; signing reads the clock).

        Raises:
            DeliveryFailed: not retryable, when the payload cannot be rendered.
        """
        try:
            body, content_type = formats.render(self._kind, delivery.payload, pictures=pictures)
        except (ValueError, TypeError) as err:
            raise DeliveryFailed(
                self._name, f"payload cannot be rendered: {err}", retryable=False
            ) from err
        headers = dict(self._headers)  # ours win, so extra headers cannot break the contract
        headers["Content-Type"] = content_type
        headers["User-Agent"] = self._user_agent
        if self._kind == "webhook":
            headers["X-Printfleet-Event-Id"] = delivery.event_id
            headers["X-Printfleet-Status"] = str(delivery.payload.get("status", "firing"))
            if self._secret is not None:
                timestamp = int(self._clock.now().timestamp())
                headers[SIGNATURE_HEADER] = sign(
                    self._secret.get_secret_value().encode(), timestamp, body
                )
        return body, headers

    async def deliver(
        self,
        delivery: Delivery,
        *,
        on_reply: Callable[[int | None, str], None] | None = None,
    ) -> None:
        """POST ``delivery`` once; see the module docstring for how outcomes translate.

        ``on_reply`` (``printfleet receiver test``) is told the status and the (capped,
        redacted) reply of an accepted request.

        Raises:
            DeliveryFailed: the receiver did not accept it.
            RuntimeError: the sink is not open.
        """
        self._life.check_open()
        pictures = NO_PICTURES
        if self._pictures is not None:
            # Before the attempt's deadline starts: the picture step has its own short ones.
            pictures = await self._pictures.pictures(
                self._name, delivery.payload, delivery_id=delivery.id
            )
        body, headers = self.request_for(delivery, pictures)
        try:
            async with asyncio.timeout(self._timeout) as deadline:
                request = self._client.build_request(
                    "POST",
                    self._url.get_secret_value(),
                    content=body,
                    headers=headers,
                    timeout=self._timeout,
                )
                response = await self._client.send(request, stream=True)
                try:
                    reply = await self._read_reply(response)
                finally:
                    await response.aclose()
        except TimeoutError:
            if not deadline.expired():
                raise
            raise DeliveryFailed(
                self._name,
                f"timed out (no complete reply within the {self._timeout:g} s deadline)",
                retryable=True,
            ) from None
        except httpx.TimeoutException as err:
            # `from None`: httpx messages may quote the URL, which is a secret here.
            raise DeliveryFailed(
                self._name, f"timed out ({type(err).__name__})", retryable=True
            ) from None
        except httpx.TransportError as err:
            raise DeliveryFailed(
                self._name,
                f"network error ({type(err).__name__}: {self._redact(str(err))})",
                retryable=True,
            ) from None
        except httpx.HTTPError as err:
            raise DeliveryFailed(
                self._name, f"request failed ({type(err).__name__})", retryable=True
            ) from None
        except httpx.InvalidURL:
            raise DeliveryFailed(
                self._name, "the receiver URL is invalid; check url/url_file", retryable=False
            ) from None
        self._check(response, reply)
        if on_reply is not None:
            on_reply(response.status_code, self._redact(_excerpt(response, reply)))

    async def _read_reply(self, response: httpx.Response) -> bytes:
        """At most ``reply_max_size`` bytes of the reply.

        Also read for a 2xx (usually ``ok``): a reply read to its end lets the connection be
        reused for the next delivery.
        """
        limit = self._reply_max
        kept = bytearray()
        async for chunk in response.aiter_bytes():
            kept += chunk[: limit - len(kept)]
            if len(kept) >= limit:
                break  # the rest is never read: closing the response drops it
        return bytes(kept)

    def _check(self, response: httpx.Response, reply: bytes) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        excerpt = self._redact(_excerpt(response, reply))
        if status == 429 or status >= 500:
            retry_after = parse_retry_after(response.headers.get("Retry-After"), self._clock.now())
            if retry_after is None and status == 429:
                retry_after = _json_retry_after(reply)
            raise DeliveryFailed(
                self._name,
                f"HTTP {status}",
                retryable=True,
                retry_after=retry_after,
                status=status,
                response=excerpt,
            )
        raise DeliveryFailed(
            self._name,
            f"HTTP {status} (not retried: the receiver rejected the request)",
            retryable=False,
            status=status,
            response=excerpt,
        )

    def _redact(self, text: str) -> str:
        """``text`` with the URL (and its path and query, the secret parts) replaced."""
        url = self._url.get_secret_value()
        candidates = [url]
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError, ValueError):
            pass
        else:
            candidates += [parsed.raw_path.decode(errors="replace"), parsed.query.decode()]
        for secret in sorted((c for c in candidates if len(c) > 3), key=len, reverse=True):
            text = text.replace(secret, "<redacted>")
        if self._secret is not None and len(self._secret.get_secret_value()) > 3:
            text = text.replace(self._secret.get_secret_value(), "<redacted>")
        return text


def _excerpt(response: httpx.Response, reply: bytes) -> str:
    """The first characters of the (capped) reply, in its declared charset when it has one."""
    encoding = response.charset_encoding or "utf-8"
    try:
        text = reply.decode(encoding, errors="replace")
    except LookupError:  # an unknown charset name
        text = reply.decode("utf-8", errors="replace")
    return text[:RESPONSE_EXCERPT]


def _json_retry_after(reply: bytes) -> float | None:
    """Discord also says how long to wait in the JSON body (``retry_after`` seconds)."""
    try:
        value = json.loads(reply).get("retry_after")
    except (ValueError, AttributeError, RecursionError):
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        return clamp_wait(float(value))
    except OverflowError:  # an int too large for a float
        return MAX_RETRY_AFTER_S
