"""Turns one ``[[receiver]]`` (and the secrets read for it) into its sink.

The daemon and ``printfleet receiver test`` both build receivers here, so a test notification
goes through exactly the sink code (formats, signing, delivery) the outbox uses.
"""

from __future__ import annotations

from pathlib import Path

import httpx
from pydantic import SecretStr

from printfleet.clock import Clock
from printfleet.config.schema import ReceiverConfig
from printfleet.errors import ConfigError, Problem
from printfleet.sinks.apprise_sink import KIND as APPRISE_KIND
from printfleet.sinks.apprise_sink import AppriseSink
from printfleet.sinks.pictures import PictureFetcher
from printfleet.sinks.webhook import DEFAULT_REPLY_MAX_SIZE, WebhookSink

ReceiverSink = WebhookSink | AppriseSink


def make_receiver_sink(
    receiver: ReceiverConfig,
    url: SecretStr,
    secret: SecretStr | None,
    *,
    client: httpx.AsyncClient,
    clock: Clock,
    version: str,
    config_file: Path,
    reply_max_size: int = DEFAULT_REPLY_MAX_SIZE,
    pictures: PictureFetcher | None = None,
) -> ReceiverSink:
    """The (not yet entered) sink of ``receiver``.

    Raises:
        ConfigError: an ``apprise`` URL Apprise cannot use, naming the key (never the URL).
    """
    timeout = receiver.timeout.total_seconds()
    if receiver.kind == APPRISE_KIND:
        problem = AppriseSink.check_url(url)
        if problem is not None:
            key = "url_file" if receiver.url_file is not None else "url"
            raise ConfigError(
                Problem(
                    str(config_file),
                    f"receiver.{receiver.name}.{key}",
                    problem,
                    fix="use a URL from https://appriseit.com/services/, "
                    "e.g. ntfys://ntfy.sh/your-topic",
                )
            )
        return AppriseSink(receiver.name, url, timeout=timeout, version=version)
    return WebhookSink(
        receiver.name,
        receiver.kind,
        url,
        client=client,
        secret=secret,
        headers=receiver.headers,
        timeout=timeout,
        reply_max_size=reply_max_size,
        clock=clock,
        version=version,
        pictures=pictures,
    )
