"""How one source talks to its vendor: sending within budget, retrying, translating failures.

Everything a source sends goes through :meth:`VendorHttp.request`, split the way httpx splits
``send``: :meth:`~VendorHttp.request` (the retry loop) → :meth:`~VendorHttp._send_authenticated`
(budget, bearer token, one renewal on 401) → :meth:`~VendorHttp._send_once` (one HTTP
exchange, its metric and the ``Date`` offset) → :meth:`~VendorHttp._classify` (status → result
or error). Together they

1. wait (a bounded time) for the source's :class:`~printfleet.sources.http.budget.RequestBudget`
   and the :class:`~printfleet.sources.http.budget.HostLimit` it shares with the other sources
   of its vendor host, and refuse to send at all while a 429 told the source to pause;
2. add the bearer token of an :class:`Authenticator` and, on a 401, renew it once and retry;
3. translate failures into :mod:`printfleet.errors` (``raise ... from err``):

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

4. report every attempt to the :class:`~printfleet.observe.Observer` with a bounded endpoint label;
5. estimate the vendor's clock from the ``Date`` header (:meth:`VendorHttp.server_now`), so that
   "last pinged 5 minutes ago" is judged on the vendor's clock, not ours — but only while that
   clock is within ``vendor_clock_skew`` of ours (beyond, ``source.clock_untrusted`` is logged
   once and our clock is used, so no header can make a fleet look offline);
6. cap what one exchange may cost: ``timeout`` is the total deadline of connect, send and
   every read of the body (httpx's own timeout is per read, so a vendor trickling a byte at a
   time could hold it open for ever); the body is streamed and abandoned past
   ``response_max_size`` (a :class:`~printfleet.errors.BadResponse`, never an unbounded
   buffer); JSON nesting is capped at ``json_max_depth`` (a record nested deeper is skipped,
   a deeper token response or page is a ``BadResponse``; never a ``RecursionError``).

Nothing here formats a secret: URLs never carry tokens, and error messages name the method and
the endpoint label only.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Protocol, Required, TypedDict, Unpack

import httpx
import structlog

from printfleet.clock import Clock
from printfleet.core.backoff import backoff, parse_retry_after
from printfleet.errors import AuthFailed, BadResponse, RateLimited, SourceUnavailable
from printfleet.lifecycle import Lifecycle
from printfleet.observe import NULL_OBSERVER, Observer
from printfleet.sources.http.budget import RequestBudget
from printfleet.sources.mapping import DEFAULT_MAX_DEPTH, JsonTooDeep, RecordStream, loads

#: The defaults of ``[limits]``: see config.schema.LimitsConfig for why these values.
DEFAULT_RESPONSE_MAX_SIZE = 256 * 1024**2
DEFAULT_CLOCK_SKEW = timedelta(days=1)

Params = Sequence[tuple[str, str]]
ParamsArg = Params | Callable[[], Params] | None


def quiet_http_loggers() -> None:
    """Keep httpx's and httpcore's loggers at WARNING: they log full URLs at INFO/DEBUG."""
    for name in ("httpx", "httpcore"):
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.WARNING:
            logger.setLevel(logging.WARNING)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard one request tries before giving up.

    5xx, timeouts and network errors are retried up to ``attempts`` tries in total and only
    while the next try would start within ``total_s`` of the first; delays are capped
    exponential backoff with full jitter (``uniform(0, min(cap_s, base_s * 2**n))``), unless the
    server sent ``Retry-After``. A 429 is never retried here: the source pauses for
    ``Retry-After`` (fallback: ``rate_limit_base_s`` doubling to ``rate_limit_cap_s``, jittered
    upwards). Both delays are :func:`printfleet.core.backoff.backoff`.
    """

    attempts: int = 4
    total_s: float = 60.0
    base_s: float = 0.5
    cap_s: float = 10.0
    rate_limit_base_s: float = 1.0
    rate_limit_cap_s: float = 60.0
    max_retry_after_s: float = 3600.0  # a larger Retry-After is clamped to this
    max_budget_wait_s: float = 30.0  # wait this long for our own budget, then RateLimited


