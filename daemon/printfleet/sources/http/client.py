"""HTTP machinery shared by the vendor sources: request budget, retries, error translation.

Everything a source sends goes through :meth:`VendorHttp.request`, which

1. waits (a bounded time) for the source's :class:`RequestBudget`, and refuses to send at all
   while a 429 told the source to pause;
2. adds the bearer token of an :class:`Authenticator` and, on a 401, renews it once and retries;
3. translates failures into :mod:`printfleet.errors` (``raise ... from err``):

   ========================  ==============================================================
   answer                    raised
   ========================  ==============================================================
   2xx, not JSON             :class:`~printfleet.errors.BadResponse`
   401 (after one renewal)   :class:`~printfleet.errors.AuthFailed`
   403 with a hint set       :class:`~printfleet.errors.AuthFailed` (Carbon: key holder lost ADMIN)
   429                       :class:`~printfleet.errors.RateLimited`; the whole source pauses
   5xx, timeout, network     retried with capped exponential backoff and full jitter, then
                             :class:`~printfleet.errors.SourceUnavailable`
   other 4xx                 :class:`~printfleet.errors.BadResponse`
   ========================  ==============================================================

4. reports every attempt to the :class:`~printfleet.observe.Observer` with a bounded endpoint label;
5. estimates the vendor's clock from the ``Date`` header (:meth:`VendorHttp.server_now`), so that
   "last pinged 5 minutes ago" is judged on the vendor's clock, not ours.

Nothing here formats a secret: URLs never carry tokens, and error messages name the method and
the endpoint label only.
"""

from __future__ import annotations

import json
import logging
import random
from collections import deque
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, Protocol
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx
import structlog

from printfleet.clock import Clock
from printfleet.core.model import SkippedRecord, Vendor
from printfleet.errors import AuthFailed, BadResponse, RateLimited, SourceUnavailable
from printfleet.observe import NULL_OBSERVER, Observer
from printfleet.sources.base import BudgetStatus
from printfleet.sources.mapping import RecordStream

Params = Sequence[tuple[str, str]]
ParamsArg = Params | Callable[[], Params] | None

_EPSILON = 1e-6


def quiet_http_loggers() -> None:
    """Keep httpx's and httpcore's loggers at WARNING: they log full URLs at INFO/DEBUG."""
    for name in ("httpx", "httpcore"):
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.WARNING:
            logger.setLevel(logging.WARNING)


