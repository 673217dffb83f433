"""Webhook sinks against a real local HTTP receiver: signing, formats, retries, dead letters."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs
from tests.receiver import Receiver, Reply, verify_signature

from printfleet.core.backoff import parse_retry_after
from printfleet.core.delivery import Delivery
from printfleet.core.events import ChangeEvent, EventType, Severity, encode_event, to_cloudevent
from printfleet.core.model import Printer, PrinterStatus, Vendor
from printfleet.errors import DeliveryFailed
from printfleet.outbox import OutboxWorker
from printfleet.sinks.webhook import WebhookSink
from printfleet.store import Store
from printfleet.testing import FakeClock

T0 = datetime(2026, 1, 1, tzinfo=UTC)
VERSION = "1.2.3"
SIGNING_SECRET = "whsec-very-secret-signing-key"
SETTLE = 5.0


class MaxRandom(random.Random):
    """Jitter that always picks the top of the range, so backoff delays are exact."""

    def random(self) -> float:
        return 1.0


def make_event(n: int = 1) -> ChangeEvent:
    printer = Printer(
        serial="Form4-CapableBeaver",
        name="Beaver",
        vendor=Vendor.FORMLABS,
        model="Form 4",
        model_code="FORM-4-0",
        status=PrinterStatus.IDLE,
        status_raw="IDLE",
        online=True,
    )
    return ChangeEvent(
        id=f"event-{n}",
        type=EventType.PRINT_FINISHED,
        source="lab",
        vendor=Vendor.FORMLABS,
        subject=printer.serial,
        time=T0,
        severity=Severity.INFO,
        printer=printer,
    )


def make_delivery(n: int = 1, *, sink: str = "hook", status: str = "firing") -> Delivery:
    event = make_event(n)
    return Delivery(
        id=f"d{n}",
        sink=sink,
        event_id=event.id,
        key="lab/Form4-CapableBeaver",
        created_at=T0,
        payload={
            "event": to_cloudevent(event),
            "status": status,
            "rule": "finished",
            "severity": "info",
            "title": "Beaver finished",
            "text": "All done",
        },
    )


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as c:
        yield c


@pytest.fixture
async def receiver(clock: FakeClock) -> AsyncIterator[Receiver]:
    async with Receiver(now=lambda: clock.now().timestamp()) as r:
        yield r


def webhook(
    url: str,
    client: httpx.AsyncClient,
    clock: FakeClock,
    *,
    kind: str = "webhook",
    name: str = "hook",
    secret: str | None = None,
    **kw: Any,
) -> WebhookSink:
    return WebhookSink(
        name,
        kind,
        SecretStr(url),
        client=client,
        secret=SecretStr(secret) if secret else None,
        clock=clock,
        version=VERSION,
        **kw,
    )


@contextlib.asynccontextmanager
async def running(worker: OutboxWorker) -> AsyncIterator[OutboxWorker]:
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(worker.wait_idle(), SETTLE)
        yield worker
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def settled(worker: OutboxWorker) -> None:
    await asyncio.wait_for(worker.wait_idle(), SETTLE)


def make_worker(store: Store, sink: WebhookSink, clock: FakeClock, **kw: Any) -> OutboxWorker:
    return OutboxWorker(store, sink, clock=clock, rng=MaxRandom(), idle_poll=3600.0, **kw)


async def enqueue(store: Store, worker: OutboxWorker, *deliveries: Delivery) -> None:
    store.commit(deliveries=deliveries)
    worker.wake()
    await settled(worker)


# -- the generic webhook -------------------------------------------------------------------


async def test_generic_webhook_is_signed_and_the_receiver_verifies_it(
    clock: FakeClock, client: httpx.AsyncClient
) -> None:
    """A receiver holding the shared secret verifies the signature over the exact body."""
    rx = Receiver(secret=SIGNING_SECRET.encode(), now=lambda: clock.now().timestamp())
    async with rx, webhook(rx.url, client, clock, secret=SIGNING_SECRET) as sink:
        await sink.deliver(make_delivery())
    [request] = rx.requests
    assert request.signature_ok is True
    assert request.body == encode_event(make_event())
    assert request.headers["x-printfleet-signature"].startswith(f"t={int(T0.timestamp())},v1=")


async def test_generic_webhook_headers(
    receiver: Receiver, clock: FakeClock, client: httpx.AsyncClient
) -> None:
    """The generic POST carries content type, user agent, event id, status and extra headers."""
    async with webhook(receiver.url, client, clock, headers={"X-Team": "ops"}) as sink:
        await sink.deliver(make_delivery(status="resolved"))
    [request] = receiver.requests
    assert request.method == "POST"
    assert request.headers["content-type"] == "application/cloudevents+json"
    assert request.headers["user-agent"] == f"printfleet/{VERSION}"
    assert request.headers["x-printfleet-event-id"] == "event-1"
    assert request.headers["x-printfleet-status"] == "resolved"
    assert request.headers["x-team"] == "ops"
    assert "x-printfleet-signature" not in request.headers


async def test_a_stale_signature_fails_the_receivers_replay_window(
    clock: FakeClock, client: httpx.AsyncClient
) -> None:
    """A signature older than the receiver's tolerance is rejected (401), and not retried."""
    late = lambda: clock.now().timestamp() + 600  # noqa: E731 (receiver 10 min ahead)
    rx = Receiver(secret=SIGNING_SECRET.encode(), tolerance=300, now=late)
    async with rx, webhook(rx.url, client, clock, secret=SIGNING_SECRET) as sink:
        with pytest.raises(DeliveryFailed) as caught:
            await sink.deliver(make_delivery())
    assert rx.requests[0].signature_ok is False
    assert (caught.value.status, caught.value.retryable) == (401, False)


