"""Print pictures end to end: the simulator's signed, expiring links, the real Formlabs source,
the picture fetcher and webhook sinks posting to a real local receiver.

Our side and the simulator share one FakeClock (``now=clock.now``), so link expiry is judged on
the clock the test moves; nothing sleeps. The CDN's faults (404, HTML, a hang) are the
simulator's own knobs.
"""

from __future__ import annotations

import json
import random
import struct
import zlib
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs
from tests.ecosystem import discord_problems, slack_problems, teams_problems
from tests.receiver import Receiver, Reply

from printfleet.core.delivery import Delivery
from printfleet.core.events import ChangeEvent, EventType, Severity, to_cloudevent
from printfleet.core.model import Print, Printer, Vendor
from printfleet.errors import DeliveryFailed
from printfleet.logs import forget_secrets
from printfleet.picture_links import SourcePictureLinks
from printfleet.simulator import Simulator, SimulatorConfig
from printfleet.sinks.pictures import PictureFetcher
from printfleet.sinks.webhook import WebhookSink
from printfleet.sources.base import PrintLookup
from printfleet.sources.formlabs import FormlabsSource
from printfleet.testing import FakeClock

TTL = 600
PRINTS = "/developer/v1/prints/"


@pytest.fixture(autouse=True)
def _forget_registered_secrets() -> Iterator[None]:
    yield
    forget_secrets()


@pytest.fixture
def clock_start() -> datetime:
    return datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


@pytest.fixture
def sim(clock: FakeClock) -> Iterator[Simulator]:
    config = SimulatorConfig(
        formlabs_printers=8, vendors=("formlabs",), seed=5, picture_link_ttl_s=TTL
    )
    with Simulator(config, now=clock.now) as running:
        yield running


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(follow_redirects=False) as http:
        yield http


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as running:
        yield running


@pytest.fixture
def source(sim: Simulator, client: httpx.AsyncClient, clock: FakeClock) -> FormlabsSource:
    return FormlabsSource(
        name="lab",
        client_id=sim.formlabs_client_id,
        client_secret=SecretStr(sim.formlabs_client_secret),
        client=client,
        clock=clock,
        offline_after=timedelta(minutes=5),
        base_url=sim.formlabs_url,
        rng=random.Random(1),
        timeout=5.0,
    )


@pytest.fixture
def links(source: FormlabsSource, clock: FakeClock) -> SourcePictureLinks:
    return SourcePictureLinks(lambda: {source.name: source}, clock=clock)


def sink(
    kind: str,
    receiver: Receiver,
    client: httpx.AsyncClient,
    clock: FakeClock,
    links: SourcePictureLinks | None,
    *,
    check_timeout: float = 3.0,
    name: str = "chat",
) -> WebhookSink:
    fetcher = (
        PictureFetcher(links, client=client, check_timeout=check_timeout, allow_plain_loopback=True)
        if links is not None
        else None
    )
    return WebhookSink(
        name,
        kind,
        SecretStr(f"{receiver.url}/hooks/{name}/T0K3N"),
        client=client,
        clock=clock,
        version="test",
        pictures=fetcher,
    )


def delivery(printer: Printer, run: Print, kind: EventType, time: datetime) -> Delivery:
    event = ChangeEvent(
        id=f"e-{run.id}-{kind.value}",
        type=kind,
        source="lab",
        vendor=Vendor.FORMLABS,
        subject=printer.serial,
        time=time,
        severity=Severity.INFO,
        printer=printer,
        print=run,
    )
    return Delivery(
        id=f"d-{event.id}",
        sink="chat",
        event_id=event.id,
        key=f"lab/{printer.serial}",
        created_at=time,
        payload={"event": to_cloudevent(event), "status": "firing", "text": f"{run.name}"},
    )


async def printing(source: FormlabsSource) -> tuple[Printer, Print]:
    snapshot = await source.fetch_printers()
    for printer in snapshot.printers.values():
        run = printer.current_print
        if run is not None and run.thumbnail_url is not None:
            return printer, run
    raise AssertionError("no printer with a current print in the simulated fleet")