def iso_z(value: datetime) -> str:
    """``value`` in UTC, ISO 8601 with ``Z`` (fractions only when present), for query strings."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    text = value.astimezone(UTC).isoformat()
    return text.removesuffix("+00:00") + "Z"


# --------------------------------------------------------------------------------------------
# Request budget


class WindowLimit:
    """At most ``limit`` requests in any ``window_s`` seconds.

    A token bucket whose tokens come back exactly ``window_s`` after they were spent (a sliding
    log). Unlike a refilling bucket that starts full, it can never let ``2 * limit`` requests
    through in one window, whether the vendor counts in fixed or in sliding windows.
    """

    __slots__ = ("_spent", "limit", "window_s")

    def __init__(self, limit: int, window_s: float) -> None:
        if limit < 1 or window_s <= 0:
            raise ValueError("a window limit needs limit >= 1 and window_s > 0")
        self.limit = limit
        self.window_s = window_s
        self._spent: deque[float] = deque()

    @classmethod
    def per_second(cls, rate: float) -> WindowLimit:
        """A cap of ``rate`` requests per second (fractional rates become a longer window)."""
        if rate <= 0:
            raise ValueError("rate must be positive")
        limit = max(1, int(rate))
        return cls(limit, limit / rate)

    def _expire(self, now: float) -> None:
        horizon = now - self.window_s + _EPSILON
        while self._spent and self._spent[0] <= horizon:
            self._spent.popleft()

    def remaining(self, now: float) -> int:
        self._expire(now)
        return self.limit - len(self._spent)

    def wait(self, now: float) -> float:
        """Seconds until one more request fits (0 when it fits now)."""
        self._expire(now)
        if len(self._spent) < self.limit:
            return 0.0
        return max(0.0, self._spent[0] + self.window_s - now)

    def spend(self, now: float) -> None:
        self._spent.append(now)


class RequestBudget:
    """The request budget of one source: one or more :class:`WindowLimit` plus a 429 pause.

    The first limit is the *primary* one reported by :meth:`status` (Formlabs: the hourly
    budget; Carbon: the 10-second window). Times are the injected clock's monotonic seconds.
    """

    def __init__(self, clock: Clock, limits: Sequence[WindowLimit]) -> None:
        if not limits:
            raise ValueError("a request budget needs at least one limit")
        self._clock = clock
        self._limits = tuple(limits)
        self._paused_until: float | None = None

    @classmethod
    def formlabs(
        cls, clock: Clock, *, per_hour: int = 1350, per_second: float = 10.0
    ) -> RequestBudget:
        """Formlabs: ``per_hour`` (default 90% of the documented 1500/h) and a per-second cap."""
        return cls(clock, [WindowLimit(per_hour, 3600.0), WindowLimit.per_second(per_second)])

    @classmethod
    def carbon(cls, clock: Clock, *, per_10s: int = 90) -> RequestBudget:
        """Carbon: ``per_10s`` requests per 10 s (default 90: 90% of the lower documented cap)."""
        return cls(clock, [WindowLimit(per_10s, 10.0)])

    def pause_remaining(self) -> float:
        """Seconds left of a 429 pause (0 when not paused)."""
        if self._paused_until is None:
            return 0.0
        left = self._paused_until - self._clock.monotonic()
        if left <= 0:
            self._paused_until = None
            return 0.0
        return left

    def pause(self, seconds: float) -> None:
        """Send nothing for ``seconds`` (a 429 said so); never shortens a longer pause."""
        until = self._clock.monotonic() + max(0.0, seconds)
        if self._paused_until is None or until > self._paused_until:
            self._paused_until = until

    def wait(self) -> float:
        """Seconds until the next request fits every limit (ignoring a pause)."""
        now = self._clock.monotonic()
        return max(limit.wait(now) for limit in self._limits)

    def spend(self) -> None:
        now = self._clock.monotonic()
        for limit in self._limits:
            limit.spend(now)

    def status(self) -> BudgetStatus:
        primary = self._limits[0]
        now = self._clock.monotonic()
        self.pause_remaining()
        return BudgetStatus(
            remaining=float(primary.remaining(now)),
            capacity=float(primary.limit),
            window_s=primary.window_s,
            paused_until=self._paused_until,
        )


# --------------------------------------------------------------------------------------------
# Retry policy


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard one request tries before giving up.

    5xx, timeouts and network errors are retried up to ``attempts`` tries in total and only
    while the next try would start within ``total_s`` of the first; delays are capped
    exponential backoff with full jitter (``uniform(0, min(cap_s, base_s * 2**n))``), unless the
    server sent ``Retry-After``. A 429 is never retried here: the source pauses for
    ``Retry-After`` (fallback: ``rate_limit_base_s`` doubling to ``rate_limit_cap_s``, jittered).
    """

    attempts: int = 4
    total_s: float = 60.0
    base_s: float = 0.5
    cap_s: float = 10.0
    rate_limit_base_s: float = 1.0
    rate_limit_cap_s: float = 60.0
    max_retry_after_s: float = 3600.0  # a larger Retry-After is clamped to this
    max_budget_wait_s: float = 30.0  # wait this long for our own budget, then RateLimited

    def backoff(self, failures: int, rng: random.Random) -> float:
        """Full-jitter delay before try ``failures + 1``."""
        ceiling = min(self.cap_s, self.base_s * 2.0 ** min(30, max(0, failures - 1)))
        return rng.uniform(0.0, ceiling)

    def rate_limit_pause(self, consecutive: int, rng: random.Random) -> float:
        """Pause after the ``consecutive``-th 429 in a row that carried no ``Retry-After``."""
        ceiling = min(
            self.rate_limit_cap_s, self.rate_limit_base_s * 2.0 ** min(30, max(0, consecutive - 1))
        )
        return min(self.rate_limit_cap_s, ceiling * rng.uniform(1.0, 1.5))


# --------------------------------------------------------------------------------------------
# Authentication seam


class Authenticator(Protocol):
    """Supplies bearer tokens for one source and renews them when the vendor rejects one."""

    async def token(self) -> str:
        """A token believed valid now (obtaining or renewing it first if needed)."""
        ...

    def invalidate(self, token: str) -> None:
        """A data endpoint answered 401 to ``token``: the next :meth:`token` gets a new one."""
        ...


