"""The Carbon DLS API v1 source (see shared/api/carbon.md).

Auth is a self-minted RS256 JWT (§2): ``iss`` = client_id, ``exp`` = now + 600 s, ``iat``;
re-minted when less than 60 s remain and once after a 401. ``/printers`` pages by offset
(items skipped), ``/prints`` by an opaque cursor that expires 60 s after it was issued (§4).
Records become normalized values in :mod:`printfleet.sources.carbon_map`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any, Unpack

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from printfleet.clock import Clock
from printfleet.config.schema import CARBON_BASE_URL
from printfleet.core.model import Print, SkippedRecord, Snapshot, Vendor, iso
from printfleet.core.queues import carbon_queues
from printfleet.errors import BadResponse
from printfleet.logs import register_secret
from printfleet.sources import carbon_map
from printfleet.sources.base import Inventory, PrintLookup, QueueBatch, RunBatch
from printfleet.sources.http.base import HttpSource, PageGuard, dedupe_skipped
from printfleet.sources.http.budget import RequestBudget
from printfleet.sources.http.client import HttpOptions, Params

DEFAULT_BASE_URL = CARBON_BASE_URL  # the config default; written once, in config.schema
PAGE_LIMIT = 100
#: The ``status`` values asked of ``/prints`` (its default is ``finished`` only, §5). Only
#: ``finished`` is documented and ``printing`` is used by third-party code (§6, §8.2); no
#: failure or abort spelling is known, and an invented one may be refused with a 400. ``queued``
#: (also third-party) is left out on purpose: a queued print has neither ``finished_at`` nor a
#: ``print_id``, so it can match neither our ``finished_after`` window nor a lookup.
PRINT_STATUSES: tuple[str, ...] = ("printing", "finished")
#: Array filters take at most 100 values per request.
MAX_FILTER_VALUES = 100
TOKEN_LIFETIME_S = 600
TOKEN_RENEW_MARGIN_S = 60.0
#: Cursors expire 60 s after they are issued; stop using one a little earlier than that.
CURSOR_MAX_AGE_S = 50.0
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
FORBIDDEN_HINT = (
    "the API key was refused; the person who created it must be (and stay) an ADMIN of the "
    "Carbon customer account"
)


class CarbonToken:
    """Mints RS256 JWTs for one Carbon API key (an ``Authenticator``).

    ``iat`` and ``exp`` hold on our clock and on the vendor's clock as estimated from ``Date``
    headers, so a skewed clock on either side never makes a token look expired or not yet
    valid (the lifetime grows by the skew, which is harmless).
    """

    def __init__(
        self,
        *,
        client_id: str,
        private_key: RSAPrivateKey,
        clock: Clock,
        server_now: Callable[[], datetime],
        log: Any,
        lifetime_s: int = TOKEN_LIFETIME_S,
    ) -> None:
        self._client_id = client_id
        self._key = private_key
        self._clock = clock
        self._server_now = server_now
        self._log = log
        self._lifetime = lifetime_s
        self._token: str | None = None
        self._renew_at = 0.0

    def __repr__(self) -> str:
        state = "set" if self._token else "unset"
        return f"CarbonToken(client_id={self._client_id!r}, token={state})"

    async def token(self) -> str:
        if self._token is not None and self._clock.monotonic() < self._renew_at:
            return self._token
        minted_at = self._clock.monotonic()
        ours, theirs = self._clock.now().timestamp(), self._server_now().timestamp()
        # Valid on both clocks: iat not in the future and exp >= now + lifetime on either,
        # whichever one the vendor verifies with (its Date header is our only view of it).
        claims = {
            "iss": self._client_id,
            "iat": math.floor(min(ours, theirs)),
            "exp": math.floor(max(ours, theirs)) + self._lifetime,
        }
        renewing = self._token is not None
        self._token = jwt.encode(claims, self._key, algorithm="RS256")
        register_secret(self._token)  # defence in depth: redacted should it reach a log line
        self._renew_at = minted_at + self._lifetime - TOKEN_RENEW_MARGIN_S
        self._log.debug("source.auth_renewed" if renewing else "source.authenticated")
        return self._token

    def invalidate(self, token: str) -> None:
        if token == self._token:
            self._token = None
            self._renew_at = 0.0


class CarbonSource(HttpSource):
    """One Carbon customer account (implements :class:`~printfleet.sources.base.Source`).

    Args:
        name: the configured source name.
        client_id, private_key: from the vendor's ``secrets.json``.
        offline_after: judge staleness of a printer's ``updated_at`` only when set (the API
            does not say it is a heartbeat); otherwise offline comes from the printer state.
        base_url: e.g. ``https://api.carbon3d.com/v1``.
        budget: defaults to :meth:`RequestBudget.carbon` (90 per 10 s).
        options: the shared HTTP ``client`` (owned by the caller), the ``clock`` (budget,
            token lifetimes, cursor ages, backoff) and the rest of
            :class:`~printfleet.sources.http.client.HttpOptions`.
    """

    VENDOR = Vendor.CARBON
    FORBIDDEN_HINT = FORBIDDEN_HINT

    def __init__(
        self,
        *,
        name: str,
        client_id: str,
        private_key: RSAPrivateKey,
        offline_after: timedelta | None = None,
        base_url: str = DEFAULT_BASE_URL,
        budget: RequestBudget | None = None,
        **options: Unpack[HttpOptions],
    ) -> None:
        super().__init__(
            name=name,
            client_id=client_id,
            base_url=base_url,
            budget=budget or RequestBudget.carbon(options["clock"]),
            **options,
        )
        self._offline_after = offline_after
        # The last fetch's records as mapped: an unchanged one is not mapped again.
        self._records: carbon_map.PrinterCache = carbon_map.PrinterCache()
        # Whether this base URL has answered as Carbon's API: until then a 404 on /printers
        # may be a wrong base_url rather than "no printer found" (see _confirm_carbon).
        self._answers_as_carbon = False
        # The status filters sent to /prints, one request walk each: all of PRINT_STATUSES at
        # once until the vendor refuses the list with a 400, then one status per walk.
        self._status_groups: list[tuple[str, ...]] = [PRINT_STATUSES]
        self._auth = CarbonToken(
            client_id=client_id,
            private_key=private_key,
            clock=self._clock,
            server_now=self._http.server_now,
            log=self._log,
        )

    # -- fetches ---------------------------------------------------------------------------

    async def fetch_printers(self) -> Snapshot:
        """``GET /printers?limit=100&offset=k`` until a short page or ``total_count``.

        ``offset`` counts items skipped; records are deduplicated by serial; a 404 (the
        vendor's "no printer found") is an empty fleet, once the base URL is known to answer
        as Carbon's API (:meth:`_confirm_carbon`).

        Raises:
            BadResponse: also when ``/printers`` answers 404 and the base URL is not Carbon's
                API (a wrong ``base_url`` must not look like an empty fleet).
        """
        url = f"{self._base}/printers"
        guard = PageGuard(self._name, "/printers")
        by_serial: dict[str, Any] = {}
        keyless: list[Any] = []
        offset = 0
        while True:
            guard.next_page(str(offset))
            result = await self._http.request(
                "GET",
                url,
                endpoint="/printers",
                params=[("limit", str(PAGE_LIMIT)), ("offset", str(offset))],
                auth=self._auth,
                accept=(404,),
                stream_array=True,  # records keep their text (unchanged ones are reused)
            )
            if result.status == 404:
                if offset == 0 and not self._answers_as_carbon:
                    await self._confirm_carbon(url)
                break  # "no printer found": no printers (at or after this offset)
            body = result.body
            page = body.get("printers") if isinstance(body, dict) else None
            if not isinstance(page, list):
                raise BadResponse(self._name, "GET /printers answered no printers list")
            self._answers_as_carbon = True
            fresh = 0
            for record in page:
                serial = record.get("serial") if isinstance(record, dict) else None
                if isinstance(serial, str) and serial:
                    fresh += serial not in by_serial
                    by_serial[serial] = record
                else:
                    keyless.append(record)
            limit = _positive_int(body.get("limit")) or PAGE_LIMIT
            total = _positive_int(body.get("total_count"))
            if len(page) < min(limit, PAGE_LIMIT) or (
                total is not None and offset + len(page) >= total
            ):
                break
            if fresh == 0:
                raise BadResponse(self._name, "GET /printers pagination is not advancing")
            offset += len(page)
        printers, runs, skipped = carbon_map.map_printers(
            [*by_serial.values(), *keyless],
            source=self._name,
            now=self._http.server_now(),
            offline_after=self._offline_after,
            cache=self._records,
        )
        taken_at = self._clock.now()
        return Snapshot(
            source=self._name,
            vendor=Vendor.CARBON,
            taken_at=taken_at,
            printers=MappingProxyType(printers),
            runs=MappingProxyType(runs),
            skipped=tuple(skipped),
            # Each printer's own queue, from the queue_length it already sent: no request.
            queues=MappingProxyType(carbon_queues(printers.values(), taken_at)),
            reused=self._records.reused,
        )

    async def _confirm_carbon(self, printers_url: str) -> None:
        """Check that a base URL whose ``/printers`` answered 404 is Carbon's API.

        Carbon documents that 404 as "no printer found" (carbon.md §3), but a wrong
        ``base_url`` (a missing ``/v1``, another service) answers 404 too. ``/prints`` is
        documented as 200-only with an object body, so one ``GET /prints?limit=1`` tells the
        two apart; it is asked once per source, until the URL has answered as Carbon.

        Raises:
            BadResponse: ``/prints`` did not answer like Carbon; the message names the URL.
        """
        url = f"{self._base}/prints"
        detail: str
        try:
            result = await self._http.request(
                "GET",
                url,
                endpoint="/prints",
                params=[("limit", "1")],
                auth=self._auth,
                accept=(400, 404, 405),
            )
        except BadResponse as err:
            detail = err.message
        else:
            body = result.body
            if result.status == 200 and isinstance(body, dict) and _looks_like_prints(body):
                self._answers_as_carbon = True
                return
            detail = f"GET /prints answered HTTP {result.status}"
            if result.status == 200:
                detail += " without a prints list"
        raise BadResponse(
            self._name,
            f"GET {printers_url} answered 404 and {detail}, so {self._base} does not answer "
            f"as Carbon's API (fix: check base_url; Carbon's is {DEFAULT_BASE_URL})",
        )

    async def fetch_runs(
        self, *, since: datetime | None = None, lookups: Sequence[PrintLookup] = ()
    ) -> RunBatch:
        """Prints finished since ``since`` (``GET /prints`` with an explicit status list,
        ``finished_after``, ``sort=finished_at``) plus the ``lookups`` by ``print_id``.

        The watermark is the newest ``finished_at`` seen (else ``since``; on a first call
        without ``since``, the vendor's clock now).
        """
        runs: dict[str, Print] = {}
        skipped: list[SkippedRecord] = []
        watermark = since
        if since is not None:
            found, bad, newest = await self._walk_prints([], after=since)
            runs.update(found)
            skipped.extend(bad)
            if newest is not None and newest > since:
                watermark = newest
        else:
            watermark = self._http.server_now()
        for name, values in _lookup_filters(lookups).items():
            for start in range(0, len(values), MAX_FILTER_VALUES):
                chunk = values[start : start + MAX_FILTER_VALUES]
                found, bad, _ = await self._walk_prints([(name, v) for v in chunk], after=None)
                runs.update(found)
                skipped.extend(bad)
        skipped_all = dedupe_skipped(skipped)
        return RunBatch(runs=MappingProxyType(runs), skipped=skipped_all, watermark=watermark)

    async def fetch_inventory(self) -> Inventory:
        """Carbon exposes no tanks or cartridges: always empty, no request."""
        return Inventory()

    async def fetch_queues(self) -> QueueBatch | None:
        """``None``: each printer's ``queue_length`` comes with :meth:`fetch_printers`.

        ``GET /printers/queues`` would add the queued print ids, which nothing here needs.
        """
        return None

    # -- cursor pagination -----------------------------------------------------------------

    async def _walk_prints(
        self, filters: Params, *, after: datetime | None
    ) -> tuple[dict[str, Print], list[SkippedRecord], datetime | None]:
        """Walk ``/prints`` once per status group; returns runs by id, skipped, newest finished_at.

        A 400 to the first page of a multi-status filter means the vendor refused one of the
        values: ``source.status_filter_rejected`` is logged (once) and from then on every
        status is asked on its own. A single status refused with a 400 by a history walk is
        dropped the same way; ``finished``, the documented default, is never dropped, nor is a
        status refused in a lookup (the ids may be what was refused): those are BadResponse.
        """
        runs: dict[str, Print] = {}
        skipped: list[SkippedRecord] = []
        newest: datetime | None = None
        index = 0
        while index < len(self._status_groups):
            group = self._status_groups[index]
            walked = await self._walk_status(filters, group, after=after)
            if walked is None:
                self._reject(group, lookup=bool(filters))
                continue  # the groups were replaced: index now names the next one to walk
            found, bad, latest = walked
            runs.update(found)
            skipped.extend(bad)
            if latest is not None and (newest is None or latest > newest):
                newest = latest
            index += 1
        return runs, skipped, newest

    def _reject(self, group: tuple[str, ...], *, lookup: bool) -> None:
        """Stop sending a status filter ``group`` that ``/prints`` refused with a 400.

        Raises:
            BadResponse: a single status was refused where that cannot be the reason.
        """
        position = self._status_groups.index(group)
        if len(group) > 1:
            replacement = [(status,) for status in group]
            reason = "the list was refused; asking one status per request"
        elif group == ("finished",) or lookup:
            raise BadResponse(self._name, f"GET /prints answered HTTP 400 to status={group[0]}")
        else:
            replacement = []
            reason = "the status was refused; no longer asked"
        self._status_groups[position : position + 1] = replacement
        self._log.warning(
            "source.status_filter_rejected", endpoint="/prints", status=list(group), why=reason
        )

    async def _walk_status(
        self, filters: Params, statuses: tuple[str, ...], *, after: datetime | None
    ) -> tuple[dict[str, Print], list[SkippedRecord], datetime | None] | None:
        """Walk ``/prints`` by cursor for one status filter; ``None`` when its first page is
        refused with a 400 (the filter, since nothing else in the query is ours to doubt).

        A cursor older than :data:`CURSOR_MAX_AGE_S` (by the clock, checked right before each
        try, after any budget wait or backoff) is never sent: the walk restarts without it,
        from the newest ``finished_at`` seen so far when filtering by time (duplicates are
        merged by id).
        """
        url = f"{self._base}/prints"
        guard = PageGuard(self._name, "/prints")
        runs: dict[str, Print] = {}
        skipped: list[SkippedRecord] = []
        newest: datetime | None = None
        cursor: str | None = None
        issued_at = 0.0
        pages = 0
        window_start = after

        def params() -> Params:
            nonlocal cursor, window_start
            if cursor is not None and self._clock.monotonic() - issued_at > CURSOR_MAX_AGE_S:
                cursor = None
                guard.forget()
                if window_start is not None and newest is not None and newest > window_start:
                    window_start = newest
                self._log.debug("source.cursor_expired", endpoint="/prints")
            query = [
                *filters,
                *(("status", status) for status in statuses),
                ("sort", "finished_at"),
                ("limit", str(PAGE_LIMIT)),
            ]
            if window_start is not None:
                query.append(("finished_after", iso(window_start)))
            if cursor is not None:
                query.append(("cursor", cursor))
            return query

        while True:
            result = await self._http.request(
                "GET",
                url,
                endpoint="/prints",
                params=params,
                auth=self._auth,
                accept=(400,) if pages == 0 else (),
            )
            if result.status == 400:
                return None
            pages += 1
            body = result.body
            if not isinstance(body, dict):
                raise BadResponse(self._name, "GET /prints answered no object")
            records = body.get("prints")
            if records is None:
                records = []
            if not isinstance(records, list):
                raise BadResponse(self._name, "GET /prints answered a non-list prints")
            found, bad = carbon_map.map_prints(records)
            runs.update(found)
            skipped.extend(bad)
            for run in found.values():
                if run.finished_at is not None and (newest is None or run.finished_at > newest):
                    newest = run.finished_at
            next_cursor = body.get("next_cursor")
            if not next_cursor:
                break
            if not isinstance(next_cursor, str):
                raise BadResponse(self._name, "GET /prints answered a non-string next_cursor")
            guard.next_page(next_cursor)
            cursor, issued_at = next_cursor, self._clock.monotonic()
        return runs, skipped, newest


def _lookup_filters(lookups: Sequence[PrintLookup]) -> dict[str, list[str]]:
    """Which ``/prints`` filter finds each looked-up print, by the shape of its id.

    Ids are ``print_id`` values normally; :func:`carbon_map.print_key` falls back to
    ``<build_uuid>@<started_at>`` for a started print without a short id yet, and to the
    print ``uuid`` for one without either.
    """
    filters: dict[str, list[str]] = {"print_id": [], "uuid": [], "build_uuid": []}
    for lookup in lookups:
        ident = lookup.print_id
        if not ident:
            continue
        if "@" in ident:
            name, ident = "build_uuid", ident.split("@", 1)[0]
        elif _UUID.fullmatch(ident):
            name = "uuid"
        else:
            name = "print_id"
        if ident not in filters[name]:
            filters[name].append(ident)
    return {name: values for name, values in filters.items() if values}


def _looks_like_prints(body: dict[str, Any]) -> bool:
    """Whether a ``/prints`` body has Carbon's shape (every wrapper field is optional, §6)."""
    prints = body.get("prints")
    return isinstance(prints, list) or (
        prints is None and any(key in body for key in ("next_cursor", "total_count", "limit"))
    )


def _positive_int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None