def test_signature_does_not_verify_with_another_secret_or_body() -> None:
    """The HMAC binds both the secret and the body."""
    from printfleet.sinks.webhook import sign

    header = sign(b"k1", 1000, b"body")
    assert verify_signature(b"k1", header, b"body", now=1000)
    assert not verify_signature(b"k2", header, b"body", now=1000)
    assert not verify_signature(b"k1", header, b"body!", now=1000)
    assert not verify_signature(b"k1", header, b"body", now=1000 + 301)


# -- receiver formats ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "status", "top_keys"),
    [
        ("slack", 200, {"text", "attachments"}),
        ("teams", 202, {"type", "attachments", "summary"}),
        ("discord", 204, {"embeds", "allowed_mentions"}),
    ],
)
async def test_each_format_is_posted_as_json_and_accepted(
    receiver: Receiver,
    clock: FakeClock,
    client: httpx.AsyncClient,
    kind: str,
    status: int,
    top_keys: set[str],
) -> None:
    """Slack, Teams and Discord receive valid JSON with our user agent and accept it."""
    receiver.script(Reply(status))
    async with webhook(receiver.url + "/hook", client, clock, kind=kind, name=kind) as sink:
        await sink.deliver(make_delivery(sink=kind))
    [request] = receiver.requests
    assert request.path == "/hook"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == f"printfleet/{VERSION}"
    assert set(json.loads(request.body)) == top_keys


# -- error translation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        (500, True),
        (502, True),
        (503, True),
        (429, True),
        (400, False),
        (401, False),
        (403, False),
        (404, False),
        (410, False),
        (413, False),
        (301, False),
    ],
)
async def test_status_codes_translate_to_retryable_or_not(
    receiver: Receiver, clock: FakeClock, client: httpx.AsyncClient, status: int, retryable: bool
) -> None:
    """5xx and 429 may be retried; other 4xx (and redirects) may not."""
    receiver.script(Reply(status, body=b"nope"))
    async with webhook(receiver.url, client, clock) as sink:
        with pytest.raises(DeliveryFailed) as caught:
            await sink.deliver(make_delivery())
    assert (caught.value.status, caught.value.retryable) == (status, retryable)
    assert caught.value.response == "nope"


async def test_response_excerpt_is_capped_at_500_characters(
    receiver: Receiver, clock: FakeClock, client: httpx.AsyncClient
) -> None:
    """Only the first 500 characters of an error response are kept."""
    receiver.script(Reply(400, body=b"x" * 5000))
    async with webhook(receiver.url, client, clock) as sink:
        with pytest.raises(DeliveryFailed) as caught:
            await sink.deliver(make_delivery())
    assert caught.value.response == "x" * 500


