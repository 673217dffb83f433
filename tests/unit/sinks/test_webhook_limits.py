"""A webhook receiver cannot hold or flood a sink: total deadline, capped reply.

Both hostile receivers are real local HTTP servers (a slow-loris one and one streaming a
gigabyte into its reply, generated as it is sent, never held in memory).
"""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import httpx
import pytest
from pydantic import SecretStr

from printfleet.core.delivery import Delivery
from printfleet.errors import DeliveryFailed
from printfleet.sinks.webhook import WebhookSink
from printfleet.testing import FakeClock

MiB = 1024**2
GB = 1024**3
Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def delivery() -> Delivery:
    return Delivery(
        id="d1",
        sink="hook",
        event_id="event-1",
        key="lab/Form4-CapableBeaver",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        payload={"event": {"id": "event-1"}, "status": "firing", "title": "t", "text": "x"},
    )


async def _read_request(reader: asyncio.StreamReader) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        ),
        0,
    )
    await reader.readexactly(length)


async def huge_reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """HTTP 500 with a 1 GB body, written lazily in 64 KiB pieces."""
    await _read_request(reader)
    writer.write(f"HTTP/1.1 500 Oops\r\nContent-Length: {GB}\r\n\r\n".encode())
    piece = b"E" * (64 * 1024)
    try:
        for _ in range(GB // len(piece)):
            writer.write(piece)
            await writer.drain()
    except ConnectionError:
        pass  # the sink stopped reading: what we want


async def slow_loris(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A 200 whose headers come one byte every 0.1 s, for ever."""
    await _read_request(reader)
    try:
        while True:
            writer.write(b"H")
            await writer.drain()
            await asyncio.sleep(0.1)  # the hostile peer's pace, not the test waiting
    except ConnectionError:
        pass


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Serve], Awaitable[str]]]:
    servers: list[asyncio.Server] = []
    tasks: set[asyncio.Task[None]] = set()

    async def start(handler: Serve) -> str:
        async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            tasks.add(task)  # type: ignore[arg-type]
            try:
                await handler(reader, writer)
            finally:
                writer.close()

        server = await asyncio.start_server(tracked, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook"

    yield start
    for task in tasks:
        task.cancel()
    for server in servers:
        server.close()


def sink(url: str, client: httpx.AsyncClient, clock: FakeClock, **kw: float) -> WebhookSink:
    return WebhookSink(
        "hook", "webhook", SecretStr(url), client=client, clock=clock, version="1", **kw
    )


async def test_a_1gb_reply_costs_nothing(
    serve: Callable[[Serve], Awaitable[str]], clock: FakeClock
) -> None:
    """A receiver streaming 1 GB into a 500 reply: retryable, excerpt kept, heap under 2 MiB."""
    url = await serve(huge_reply)
    async with httpx.AsyncClient() as client, sink(url, client, clock, timeout=20) as hook:
        tracemalloc.start()
        started = time.monotonic()
        try:
            with pytest.raises(DeliveryFailed) as caught:
                await hook.deliver(delivery())
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert caught.value.retryable
    assert caught.value.status == 500
    assert caught.value.response == "E" * 500
    assert peak < 2 * MiB
    assert time.monotonic() - started < 5.0  # 64 KiB read, not a gigabyte


async def test_reply_max_size_bounds_what_is_read(
    serve: Callable[[Serve], Awaitable[str]], clock: FakeClock
) -> None:
    """With reply_max_size = 100 B the excerpt holds those 100 bytes and no more."""
    url = await serve(huge_reply)
    async with httpx.AsyncClient() as client, sink(url, client, clock, reply_max_size=100) as hook:
        with pytest.raises(DeliveryFailed) as caught:
            await hook.deliver(delivery())
    assert caught.value.response == "E" * 100


async def test_slow_loris_receiver_fails_the_attempt_at_the_deadline(
    serve: Callable[[Serve], Awaitable[str]], clock: FakeClock
) -> None:
    """A reply trickling one byte every 0.1 s is a retryable failure after `timeout`."""
    url = await serve(slow_loris)
    async with httpx.AsyncClient() as client, sink(url, client, clock, timeout=0.5) as hook:
        started = time.monotonic()
        with pytest.raises(DeliveryFailed, match="deadline") as caught:
            await hook.deliver(delivery())
    assert caught.value.retryable
    assert time.monotonic() - started < 3.0
