"""The application's :class:`~printfleet.sinks.pictures.PictureLinks`: ask the print's source.

Formlabs has no single-print endpoint (formlabs.md §5), so a print's current links come from
the same history lookup the poller uses for a run that vanished
(``GET /prints/?printer=<serial>&date__gt=<created_at - 1 min>``): one request of the account's
hourly budget, drawn from the source's own token bucket. The answer is kept per print for
:data:`CACHE_S`, so several receivers notified of one event (or the events of one print close
together) cost one request; the links it holds are valid far longer than that.

Vendors without print pictures (Carbon) are never asked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Final

from printfleet.clock import Clock
from printfleet.core.model import Vendor
from printfleet.core.pictures import Pictures, PictureUnavailable
from printfleet.errors import PrintfleetError
from printfleet.sinks.pictures import PrintRef
from printfleet.sources.base import PrintLookup, Source

#: Seconds a print's links are reused before the source is asked again.
CACHE_S: Final = 60.0
#: Most prints whose links are cached at once (oldest dropped first).
CACHE_MAX: Final = 256
VENDORS_WITH_PICTURES: Final = frozenset({Vendor.FORMLABS})


class SourcePictureLinks:
    """Implements :class:`~printfleet.sinks.pictures.PictureLinks` over the running sources.

    ``sources`` is read on every call, so sources replaced on reload are seen.
    """

    def __init__(self, sources: Callable[[], Mapping[str, Source]], *, clock: Clock) -> None:
        self._sources = sources
        self._clock = clock
        self._cache: dict[tuple[str, str], tuple[float, Pictures]] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self.requests = 0  # lookups sent to sources (tests and the budget arithmetic)

    def __repr__(self) -> str:
        return f"SourcePictureLinks(cached={len(self._cache)})"

    async def links(self, ref: PrintRef) -> Pictures:
        source = self._sources().get(ref.source)
        if source is None:
            raise PictureUnavailable(f"no source named {ref.source!r} is running")
        if source.vendor not in VENDORS_WITH_PICTURES:
            return Pictures()
        key = (ref.source, ref.print_id)
        lock = self._locks.setdefault(key, asyncio.Lock())
        try:
            async with lock:  # a second receiver of the same event waits for the first lookup
                cached = self._cached(key)
                if cached is not None:
                    return cached
                pictures = await self._lookup(source, ref)
                self._store(key, pictures)
                return pictures
        finally:
            if not lock.locked():
                self._locks.pop(key, None)

    def _cached(self, key: tuple[str, str]) -> Pictures | None:
        entry = self._cache.get(key)
        if entry is None:
            return None
        if self._clock.monotonic() - entry[0] > CACHE_S:
            del self._cache[key]
            return None
        return entry[1]

    def _store(self, key: tuple[str, str], pictures: Pictures) -> None:
        self._cache[key] = (self._clock.monotonic(), pictures)
        while len(self._cache) > CACHE_MAX:
            del self._cache[next(iter(self._cache))]

    async def _lookup(self, source: Source, ref: PrintRef) -> Pictures:
        lookup = PrintLookup(ref.printer_serial, ref.print_id, ref.created_at, ref.started_at)
        self.requests += 1
        try:
            batch = await source.fetch_runs(lookups=[lookup])
        except PrintfleetError as err:
            # The class only: source errors are written to be safe, but say nothing needed here.
            raise PictureUnavailable(
                f"the source could not be asked ({type(err).__name__})"
            ) from None
        run = batch.runs.get(ref.print_id)
        if run is None:
            raise PictureUnavailable("the print is not in the source's print history")
        return Pictures(thumbnail=run.thumbnail_url, photo=run.photo_url)
