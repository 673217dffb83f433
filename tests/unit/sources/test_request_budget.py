"""The shared HTTP machinery: request budget, retries, 429 pauses and error translation."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any, TypeVar

import httpx
import pytest

from printfleet.core.model import iso as iso_z
from printfleet.errors import AuthFailed, BadResponse, RateLimited, SourceUnavailable
from printfleet.sources.http.base import PageGuard, follow_link
from printfleet.sources.http.budget import RequestBudget, WindowLimit
from printfleet.sources.http.client import RetryPolicy, VendorHttp
from printfleet.testing import FakeClock

T = TypeVar("T")
URL = "https://api.example.test/developer/v1/printers/"
Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """A MockTransport handler that answers from a script and notes when each request came."""

    def __init__(self, clock: FakeClock, answers: list[httpx.Response | Exception] | None = None):
        self.clock = clock
        self.answers = list(answers or [])
        self.times: list[float] = []
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.times.append(self.clock.monotonic())
        self.requests.append(request)
        answer = self.answers.pop(0) if self.answers else httpx.Response(200, json=[])
        if isinstance(answer, Exception):
            raise answer
        return answer


class RecordingObserver:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []

    def api_request(self, source: str, endpoint: str, code: str, seconds: float) -> None:
        self.calls.append((source, endpoint, code))

    def record_skipped(self, source: str, kind: str) -> None:
        pass

    def poll_done(self, source: str, seconds: float, ok: bool) -> None:
        pass

    def event_emitted(self, event: Any) -> None:
        pass

    def rule_matched(self, rule: str) -> None:
        pass

    def delivery_done(self, sink: str, result: str) -> None:
        pass


#: A vendor_clock_skew wide enough to trust the 2025 fixture clock from our 2026 one.
FAR = timedelta(days=400)


def make_http(
    clock: FakeClock,
    handler: Handler,
    *,
    budget: RequestBudget | None = None,
    retry: RetryPolicy | None = None,
    observer: Any = None,
    forbidden_hint: str | None = None,
    **options: Any,
) -> VendorHttp:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    kwargs: dict[str, Any] = dict(options)
    if observer is not None:
        kwargs["observer"] = observer
    return VendorHttp(
        source="lab",
        client=client,
        clock=clock,
        budget=budget or RequestBudget.formlabs(clock),
        retry=retry,
        rng=random.Random(7),
        forbidden_hint=forbidden_hint,
        **kwargs,
    )


def max_in_window(times: list[float], window: float) -> int:
    """The most events in any half-open window ``(t - window, t]``."""
    best, start = 0, 0
    for end, t in enumerate(times):
        while times[start] <= t - window + 1e-9:
            start += 1
        best = max(best, end - start + 1)
    return best


# --- budget -------------------------------------------------------------------------------------


async def test_budget_never_exceeded_over_a_simulated_hour() -> None:
    """Requests sent as fast as allowed for two simulated hours stay within 1350/h and 10/s."""
    clock = FakeClock()
    recorder = Recorder(clock)
    http = make_http(clock, recorder, retry=RetryPolicy(max_budget_wait_s=10_000))

    async def hammer() -> None:
        while clock.monotonic() < 7200:
            await http.request("GET", URL, endpoint="/printers/")

    await clock.drive(hammer())
    assert max_in_window(recorder.times, 3600.0) == 1350
    assert max_in_window(recorder.times, 1.0) <= 10
    assert len(recorder.times) >= 2 * 1350


async def test_concurrent_callers_share_one_budget() -> None:
    """Twenty concurrent requests against a 100-per-10s budget never exceed it in any window."""
    clock = FakeClock()
    recorder = Recorder(clock)
    http = make_http(
        clock,
        recorder,
        budget=RequestBudget.carbon(clock, per_10s=5),
        retry=RetryPolicy(max_budget_wait_s=1000),
    )

    async def many() -> None:
        await asyncio.gather(*(http.request("GET", URL, endpoint="/x") for _ in range(20)))

    await clock.drive(many())
    assert len(recorder.times) == 20
    assert max_in_window(recorder.times, 10.0) == 5


async def test_budget_exhausted_beyond_the_wait_bound_raises_rate_limited_without_sending() -> None:
    """When the budget frees up later than max_budget_wait_s, the caller gets RateLimited."""
    clock = FakeClock()
    recorder = Recorder(clock)
    http = make_http(
        clock, recorder, budget=RequestBudget.formlabs(clock, per_hour=2, per_second=10)
    )
    await http.request("GET", URL, endpoint="/printers/")
    await http.request("GET", URL, endpoint="/printers/")
    with pytest.raises(RateLimited) as caught:
        await http.request("GET", URL, endpoint="/printers/")
    assert len(recorder.requests) == 2
    assert caught.value.retry_after == pytest.approx(3600.0)


@pytest.mark.parametrize(
    ("rate", "limit", "window"),
    [(10.0, 10, 1.0), (2.5, 2, 0.8), (0.5, 1, 2.0)],
)
def test_per_second_caps_become_window_limits(rate: float, limit: int, window: float) -> None:
    """A per-second rate becomes a whole number of requests per (possibly longer) window."""
    cap = WindowLimit.per_second(rate)
    assert cap.limit == limit
    assert cap.window_s == pytest.approx(window)


def test_budget_status_reports_the_primary_window() -> None:
    """budget() reports the hourly window for Formlabs, with what is left of it."""
    clock = FakeClock()
    budget = RequestBudget.formlabs(clock, per_hour=1350)
    budget.spend()
    status = budget.status()
    assert (status.remaining, status.capacity, status.window_s) == (1349, 1350, 3600)
    assert status.paused_until is None


# --- 429 ----------------------------------------------------------------------------------------


async def test_429_retry_after_seconds_pauses_the_whole_source() -> None:
    """After a 429 with Retry-After: 37 nothing is sent for 37 s, then requests flow again."""
    clock = FakeClock()
    recorder = Recorder(clock, [httpx.Response(429, headers={"Retry-After": "37"})])
    http = make_http(clock, recorder)
    with pytest.raises(RateLimited) as caught:
        await http.request("GET", URL, endpoint="/printers/")
    assert caught.value.retry_after == 37
    await clock.advance(36.9)
    with pytest.raises(RateLimited) as again:
        await http.request("GET", URL, endpoint="/events/")
    assert again.value.retry_after == pytest.approx(0.1)
    assert len(recorder.requests) == 1
    assert http.budget.status().paused_until == pytest.approx(37.0)
    await clock.advance(0.1)
    await http.request("GET", URL, endpoint="/printers/")
    assert recorder.times == [0.0, pytest.approx(37.0)]


async def test_429_retry_after_http_date_is_read_against_the_server_clock() -> None:
    """A Retry-After HTTP-date counts from the response's Date header, not from our clock."""
    clock = FakeClock()
    server_now = datetime(2025, 6, 18, 14, 30, tzinfo=UTC)
    headers = {
        "Date": format_datetime(server_now, usegmt=True),
        "Retry-After": format_datetime(server_now + timedelta(seconds=90), usegmt=True),
    }
    http = make_http(
        clock, Recorder(clock, [httpx.Response(429, headers=headers)]), vendor_clock_skew=FAR
    )
    with pytest.raises(RateLimited) as caught:
        await http.request("GET", URL, endpoint="/printers/")
    assert caught.value.retry_after == pytest.approx(90.0)