async def test_429_with_an_http_date_retry_after(
    receiver: Receiver, clock: FakeClock, client: httpx.AsyncClient
) -> None:
    """A Retry-After given as an HTTP-date becomes seconds from now."""
    when = format_datetime(T0 + timedelta(seconds=90), usegmt=True)
    receiver.script(Reply(429, headers={"Retry-After": when}))
    async with webhook(receiver.url, client, clock) as sink:
        with pytest.raises(DeliveryFailed) as caught:
            await sink.deliver(make_delivery())
    assert caught.value.retry_after == 90.0


async def test_discord_retry_after_from_the_json_body(
    receiver: Receiver, clock: FakeClock, client: httpx.AsyncClient
) -> None:
    """Discord's 429 body ``retry_after`` is used when there is no header."""
    receiver.script(Reply(429, body=b'{"message":"You are being rate limited.","retry_after":2.5}'))
    async with webhook(receiver.url, client, clock, kind="discord") as sink:
        with pytest.raises(DeliveryFailed) as caught:
            await sink.deliver(make_delivery())
    assert caught.value.retry_after == 2.5


@pytest.mark.parametrize(
    ("header", "expected"),
    [("120", 120.0), ("0", 0.0), ("-5", 0.0), ("soon", None), (None, None)],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    """Delta-seconds are taken as given (never negative); nonsense is ignored."""
    assert parse_retry_after(header, T0) == expected


async def test_a_dropped_connection_is_retryable(
    receiver: Receiver, clock: FakeClock, client: httpx.AsyncClient
) -> None:
    """A receiver closing the connection mid-request gives a retryable failure."""
    receiver.script(Reply(drop=True))
    async with webhook(receiver.url, client, clock) as sink:
        with pytest.raises(DeliveryFailed) as caught:
            await sink.deliver(make_delivery())
    assert caught.value.retryable
    assert caught.value.status is None
    assert receiver.requests[0].dropped


async def test_connection_refused_is_retryable(clock: FakeClock, client: httpx.AsyncClient) -> None:
    """No one listening is a retryable network error."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with webhook(f"http://127.0.0.1:{port}", client, clock) as sink:
        with pytest.raises(DeliveryFailed, match="network error") as caught:
            await sink.deliver(make_delivery())
    assert caught.value.retryable


async def test_a_timeout_is_retryable(clock: FakeClock) -> None:
    """A request that times out gives a retryable failure."""

    def hang(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    mock = httpx.AsyncClient(transport=httpx.MockTransport(hang))
    async with mock, webhook("http://receiver.invalid/x", mock, clock) as sink:
        with pytest.raises(DeliveryFailed, match="timed out") as caught:
            await sink.deliver(make_delivery())
    assert caught.value.retryable


async def test_an_invalid_url_is_not_retried_and_not_quoted(
    clock: FakeClock, client: httpx.AsyncClient
) -> None:
    """A malformed receiver URL fails for good, without repeating the URL."""
    async with webhook("http://host:notaport/SecretPath", client, clock) as sink:
        with pytest.raises(DeliveryFailed, match="URL is invalid") as caught:
            await sink.deliver(make_delivery())
    assert not caught.value.retryable
    assert "SecretPath" not in repr(caught.value)


async def test_deliver_outside_the_context_is_refused(
    receiver: Receiver, clock: FakeClock, client: httpx.AsyncClient
) -> None:
    """A sink that was never entered (or was left) refuses to deliver."""
    sink = webhook(receiver.url, client, clock)
    with pytest.raises(RuntimeError, match="not open"):
        await sink.deliver(make_delivery())


# -- through the outbox --------------------------------------------------------------------


async def test_503_is_retried_after_the_backoff_and_delivered(
    receiver: Receiver, clock: FakeClock, client: httpx.AsyncClient, store: Store
) -> None:
    """The outbox retries a 503 after its backoff and the second attempt is delivered."""
    receiver.script(Reply(503), Reply(200))
    async with webhook(receiver.url, client, clock) as sink:
        worker = make_worker(store, sink, clock, backoff_base=5.0)
        async with running(worker):
            await enqueue(store, worker, make_delivery())
            assert len(receiver.requests) == 1
            await clock.advance(5)
            await settled(worker)
    assert len(receiver.requests) == 2
    assert receiver.requests[0].body == receiver.requests[1].body
    assert store.pending_count() == {}


async def test_a_dropped_connection_is_retried_and_delivered(
    receiver: Receiver, clock: FakeClock, client: httpx.AsyncClient, store: Store
) -> None:
    """After the receiver drops the connection mid-request, the retry is delivered."""
    receiver.script(Reply(drop=True), Reply(200))
    async with webhook(receiver.url, client, clock) as sink:
        worker = make_worker(store, sink, clock, backoff_base=1.0)
        async with running(worker):
            await enqueue(store, worker, make_delivery())
            await clock.advance(1)
            await settled(worker)
    assert [r.dropped for r in receiver.requests] == [True, False]
    assert store.pending_count() == {}


async def test_429_retry_after_is_honoured(
    receiver: Receiver, clock: FakeClock, client: httpx.AsyncClient, store: Store
) -> None:
    """After a 429 with Retry-After: 30, nothing is sent for 30 s, then it is delivered."""
    receiver.script(Reply(429, headers={"Retry-After": "30"}), Reply(200))
    async with webhook(receiver.url, client, clock) as sink:
        worker = make_worker(store, sink, clock, backoff_base=1.0)
        async with running(worker):
            await enqueue(store, worker, make_delivery())
            await clock.advance(29.9)
            await settled(worker)
            assert len(receiver.requests) == 1
            await clock.advance(0.1)
            await settled(worker)
    assert len(receiver.requests) == 2
    assert store.pending_count() == {}


async def test_400_is_dead_lettered_with_the_response_recorded(
    receiver: Receiver, clock: FakeClock, client: httpx.AsyncClient, store: Store
) -> None:
    """A 400 is not retried: the entry goes to the dead-letter table with the receiver's answer."""
    receiver.script(Reply(400, body=b"invalid_blocks"))
    async with webhook(receiver.url, client, clock, kind="slack", name="slack") as sink:
        worker = make_worker(store, sink, clock)
        async with running(worker):
            await enqueue(store, worker, make_delivery(sink="slack"))
            await clock.advance(3600)
            await settled(worker)
    assert len(receiver.requests) == 1
    [dead] = store.list_entries(dead=True)
    assert dead.response == "invalid_blocks"
    assert dead.last_error is not None
    assert "HTTP 400" in dead.last_error


# -- secrets -------------------------------------------------------------------------------


async def test_urls_and_secrets_never_reach_logs_errors_or_the_store(
    receiver: Receiver, clock: FakeClock, client: httpx.AsyncClient, store: Store
) -> None:
    """Neither the webhook URL's secret path nor the signing key appear anywhere observable."""
    token = "/services/T0001/B0002/SuperSecretToken123"
    receiver.script(
        Reply(drop=True),
        Reply(404, body=f"no_service for {receiver.url}{token}".encode()),
        Reply(drop=True),
    )
    seen: list[str] = []
    async with webhook(
        receiver.url + token, client, clock, kind="slack", name="slack", secret=SIGNING_SECRET
    ) as sink:
        for _ in range(3):
            try:
                await sink.deliver(make_delivery(sink="slack"))
            except DeliveryFailed as err:
                seen += [str(err), repr(err), err.message, err.response or "", repr(err.__cause__)]
        seen.append(repr(sink))
        worker = make_worker(store, sink, clock, backoff_base=1.0)
        receiver.script(Reply(drop=True), Reply(500, body=token.encode()), Reply(404))
        with capture_logs() as logs:
            async with running(worker):
                await enqueue(store, worker, make_delivery(sink="slack"))
                for _ in range(3):
                    await clock.advance(1)
                    await settled(worker)
    entries = store.list_entries(dead=True) + store.list_entries()
    seen += [repr(logs)] + [f"{e.last_error} {e.response}" for e in entries]
    assert len(receiver.requests) == 6
    assert entries
    assert entries[0].dead
    for text in seen:
        assert "SuperSecretToken123" not in text
        assert SIGNING_SECRET not in text