@dataclass(frozen=True, slots=True)
class HttpResult:
    """A response that :meth:`VendorHttp.request` let through: its status and parsed JSON body
    (``None`` for an accepted non-2xx status without a JSON body)."""

    status: int
    body: Any
    url: str


# --------------------------------------------------------------------------------------------
# The request helper


class VendorHttp:
    """Sends one source's requests within its budget and translates failures into our errors.

    Args:
        source: the source name (used in errors, logs and metrics).
        client: the shared HTTP client (not closed here: its owner closes it).
        clock: time for budget, backoff, pauses and the server clock estimate.
        budget: the source's :class:`RequestBudget`.
        observer: told about every request attempt.
        timeout: seconds for one request (connect, read, write and pool each).
        retry: the :class:`RetryPolicy`.
        rng: randomness for jitter (inject a seeded one in tests).
        forbidden_hint: when set, a 403 is an :class:`AuthFailed` carrying this hint
            (Carbon: the key holder must be ADMIN); otherwise a 403 is a :class:`BadResponse`.
    """

    def __init__(
        self,
        *,
        source: str,
        client: httpx.AsyncClient,
        clock: Clock,
        budget: RequestBudget,
        observer: Observer = NULL_OBSERVER,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        rng: random.Random | None = None,
        forbidden_hint: str | None = None,
        log: Any = None,
    ) -> None:
        quiet_http_loggers()
        self.source = source
        self._client = client
        self._clock = clock
        self._budget = budget
        self._observer = observer
        self._timeout = timeout
        self._retry = retry or RetryPolicy()
        self._rng = rng or random.Random()  # jitter, not cryptography
        self._forbidden_hint = forbidden_hint
        self._log = log if log is not None else structlog.get_logger().bind(source=source)
        self._offset: timedelta | None = None
        self._consecutive_429 = 0
        self._closed = False

    def __repr__(self) -> str:
        return f"VendorHttp(source={self.source!r})"

    @property
    def budget(self) -> RequestBudget:
        return self._budget

    @property
    def clock_offset(self) -> timedelta | None:
        """Vendor clock minus ours, from the latest ``Date`` header (``None`` before any)."""
        return self._offset

    def server_now(self) -> datetime:
        """Our best estimate of the vendor's clock now (our clock when no ``Date`` was seen)."""
        now = self._clock.now()
        return now + self._offset if self._offset is not None else now

    def close(self) -> None:
        """Refuse further requests (the client itself belongs to its owner)."""
        self._closed = True

    async def request(
        self,
        method: str,
        url: str,
        *,
        endpoint: str,
        params: ParamsArg = None,
        data: Mapping[str, str] | None = None,
        auth: Authenticator | None = None,
        accept: Collection[int] = (),
        stream_array: bool = False,
    ) -> HttpResult:
        """Send one request (retrying transient failures) and return its status and JSON body.

        Args:
            endpoint: bounded label for metrics and messages, e.g. ``/printers/`` (never ids).
            params: query parameters, or a callable producing them right before each try (so
                a pagination cursor can be checked for age after any wait).
            data: a form-encoded body.
            auth: adds ``Authorization: Bearer``; a 401 renews once, then :class:`AuthFailed`.
            accept: non-2xx statuses returned to the caller instead of raised.
            stream_array: a JSON array body comes back as a
                :class:`~printfleet.sources.mapping.RecordStream` (decoded while read, each
                object keeping its text) instead of a list.

        Raises:
            AuthFailed, RateLimited, SourceUnavailable, BadResponse (see the module docstring).
        """
        if self._closed:
            raise RuntimeError(f"source {self.source!r} is closed")
        started = self._clock.monotonic()
        failures = 0
        renewed = False
        while True:
            await self._acquire(endpoint)
            headers = {"Accept": "application/json"}
            token: str | None = None
            if auth is not None:
                token = await auth.token()
                headers["Authorization"] = f"Bearer {token}"
            pairs = params() if callable(params) else params
            query = httpx.QueryParams(list(pairs)) if pairs else None
            sent = self._clock.monotonic()
            error: Exception | None = None
            retry_after: float | None = None
            try:
                response = await self._client.request(
                    method, url, params=query, data=data, headers=headers, timeout=self._timeout
                )
            except httpx.TimeoutException as err:
                self._observe(endpoint, "timeout", sent)
                error, reason = err, "timeout"
            except httpx.TransportError as err:  # connect, read, protocol (e.g. truncated body)
                self._observe(endpoint, "network", sent)
                error, reason = err, "network"
            else:
                status = response.status_code
                self._observe(endpoint, str(status), sent)
                self._note_date(response)
                if 200 <= status < 300 or status in accept:
                    if 200 <= status < 300:
                        self._consecutive_429 = 0
                    body = self._json(
                        response, method, endpoint, required=status < 300, stream=stream_array
                    )
                    return HttpResult(status, body, str(response.url))
                if status == 401:
                    if auth is None or token is None:
                        raise AuthFailed(self.source, f"{method} {endpoint} answered HTTP 401")
                    if renewed:
                        raise AuthFailed(
                            self.source,
                            f"{method} {endpoint} rejected a freshly issued token (HTTP 401)",
                        )
                    renewed = True
                    auth.invalidate(token)
                    self._log.info("source.auth_rejected", endpoint=endpoint)
                    continue
                if status == 429:
                    raise self._rate_limited(response, method, endpoint)
                if status == 403 and self._forbidden_hint:
                    raise AuthFailed(
                        self.source,
                        f"{method} {endpoint} answered HTTP 403: {self._forbidden_hint}",
                    )
                if status < 500:
                    raise BadResponse(self.source, f"{method} {endpoint} answered HTTP {status}")
                reason = f"HTTP {status}"
                retry_after = self._retry_after(response)
            failures += 1
            delay = (
                retry_after if retry_after is not None else self._retry.backoff(failures, self._rng)
            )
            elapsed = self._clock.monotonic() - started
            if failures >= self._retry.attempts or elapsed + delay > self._retry.total_s:
                message = f"{method} {endpoint}: {reason} after {failures} attempt(s)"
                if error is not None:
                    message = f"{message} ({type(error).__name__})"
                raise SourceUnavailable(self.source, message, retry_after) from error
            self._log.debug(
                "source.request_retry",
                endpoint=endpoint,
                reason=reason,
                attempt=failures,
                delay=delay,
            )
            await self._clock.sleep(delay)

    async def _acquire(self, endpoint: str) -> None:
        """Wait for the budget (bounded), or raise RateLimited; never send during a 429 pause."""
        waited = 0.0
        while True:
            paused = self._budget.pause_remaining()
            if paused > 0:
                raise RateLimited(
                    self.source, f"paused after HTTP 429; not sending {endpoint}", paused
                )
            delay = self._budget.wait()
            if delay <= 0:
                self._budget.spend()
                return
            if waited + delay > self._retry.max_budget_wait_s:
                raise RateLimited(self.source, "request budget exhausted", delay)
            waited += delay
            await self._clock.sleep(delay)

    def _observe(self, endpoint: str, code: str, sent: float) -> None:
        self._observer.api_request(self.source, endpoint, code, self._clock.monotonic() - sent)

    def _note_date(self, response: httpx.Response) -> None:
        header = response.headers.get("date")
        if not header:
            return
        try:
            server = parsedate_to_datetime(header)
        except (TypeError, ValueError, IndexError):
            return
        if server.tzinfo is None:
            server = server.replace(tzinfo=UTC)
        # The Date header has whole seconds (truncated), so the estimate lags by < 1 s: the
        # safe direction both for "last pinged" judgements and for JWT iat.
        self._offset = server - self._clock.now()

    def _json(
        self,
        response: httpx.Response,
        method: str,
        endpoint: str,
        *,
        required: bool,
        stream: bool = False,
    ) -> Any:
        try:
            if stream:
                text = response.content.decode("utf-8-sig")  # JSON is UTF-8 (RFC 8259)
                return RecordStream(text) if RecordStream.is_array(text) else json.loads(text)
            return response.json()
        except ValueError as err:  # JSONDecodeError and UnicodeDecodeError
            if not required:
                return None
            raise BadResponse(
                self.source,
                f"{method} {endpoint} answered HTTP {response.status_code} without JSON",
            ) from err

    def _retry_after(self, response: httpx.Response) -> float | None:
        """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP-date), clamped."""
        header = response.headers.get("retry-after")
        if not header:
            return None
        header = header.strip()
        seconds: float | None
        try:
            seconds = float(header)
        except ValueError:
            try:
                when = parsedate_to_datetime(header)
            except (TypeError, ValueError, IndexError):
                return None
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            seconds = (when - self.server_now()).total_seconds()
        if seconds != seconds:  # NaN
            return None
        return min(self._retry.max_retry_after_s, max(0.0, seconds))

    def _rate_limited(self, response: httpx.Response, method: str, endpoint: str) -> RateLimited:
        self._consecutive_429 += 1
        retry_after = self._retry_after(response)
        told = retry_after is not None
        if retry_after is None:
            retry_after = self._retry.rate_limit_pause(self._consecutive_429, self._rng)
        self._budget.pause(retry_after)
        self._log.info(
            "source.rate_limited",
            endpoint=endpoint,
            retry_after=round(retry_after, 3),
            retry_after_from_server=told,
        )
        return RateLimited(
            self.source, f"{method} {endpoint} answered HTTP 429", retry_after=retry_after
        )


