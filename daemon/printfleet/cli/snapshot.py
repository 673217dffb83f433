"""``printfleet snapshot``: fetch each account once and print the normalized fleet as JSON.

The quickest way to see what printfleet makes of a vendor's API (``--raw`` adds the records as
received), with the same credentials and exit codes as the daemon (3: credentials rejected).
"""

from __future__ import annotations

import json
import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Protocol, TextIO

import httpx

from printfleet import __version__
from printfleet.clock import Clock, SystemClock
from printfleet.config import CREDENTIALS_ENV, LimitsConfig, Settings, SourceConfig
from printfleet.errors import (
    EXIT_AUTH,
    EXIT_ERROR,
    EXIT_OK,
    AuthFailed,
    ConfigError,
    Problem,
    SourceError,
)
from printfleet.logs import redact
from printfleet.sources.base import Source


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
) -> int:
    """Print one JSON snapshot per source; 0, 3 if credentials were rejected, else 1 on failure."""
    credentials = os.environ.get(CREDENTIALS_ENV)
    failures: list[SourceError] = []
    async with httpx.AsyncClient(headers={"User-Agent": f"printfleet/{__version__}"}) as client:
        for config in sources:
            source = make_source(
                config,
                client=client,
                clock=SystemClock(),
                offline_after=config.offline_after or settings.poll.offline_after,
                credentials_dir=Path(credentials) if credentials else None,
                limits=settings.limits,
            )
            try:
                snapshot = await source.fetch_printers()
            except SourceError as err:
                print(f"printfleet: {redact(str(err))}", file=sys.stderr)
                failures.append(err)
                continue
            finally:
                await source.aclose()
            text = json.dumps(snapshot.as_dict(with_raw=raw), indent=2, ensure_ascii=False)
            print(text, file=out)
    if any(isinstance(err, AuthFailed) for err in failures):
        return EXIT_AUTH
    return EXIT_ERROR if failures else EXIT_OK