async def test_429_without_retry_after_backs_off_from_one_to_sixty_seconds() -> None:
    """Consecutive 429s without Retry-After pause 1 s, 2 s, 4 s ... never above 60 s."""
    clock = FakeClock()
    recorder = Recorder(clock, [httpx.Response(429) for _ in range(10)])
    http = make_http(clock, recorder)
    pauses = []
    for _ in range(10):
        with pytest.raises(RateLimited) as caught:
            await http.request("GET", URL, endpoint="/printers/")
        pauses.append(caught.value.retry_after)
        await clock.advance(caught.value.retry_after)
    assert 1.0 <= pauses[0] <= 1.5
    assert 2.0 <= pauses[1] <= 3.0
    assert all(p <= 60.0 for p in pauses)
    assert pauses[-1] == pytest.approx(60.0, abs=0.01) or pauses[-1] <= 60.0
    assert len(recorder.requests) == 10


# --- retries ------------------------------------------------------------------------------------


async def test_5xx_is_retried_with_backoff_then_source_unavailable() -> None:
    """A persistent 503 is tried `attempts` times with full-jitter delays, then gives up."""
    clock = FakeClock()
    recorder = Recorder(clock, [httpx.Response(503) for _ in range(10)])
    policy = RetryPolicy(attempts=4, base_s=0.5, cap_s=10.0)
    http = make_http(clock, recorder, retry=policy)
    with pytest.raises(SourceUnavailable) as caught:
        await clock.drive(http.request("GET", URL, endpoint="/printers/"))
    assert len(recorder.requests) == 4
    gaps = [b - a for a, b in zip(recorder.times, recorder.times[1:], strict=False)]
    for n, gap in enumerate(gaps, start=1):
        assert 0.0 <= gap <= min(10.0, 0.5 * 2 ** (n - 1))
    assert "HTTP 503" in str(caught.value)