async def finished_with_photo(source: FormlabsSource, clock: FakeClock) -> tuple[Printer, Print]:
    """A Form 4 family run that finished (the printers with a camera), after some hours."""
    await clock.advance(8 * 3600)
    snapshot = await source.fetch_printers()
    lookups = [PrintLookup(serial, "-") for serial in snapshot.printers]
    batch = await source.fetch_runs(lookups=lookups)
    await clock.advance(5)  # the per-second request budget refills (it waits on this clock)
    for run in batch.runs.values():
        if run.photo_url is not None and run.printer_serial in snapshot.printers:
            return snapshot.printers[run.printer_serial], run
    raise AssertionError("no finished Form 4 run with a photo in 8 simulated hours")


async def status_of(client: httpx.AsyncClient, url: str) -> tuple[int, str]:
    response = await client.get(url)
    return response.status_code, response.headers.get("content-type", "")


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height of a PNG whose every chunk CRC is right and whose pixels inflate."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    at, size, pixels = 8, (0, 0), b""
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        tag, body = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        (crc,) = struct.unpack(">I", data[at + 8 + length : at + 12 + length])
        assert zlib.crc32(tag + body) == crc
        if tag == b"IHDR":
            size = struct.unpack(">II", body[:8])
        if tag == b"IDAT":
            pixels += body
        at += 12 + length
    assert len(zlib.decompress(pixels)) == size[1] * (1 + 3 * size[0])  # RGB rows
    return size


def queries(url: str) -> str:
    return httpx.URL(url).query.decode()


def logged(logs: list[dict[str, Any]]) -> str:
    return json.dumps(logs, default=str)


async def test_a_delivery_delayed_past_link_expiry_gets_a_fresh_link(
    source: FormlabsSource,
    links: SourcePictureLinks,
    receiver: Receiver,
    client: httpx.AsyncClient,
    clock: FakeClock,
    sim: Simulator,
) -> None:
    printer, run = await printing(source)
    stale = run.thumbnail_url
    assert stale is not None
    assert "sig=" in stale
    assert await status_of(client, stale) == (200, "image/png")
    item = delivery(printer, run, EventType.PRINT_STARTED, clock.now())

    await clock.advance(3 * TTL)  # the delivery waited in the outbox (receiver down, say)
    status, _ = await status_of(client, stale)
    assert status == 403  # the link in the stored payload is dead now

    async with sink("discord", receiver, client, clock, links) as discord:
        before = sim.request_count("formlabs", PRINTS)
        with capture_logs() as logs:
            await discord.deliver(item)
    assert sim.request_count("formlabs", PRINTS) == before + 1  # one lookup of the budget
    (request,) = await receiver.wait_for_requests(1)
    message = json.loads(request.body)
    assert discord_problems(message) == []
    fresh = message["embeds"][0]["thumbnail"]["url"]
    assert fresh != stale
    assert await status_of(client, fresh) == (200, "image/png")
    assert [e for e in logs if e["event"] == "picture.unavailable"] == []
    assert queries(stale) not in logged(logs)
    assert queries(fresh) not in logged(logs)


