"""The request limit shared by every source of one vendor host (Formlabs: 100/s per IP).

All on a fake clock: many sources hammering one host never send more than the host limit in
any second, each still within its own budget, each served in turn (none starves); token
requests count; a 429 holds the whole host back for one window, not for Retry-After.
"""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from pydantic import SecretStr

from printfleet.config import LimitsConfig, SourceConfig
from printfleet.errors import RateLimited
from printfleet.sources.factory import host_of, make_source
from printfleet.sources.formlabs import FormlabsSource
from printfleet.sources.http.budget import HostLimits, RequestBudget
from printfleet.sources.http.client import RetryPolicy, VendorHttp
from printfleet.testing import FakeClock

BASE = "https://api.formlabs.test"
URL = f"{BASE}/developer/v1/printers/"


def busiest(times: list[float], window: float = 1.0) -> int:
    """The most of ``times`` (sorted) in any half-open window ``(t - window, t]``."""
    best = start = 0
    for end, moment in enumerate(times):
        while times[start] <= moment - window + 1e-9:
            start += 1
        best = max(best, end - start + 1)
    return best


class Host:
    """One vendor host behind a MockTransport: notes when each request came and from whom,
    and answers ``latency`` fake seconds later (a source's next request waits for it)."""

    def __init__(self, clock: FakeClock, latency: float = 0.05) -> None:
        self.clock = clock
        self.latency = latency
        self.times: list[float] = []
        self.by_source: dict[str, list[float]] = {}
        self.tokens: list[float] = []
        self.answers: list[httpx.Response] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        now = self.clock.monotonic()
        await self.clock.sleep(self.latency)
        self.times.append(now)
        if request.url.path.endswith("/o/token/"):
            self.tokens.append(now)
            client_id = parse_qs(request.content.decode())["client_id"][0]
            token = {"access_token": f"tok-{client_id}", "expires_in": 86400}
            return httpx.Response(200, json=token)
        who = request.url.params.get("s") or request.headers.get("authorization", "")
        self.by_source.setdefault(who, []).append(now)
        if self.answers:
            return self.answers.pop(0)
        return httpx.Response(200, json=[])


class RecordingObserver:
    def __init__(self) -> None:
        self.waits: list[tuple[str, str, float]] = []

    def api_request(self, source: str, endpoint: str, code: str, seconds: float) -> None:
        pass

    def host_limit_wait(self, vendor: str, host: str, seconds: float) -> None:
        self.waits.append((vendor, host, seconds))


def http_for(
    name: str,
    clock: FakeClock,
    client: httpx.AsyncClient,
    hosts: HostLimits,
    *,
    rate: float,
    per_second: float = 10.0,
    observer: Any = None,
) -> VendorHttp:
    budget = RequestBudget.formlabs(
        clock,
        per_hour=1_000_000,
        per_second=per_second,
        host=hosts.get("formlabs", "api.formlabs.test", rate),
    )
    return VendorHttp(
        source=name,
        client=client,
        clock=clock,
        budget=budget,
        retry=RetryPolicy(max_budget_wait_s=1_000),
        rng=random.Random(1),
        observer=observer or RecordingObserver(),
    )


async def hammer(http: VendorHttp, clock: FakeClock, until: float) -> None:
    """Send as fast as every limit allows until ``until`` (fake seconds)."""
    while clock.monotonic() < until:
        await http.request("GET", URL, endpoint="/printers/", params=[("s", http.source)])


async def test_many_sources_share_the_host_limit_and_all_progress() -> None:
    """25 sources of 10/s each (250/s wanted) on a 30/s host: never more than 30 in any second
    for a simulated minute, and each source gets its turn (the fewest within 10 % of the
    most: first come, first served)."""
    clock = FakeClock()
    host = Host(clock)
    hosts = HostLimits(clock)
    observer = RecordingObserver()
    async with httpx.AsyncClient(transport=httpx.MockTransport(host)) as client:
        https = [
            http_for(f"s{i}", clock, client, hosts, rate=30, observer=observer) for i in range(25)
        ]

        async def everyone() -> None:
            await asyncio.gather(*(hammer(h, clock, 60.0) for h in https))

        await clock.drive(everyone())
    assert busiest(host.times) <= 30
    assert len(host.times) >= 30 * 59  # the host limit is used, not wasted
    per_source = _per_source(host)
    assert len(per_source) == 25
    assert min(per_source.values()) >= 0.9 * max(per_source.values())
    waited = sum(seconds for _, _, seconds in observer.waits)
    assert {(v, h) for v, h, _ in observer.waits} == {("formlabs", "api.formlabs.test")}
    assert waited > 25 * 30  # most of each source's minute went waiting for the host


def _per_source(host: Host) -> dict[str, int]:
    return {name: len(times) for name, times in host.by_source.items()}


