"""``printfleet receiver test NAME``: send one clearly marked test notification to a receiver.

The notification goes through the receiver's real sink (the same formats, signing and
delivery code the outbox uses, built by :func:`printfleet.sinks.factory.make_receiver_sink`)
but *not* through the outbox: sent directly, once, so the command can print what the receiver
answered. Enqueueing it instead would need the state database, which a running daemon holds
(statelock), and would hide the outcome behind the daemon's retries. Nothing is stored; a
failure is not retried.

The test is a ``printer.alert`` CloudEvent with subject ``printfleet-test`` and a fresh id (a
receiver that deduplicates by id still shows every test), so every kind renders it: the
generic webhook gets it signed like real ones, chat and push receivers get the title
"printfleet test notification".
"""

from __future__ import annotations

import asyncio
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TextIO

import httpx

from printfleet import __version__
from printfleet.clock import SystemClock
from printfleet.config import Settings, read_secret
from printfleet.config.secrets import secret_file_max_size
from printfleet.core.delivery import Delivery
from printfleet.errors import (
    EXIT_ERROR,
    EXIT_OK,
    ConfigError,
    DeliveryFailed,
    Problem,
    did_you_mean,
)
from printfleet.logs import redact
from printfleet.sinks.factory import make_receiver_sink

TEST_SUBJECT: Final = "printfleet-test"
TEST_RULE: Final = "printfleet-test"
TEST_TITLE: Final = "printfleet test notification"
SEVERITIES: Final = ("info", "warning", "critical")
#: Most of a reply printed (the sinks cap what they read already).
REPLY_SHOWN: Final = 500


def notice_payload(receiver: str, severity: str, *, now: datetime) -> dict[str, Any]:
    """The delivery payload of a test notification to ``receiver`` (a synthetic alert)."""
    event = {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "printfleet/test",
        "type": "printer.alert",
        "subject": TEST_SUBJECT,
        "time": now.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "data": {
            "severity": severity,
            "alert": "printfleet test notification",
            "state": "raised",
            "test": True,
        },
    }
    return {
        "event": event,
        "status": "firing",
        "rule": TEST_RULE,
        "severity": severity,
        "title": TEST_TITLE,
        "text": f"This is a test from printfleet (printfleet receiver test {receiver}, "
        f"severity {severity}). No printer is affected; nothing needs doing.",
    }


def receiver_test(
    config_file: Path,
    settings: Settings,
    name: str,
    out: TextIO,
    *,
    severity: str = "info",
    transport: httpx.AsyncBaseTransport | None = None,
) -> int:
    """Send the test notification to receiver ``name``; print the outcome.

    Returns:
        0 when the receiver accepted it, 1 when it did not (the reason is printed).

    Raises:
        ConfigError: no receiver ``name`` (with a did-you-mean), or its secret files or
            Apprise URL are unusable.
    """
    receivers = {r.name: r for r in settings.receiver}
    receiver = receivers.get(name)
    if receiver is None:
        close = did_you_mean(name, receivers)
        known = ", ".join(sorted(receivers)) or "none configured"
        raise ConfigError(
            Problem(
                str(config_file),
                "receiver",
                f"no receiver named {name!r} (receivers: {known})",
                fix=f"did you mean {close!r}?" if close else "add a [[receiver]] with this name",
            )
        )
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    secrets = [
        read_secret(
            value,
            file,
            key=f"receiver.{name}.{key}",
            config_file=config_file,
            credentials_dir=Path(credentials) if credentials else None,
            max_size=secret_file_max_size(settings),
        )
        for value, file, key in (
            (receiver.url, receiver.url_file, "url_file"),
            (receiver.secret, receiver.secret_file, "secret_file"),
        )
    ]
    url, secret = secrets
    assert url is not None  # the schema requires url or url_file
    clock = SystemClock()
    payload = notice_payload(name, severity, now=clock.now())
    delivery = Delivery(
        id=f"test-{uuid.uuid4()}",
        sink=name,
        event_id=str(payload["event"]["id"]),
        key=TEST_SUBJECT,
        created_at=clock.now(),
        payload=payload,
    )

    replies: list[tuple[int | None, str]] = []

    async def send() -> None:
        async with httpx.AsyncClient(
            headers={"User-Agent": f"printfleet/{__version__}"},
            transport=transport,
            follow_redirects=False,
        ) as client:
            sink = make_receiver_sink(
                receiver,
                url,
                secret,
                client=client,
                clock=clock,
                version=__version__,
                config_file=config_file,
                reply_max_size=settings.limits.reply_max_size,
            )
            async with sink:
                await sink.deliver(delivery, on_reply=lambda s, r: replies.append((s, r)))

    what = f"test notification to {name} ({receiver.kind}, severity {severity})"
    try:
        asyncio.run(send())
    except DeliveryFailed as err:
        out.write(f"FAILED: {what}\n")
        out.write(f"  reason: {redact(err.message)}\n")
        if err.status is not None:
            out.write(f"  status: HTTP {err.status}\n")
        if err.response:
            out.write(f"  response: {_shown(err.response)}\n")
        hint = "trying again may help" if err.retryable else "the receiver refused it"
        out.write(f"  ({hint}; nothing was queued or retried)\n")
        return EXIT_ERROR
    out.write(f"sent: {what}\n")
    for status, reply in replies:
        if status is not None:
            out.write(f"  status: HTTP {status}\n")
        out.write(f"  response: {_shown(reply) or '(empty)'}\n")
    return EXIT_OK


def _shown(text: str) -> str:
    text = redact(text).replace("\r", "\\r").replace("\n", "\\n")
    return text if len(text) <= REPLY_SHOWN else text[: REPLY_SHOWN - 1] + "…"