# --------------------------------------------------------------------------------------------
# Helpers for the sources


class HttpSource:
    """What the vendor sources share: their name, vendor, log, request helper and budget.

    Subclasses set :attr:`VENDOR` and implement the fetches of
    :class:`~printfleet.sources.base.Source`.
    """

    VENDOR: ClassVar[Vendor]

    def __init__(
        self,
        *,
        name: str,
        client_id: str,
        base_url: str,
        client: httpx.AsyncClient,
        clock: Clock,
        budget: RequestBudget,
        observer: Observer,
        timeout: float,
        retry: RetryPolicy | None,
        rng: random.Random | None,
        log: Any,
        forbidden_hint: str | None = None,
    ) -> None:
        self._name = name
        self._client_id = client_id
        self._base = base_url.rstrip("/")
        self._clock = clock
        logger = log if log is not None else structlog.get_logger().bind(source=name)
        self._log = logger.bind(vendor=self.VENDOR.value)
        self._http = VendorHttp(
            source=name,
            client=client,
            clock=clock,
            budget=budget,
            observer=observer,
            timeout=timeout,
            retry=retry,
            rng=rng,
            forbidden_hint=forbidden_hint,
            log=self._log,
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self._name!r}, base_url={self._base!r}, "
            f"client_id={self._client_id!r})"
        )

    @property
    def name(self) -> str:
        return self._name

    @property
    def vendor(self) -> Vendor:
        return self.VENDOR

    def budget(self) -> BudgetStatus:
        return self._http.budget.status()

    async def aclose(self) -> None:
        self._http.close()