async def test_each_source_keeps_its_own_budget_under_a_roomy_host_limit() -> None:
    """A 1000/s host limit does not lift a source's own 5/s cap."""
    clock = FakeClock()
    host = Host(clock)
    hosts = HostLimits(clock)
    async with httpx.AsyncClient(transport=httpx.MockTransport(host)) as client:
        https = [http_for(f"s{i}", clock, client, hosts, rate=1000, per_second=5) for i in range(4)]

        async def everyone() -> None:
            await asyncio.gather(*(hammer(h, clock, 20.0) for h in https))

        await clock.drive(everyone())
    for times in host.by_source.values():
        assert busiest(times) <= 5
        assert len(times) >= 5 * 19
    assert busiest(host.times) <= 20


async def test_token_requests_count_toward_the_host_limit() -> None:
    """30 Formlabs sources starting together on a 20/s host: tokens and printer lists
    together stay within 20 in any second, and every source gets its printers."""
    clock = FakeClock()
    host = Host(clock)
    hosts = HostLimits(clock)
    limits = LimitsConfig(formlabs_host_requests_per_second=20)
    async with httpx.AsyncClient(transport=httpx.MockTransport(host)) as client:
        sources = [
            make_source(
                SourceConfig(
                    name=f"lab{i}",
                    vendor="formlabs",
                    client_id=f"id{i}",
                    client_secret=SecretStr("secret"),
                    base_url=BASE,
                ),
                client=client,
                clock=clock,
                offline_after=timedelta(minutes=5),
                limits=limits,
                hosts=hosts,
            )
            for i in range(30)
        ]

        async def everyone() -> list[Any]:
            return await asyncio.gather(*(s.fetch_printers() for s in sources))

        snapshots = await clock.drive(everyone())
    assert len(snapshots) == 30
    assert len(host.tokens) == 30
    assert len(host.times) == 60
    assert busiest(host.times) <= 20
    assert host.times[-1] >= 2.0  # 60 requests at 20/s take three windows


def test_the_factory_shares_one_limit_per_vendor_and_host() -> None:
    """Sources of one vendor and host share a limit; another host or vendor has its own;
    a rate of 0 means none (Carbon's default)."""
    clock = FakeClock()
    hosts = HostLimits(clock)
    a = hosts.get("formlabs", host_of("https://api.formlabs.com"), 90)
    b = hosts.get("formlabs", host_of("https://api.formlabs.com/"), 90)
    c = hosts.get("formlabs", host_of("http://127.0.0.1:8080"), 90)
    assert a is b
    assert a is not c
    assert c is not None
    assert c.host == "127.0.0.1:8080"
    assert hosts.get("carbon", "api.carbon3d.com", 0) is None
    assert LimitsConfig().formlabs_host_requests_per_second == 90
    assert LimitsConfig().carbon_host_requests_per_second == 0
    assert HostLimits.shared(clock) is HostLimits.shared(clock)
    assert HostLimits.shared(clock) is not HostLimits.shared(FakeClock())


def test_sources_built_by_the_factory_get_the_shared_limit() -> None:
    """make_source without a registry uses the clock's one: two sources, one limit."""
    clock = FakeClock()
    client = httpx.AsyncClient()

    def build(name: str) -> FormlabsSource:
        source = make_source(
            SourceConfig(
                name=name,
                vendor="formlabs",
                client_id=name,
                client_secret=SecretStr("s"),
                base_url=BASE,
            ),
            client=client,
            clock=clock,
            offline_after=timedelta(minutes=5),
        )
        assert isinstance(source, FormlabsSource)
        return source

    first, second = build("a"), build("b")
    limit = first._http.budget.host
    assert limit is not None
    assert limit is second._http.budget.host
    assert (limit.vendor, limit.host, limit.rate) == ("formlabs", "api.formlabs.test", 90)


async def test_a_429_holds_the_host_back_one_window_and_its_source_for_retry_after() -> None:
    """One source's 429 (Retry-After 30): that source pauses 30 s; the others wait only
    until one window (1 s) has passed, then go on."""
    clock = FakeClock()
    host = Host(clock)
    hosts = HostLimits(clock)
    async with httpx.AsyncClient(transport=httpx.MockTransport(host)) as client:
        hit = http_for("hit", clock, client, hosts, rate=90)
        other = http_for("other", clock, client, hosts, rate=90)
        host.answers = [httpx.Response(429, headers={"Retry-After": "30"})]
        with pytest.raises(RateLimited) as caught:
            await clock.drive(hit.request("GET", URL, endpoint="/printers/"))
        assert caught.value.retry_after == 30
        answered = clock.monotonic()  # the 429 came after the host's latency
        await clock.drive(other.request("GET", URL, endpoint="/printers/"))
        assert host.times[-1] == pytest.approx(answered + 1.0)
        with pytest.raises(RateLimited):
            await clock.drive(hit.request("GET", URL, endpoint="/printers/"))
        assert len(host.times) == 2


def test_a_host_limit_books_in_order_paced_and_refuses_a_queue_too_long() -> None:
    """Reservations come out first come, first served, ``1 / rate`` apart (no burst that
    network jitter could push into the next second); one that would wait longer than
    allowed books nothing."""
    clock = FakeClock()
    limit = HostLimits(clock).get("formlabs", "h", 2)
    assert limit is not None
    assert [limit.reserve(10) for _ in range(6)] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    assert limit.reserve(2.5) is None
    assert limit.reserve(3.0) == 3.0