class Authenticator(Protocol):
    """Supplies bearer tokens for one source and renews them when the vendor rejects one."""

    async def token(self) -> str:
        """A token believed valid now (obtaining or renewing it first if needed)."""
        ...

    def invalidate(self, token: str) -> None:
        """A data endpoint answered 401 to ``token``: the next :meth:`token` gets a new one."""
        ...


class HttpOptions(TypedDict, total=False):
    """The keyword arguments that build a :class:`VendorHttp`, declared once.

    Every HTTP source takes them (``**options``) and hands them on unchanged, so adding one
    touches this class and :class:`VendorHttp` only.
    """

    client: Required[httpx.AsyncClient]
    """The shared HTTP client (not closed here: its owner closes it)."""
    clock: Required[Clock]
    """Time for budget, backoff, pauses and the server clock estimate."""
    observer: Observer
    """Told about every request attempt (default: nobody)."""
    timeout: float
    """Seconds for one request in total: connect, send and every read of the body (default 30)."""
    response_max_size: int
    """Bytes of one response body read at most; past it the request is a BadResponse."""
    json_max_depth: int
    """Deepest JSON nesting accepted (a deeper record is skipped, a deeper document refused)."""
    vendor_clock_skew: timedelta
    """A ``Date`` header further than this from our clock is not trusted (default 1 day)."""
    retry: RetryPolicy | None
    """The :class:`RetryPolicy` (default: ``RetryPolicy()``)."""
    rng: random.Random | None
    """Randomness for jitter (inject a seeded one in tests)."""
    log: Any
    """The bound structlog logger (default: one bound to ``source``)."""


@dataclass(frozen=True, slots=True)
class HttpResult:
    """A response that :meth:`VendorHttp.request` let through: its status and parsed JSON body
    (``None`` for an accepted non-2xx status without a JSON body)."""

    status: int
    body: Any
    url: str


@dataclass(frozen=True, slots=True)
class _Reply:
    """One response read whole (within the size cap): what classification needs of it."""

    status_code: int
    headers: httpx.Headers
    url: httpx.URL
    content: bytes | bytearray


@dataclass(frozen=True, slots=True)
class _Transient:
    """A failure worth another try: a 5xx (maybe with ``Retry-After``), a timeout, a network
    error (``error``: the httpx exception, chained to the final ``SourceUnavailable``)."""

    reason: str
    retry_after: float | None = None
    error: Exception | None = None


@dataclass(slots=True)
class _Renewal:
    """Whether one :meth:`VendorHttp.request` already renewed its token (once, retries included)."""

    done: bool = False