async def test_5xx_then_success_returns_the_body() -> None:
    """A 502 followed by a 200 returns the 200's body."""
    clock = FakeClock()
    recorder = Recorder(clock, [httpx.Response(502), httpx.Response(200, json=[{"a": 1}])])
    http = make_http(clock, recorder)
    result = await clock.drive(http.request("GET", URL, endpoint="/printers/"))
    assert result.body == [{"a": 1}]


async def test_retrying_stops_when_the_total_time_would_be_exceeded() -> None:
    """A 503 whose Retry-After exceeds the total retry time fails at once, carrying it."""
    clock = FakeClock()
    recorder = Recorder(clock, [httpx.Response(503, headers={"Retry-After": "120"})])
    http = make_http(clock, recorder, retry=RetryPolicy(total_s=60))
    with pytest.raises(SourceUnavailable) as caught:
        await http.request("GET", URL, endpoint="/printers/")
    assert caught.value.retry_after == 120
    assert len(recorder.requests) == 1


@pytest.mark.parametrize(
    ("error", "label"),
    [
        (httpx.ReadTimeout("timed out"), "timeout"),
        (httpx.ConnectError("refused"), "network"),
        (httpx.RemoteProtocolError("peer closed connection"), "network"),
    ],
)
async def test_network_failures_are_retried_then_source_unavailable(
    error: Exception, label: str
) -> None:
    """Timeouts and network errors are retried, reported by kind, and end as SourceUnavailable."""
    clock = FakeClock()
    observer = RecordingObserver()
    recorder = Recorder(clock, [error] * 4)
    http = make_http(clock, recorder, observer=observer)
    with pytest.raises(SourceUnavailable) as caught:
        await clock.drive(http.request("GET", URL, endpoint="/printers/"))
    assert caught.value.__cause__ is error
    assert [code for _, _, code in observer.calls] == [label] * 4


@pytest.mark.parametrize("status", [400, 404, 405, 409, 422])
async def test_other_4xx_is_bad_response_without_retry(status: int) -> None:
    """A 4xx other than 401/429 is a BadResponse after exactly one request."""
    clock = FakeClock()
    recorder = Recorder(clock, [httpx.Response(status, json={"detail": "x"})])
    http = make_http(clock, recorder)
    with pytest.raises(BadResponse):
        await http.request("GET", URL, endpoint="/printers/")
    assert len(recorder.requests) == 1


async def test_403_with_a_hint_is_auth_failed() -> None:
    """With a forbidden hint (Carbon), a 403 is AuthFailed saying the key holder must be ADMIN."""
    clock = FakeClock()
    http = make_http(
        clock, Recorder(clock, [httpx.Response(403)]), forbidden_hint="must be an ADMIN"
    )
    with pytest.raises(AuthFailed, match="ADMIN"):
        await http.request("GET", URL, endpoint="/printers")


async def test_non_json_body_is_bad_response() -> None:
    """A 200 whose body is not JSON (an HTML error page, truncated JSON) is a BadResponse."""
    clock = FakeClock()
    recorder = Recorder(clock, [httpx.Response(200, text='[{"serial": "A"')])
    http = make_http(clock, recorder)
    with pytest.raises(BadResponse, match="without JSON"):
        await http.request("GET", URL, endpoint="/printers/")


async def test_accepted_status_is_returned_not_raised() -> None:
    """A status the caller accepts (Carbon's 404 empty fleet) comes back as a result."""
    clock = FakeClock()
    http = make_http(clock, Recorder(clock, [httpx.Response(404, text="no printer found")]))
    result = await http.request("GET", URL, endpoint="/printers", accept=(404,))
    assert (result.status, result.body) == (404, None)


# --- auth seam ----------------------------------------------------------------------------------


class CountingAuth:
    def __init__(self) -> None:
        self.issued = 0
        self.current: str | None = None

    async def token(self) -> str:
        if self.current is None:
            self.issued += 1
            self.current = f"tok-{self.issued}"
        return self.current

    def invalidate(self, token: str) -> None:
        if token == self.current:
            self.current = None


async def test_401_renews_once_and_retries() -> None:
    """A 401 invalidates the token, a new one is fetched, and the request is retried with it."""
    clock = FakeClock()
    recorder = Recorder(clock, [httpx.Response(401), httpx.Response(200, json=[])])
    http = make_http(clock, recorder)
    auth = CountingAuth()
    await http.request("GET", URL, endpoint="/printers/", auth=auth)
    assert [r.headers["Authorization"] for r in recorder.requests] == [
        "Bearer tok-1",
        "Bearer tok-2",
    ]


