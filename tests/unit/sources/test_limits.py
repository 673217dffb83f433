"""[limits] on what a vendor can send: body size, JSON depth, total deadline, tokens, Date.

Hostile bodies are generated while they are sent (never held in memory); the trickling vendor
is a real local HTTP server, because httpx's own per-read timeout is what it defeats.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from pydantic import SecretStr

from printfleet.errors import BadResponse, SourceUnavailable
from printfleet.sources.formlabs import FormlabsSource
from printfleet.sources.http.client import RetryPolicy
from printfleet.sources.mapping import REASON_TOO_DEEP, TOO_DEEP, JsonTooDeep, loads
from printfleet.testing import FakeClock

BASE = "https://api.formlabs.test"
API = "/developer/v1"
SAMPLES = json.loads(
    (Path(__file__).parents[2] / "fixtures" / "formlabs-samples.json").read_text("utf-8")
)
#: The sample printers pinged seconds before this (so they are online by either clock).
VENDOR_NOW = datetime(2025, 6, 18, 14, 30, tzinfo=UTC)
SECRET = "s3cr3t-value"
MiB = 1024**2
Handler = Callable[[httpx.Request], httpx.Response]


@pytest.fixture
def clock_start() -> datetime:
    return VENDOR_NOW


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


def printers_text(extra: str | None = None, at: int = 1) -> str:
    """The sample /printers/ array as text, with ``extra`` spliced in as element ``at``."""
    records = [json.dumps(r) for r in SAMPLES["list_printers"]["body"]]
    if extra is not None:
        records.insert(at, extra)
    return "[" + ",".join(records) + "]"


class Vendor:
    """A Formlabs API answering /o/token/ with ``token_body`` and /printers/ with ``printers``."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.token_body: bytes = json.dumps(
            {"access_token": "tok-1", "token_type": "Bearer", "expires_in": 86400}
        ).encode()
        self.printers: Callable[[], httpx.Response] = lambda: httpx.Response(
            200, content=printers_text().encode()
        )
        self.date: str | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == f"{API}/o/token/":
            response = httpx.Response(200, content=self.token_body)
        else:
            response = self.printers()
        response.headers["Date"] = self.date or format_datetime(self.clock.now(), usegmt=True)
        return response


@pytest.fixture
def vendor(clock: FakeClock) -> Vendor:
    return Vendor(clock)


def source(
    clock: FakeClock,
    handler: Any,
    *,
    base_url: str = BASE,
    **options: Any,
) -> FormlabsSource:
    transport = httpx.MockTransport(handler) if handler is not None else None
    return FormlabsSource(
        name="lab",
        client_id="client-1",
        client_secret=SecretStr(SECRET),
        client=httpx.AsyncClient(transport=transport),
        clock=clock,
        offline_after=timedelta(minutes=5),
        base_url=base_url,
        retry=RetryPolicy(attempts=1),
        rng=random.Random(1),
        **options,
    )