class VendorHttp:
    """Sends one source's requests within its budget and translates failures into our errors.

    Args:
        source: the source name (used in errors, logs and metrics).
        budget: the source's :class:`~printfleet.sources.http.budget.RequestBudget`.
        forbidden_hint: when set, a 403 is an :class:`AuthFailed` carrying this hint
            (Carbon: the key holder must be ADMIN); otherwise a 403 is a :class:`BadResponse`.
        options: client, clock, observer, timeout, retry, rng and log (see :class:`HttpOptions`).
    """

    def __init__(
        self,
        *,
        source: str,
        budget: RequestBudget,
        forbidden_hint: str | None = None,
        **options: Unpack[HttpOptions],
    ) -> None:
        quiet_http_loggers()
        self.source = source
        self._client = options["client"]
        self._clock = options["clock"]
        self._budget = budget
        self._observer = options.get("observer", NULL_OBSERVER)
        self._timeout = options.get("timeout", 30.0)
        self._max_size = options.get("response_max_size", DEFAULT_RESPONSE_MAX_SIZE)
        self._max_depth = options.get("json_max_depth", DEFAULT_MAX_DEPTH)
        self._max_skew = options.get("vendor_clock_skew", DEFAULT_CLOCK_SKEW)
        self._clock_untrusted = False
        self._retry = options.get("retry") or RetryPolicy()
        self._rng = options.get("rng") or random.Random()  # jitter, not cryptography
        self._forbidden_hint = forbidden_hint
        log = options.get("log")
        self._log = log if log is not None else structlog.get_logger().bind(source=source)
        self._offset: timedelta | None = None
        self._consecutive_429 = 0
        self._lifecycle = Lifecycle(f"source {source!r}")

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
        self._lifecycle.close()

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
        records: bool = True,
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
                object keeping its text) instead of a list; the record lists of a page object
                keep each object's text too (:class:`~printfleet.sources.mapping.Record`).
            records: the body holds records (a bare array or lists in a page object), so a
                record nested too deep is skipped; ``False`` (a token response) refuses it.

        Raises:
            AuthFailed, RateLimited, SourceUnavailable, BadResponse (see the module docstring).
        """
        self._lifecycle.check_not_closed()
        started = self._clock.monotonic()
        failures = 0
        renewal = _Renewal()
        while True:
            answer = await self._send_authenticated(
                method,
                url,
                endpoint=endpoint,
                params=params,
                data=data,
                auth=auth,
                accept=accept,
                renewal=renewal,
            )
            outcome = (
                answer
                if isinstance(answer, _Transient)
                else self._classify(
                    answer, method, endpoint, accept=accept, stream=stream_array, records=records
                )
            )
            if isinstance(outcome, HttpResult):
                return outcome
            failures += 1
            delay = outcome.retry_after
            if delay is None:
                delay = backoff(
                    failures, base=self._retry.base_s, cap=self._retry.cap_s, rng=self._rng
                )
            elapsed = self._clock.monotonic() - started
            if failures >= self._retry.attempts or elapsed + delay > self._retry.total_s:
                message = f"{method} {endpoint}: {outcome.reason} after {failures} attempt(s)"
                if outcome.error is not None:
                    message = f"{message} ({type(outcome.error).__name__})"
                raise SourceUnavailable(
                    self.source, message, outcome.retry_after
                ) from outcome.error
            self._log.debug(
                "source.request_retry",
                endpoint=endpoint,
                reason=outcome.reason,
                attempt=failures,
                delay=delay,
            )
            await self._clock.sleep(delay)

    async def _send_authenticated(
        self,
        method: str,
        url: str,
        *,
        endpoint: str,
        params: ParamsArg,
        data: Mapping[str, str] | None,
        auth: Authenticator | None,
        accept: Collection[int],
        renewal: _Renewal,
    ) -> _Reply | _Transient:
        """One exchange within the budget, with a bearer token; a 401 renews it once.

        The token comes first and the budget right before the exchange: a token request
        waits for the budget (and the host limit) like any other, so booking a send time and
        then spending it on a token request first would send two requests in one place. A
        paused source still sends no token request: that request's own budget check refuses.
        """
        while True:
            self._check_not_paused(endpoint)
            token = await auth.token() if auth is not None else None
            await self._acquire(endpoint)
            sent = self._clock.monotonic()
            answer = await self._send_once(
                method, url, endpoint=endpoint, params=params, data=data, token=token
            )
            self._log_exchange(method, endpoint, answer, self._clock.monotonic() - sent)
            if (
                isinstance(answer, _Transient)
                or answer.status_code != 401
                or answer.status_code in accept
                or auth is None
                or token is None
            ):
                return answer
            if renewal.done:
                raise AuthFailed(
                    self.source,
                    f"{method} {endpoint} rejected a freshly issued token (HTTP 401)",
                )
            renewal.done = True
            auth.invalidate(token)
            self._log.info("source.auth_rejected", endpoint=endpoint)

    async def _send_once(
        self,
        method: str,
        url: str,
        *,
        endpoint: str,
        params: ParamsArg,
        data: Mapping[str, str] | None,
        token: str | None,
    ) -> _Reply | _Transient:
        """One HTTP exchange: its metric, the ``Date`` offset; transport errors are transient.

        The whole exchange, body included, runs under one deadline of ``timeout`` seconds.
        """
        headers = {"Accept": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        pairs = params() if callable(params) else params
        query = httpx.QueryParams(list(pairs)) if pairs else None
        try:
            request = self._client.build_request(
                method, url, params=query, data=data, headers=headers, timeout=self._timeout
            )
        except UnicodeEncodeError:
            # httpx encodes header values as ASCII; the token is the only value from outside.
            raise BadResponse(
                self.source,
                f"{method} {endpoint}: the access token holds characters an HTTP header "
                "cannot carry (non-ASCII)",
            ) from None
        sent = self._clock.monotonic()
        try:
            async with asyncio.timeout(self._timeout) as deadline:
                response = await self._client.send(request, stream=True)
                try:
                    content = await self._read_body(response, method, endpoint)
                finally:
                    await response.aclose()
        except BadResponse:  # the body was too large: counted under the status it came with
            self._observe(endpoint, str(response.status_code), sent)
            raise
        except TimeoutError as err:
            if not deadline.expired():
                raise
            self._observe(endpoint, "timeout", sent)
            return _Transient("timeout", error=err)
        except httpx.TimeoutException as err:
            self._observe(endpoint, "timeout", sent)
            return _Transient("timeout", error=err)
        except httpx.TransportError as err:  # connect, read, protocol (e.g. truncated body)
            self._observe(endpoint, "network", sent)
            return _Transient("network", error=err)
        self._observe(endpoint, str(response.status_code), sent)
        self._note_date(response)
        return _Reply(response.status_code, response.headers, response.url, content)

    async def _read_body(self, response: httpx.Response, method: str, endpoint: str) -> bytearray:
        """The (decoded) body, read in chunks and abandoned once past ``response_max_size``."""
        limit = self._max_size
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise self._too_large(response, method, endpoint)
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > limit:
                raise self._too_large(response, method, endpoint)
        return body

    def _too_large(self, response: httpx.Response, method: str, endpoint: str) -> BadResponse:
        return BadResponse(
            self.source,
            f"{method} {endpoint} answered HTTP {response.status_code} with a body larger than "
            f"{self._max_size} bytes ([limits] response_max_size)",
        )

    def _classify(
        self,
        response: _Reply,
        method: str,
        endpoint: str,
        *,
        accept: Collection[int],
        stream: bool,
        records: bool = True,
    ) -> HttpResult | _Transient:
        """The result of a response, or the error it means (a 5xx is worth another try)."""
        status = response.status_code
        if 200 <= status < 300 or status in accept:
            if 200 <= status < 300:
                self._consecutive_429 = 0
            body = self._json(
                response, method, endpoint, required=status < 300, stream=stream, records=records
            )
            return HttpResult(status, body, str(response.url))
        if status == 401:
            raise AuthFailed(self.source, f"{method} {endpoint} answered HTTP 401")
        if status == 429:
            raise self._rate_limited(response, method, endpoint)
        if status == 403 and self._forbidden_hint:
            raise AuthFailed(
                self.source,
                f"{method} {endpoint} answered HTTP 403: {self._forbidden_hint}",
            )
        if status < 500:
            raise BadResponse(self.source, f"{method} {endpoint} answered HTTP {status}")
        return _Transient(f"HTTP {status}", self._retry_after(response))

    def _check_not_paused(self, endpoint: str) -> None:
        paused = self._budget.pause_remaining()
        if paused > 0:
            raise RateLimited(self.source, f"paused after HTTP 429; not sending {endpoint}", paused)

    async def _acquire(self, endpoint: str) -> None:
        """Wait for the budget and the host limit (bounded), or raise RateLimited; never send
        during a 429 pause.

        The source's own budget is waited for first, then a send time is booked with the
        host limit (first come, first served among all sources of the host). The budget is
        spent only when the request really goes, and checked again then: a place booked and
        not used (another request of this source came first, a 429 braked the host, or the
        event loop woke us so late that sending now would burst) is given up and booked
        again, which costs one place, never an extra request.
        """
        waited = 0.0
        while True:
            self._check_not_paused(endpoint)
            delay = self._budget.wait()
            if delay > 0:
                if waited + delay > self._retry.max_budget_wait_s:
                    raise RateLimited(self.source, "request budget exhausted", delay)
                waited += delay
                await self._clock.sleep(delay)
                continue
            host = self._budget.host
            if host is not None:
                slot = host.reserve(self._retry.max_budget_wait_s - waited)
                if slot is None:
                    raise RateLimited(
                        self.source,
                        f"the shared request limit of {host.host} is busy; not sending {endpoint}",
                        host.window_s,
                    )
                if slot > 0:
                    waited += slot
                    await self._clock.sleep(slot)
                    self._observer.host_limit_wait(host.vendor, host.host, slot)
                    if self._budget.wait() > 0:
                        continue
                    self._check_not_paused(endpoint)
                if not host.claim():
                    continue
            self._budget.spend()
            return

    def _log_exchange(self, method: str, endpoint: str, answer: object, seconds: float) -> None:
        """``source.request`` at debug: method, the endpoint's path (never the query, which
        may carry cursors or keys), the status or transport error, duration, budget left."""
        # ``answer`` is the response or a _Transient (timeout, network error, 5xx); typed as
        # object so this line does not care which response type the exchange returns.
        status = (
            answer.reason
            if isinstance(answer, _Transient)
            else getattr(answer, "status_code", None)
        )
        self._log.debug(
            "source.request",
            method=method,
            endpoint=endpoint,
            status=status,
            duration_s=round(seconds, 3),
            budget_left=int(self._budget.status().remaining),
        )

    def _observe(self, endpoint: str, code: str, sent: float) -> None:
        self._observer.api_request(self.source, endpoint, code, self._clock.monotonic() - sent)

    def _note_date(self, response: httpx.Response) -> None:
        header = response.headers.get("date")
        if not header:
            return
        try:
            server = parsedate_to_datetime(header)
        except (TypeError, ValueError, IndexError, OverflowError):
            return
        if server.tzinfo is None:
            server = server.replace(tzinfo=UTC)
        # The Date header has whole seconds (truncated), so the estimate lags by < 1 s: the
        # safe direction both for "last pinged" judgements and for JWT iat.
        offset = server - self._clock.now()
        if abs(offset) > self._max_skew:
            # A clock this far off is a broken or hostile header, not a skewed server: using
            # it would judge every printer's heartbeat stale (printer.offline for the fleet).
            self._offset = None
            if not self._clock_untrusted:
                self._clock_untrusted = True
                self._log.warning(
                    "source.clock_untrusted",
                    offset_s=round(offset.total_seconds()),
                    limit_s=round(self._max_skew.total_seconds()),
                )
            return
        self._clock_untrusted = False
        self._offset = offset

    def _json(
        self,
        response: _Reply,
        method: str,
        endpoint: str,
        *,
        required: bool,
        stream: bool = False,
        records: bool = True,
    ) -> Any:
        depth = self._max_depth
        try:
            text = response.content.decode("utf-8-sig")  # JSON is UTF-8 (RFC 8259)
            if stream and RecordStream.is_array(text):
                return RecordStream(text, max_depth=depth)
            return loads(text, max_depth=depth, records=records, keep_text=stream)
        except JsonTooDeep as err:
            raise BadResponse(
                self.source,
                f"{method} {endpoint} answered JSON nested deeper than {depth} levels "
                "([limits] json_max_depth)",
            ) from err
        except ValueError as err:  # JSONDecodeError and UnicodeDecodeError
            if not required:
                return None
            raise BadResponse(
                self.source,
                f"{method} {endpoint} answered HTTP {response.status_code} without JSON",
            ) from err

    def _retry_after(self, response: _Reply) -> float | None:
        """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP-date), clamped."""
        header = response.headers.get("retry-after")
        if not header:
            return None
        return parse_retry_after(header, self.server_now(), cap=self._retry.max_retry_after_s)

    def _rate_limited(self, response: _Reply, method: str, endpoint: str) -> RateLimited:
        self._consecutive_429 += 1
        retry_after = self._retry_after(response)
        told = retry_after is not None
        if retry_after is None:
            retry_after = backoff(
                self._consecutive_429,
                base=self._retry.rate_limit_base_s,
                cap=self._retry.rate_limit_cap_s,
                rng=self._rng,
                jitter="up",
            )
        self._budget.pause(retry_after)
        host = self._budget.host
        if host is not None:
            # A 429 does not say which limit it was: this account's (1500/h), which only this
            # source must respect for Retry-After, or the host's per-IP one, which every
            # source of the host would run into next. So every source holds back for one
            # window of the host limit (at most Retry-After): enough for a per-IP window to
            # empty, too short for one account's long pause to stall the others.
            host.brake(min(retry_after, host.window_s))
        self._log.info(
            "source.rate_limited",
            endpoint=endpoint,
            retry_after=round(retry_after, 3),
            retry_after_from_server=told,
        )
        return RateLimited(
            self.source, f"{method} {endpoint} answered HTTP 429", retry_after=retry_after
        )
