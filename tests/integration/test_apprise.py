"""Apprise receivers against a real local HTTP receiver: Apprise's json:// and ntfy:// plugins
post to tests/receiver.py, through the outbox (retries, dead letters) and with secrets in the
URL that must never show."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import random
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from tests.receiver import Receiver, Reply

from printfleet.config.schema import ReceiverConfig
from printfleet.core.delivery import Delivery
from printfleet.core.events import ChangeEvent, EventType, Severity, to_cloudevent
from printfleet.core.model import Printer, PrinterStatus, Vendor
from printfleet.errors import ConfigError, DeliveryFailed
from printfleet.logs import configure_logging
from printfleet.outbox import OutboxWorker
from printfleet.sinks.apprise_sink import AppriseSink
from printfleet.sinks.factory import make_receiver_sink
from printfleet.store import Store
from printfleet.testing import FakeClock

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SETTLE = 10.0
TOKEN = "tk_SuperSecretToken123"
PASSWORD = "hunter2-very-secret"


class MaxRandom(random.Random):
    def random(self) -> float:
        return 1.0


def make_delivery(n: int = 1, *, severity: str = "info", status: str = "firing") -> Delivery:
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
    event = ChangeEvent(
        id=f"event-{n}",
        type=EventType.PRINT_FINISHED,
        source="lab",
        vendor=Vendor.FORMLABS,
        subject=printer.serial,
        time=T0,
        severity=Severity.INFO,
        printer=printer,
    )
    return Delivery(
        id=f"d{n}",
        sink="push",
        event_id=event.id,
        key="lab/Form4-CapableBeaver",
        created_at=T0,
        payload={
            "event": to_cloudevent(event),
            "status": status,
            "rule": "finished",
            "severity": severity,
            "title": "Beaver finished",
            "text": "Print <b>bracket</b> & co is done",
        },
    )


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as r:
        yield r


def sink(url: str, *, timeout: float = 5.0) -> AppriseSink:
    return AppriseSink("push", SecretStr(url), timeout=timeout, version="1.2.3")


def json_url(receiver: Receiver, path: str = "/hook") -> str:
    return f"json://127.0.0.1:{receiver.port}{path}"


def ntfy_url(receiver: Receiver, query: str = "") -> str:
    return f"ntfy://127.0.0.1:{receiver.port}/printers{query}"


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


def make_worker(store: Store, s: AppriseSink, clock: FakeClock, **kw: Any) -> OutboxWorker:
    return OutboxWorker(store, s, clock=clock, rng=MaxRandom(), idle_poll=3600.0, **kw)


# -- what the service receives ----------------------------------------------------------------


async def test_json_receiver_gets_title_body_and_notify_type(receiver: Receiver) -> None:
    """Apprise's JSON plugin posts our title and plain-text body; severity is its type."""
    async with sink(json_url(receiver)) as s:
        for severity in ("info", "warning", "critical"):
            await s.deliver(make_delivery(severity=severity))
        await s.deliver(make_delivery(severity="critical", status="resolved"))
    bodies = [json.loads(r.body) for r in receiver.requests]
    assert [b["type"] for b in bodies] == ["info", "warning", "failure", "success"]
    assert bodies[0]["title"] == "Beaver finished"
    assert bodies[3]["title"] == "Resolved: Beaver finished"
    message = bodies[0]["message"]
    assert message.startswith("Print <b>bracket</b> & co is done")  # text stays text
    assert "Printer: Beaver (Form4-CapableBeaver)" in message
    assert "Event: print.finished" in message
    assert receiver.requests[0].path == "/hook"
    assert receiver.requests[0].headers["user-agent"] == "printfleet"


@pytest.mark.parametrize(
    ("severity", "status", "priority"),
    [
        ("info", "firing", None),  # ntfy's default: Apprise sends no header
        ("warning", "firing", "high"),
        ("critical", "firing", "max"),  # ntfy's "urgent", which passes Do Not Disturb
        ("critical", "resolved", None),
    ],
)
async def test_ntfy_priority_follows_severity(
    receiver: Receiver, severity: str, status: str, priority: str | None
) -> None:
    async with sink(ntfy_url(receiver)) as s:
        await s.deliver(make_delivery(severity=severity, status=status))
    [request] = receiver.requests
    assert request.headers.get("x-priority") == priority
    body = json.loads(request.body)
    assert body["topic"] == "printers"