async def generated(total: int | None, chunk: int = 64 * 1024) -> AsyncIterator[bytes]:
    """``total`` bytes of a JSON array that never closes (``None``: without end), lazily."""
    yield b"["
    piece = b'{"serial":"x"},' * (chunk // 15)
    sent = 1
    while total is None or sent < total:
        yield piece
        sent += len(piece)
        await asyncio.sleep(0)


# --- body size ---------------------------------------------------------------------------------


@pytest.mark.parametrize("total", [1024**3, None], ids=["1GB", "endless"])
async def test_huge_or_endless_body_is_bad_response_in_bounded_memory(
    vendor: Vendor, clock: FakeClock, total: int | None
) -> None:
    """A 1 GB or endless /printers/ body stops at response_max_size; heap stays under 8 MiB."""
    vendor.printers = lambda: httpx.Response(200, content=generated(total))
    fetcher = source(clock, vendor, response_max_size=2 * MiB)
    tracemalloc.start()
    try:
        with pytest.raises(BadResponse, match="larger than 2097152 bytes"):
            await fetcher.fetch_printers()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * MiB


async def test_declared_oversized_body_is_refused_before_reading(
    vendor: Vendor, clock: FakeClock
) -> None:
    """A Content-Length above the cap fails at once, without reading a byte of the body."""
    reads: list[int] = []

    async def body() -> AsyncIterator[bytes]:
        reads.append(1)
        yield b"[]"

    vendor.printers = lambda: httpx.Response(
        200, content=body(), headers={"Content-Length": str(10 * MiB)}
    )
    with pytest.raises(BadResponse, match="larger than"):
        await source(clock, vendor, response_max_size=MiB).fetch_printers()
    assert reads == []


async def test_body_within_the_cap_is_read(vendor: Vendor, clock: FakeClock) -> None:
    """A body exactly at the cap is still a normal answer (the cap is inclusive)."""
    size = len(printers_text().encode())
    snapshot = await source(clock, vendor, response_max_size=size).fetch_printers()
    assert sorted(snapshot.printers) == ["AmberLynx", "GentleBison", "NimbleHeron"]


# --- JSON depth --------------------------------------------------------------------------------


@pytest.mark.parametrize("levels", [100, 100_000], ids=["decodable", "beyond-recursion"])
async def test_deep_record_is_skipped_and_the_fleet_mapped(
    vendor: Vendor, clock: FakeClock, levels: int
) -> None:
    """A record nested deeper than json_max_depth is a skipped record; the others are mapped."""
    record = '{"serial":"Deep","printer_status":' + deep(levels) + "}"
    vendor.printers = lambda: httpx.Response(200, content=printers_text(record).encode())
    snapshot = await source(clock, vendor).fetch_printers()
    assert sorted(snapshot.printers) == ["AmberLynx", "GentleBison", "NimbleHeron"]
    assert [s.reason for s in snapshot.skipped] == [REASON_TOO_DEEP]


async def test_records_within_the_depth_cap_are_kept(vendor: Vendor, clock: FakeClock) -> None:
    """A record with many (shallow) objects is not mistaken for a deep one."""
    record = dict(SAMPLES["list_printers"]["body"][0], serial="Wide")
    record["extra"] = [{"a": {"b": [1]}} for _ in range(200)]
    vendor.printers = lambda: httpx.Response(
        200, content=printers_text(json.dumps(record)).encode()
    )
    snapshot = await source(clock, vendor, json_max_depth=8).fetch_printers()
    assert "Wide" in snapshot.printers
    assert not snapshot.skipped


@pytest.mark.parametrize("levels", [100, 100_000], ids=["decodable", "beyond-recursion"])
async def test_deep_token_response_is_bad_response(
    vendor: Vendor, clock: FakeClock, levels: int
) -> None:
    """A token response nested deeper than the cap fails the request; nothing escapes."""
    vendor.token_body = ('{"access_token":"tok-1","x":' + deep(levels) + "}").encode()
    with pytest.raises(BadResponse, match="nested deeper than 64"):
        await source(clock, vendor).fetch_printers()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"results": [1, ' + deep(70) + ', {"a": 2}]}', {"results": [1, TOO_DEEP, {"a": 2}]}),
        ("[" + deep(100_000) + ', {"a": 1}]', [TOO_DEEP, {"a": 1}]),
        (
            '{"next": null, "printers": [' + deep(100_000) + "]}",
            {"next": None, "printers": [TOO_DEEP]},
        ),
        ('{"ok": [[1]], "count": 2}', {"ok": [[1]], "count": 2}),
    ],
    ids=["page-record", "array-beyond-recursion", "page-beyond-recursion", "shallow"],
)
def test_pages_keep_their_shallow_records(text: str, expected: Any) -> None:
    """In a page, a too-deep record becomes TOO_DEEP and the rest decodes as usual."""
    assert loads(text, max_depth=64) == expected


@pytest.mark.parametrize(
    "text",
    ['{"meta": {"x": ' + deep(70) + "}}", '{"meta": {"x": ' + deep(100_000) + "}}"],
    ids=["object-field", "beyond-recursion"],
)
def test_a_deep_page_outside_its_records_is_refused(text: str) -> None:
    """Nesting outside a list of records refuses the whole document (never RecursionError)."""
    with pytest.raises(JsonTooDeep):
        loads(text, max_depth=64)


def test_a_document_without_records_is_refused_when_deep() -> None:
    """A token response (records=False) nested too deep is refused even inside a list."""
    with pytest.raises(JsonTooDeep):
        loads('{"access_token": "t", "x": [' + deep(70) + "]}", max_depth=64, records=False)


# --- total deadline ----------------------------------------------------------------------------


