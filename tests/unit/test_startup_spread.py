"""Start-up spread: many sources poll first one after another over one `[poll] interval`;
a few (<= 10) all poll at once, as the demo and the tests expect.

The real daemon on a fake clock, its vendor a MockTransport noting when each account asked
for its token (the first request of every Formlabs poll).
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest

from printfleet.app import Daemon, DaemonHooks
from printfleet.config import Settings
from printfleet.core.startup import SPREAD_ABOVE, start_delays
from printfleet.testing import FakeClock

ROOT = Path(__file__).resolve().parents[2]
BASE = "https://api.formlabs.test"


def test_delays_spread_many_sources_evenly_over_one_interval() -> None:
    """500 sources: 0, 0.03, ... 14.97 s; 10 sources: all 0."""
    delays = start_delays(500, 15.0)
    assert delays[0] == 0
    assert max(delays) < 15.0
    assert delays == sorted(delays)
    assert all(b - a == pytest.approx(0.03) for a, b in itertools.pairwise(delays))
    assert start_delays(SPREAD_ABOVE, 15.0) == [0.0] * SPREAD_ABOVE
    assert start_delays(0, 15.0) == []


async def first_token_requests(tmp_path: Path, sources: int) -> dict[str, float]:
    """Run the daemon with ``sources`` Formlabs accounts for 20 fake seconds; return when
    each account's first token request came (fake seconds from start)."""
    clock = FakeClock()
    first: dict[str, float] = {}

    def vendor(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/o/token/"):
            client_id = parse_qs(request.content.decode())["client_id"][0]
            first.setdefault(client_id, clock.monotonic())
            return httpx.Response(200, json={"access_token": f"t-{client_id}", "expires_in": 86400})
        return httpx.Response(200, json=[])

    settings = Settings.model_validate(
        {
            "daemon": {"state_dir": str(tmp_path / "state")},
            "source": [
                {
                    "name": f"lab{i}",
                    "vendor": "formlabs",
                    "client_id": f"id{i}",
                    "client_secret": "secret",
                    "base_url": BASE,
                }
                for i in range(sources)
            ],
            "poll": {"interval": "15s"},
            "mqtt": {"enabled": False},
            "metrics": {"enabled": False},
            "rules": {"packs": [str(ROOT / "rules" / "default.toml")]},
            # The spread alone: the shared host limit would hold some tokens back a little
            # (three requests a first poll, 100/s wanted, 90/s allowed).
            "limits": {"formlabs_host_requests_per_second": 0},
        }
    )
    ready = asyncio.Event()
    daemon = Daemon(
        settings,
        clock=clock,
        transport=httpx.MockTransport(vendor),
        hooks=DaemonHooks(on_ready=lambda _: ready.set()),
    )
    running = asyncio.create_task(daemon.run())
    async with asyncio.timeout(60):
        await ready.wait()
        await clock.advance(20.0)
        daemon.stop()
        assert await running == 0
    return first


async def test_500_sources_first_poll_spread_over_the_interval(tmp_path: Path) -> None:
    """500 accounts: their first token requests come over the first 15 s, never more than
    36 in any one second (500 / 15 = 33.3 a second, evenly), and every account starts."""
    first = await first_token_requests(tmp_path, 500)
    assert len(first) == 500
    times = sorted(first.values())
    assert times[0] == 0
    assert 14.0 < times[-1] < 15.0
    per_second = [sum(1 for t in times if s <= t < s + 1) for s in range(15)]
    assert max(per_second) <= 34
    assert min(per_second) >= 33
    assert first["id0"] < first["id250"] < first["id499"]  # config order


async def test_ten_sources_all_start_at_once(tmp_path: Path) -> None:
    """Up to ten accounts (a demo, a small shop): every first poll at once."""
    first = await first_token_requests(tmp_path, 10)
    assert sorted(first.values()) == [0.0] * 10
