"""The Formlabs Dashboard Developer API source (see shared/api/formlabs.md).

Auth is OAuth 2.0 client credentials (§2): one cached token per source, renewed when less
than 10% of its ``expires_in`` is left or once after a 401 from a data endpoint. Lists walk
``next`` links as given (§4). Records become normalized values in
:mod:`printfleet.sources.formlabs_map`; this module only moves bytes.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any, Unpack
from urllib.parse import quote

from pydantic import SecretStr

from printfleet.clock import Clock
from printfleet.config.schema import FORMLABS_BASE_URL
from printfleet.core.feed import FeedRecord
from printfleet.core.model import Print, Printer, Queue, SkippedRecord, Snapshot, Vendor, iso
from printfleet.core.prints import shifted
from printfleet.errors import AuthFailed, BadResponse, RateLimited, SourceUnavailable
from printfleet.logs import register_secret
from printfleet.sources import formlabs_map, formlabs_queues
from printfleet.sources.base import Inventory, PrintLookup, QueueBatch, RunBatch
from printfleet.sources.http.base import HttpSource, PageGuard, dedupe_skipped, follow_link
from printfleet.sources.http.budget import RequestBudget
from printfleet.sources.http.client import HttpOptions, Params, VendorHttp
from printfleet.sources.mapping import RecordStream, records_of

DEFAULT_BASE_URL = FORMLABS_BASE_URL  # the config default; written once, in config.schema
API = "/developer/v1"
PER_PAGE = "100"
#: A lookup asks for prints created from this long before the tracked run was (formlabs.md §7).
LOOKUP_SLACK = timedelta(minutes=1)
#: Renew a token when less than this fraction of its lifetime is left (formlabs.md §2).
RENEW_FRACTION = 0.1
#: After a failed early renewal, keep using the old token and try again this much later.
RENEW_RETRY_S = 60.0
#: Token lifetime assumed when a token response lacks a usable ``expires_in``.
DEFAULT_LIFETIME_S = 3600.0
#: Longest access token accepted (Formlabs' are ~30 characters; JWTs run to a few KB).
MAX_TOKEN_LENGTH = 8192
#: Most feed entries passed on per history read; the watermark then stops before the first
#: one left out, so the rest come with the next read (nothing skipped, the outbox not flooded).
MAX_FEED_RECORDS = 500


class FormlabsToken:
    """OAuth client-credentials tokens for one Formlabs application (an ``Authenticator``).

    Only one token request is ever in flight. The token endpoint answering 400/401 is
    :class:`AuthFailed`; 5xx and timeouts there are :class:`SourceUnavailable` (then a token
    that has not yet expired is kept in use).
    """

    def __init__(
        self,
        http: VendorHttp,
        *,
        token_url: str,
        client_id: str,
        client_secret: SecretStr,
        clock: Clock,
        log: Any,
    ) -> None:
        self._http = http
        self._token_url = token_url
        self._client_id = client_id
        self._secret = client_secret
        self._clock = clock
        self._log = log
        self._lock = asyncio.Lock()
        register_secret(client_secret.get_secret_value(), permanent=True)
        self._token: str | None = None
        self._renew_at = 0.0
        self._expires_at = 0.0
        self._issued = 0

    def __repr__(self) -> str:
        state = "set" if self._token else "unset"
        return f"FormlabsToken(client_id={self._client_id!r}, token={state})"

    async def token(self) -> str:
        if self._token is not None and self._clock.monotonic() < self._renew_at:
            return self._token
        async with self._lock:
            now = self._clock.monotonic()
            if self._token is not None and now < self._renew_at:
                return self._token
            try:
                return await self._obtain()
            except (SourceUnavailable, RateLimited, BadResponse) as err:
                if self._token is not None and now < self._expires_at:
                    # The old token still has time: keep working, try renewing again later.
                    self._renew_at = min(self._expires_at, now + RENEW_RETRY_S)
                    self._log.warning("source.auth_renew_deferred", error=type(err).__name__)
                    return self._token
                raise

    def invalidate(self, token: str) -> None:
        if token == self._token:
            self._token = None
            self._renew_at = self._expires_at = 0.0

    async def _obtain(self) -> str:
        asked = self._clock.monotonic()
        result = await self._http.request(
            "POST",
            self._token_url,
            endpoint="/o/token/",
            data={
                "grant_type": "client_credentials",
                "client_id": self._client_id,
                "client_secret": self._secret.get_secret_value(),
            },
            accept=(400, 401),
            records=False,  # a token response holds no records: too deep is unusable
        )
        if result.status in (400, 401):
            code = _error_code(result.body)
            self._token = None
            raise AuthFailed(
                self._http.source,
                f"the token endpoint rejected the client credentials (HTTP {result.status}"
                + (f", {code}" if code else "")
                + "); check client_id and the client secret",
            )
        body = result.body
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise BadResponse(self._http.source, "the token endpoint answered without access_token")
        if not _usable_token(token):
            # Never quote it: a malformed token may still be a real credential.
            raise BadResponse(
                self._http.source,
                "the token endpoint answered an access_token with non-ASCII, non-printable or "
                f"space characters, or longer than {MAX_TOKEN_LENGTH} characters; it cannot be "
                "sent in an HTTP header",
            )
        lifetime = _lifetime(body.get("expires_in"))
        register_secret(token)  # defence in depth: redacted should it ever reach a log line
        self._token = token
        self._expires_at = asked + lifetime
        self._renew_at = asked + lifetime * (1 - RENEW_FRACTION)
        self._log.info(
            "source.auth_renewed" if self._issued else "source.authenticated",
            expires_in=round(lifetime),
        )
        self._issued += 1
        return token


def _usable_token(token: str) -> bool:
    """Whether ``token`` can be an ``Authorization: Bearer`` value: visible ASCII, bounded.

    RFC 6750's b64token is narrower still; any visible ASCII is accepted so that a vendor
    changing its token alphabet breaks nothing, while what httpx cannot encode is refused here
    (as a BadResponse) rather than as a UnicodeEncodeError deep in the request.
    """
    return 0 < len(token) <= MAX_TOKEN_LENGTH and all("!" <= c <= "~" for c in token)


def _lifetime(expires_in: Any) -> float:
    """Seconds a token lives, from ``expires_in``; the default when absent or absurd."""
    if not isinstance(expires_in, int | float) or isinstance(expires_in, bool):
        return DEFAULT_LIFETIME_S
    try:
        lifetime = float(expires_in)
    except OverflowError:  # an int too large for a float: treat as unusable, not as forever
        return DEFAULT_LIFETIME_S
    if not math.isfinite(lifetime) or lifetime <= 0:
        return DEFAULT_LIFETIME_S
    return lifetime


def _error_code(body: Any) -> str | None:
    """The OAuth ``error`` code of a token-endpoint answer, when it is a plain identifier."""
    code = body.get("error") if isinstance(body, dict) else None
    if isinstance(code, str) and code.replace("_", "").isalnum() and len(code) <= 40:
        return code
    return None


class FormlabsSource(HttpSource):
    """One Formlabs account (implements :class:`~printfleet.sources.base.Source`).

    Args:
        name: the configured source name.
        base_url: e.g. ``https://api.formlabs.com`` (paths ``/developer/v1/...`` are added).
        client_id, client_secret: the application's credentials.
        offline_after: a printer whose ``last_pinged_at`` is older is offline (judged on the
            vendor's clock as estimated from ``Date`` headers).
        budget: defaults to :meth:`RequestBudget.formlabs` (1350/h, 10/s).
        options: the shared HTTP ``client`` (owned by the caller), the ``clock`` (budget,
            token lifetimes, backoff) and the rest of
            :class:`~printfleet.sources.http.client.HttpOptions`.
    """

    VENDOR = Vendor.FORMLABS

    def __init__(
        self,
        *,
        name: str,
        client_id: str,
        client_secret: SecretStr,
        offline_after: timedelta,
        base_url: str = DEFAULT_BASE_URL,
        budget: RequestBudget | None = None,
        **options: Unpack[HttpOptions],
    ) -> None:
        super().__init__(
            name=name,
            client_id=client_id,
            base_url=base_url,
            budget=budget or RequestBudget.formlabs(options["clock"]),
            **options,
        )
        self._offline_after = offline_after
        # Material codes already reported as unnamed (logged once each, not every poll).
        self._unnamed_materials: set[str] = set()
        # Picture links dropped so far, by (vendor field, reason); each pair is logged once.
        # A record reused unchanged is not checked again (its links were counted when mapped).
        self.rejected_pictures: dict[tuple[str, str], int] = {}
        # The last fetch's records as mapped: an unchanged one is not mapped again.
        self._records: formlabs_map.PrinterCache = formlabs_map.PrinterCache()
        self._last_printers: Mapping[str, Printer] = MappingProxyType({})
        self._last_runs: Mapping[str, Print] = MappingProxyType({})
        # Pages ``_walk`` fetched after the first (the queue fetch reports what it cost).
        self._http_requests_walked = 0
        self._auth = FormlabsToken(
            self._http,
            token_url=f"{self._base}{API}/o/token/",
            client_id=client_id,
            client_secret=client_secret,
            clock=self._clock,
            log=self._log,
        )

    # -- fetches ---------------------------------------------------------------------------

    async def fetch_printers(self) -> Snapshot:
        """``GET /printers/``: a bare array, or (API 0.1.0) a paginated object whose ``next``
        links are followed; records are deduplicated by serial (the last page read wins)."""
        url = f"{self._base}{API}/printers/"
        result = await self._http.request(
            "GET", url, endpoint="/printers/", auth=self._auth, stream_array=True
        )
        records: Iterable[Any]
        if isinstance(result.body, RecordStream):
            records = result.body
            # The last fetch's texts, in order: an element equal to one is not even decoded.
            result.body.expect(self._records.known(), key="serial")
        elif isinstance(result.body, dict) and "results" in result.body:
            records = await self._walk(result.body, result.url, "/printers/", key="serial")
        else:
            raise BadResponse(self._name, "GET /printers/ answered neither an array nor a page")
        try:
            printers, runs, skipped = formlabs_map.map_printers(
                records,
                source=self._name,
                now=self._http.server_now(),
                offline_after=self._offline_after,
                cache=self._records,
            )
        except ValueError as err:  # the array's text broke off: the whole response is unusable
            raise BadResponse(self._name, "GET /printers/ answered malformed JSON") from err
        # Only what was mapped anew: a reused printer's runs were reported when it was mapped.
        last_printers, last_runs = self._last_printers, self._last_runs
        fresh = [
            p.current_print
            for serial, p in printers.items()
            if p.current_print is not None and last_printers.get(serial) is not p
        ]
        fresh.extend(run for key, run in runs.items() if last_runs.get(key) is not run)
        if fresh:
            self._report_unnamed(fresh)
            self._report_pictures(fresh)
        self._last_printers, self._last_runs = printers, runs
        return Snapshot(
            source=self._name,
            vendor=Vendor.FORMLABS,
            taken_at=self._clock.now(),
            printers=MappingProxyType(printers),
            runs=MappingProxyType(runs),
            skipped=tuple(skipped),
            reused=self._records.reused,
        )

    def _report_pictures(self, runs: Iterable[Print]) -> None:
        """A picture link that is not https (or is too long) is dropped: said once per kind."""
        for key, count in formlabs_map.rejected_pictures(runs).items():
            if key not in self.rejected_pictures:
                self._log.warning(
                    "source.picture_link_dropped",
                    field=key[0],
                    reason=key[1],
                    hint="the print is notified without this picture; later ones are not logged",
                )
            self.rejected_pictures[key] = self.rejected_pictures.get(key, 0) + count

    def _report_unnamed(self, runs: Iterable[Print]) -> None:
        """Lenient and loud: a material code nobody named is kept as the name, and said once."""
        fresh = formlabs_map.unnamed_materials(runs) - self._unnamed_materials
        for code in sorted(fresh):
            self._log.warning(
                "source.material_unnamed",
                material_code=code,
                hint="kept as the material name; please report the code and its name",
            )
        self._unnamed_materials |= fresh

    async def fetch_runs(
        self, *, since: datetime | None = None, lookups: Sequence[PrintLookup] = ()
    ) -> RunBatch:
        """Runs from ``GET /events/?date__gt=<since>`` (nested ``print_run``) plus one
        ``GET /prints/?printer=<serial>&date__gt=<created_at - 1 min>`` per printer looked up.

        The watermark is the newest event ``created_at`` seen (else ``since``; on a first call
        without ``since``, the vendor's clock now, so the next call starts from here).
        """
        runs: dict[str, Print] = {}
        skipped: list[SkippedRecord] = []
        feed: list[FeedRecord] = []
        watermark = since
        if since is not None:
            params: Params = [("date__gt", iso(since)), ("per_page", PER_PAGE)]
            events = await self._list("/events/", params, key="id")
            event_runs, event_skipped, newest = formlabs_map.map_events(events)
            self._report_pictures(event_runs.values())
            runs.update(event_runs)
            skipped.extend(event_skipped)
            if newest is not None and newest > since:
                watermark = newest
            feed, capped_at = _capped_feed(formlabs_map.map_feed(events), since)
            if capped_at is not None:
                watermark = capped_at
                self._log.warning(
                    "feed.capped",
                    kept=len(feed),
                    limit=MAX_FEED_RECORDS,
                    resume_after=iso(capped_at),
                )
        else:
            watermark = self._http.server_now()
        for serial, after in _lookup_windows(lookups).items():
            params = [("printer", serial), ("per_page", PER_PAGE)]
            if after is not None:
                params.insert(1, ("date__gt", iso(after)))
                records = await self._list("/prints/", params, key="guid")
            else:
                # Nothing to filter by: read only the first (newest) page, not the history.
                records = await self._list("/prints/", params, key="guid", max_pages=1)
            found, bad = formlabs_map.map_prints(records)
            self._report_pictures(found.values())
            runs.update(found)
            skipped.extend(bad)
        skipped_all = dedupe_skipped(skipped)
        return RunBatch(
            runs=MappingProxyType(runs),
            skipped=skipped_all,
            watermark=watermark,
            feed=tuple(feed),
        )

    async def fetch_inventory(self) -> Inventory:
        """Every tank and cartridge: all pages of ``/tanks/`` and ``/cartridges/``."""
        page: Params = [("per_page", PER_PAGE)]
        tanks = await self._list("/tanks/", page, key="serial")
        cartridges = await self._list("/cartridges/", page, key="serial")
        return formlabs_map.map_inventory(tanks, cartridges)

    async def fetch_queues(self) -> QueueBatch:
        """``GET /groups/``, then ``GET /groups/{id}/queue/`` for each Fleet Control group.

        Groups without Fleet Control cost nothing more (their queue is always empty). A 404
        for a queue means the group went away between the two calls: it is skipped, not an
        error. Costs ``1 + groups`` requests (plus pages, should ``/groups/`` paginate as in
        API 0.1.0).
        """
        url = f"{self._base}{API}/groups/"
        result = await self._http.request("GET", url, endpoint="/groups/", auth=self._auth)
        requests = 1
        body = result.body
        if isinstance(body, dict) and "results" in body:
            self._http_requests_walked = 0
            body = await self._walk(body, result.url, "/groups/", key="id")
            requests += self._http_requests_walked
        records = records_of(body, source=self._name, what="groups", list_key="results")
        groups, skipped = formlabs_queues.fleet_groups(records)
        queues: dict[str, Queue] = {}
        for group in groups:
            answer = await self._http.request(
                "GET",
                f"{url}{quote(group.id, safe='')}/queue/",
                endpoint="/groups/{id}/queue/",
                auth=self._auth,
                accept=(404,),
            )
            requests += 1
            if answer.status == 404:
                skipped.append(SkippedRecord(formlabs_queues.KIND_GROUP, group.id, "queue gone"))
                continue
            items = records_of(
                answer.body, source=self._name, what="queue items", list_key="results"
            )
            queue, bad = formlabs_queues.map_queue(group, items, self._clock.now())
            queues[queue.key] = queue
            skipped.extend(bad)
        return QueueBatch(
            queues=MappingProxyType(queues), skipped=tuple(skipped), requests=requests
        )

    # -- pagination ------------------------------------------------------------------------

    async def _list(
        self, endpoint: str, params: Params, *, key: str, max_pages: int | None = None
    ) -> list[Any]:
        """All records of a paginated list endpoint (``{count, next, previous, results}``)."""
        url = f"{self._base}{API}{endpoint}"
        result = await self._http.request(
            "GET", url, endpoint=endpoint, params=params, auth=self._auth
        )
        if not isinstance(result.body, dict):
            raise BadResponse(self._name, f"GET {endpoint} answered no page object")
        return await self._walk(result.body, result.url, endpoint, key=key, max_pages=max_pages)

    async def _walk(
        self,
        first: dict[str, Any],
        first_url: str,
        endpoint: str,
        *,
        key: str,
        max_pages: int | None = None,
    ) -> list[Any]:
        """Follow ``next`` from ``first`` until null, deduplicating records by ``key``.

        Records whose key cannot be read are kept (the mapper reports them as skipped).
        """
        guard = PageGuard(self._name, endpoint)
        guard.next_page(first_url)
        by_key: dict[Any, Any] = {}
        keyless: list[Any] = []
        page, url = first, first_url
        while True:
            results = page.get("results")
            if not isinstance(results, list):
                raise BadResponse(self._name, f"GET {endpoint} page has no results list")
            for record in results:
                ident = record.get(key) if isinstance(record, dict) else None
                if isinstance(ident, str | int) and not isinstance(ident, bool):
                    by_key[ident] = record
                else:
                    keyless.append(record)
            link = page.get("next")
            if not link or (max_pages is not None and guard.pages >= max_pages):
                break
            if not isinstance(link, str):
                raise BadResponse(self._name, f"GET {endpoint} page has a non-string next link")
            url = follow_link(url, link, self._base)
            guard.next_page(url)
            result = await self._http.request("GET", url, endpoint=endpoint, auth=self._auth)
            self._http_requests_walked += 1
            if not isinstance(result.body, dict):
                raise BadResponse(self._name, f"GET {endpoint} answered no page object")
            page = result.body
        return [*by_key.values(), *keyless]


def _capped_feed(
    records: list[FeedRecord], since: datetime
) -> tuple[list[FeedRecord], datetime | None]:
    """The oldest :data:`MAX_FEED_RECORDS` records, and the watermark to resume from when
    some were left out (just before the first one left out, so entries sharing its second
    are read again and deduplicated by id); ``None`` when nothing was left out."""
    ordered = sorted(records, key=lambda r: (r.created_at, r.id))
    if len(ordered) <= MAX_FEED_RECORDS:
        return ordered, None
    resume = ordered[MAX_FEED_RECORDS].created_at - timedelta(microseconds=1)
    if resume <= since:  # more than the cap within one instant: take them all, or never progress
        return ordered, None
    return ordered[:MAX_FEED_RECORDS], resume


def _lookup_windows(lookups: Sequence[PrintLookup]) -> dict[str, datetime | None]:
    """One history window per printer: from the earliest run looked up, minus a minute.

    ``None`` means no lookup for that printer carried a time at all.
    """
    windows: dict[str, datetime | None] = {}
    for lookup in lookups:
        when = lookup.created_at or lookup.started_at
        # Clamped: an unset vendor date (0001-01-01) minus the slack is not representable.
        after = shifted(when, -LOOKUP_SLACK) if when is not None else None
        known = windows.get(lookup.printer_serial)
        if known is None or (after is not None and after < known):
            windows[lookup.printer_serial] = after if after is not None else known
    return windows