@pytest.fixture
async def trickling_vendor() -> AsyncIterator[str]:
    """A real HTTP server whose /printers/ sends one byte every 0.1 s, for ever."""
    writers: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        request = await reader.readuntil(b"\r\n\r\n")
        if b"/o/token/" in request.split(b"\r\n", 1)[0]:
            body = b'{"access_token": "tok-1", "expires_in": 86400}'
            head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            writer.write(head + body)
            await writer.drain()
            request = await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n[")
        with_errors = (ConnectionError, asyncio.CancelledError)
        try:
            while True:
                await asyncio.sleep(0.1)  # the hostile peer's pace, not the test waiting
                writer.write(b" ")
                await writer.drain()
        except with_errors:
            pass

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        for writer in writers:
            writer.close()
        server.close()


async def test_trickling_vendor_fails_the_request_at_the_deadline(
    trickling_vendor: str, clock: FakeClock
) -> None:
    """One byte every 0.1 s never trips httpx's per-read timeout; the total deadline does."""
    fetcher = source(clock, None, base_url=trickling_vendor, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(SourceUnavailable, match="timeout"):
        await fetcher.fetch_printers()
    assert time.monotonic() - started < 3.0


# --- tokens ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "token",
    ["tök-ünïcode", "tok\x01en", "tok en", "t" * 9000],
    ids=["non-ascii", "control", "space", "long"],
)
async def test_unusable_access_token_is_bad_response_without_the_token(
    vendor: Vendor, clock: FakeClock, token: str
) -> None:
    """A token no HTTP header can carry is a BadResponse naming the problem, never the token."""
    vendor.token_body = json.dumps({"access_token": token, "expires_in": 60}).encode()
    refused = pytest.raises(BadResponse, match="cannot be sent in an HTTP header")
    with structlog.testing.capture_logs() as logs, refused as caught:
        await source(clock, vendor).fetch_printers()
    assert token not in str(caught.value)
    assert token not in repr(caught.value)
    assert token not in repr(logs)


@pytest.mark.parametrize(
    "body",
    [{"access_token": {"nested": ["tok"]}}, {"access_token": ["tok"]}, ["tok"], "tok"],
    ids=["object", "list", "array-body", "string-body"],
)
async def test_odd_token_body_is_bad_response(vendor: Vendor, clock: FakeClock, body: Any) -> None:
    """A token response of the wrong shape is a BadResponse."""
    vendor.token_body = json.dumps(body).encode()
    with pytest.raises(BadResponse, match="without access_token"):
        await source(clock, vendor).fetch_printers()


async def test_absurd_expires_in_falls_back_to_the_default_lifetime(
    vendor: Vendor, clock: FakeClock
) -> None:
    """An expires_in too large for a float is not an OverflowError: the default applies."""
    vendor.token_body = b'{"access_token": "tok-1", "expires_in": 1' + b"0" * 400 + b"}"
    snapshot = await source(clock, vendor).fetch_printers()
    assert len(snapshot.printers) == 3


# --- vendor clock ------------------------------------------------------------------------------


async def test_date_in_9999_is_not_trusted_and_turns_no_printer_offline(
    vendor: Vendor, clock: FakeClock
) -> None:
    """After a normal poll, Date: 31 Dec 9999 is logged once and printers stay online."""
    fetcher = source(clock, vendor)
    first = await fetcher.fetch_printers()
    online = {serial for serial, p in first.printers.items() if p.online}
    assert online >= {"NimbleHeron", "AmberLynx"}
    vendor.date = "Fri, 31 Dec 9999 23:59:59 GMT"
    with structlog.testing.capture_logs() as logs:
        for _ in range(3):
            later = await fetcher.fetch_printers()
            assert {s for s, p in later.printers.items() if p.online} == online
    untrusted = [e for e in logs if e["event"] == "source.clock_untrusted"]
    assert len(untrusted) == 1
    assert untrusted[0]["limit_s"] == 86400
    assert untrusted[0]["offset_s"] > 10**11


async def test_untrusted_clock_is_logged_again_after_it_was_trusted(
    vendor: Vendor, clock: FakeClock
) -> None:
    """Once a sane Date came back, the next insane one is logged again (a new transition)."""
    fetcher = source(clock, vendor)
    with structlog.testing.capture_logs() as logs:
        for date in ("Fri, 31 Dec 9999 23:59:59 GMT", None, "Mon, 01 Jan 1990 00:00:00 GMT"):
            vendor.date = date
            await fetcher.fetch_printers()
    assert sum(e["event"] == "source.clock_untrusted" for e in logs) == 2