class PageGuard:
    """Stops a pagination walk that loops: a repeated page key or too many pages."""

    def __init__(self, source: str, endpoint: str, *, max_pages: int = 1000) -> None:
        self._source = source
        self._endpoint = endpoint
        self._max_pages = max_pages
        self._seen: set[str] = set()
        self.pages = 0

    def forget(self) -> None:
        """Forget the keys seen (a walk restarted); the page count still bounds the walk."""
        self._seen.clear()

    def next_page(self, key: str | None = None) -> None:
        """Record one more page (``key``: its next URL or cursor); raise on a loop."""
        if key is not None:
            if key in self._seen:
                raise BadResponse(
                    self._source, f"{self._endpoint} pagination repeats a page (loop guard)"
                )
            self._seen.add(key)
        self.pages += 1
        if self.pages > self._max_pages:
            raise BadResponse(
                self._source, f"{self._endpoint} has more than {self._max_pages} pages (loop guard)"
            )


def follow_link(current: str, link: str, base_url: str) -> str:
    """The URL of a ``next`` link, as given.

    Relative links resolve against the current page. An absolute link to another origin than
    ``base_url`` (a proxy in front of the vendor that rewrote nothing) keeps its path and query
    but goes to our origin, so credentials are never sent to a host we were not configured for.
    """
    resolved = urljoin(current, link)
    target, base = urlsplit(resolved), urlsplit(base_url)
    if (target.scheme, target.netloc) == (base.scheme, base.netloc):
        return resolved
    return urlunsplit((base.scheme, base.netloc, target.path, target.query, ""))


def dedupe_skipped(skipped: Sequence[SkippedRecord]) -> tuple[SkippedRecord, ...]:
    """``skipped`` without repeats (pages can overlap), order kept."""
    return tuple(dict.fromkeys(skipped))