async def test_finished_form4_runs_show_the_photo_large_and_the_thumbnail_small(
    source: FormlabsSource,
    links: SourcePictureLinks,
    receiver: Receiver,
    client: httpx.AsyncClient,
    clock: FakeClock,
) -> None:
    printer, run = await finished_with_photo(source, clock)
    item = delivery(printer, run, EventType.PRINT_FINISHED, clock.now())
    async with (
        sink("slack", receiver, client, clock, links, name="slack") as slack,
        sink("teams", receiver, client, clock, links, name="teams") as teams,
        sink("discord", receiver, client, clock, links, name="discord") as discord,
    ):
        for chat in (slack, teams, discord):
            await chat.deliver(item)
    got = {r.path.split("/")[2]: json.loads(r.body) for r in await receiver.wait_for_requests(3)}
    assert slack_problems(got["slack"]) == []
    assert teams_problems(got["teams"]) == []
    assert discord_problems(got["discord"]) == []

    blocks = got["slack"]["attachments"][0]["blocks"]
    (image,) = [b for b in blocks if b["type"] == "image"]
    assert "/photos/" in image["image_url"]
    assert any("/thumbnails/" in b.get("accessory", {}).get("image_url", "") for b in blocks)
    body = got["teams"]["attachments"][0]["content"]["body"]
    sizes = {e["size"]: e["url"] for e in body if e["type"] == "Image"}
    assert "/photos/" in sizes["Large"]
    assert "/thumbnails/" in sizes["Medium"]
    embed = got["discord"]["embeds"][0]
    assert "/photos/" in embed["image"]["url"]
    assert "/thumbnails/" in embed["thumbnail"]["url"]
    for url in (image["image_url"], sizes["Medium"], embed["thumbnail"]["url"]):
        assert await status_of(client, url) == (200, "image/png")


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("missing", "HTTP 404"),
        ("not_image", "not an image (Content-Type text/html)"),
        ("hang", "no answer within 0.3 s"),
    ],
)
async def test_a_dead_link_is_delivered_without_the_picture(
    mode: str,
    reason: str,
    source: FormlabsSource,
    links: SourcePictureLinks,
    receiver: Receiver,
    client: httpx.AsyncClient,
    clock: FakeClock,
    sim: Simulator,
) -> None:
    printer, run = await printing(source)
    item = delivery(printer, run, EventType.PRINT_STARTED, clock.now())
    sim._apis["formlabs"].cdn.mode = mode  # type: ignore[attr-defined]
    async with sink("discord", receiver, client, clock, links, check_timeout=0.3) as discord:
        with capture_logs() as logs:
            await discord.deliver(item)
    (request,) = await receiver.wait_for_requests(1)
    embed = json.loads(request.body)["embeds"][0]
    assert "thumbnail" not in embed
    assert "image" not in embed
    assert embed["title"]  # the notification itself went out whole
    (entry,) = [e for e in logs if e["event"] == "picture.unavailable"]
    assert entry["reason"] == reason
    assert entry["picture"] == "thumbnail"
    assert entry["print_id"] == run.id
    assert entry["link"].endswith("/thumbnails/" + run.id + ".png?<redacted>")
    # The signature is a credential: neither the stored link's query nor the fresh one's.
    assert "sig=" not in logged(logs)
    assert "expires=" not in logged(logs)
    assert run.thumbnail_url is not None
    assert queries(run.thumbnail_url) not in logged(logs)


async def test_a_print_the_source_does_not_know_goes_without_pictures(
    source: FormlabsSource,
    links: SourcePictureLinks,
    receiver: Receiver,
    client: httpx.AsyncClient,
    clock: FakeClock,
) -> None:
    printer, run = await printing(source)
    ghost = Print(
        id="00000000-0000-4000-8000-000000000000",
        name="ghost",
        status=run.status,
        status_raw=run.status_raw,
        created_at=run.created_at,
    )
    async with sink("slack", receiver, client, clock, links) as slack:
        with capture_logs() as logs:
            await slack.deliver(delivery(printer, ghost, EventType.PRINT_STARTED, clock.now()))
    (request,) = await receiver.wait_for_requests(1)
    message = json.loads(request.body)
    assert slack_problems(message) == []
    assert all(b["type"] != "image" for b in message["attachments"][0]["blocks"])
    (entry,) = [e for e in logs if e["event"] == "picture.unavailable"]
    assert entry["reason"] == "the print is not in the source's print history"


async def test_lookups_cost_one_request_per_print_and_only_where_pictures_show(
    source: FormlabsSource,
    links: SourcePictureLinks,
    receiver: Receiver,
    client: httpx.AsyncClient,
    clock: FakeClock,
    sim: Simulator,
) -> None:
    printer, run = await printing(source)
    started = delivery(printer, run, EventType.PRINT_STARTED, clock.now())
    offline = delivery(printer, run, EventType.PRINTER_OFFLINE, clock.now())
    before = sim.request_count("formlabs", PRINTS)
    async with (
        sink("slack", receiver, client, clock, links, name="a") as a,
        sink("teams", receiver, client, clock, links, name="b") as b,
        sink("webhook", receiver, client, clock, links, name="generic") as generic,
        sink("discord", receiver, client, clock, None, name="off") as off,  # pictures = false
    ):
        await a.deliver(started)
        await b.deliver(started)  # the same print within a minute: the cached answer
        await a.deliver(offline)  # not a print.* event: no lookup
        await generic.deliver(started)  # the generic webhook sends the event as is
        await off.deliver(started)
    assert sim.request_count("formlabs", PRINTS) == before + 1
    a_started, b_started, a_offline, generic_started, off_started = [
        r.body.decode() for r in await receiver.wait_for_requests(5)
    ]
    assert "/thumbnails/" in a_started
    assert "/thumbnails/" in b_started
    assert "/thumbnails/" not in a_offline
    assert "/thumbnails/" not in off_started
    assert json.loads(generic_started) == started.payload["event"]  # unchanged CloudEvent
    assert "thumbnail" not in json.loads(off_started)["embeds"][0]

    await clock.advance(120)  # past the cache: asked again
    async with sink("slack", receiver, client, clock, links, name="a") as a:
        await a.deliver(started)
    assert sim.request_count("formlabs", PRINTS) == before + 2