async def test_second_401_after_renewal_is_auth_failed() -> None:
    """A 401 to the freshly renewed token is AuthFailed after exactly one renewal."""
    clock = FakeClock()
    recorder = Recorder(clock, [httpx.Response(401), httpx.Response(401)])
    http = make_http(clock, recorder)
    auth = CountingAuth()
    with pytest.raises(AuthFailed):
        await http.request("GET", URL, endpoint="/printers/", auth=auth)
    assert auth.issued == 2
    assert len(recorder.requests) == 2


# --- observation, clock, logging ----------------------------------------------------------------


async def test_every_attempt_is_reported_with_its_endpoint_label() -> None:
    """The observer hears each attempt with the bounded label and the status code."""
    clock = FakeClock()
    observer = RecordingObserver()
    recorder = Recorder(clock, [httpx.Response(500), httpx.Response(200, json=[])])
    http = make_http(clock, recorder, observer=observer)
    await clock.drive(
        http.request("GET", URL + "?printer=SECRETLESS", endpoint="/prints/"),
    )
    assert observer.calls == [("lab", "/prints/", "500"), ("lab", "/prints/", "200")]


async def test_server_clock_is_estimated_from_the_date_header() -> None:
    """server_now() follows the vendor's Date header while within vendor_clock_skew of ours."""
    clock = FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
    vendor_time = datetime(2025, 6, 18, 14, 30, tzinfo=UTC)
    headers = {"Date": format_datetime(vendor_time, usegmt=True)}
    answers = [httpx.Response(200, json=[], headers=headers)]
    http = make_http(clock, Recorder(clock, answers), vendor_clock_skew=FAR)
    assert http.server_now() == clock.now()
    await http.request("GET", URL, endpoint="/printers/")
    await clock.advance(10)
    assert http.server_now() == vendor_time + timedelta(seconds=10)


def test_http_loggers_are_kept_at_warning() -> None:
    """Building the helper raises httpx's and httpcore's loggers to WARNING (they log URLs)."""
    logging.getLogger("httpx").setLevel(logging.DEBUG)
    clock = FakeClock()
    make_http(clock, Recorder(clock))
    assert logging.getLogger("httpx").getEffectiveLevel() >= logging.WARNING
    assert logging.getLogger("httpcore").getEffectiveLevel() >= logging.WARNING


async def test_closed_helper_refuses_requests() -> None:
    """After close() a request is a programming error, not a silent send."""
    clock = FakeClock()
    http = make_http(clock, Recorder(clock))
    http.close()
    with pytest.raises(RuntimeError, match="closed"):
        await http.request("GET", URL, endpoint="/printers/")


# --- small helpers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "link", "expected"),
    [
        (
            "https://api.x/developer/v1/events/?per_page=100",
            "https://api.x/developer/v1/events/?page=2&per_page=100&date__gt=Z",
            "https://api.x/developer/v1/events/?page=2&per_page=100&date__gt=Z",
        ),
        (
            "https://api.x/developer/v1/events/",
            "?page=3",
            "https://api.x/developer/v1/events/?page=3",
        ),
        (
            "https://api.x/developer/v1/events/",
            "http://internal:8000/developer/v1/events/?page=2",
            "https://api.x/developer/v1/events/?page=2",
        ),
    ],
    ids=["same-origin", "relative", "other-origin"],
)
def test_next_links_are_followed_as_given_on_our_origin(
    current: str, link: str, expected: str
) -> None:
    """A next link keeps its path and query; another origin is never sent our credentials."""
    assert follow_link(current, link, "https://api.x") == expected


@pytest.mark.parametrize(
    ("keys", "max_pages"),
    [(["a", "b", "a"], 1000), ([str(i) for i in range(6)], 5)],
    ids=["repeated", "too-many"],
)
def test_page_guard_stops_loops(keys: list[str], max_pages: int) -> None:
    """A repeated page key or more than max_pages pages is a BadResponse."""
    guard = PageGuard("lab", "/events/", max_pages=max_pages)
    for key in keys[:-1]:
        guard.next_page(key)
    with pytest.raises(BadResponse, match="loop guard"):
        guard.next_page(keys[-1])


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (datetime(2025, 6, 18, 14, 30, tzinfo=UTC), "2025-06-18T14:30:00Z"),
        (datetime(2025, 6, 18, 14, 30, 0, 250000, tzinfo=UTC), "2025-06-18T14:30:00.250000Z"),
        (
            datetime(2025, 6, 18, 16, 30, tzinfo=timezone(timedelta(hours=2))),
            "2025-06-18T14:30:00Z",
        ),
    ],
)
def test_query_times_are_utc_with_z(value: datetime, text: str) -> None:
    """Times in query strings are UTC with a Z suffix."""
    assert iso_z(value) == text