async def test_a_priority_the_user_set_in_the_url_wins(receiver: Receiver) -> None:
    async with sink(ntfy_url(receiver, "?priority=low")) as s:
        await s.deliver(make_delivery(severity="critical"))
        await s.deliver(make_delivery(severity="info"))
    assert [r.headers.get("x-priority") for r in receiver.requests] == ["low", "low"]


async def test_send_takes_title_body_and_severity(receiver: Receiver) -> None:
    """The hook digests use: any title and body, no delivery payload."""
    async with sink(ntfy_url(receiver)) as s:
        report = await s.send("Daily digest", "3 prints finished\n1 failed", "warning")
    [request] = receiver.requests
    assert json.loads(request.body)["message"] == "3 prints finished\n1 failed"
    assert json.loads(request.body)["title"] == "Daily digest"
    assert request.headers["x-priority"] == "high"
    assert report.service == "ntfy"


# -- failures -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "retryable"), [(500, True), (503, True), (429, True), (400, False), (401, False)]
)
async def test_http_status_translates_to_retryable_or_not(
    receiver: Receiver, status: int, retryable: bool
) -> None:
    receiver.script(Reply(status, body=b'{"error":"nope"}'))
    async with sink(json_url(receiver)) as s:
        with pytest.raises(DeliveryFailed) as caught:
            await s.deliver(make_delivery())
    assert caught.value.retryable is retryable
    assert caught.value.status == status
    assert caught.value.response == '{"error":"nope"}'
    assert f"error={status}" in caught.value.message


async def test_connection_refused_is_retryable() -> None:
    async with Receiver() as gone:
        url = json_url(gone)
    async with sink(url) as s:
        with pytest.raises(DeliveryFailed) as caught:
            await s.deliver(make_delivery())
    assert caught.value.retryable
    assert caught.value.status is None
    assert "JSON" in caught.value.message


async def test_a_slow_service_times_out_retryably(receiver: Receiver) -> None:
    """A service trickling its answer is given up on at the deadline (Apprise's, then ours)."""
    receiver.script(Reply(200, body=b"ok" * 50, trickle_s=0.2))
    async with sink(json_url(receiver), timeout=0.5) as s:
        with pytest.raises(DeliveryFailed) as caught:
            await s.deliver(make_delivery())
    assert caught.value.retryable
    assert "timed out" in caught.value.message


async def test_deliver_outside_the_context_is_refused(receiver: Receiver) -> None:
    with pytest.raises(RuntimeError):
        await sink(json_url(receiver)).deliver(make_delivery())


# -- through the outbox ---------------------------------------------------------------------


async def test_500_is_retried_after_the_backoff_and_delivered(
    receiver: Receiver, clock: FakeClock, store: Store
) -> None:
    receiver.script(Reply(500), Reply(200))
    async with sink(ntfy_url(receiver)) as s:
        worker = make_worker(store, s, clock, backoff_base=5.0)
        async with running(worker):
            store.commit(deliveries=[make_delivery(severity="critical")])
            worker.wake()
            await settled(worker)
            assert len(receiver.requests) == 1
            assert store.pending_count() == {"push": 1}
            await clock.advance(5)
            await settled(worker)
    assert len(receiver.requests) == 2
    assert [r.headers.get("x-priority") for r in receiver.requests] == ["max", "max"]
    assert store.pending_count() == {}
    assert store.list_entries(dead=True) == []


async def test_still_failing_after_max_age_is_dead_lettered(
    receiver: Receiver, clock: FakeClock, store: Store
) -> None:
    receiver.script(*[Reply(500, body=b"down for maintenance")] * 20)
    async with sink(json_url(receiver)) as s:
        worker = make_worker(
            store, s, clock, backoff_base=10.0, backoff_cap=10.0, max_age=timedelta(seconds=35)
        )
        async with running(worker):
            store.commit(deliveries=[make_delivery()])
            worker.wake()
            await settled(worker)
            for _ in range(4):
                await clock.advance(10)
                await settled(worker)
    [dead] = store.list_entries(dead=True)
    assert store.pending_count() == {}
    assert len(receiver.requests) == 4  # at 0, 10, 20, 30 s; at 40 s it had expired
    assert dead.last_error is not None
    assert dead.last_error.startswith("expired after 4 attempts")
    assert "error=500" in dead.last_error


