"""``printfleet snapshot``: fetch each account once and print the normalized fleet as JSON.

The quickest way to see what printfleet makes of a vendor's API (``--raw`` adds the records as
received), with the same credentials and exit codes as the daemon (3: credentials rejected).

Standard output is one JSON document, an object keyed by source name (``--jsonl``: one line
per source instead), so it pipes into ``jq``; standard error says how many printers each source
has (``0 printers`` too: an empty fleet is said, not just an empty list) and why a source
failed. A short ``Retry-After`` on a 429 is waited out (at most :data:`MAX_RETRY_WAIT_S`).
"""

from __future__ import annotations

import json
import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol, TextIO

import httpx

from printfleet import __version__
from printfleet.clock import Clock, SystemClock
from printfleet.config import CREDENTIALS_ENV, LimitsConfig, Settings, SourceConfig
from printfleet.core.model import Snapshot
from printfleet.errors import (
    EXIT_AUTH,
    EXIT_ERROR,
    EXIT_OK,
    AuthFailed,
    ConfigError,
    Problem,
    RateLimited,
    SourceError,
)
from printfleet.logs import redact
from printfleet.sources.base import Source

#: Longest vendor ``Retry-After`` a one-shot command waits out (per source, in total) before it
#: gives up; a daemon waits any delay, but a person at a terminal should not wait minutes.
MAX_RETRY_WAIT_S = 30.0


def select_sources(path: Path, settings: Settings, name: str | None) -> list[SourceConfig]:
    """The ``[[source]]`` named ``name`` (every one when None).

    Raises:
        ConfigError: no source has that name, or none is configured.
    """
    sources = [s for s in settings.source if name in (None, s.name)]
    if not sources:
        names = ", ".join(s.name for s in settings.source)
        raise ConfigError(
            Problem(
                str(path),
                "source",
                f"no [[source]] named {name!r}" if name else "no [[source]] configured",
                f"use one of: {names}" if names else "add a [[source]] (see config.example.toml)",
            )
        )
    return sources


class MakeSource(Protocol):
    """:func:`printfleet.sources.factory.make_source`, passed in by the command."""

    def __call__(
        self,
        config: SourceConfig,
        *,
        client: httpx.AsyncClient,
        clock: Clock,
        offline_after: timedelta,
        credentials_dir: Path | None,
        limits: LimitsConfig | None,
    ) -> Source: ...


async def fetch_snapshots(
    settings: Settings,
    sources: list[SourceConfig],
    *,
    make_source: MakeSource,
    raw: bool,
    out: TextIO,
    jsonl: bool = False,
    err: TextIO | None = None,
    clock: Clock | None = None,
    max_retry_wait: float = MAX_RETRY_WAIT_S,
) -> int:
    """Fetch each source once and print the snapshots: one JSON object keyed by source name
    on ``out`` (``jsonl``: one compact line per source, in order, as each arrives).

    Counts and failures go to ``err`` (default ``sys.stderr``). A 429 whose ``Retry-After``
    fits in ``max_retry_wait`` (summed per source) is waited out on ``clock`` and retried.

    Returns:
        0; 3 if credentials were rejected; else 1 if any source failed (the others are
        still printed).
    """
    err = err or sys.stderr
    clock = clock or SystemClock()
    credentials = os.environ.get(CREDENTIALS_ENV)
    failures: list[SourceError] = []
    document: dict[str, object] = {}
    async with httpx.AsyncClient(headers={"User-Agent": f"printfleet/{__version__}"}) as client:
        for config in sources:
            source = make_source(
                config,
                client=client,
                clock=clock,
                offline_after=config.offline_after or settings.poll.offline_after,
                credentials_dir=Path(credentials) if credentials else None,
                limits=settings.limits,
            )
            try:
                snapshot = await _fetch(source, config.name, clock, err, max_retry_wait)
            except SourceError as error:
                print(f"printfleet: {redact(str(error))}", file=err)
                failures.append(error)
                continue
            finally:
                await source.aclose()
            count = len(snapshot.printers)
            skipped = f", {len(snapshot.skipped)} records skipped" if snapshot.skipped else ""
            print(
                f"printfleet: {config.name}: {count} printer{'' if count == 1 else 's'}{skipped}",
                file=err,
            )
            data = snapshot.as_dict(with_raw=raw)
            if jsonl:
                print(_json_text(data, separators=(",", ":")), file=out)
            else:
                document[config.name] = data
    if not jsonl:
        print(_json_text(document, indent=2), file=out)
    if any(isinstance(error, AuthFailed) for error in failures):
        return EXIT_AUTH
    return EXIT_ERROR if failures else EXIT_OK


def _json_text(data: object, **options: Any) -> str:
    """JSON with non-ASCII kept readable, unless a vendor string holds a lone surrogate that no
    terminal encoding can write: then that document is written with ASCII escapes."""
    text = json.dumps(data, ensure_ascii=False, **options)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(data, ensure_ascii=True, **options)
    return text


async def _fetch(source: Source, name: str, clock: Clock, err: TextIO, max_wait: float) -> Snapshot:
    """``source.fetch_printers()``, waiting out short ``Retry-After`` delays.

    Raises:
        RateLimited: the vendor asked for a longer wait than is left of ``max_wait`` (the
            message names the wait); other SourceErrors as raised.
    """
    waited = 0.0
    while True:
        try:
            return await source.fetch_printers()
        except RateLimited as error:
            wait = error.retry_after
            if wait <= 0 or waited + wait > max_wait:
                raise RateLimited(
                    name,
                    f"{error.message}; the vendor asks to wait {wait:g} s, longer than "
                    f"snapshot waits ({max_wait:g} s in all): try again later",
                    wait,
                ) from error
            print(
                f"printfleet: {name}: rate limited by the vendor (HTTP 429); "
                f"waiting {wait:g} s as asked (Retry-After), then retrying",
                file=err,
            )
            waited += wait
            await clock.sleep(wait)
