"""What the two vendor sources share on top of :class:`VendorHttp`: one base class, page walks.

Formlabs and Carbon differ in auth, paging and record shapes, but not in how they name
themselves, log, account for their budget and close; :class:`HttpSource` holds that once, and
the pagination helpers keep a walk from looping or sending credentials to a foreign origin.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Unpack
from urllib.parse import urljoin, urlsplit, urlunsplit

import structlog

from printfleet.core.model import SkippedRecord, Vendor
from printfleet.errors import BadResponse
from printfleet.sources.base import BudgetStatus
from printfleet.sources.http.budget import RequestBudget
from printfleet.sources.http.client import HttpOptions, VendorHttp


class HttpSource:
    """What the vendor sources share: their name, vendor, log, request helper and budget.

    Subclasses set :attr:`VENDOR` (and :attr:`FORBIDDEN_HINT` when a 403 means lost rights)
    and implement the fetches of :class:`~printfleet.sources.base.Source`.

    Args:
        name: the configured source name (errors, logs and metrics say it).
        client_id: the vendor's public id of the credentials (shown in ``repr``).
        base_url: the vendor API's root URL.
        budget: the source's :class:`RequestBudget` (the subclass picks the vendor default).
        options: how to build the :class:`VendorHttp` (see :class:`HttpOptions`).
    """

    VENDOR: ClassVar[Vendor]
    FORBIDDEN_HINT: ClassVar[str | None] = None

    def __init__(
        self,
        *,
        name: str,
        client_id: str,
        base_url: str,
        budget: RequestBudget,
        **options: Unpack[HttpOptions],
    ) -> None:
        self._name = name
        self._client_id = client_id
        self._base = base_url.rstrip("/")
        self._clock = options["clock"]
        log = options.get("log")
        logger = log if log is not None else structlog.get_logger().bind(source=name)
        self._log = logger.bind(vendor=self.VENDOR.value)
        options["log"] = self._log
        self._http = VendorHttp(
            source=name, budget=budget, forbidden_hint=self.FORBIDDEN_HINT, **options
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