async def test_400_is_dead_lettered_at_once_with_the_response(
    receiver: Receiver, clock: FakeClock, store: Store
) -> None:
    receiver.script(Reply(400, body=b"bad topic"))
    async with sink(json_url(receiver)) as s:
        worker = make_worker(store, s, clock)
        async with running(worker):
            store.commit(deliveries=[make_delivery()])
            worker.wake()
            await settled(worker)
    [dead] = store.list_entries(dead=True)
    assert len(receiver.requests) == 1
    assert dead.response == "bad topic"
    assert dead.last_error is not None
    assert "HTTP 400" in dead.last_error


# -- secrets --------------------------------------------------------------------------------


@pytest.fixture
def app_logs() -> Iterator[io.StringIO]:
    """The application's own logging, at debug (``-vv``), written to a buffer."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    quiet = {name: logging.getLogger(name).level for name in ("httpx", "httpcore", "urllib3")}
    stream = io.StringIO()
    configure_logging("debug", "json", stream)
    yield stream
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, old in quiet.items():
        logging.getLogger(name).setLevel(old)


@pytest.mark.parametrize("service", ["ntfy", "json"])
async def test_url_secrets_never_reach_logs_errors_reprs_or_the_store(
    receiver: Receiver, clock: FakeClock, store: Store, app_logs: io.StringIO, service: str
) -> None:
    """Token and password in the URL: Apprise logs them (debug), urllib3 logs request paths,
    and the service echoes them; none of it shows in the application's log (at debug),
    errors, reprs or the dead-letter table."""
    url = f"{service}://user:{PASSWORD}@127.0.0.1:{receiver.port}/{TOKEN}"
    echo = f'{{"error":"no topic {TOKEN} for user:{PASSWORD}","code":40301}}'.encode()
    receiver.script(Reply(500, body=echo), Reply(403, body=echo))
    seen: list[str] = []
    s = sink(url)
    seen.append(repr(s))
    async with s:
        with pytest.raises(DeliveryFailed) as caught:
            await s.deliver(make_delivery())
        err = caught.value
        seen += [str(err), repr(err), err.message, err.response or "", repr(err.__cause__)]
        worker = make_worker(store, s, clock, backoff_base=1.0)
        async with running(worker):
            store.commit(deliveries=[make_delivery(2)])
            worker.wake()
            await settled(worker)
    entries = store.list_entries(dead=True) + store.list_entries()
    assert len(receiver.requests) == 2
    assert entries
    assert entries[0].dead
    assert entries[0].response is not None
    assert "<redacted>" in entries[0].response  # the echo, kept with the secrets cut out
    assert "outbox.dead_lettered" in app_logs.getvalue()  # the log was written, and read here
    seen.append(app_logs.getvalue())
    seen += [f"{e.last_error} {e.response}" for e in entries]
    for text in seen:
        assert TOKEN not in text
        assert PASSWORD not in text


# -- building from the config -----------------------------------------------------------------


def _receiver(**kw: Any) -> ReceiverConfig:
    return ReceiverConfig.model_validate({"name": "push", "kind": "apprise", **kw})


@pytest.mark.parametrize(
    "url",
    [
        f"nosuchservice://{TOKEN}@host/x",
        f"{TOKEN}",
        f"tgram://{TOKEN}",  # a Telegram bot token must be digits:letters
    ],
)
async def test_an_unusable_url_is_a_config_error_naming_the_key_not_the_url(
    url: str, clock: FakeClock
) -> None:
    async with httpx.AsyncClient() as client:
        with pytest.raises(ConfigError) as caught:
            make_receiver_sink(
                _receiver(url_file="/run/secrets/push.url"),
                SecretStr(url),
                None,
                client=client,
                clock=clock,
                version="1.2.3",
                config_file=Path("/etc/printfleet/config.toml"),
            )
    text = str(caught.value)
    assert "/etc/printfleet/config.toml: receiver.push.url_file:" in text
    assert TOKEN not in text


async def test_the_factory_builds_an_apprise_sink(clock: FakeClock, receiver: Receiver) -> None:
    async with httpx.AsyncClient() as client:
        built = make_receiver_sink(
            _receiver(url=json_url(receiver), timeout="3s"),
            SecretStr(json_url(receiver)),
            None,
            client=client,
            clock=clock,
            version="1.2.3",
            config_file=Path("config.toml"),
        )
    assert isinstance(built, AppriseSink)
    async with built:
        await built.deliver(make_delivery())
    assert len(receiver.requests) == 1
