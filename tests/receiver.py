"""A real HTTP receiver on localhost for webhook tests: records requests, answers from a script.

Usage::

    async with Receiver() as receiver:
        receiver.script(Reply(503), Reply(drop=True), Reply(200))
        ... POST to receiver.url ...
        await receiver.wait_for_requests(3)

It is a small HTTP/1.1 server on asyncio streams (keep-alive, ``Content-Length`` bodies), running
in the test's own event loop, so tests wait on conditions instead of sleeping. Each request
takes the next scripted :class:`Reply` (``200`` once the script is used up). ``Reply(drop=True)``
reads the headers and part of the body, then closes the connection without answering, as a
crashing receiver or a broken proxy would. Two hostile answers: ``Reply(trickle_s=0.5)`` sends
the whole answer (status line included) one byte every 0.5 s, a slow-loris reply that never
finishes in any reasonable time; ``Reply(stream_size=10**9)`` answers with a body that size,
generated while it is sent (never held in memory), until the client hangs up.

With ``secret`` set it also checks ``X-Printfleet-Signature`` the way a receiver should (HMAC over
``"<t>.<body>"``, constant-time compare, ``t`` within ``tolerance`` seconds of ``now()``) and
answers 401 to requests that fail, before consulting the script.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Self


@dataclass(frozen=True, slots=True)
class Reply:
    """One scripted answer."""

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    drop: bool = False
    trickle_s: float = 0.0
    """Send the answer one byte every this many seconds (slow loris); 0 = all at once."""
    stream_size: int = 0
    """Answer with a generated body of this many bytes instead of ``body``; 0 = off."""

    @property
    def hostile(self) -> bool:
        """Whether this answer is meant never to be read whole by a well-behaved client."""
        return self.trickle_s > 0 or self.stream_size > 0


@dataclass(frozen=True, slots=True)
class Received:
    """One request as the receiver saw it (header names lower-cased)."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes
    dropped: bool = False
    signature_ok: bool | None = None


def verify_signature(
    secret: bytes, header: str | None, body: bytes, *, now: float, tolerance: float = 300.0
) -> bool:
    """Whether ``header`` (``t=<unix>,v1=<hex>``) signs ``body`` with ``secret`` recently enough."""
    if not header:
        return False
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    try:
        timestamp = int(parts["t"])
        given = parts["v1"]
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance:
        return False
    expected = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, given)


class Receiver:
    """The server; ``url`` is valid inside ``async with``."""

    def __init__(
        self,
        *,
        secret: bytes | None = None,
        tolerance: float = 300.0,
        now: Callable[[], float] = time.time,
    ) -> None:
        self._secret = secret
        self._tolerance = tolerance
        self._now = now
        self._script: deque[Reply] = deque()
        self._server: asyncio.Server | None = None
        self._arrived = asyncio.Condition()
        self._connections: set[asyncio.StreamWriter] = set()
        self.requests: list[Received] = []
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, *replies: Reply) -> None:
        """Answer the next requests with ``replies``, in order."""
        self._script.extend(replies)

    async def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[Received]:
        """Wait until at least ``count`` requests arrived; returns all of them."""
        async with self._arrived:
            await asyncio.wait_for(
                self._arrived.wait_for(lambda: len(self.requests) >= count), timeout
            )
        return list(self.requests)

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._connections):
                writer.close()
            await self._server.wait_closed()

    async def _record(self, request: Received) -> None:
        async with self._arrived:
            self.requests.append(request)
            self._arrived.notify_all()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        try:
            while await self._one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._connections.discard(writer)
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Handle one request; returns whether the connection stays open."""
        line = await reader.readline()
        if not line:
            return False
        method, path, _ = line.decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        while True:
            raw = await reader.readline()
            if raw in (b"\r\n", b"\n", b""):
                break
            name, _, value = raw.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        reply = self._script.popleft() if self._script else Reply()
        if reply.drop:
            body = await reader.readexactly(length // 2)
            await self._record(Received(method, path, headers, body, dropped=True))
            writer.transport.abort()
            return False
        body = await reader.readexactly(length)
        signature_ok: bool | None = None
        if self._secret is not None:
            signature_ok = verify_signature(
                self._secret,
                headers.get("x-printfleet-signature"),
                body,
                now=self._now(),
                tolerance=self._tolerance,
            )
            if not signature_ok:
                reply = Reply(401, body=b'{"error":"bad signature"}')
        await self._record(Received(method, path, headers, body, signature_ok=signature_ok))
        reason = (
            HTTPStatus(reply.status).phrase if reply.status in HTTPStatus._value2member_map_ else ""
        )
        size = reply.stream_size or len(reply.body)
        head = [f"HTTP/1.1 {reply.status} {reason}", f"Content-Length: {size}"]
        head += [f"{k}: {v}" for k, v in reply.headers.items()]
        raw = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        if not reply.hostile:
            writer.write(raw + reply.body)
            await writer.drain()
            return True
        if reply.trickle_s > 0:
            for i in range(len(raw)):
                writer.write(raw[i : i + 1])
                await writer.drain()
                # The slowness is the reply itself, not a test waiting for something.
                await asyncio.sleep(reply.trickle_s)
        else:
            writer.write(raw)
        await self._stream(writer, reply.stream_size or len(reply.body), reply)
        return False  # a client that gave up on the body cannot reuse the connection

    @staticmethod
    async def _stream(writer: asyncio.StreamWriter, size: int, reply: Reply) -> None:
        """Write the body: ``reply.body`` slowly, or ``size`` generated bytes 64 KiB a time."""
        if reply.stream_size == 0:
            for i in range(len(reply.body)):
                writer.write(reply.body[i : i + 1])
                await writer.drain()
                await asyncio.sleep(reply.trickle_s)
            return
        block = b"x" * 65536
        left = size
        while left > 0:
            step = min(left, len(block))
            writer.write(block if step == len(block) else block[:step])
            await writer.drain()  # raises ConnectionError once the client hangs up
            left -= step