async def test_dropped_vendor_links_are_logged_once_per_kind(
    source: FormlabsSource, clock: FakeClock
) -> None:
    from printfleet.sources.formlabs_map import map_print

    bad = [
        map_print(
            {
                "guid": f"g-{i}",
                "name": "x",
                "status": "FINISHED",
                "print_thumbnail": {"thumbnail": "http://cdn.example.com/a.png?sig=SECRET"},
            }
        )
        for i in range(2)
    ]
    with capture_logs() as logs:
        source._report_pictures(bad)
        source._report_pictures(bad)
    dropped = [e for e in logs if e["event"] == "source.picture_link_dropped"]
    assert len(dropped) == 1
    assert dropped[0]["field"] == "print_thumbnail.thumbnail"
    assert dropped[0]["reason"] == "not https"
    assert source.rejected_pictures == {("print_thumbnail.thumbnail", "not https"): 4}
    assert "SECRET" not in logged(logs)


async def test_the_simulator_cdn_signs_and_expires_links_like_s3(
    source: FormlabsSource, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    _, run = await printing(source)
    link = run.thumbnail_url
    assert link is not None
    ranged = await client.get(link, headers={"Range": "bytes=0-1023"})  # no Authorization
    assert ranged.status_code == 206
    assert ranged.headers["content-type"] == "image/png"
    assert ranged.content.startswith(b"\x89PNG\r\n\x1a\n")
    assert png_size(ranged.content) == (1, 1)  # a tiny, well-formed picture
    tampered = link[:-1] + ("0" if link[-1] != "0" else "1")
    denied = await client.get(tampered)
    assert denied.status_code == 403
    assert b"SignatureDoesNotMatch" in denied.content
    url = httpx.URL(link)
    unknown = url.copy_with(path=url.path.replace(run.id, "0" * 8))
    assert (await client.get(unknown)).status_code == 403  # its signature is for another path
    await clock.advance(2 * TTL + 1)
    expired = await client.get(link)
    assert expired.status_code == 403
    assert b"Request has expired" in expired.content
    assert expired.headers["content-type"] == "application/xml"


async def test_retries_reuse_links_that_still_answer_and_look_up_expired_ones(
    source: FormlabsSource,
    links: SourcePictureLinks,
    receiver: Receiver,
    client: httpx.AsyncClient,
    clock: FakeClock,
    sim: Simulator,
) -> None:
    """A delivery retried for hours does not spend the vendor budget on every attempt."""
    printer, run = await printing(source)
    item = delivery(printer, run, EventType.PRINT_STARTED, clock.now())
    receiver.script(Reply(503), Reply(503), Reply(200))
    before = sim.request_count("formlabs", PRINTS)
    async with sink("discord", receiver, client, clock, links) as discord:
        with pytest.raises(DeliveryFailed):
            await discord.deliver(item)
        await clock.advance(120)  # past the per-print cache, within the link's life
        with pytest.raises(DeliveryFailed):
            await discord.deliver(item)
        assert sim.request_count("formlabs", PRINTS) == before + 1  # reused, checked again
        await clock.advance(3 * TTL)  # the kept link has expired: looked up again
        with capture_logs() as logs:
            await discord.deliver(item)
    assert sim.request_count("formlabs", PRINTS) == before + 2
    shown = [
        json.loads(r.body)["embeds"][0]["thumbnail"]["url"]
        for r in await receiver.wait_for_requests(3)
    ]
    assert shown[0] == shown[1]
    assert shown[2] != shown[0]
    assert await status_of(client, shown[2]) == (200, "image/png")
    assert [e for e in logs if e["event"] == "picture.unavailable"] == []  # expected expiry
