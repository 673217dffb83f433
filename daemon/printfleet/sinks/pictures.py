"""Pictures for chat notifications, fetched fresh when the message is sent.

A delivery may wait in the outbox for hours (receiver down, rate limited), and the vendor's
picture links are signed and expire, so the link in the stored payload may be dead by the
time it is sent. Before rendering a Slack, Teams or Discord message about a print, the sink
asks :class:`PictureLinks` (the application's, which asks the print's source) for the print's
current links, then checks that each answers with an image. Anything failing along the way
costs only the picture: the message goes out without it and ``picture.unavailable`` says why
(the link is logged without its query string, which holds the signature).

A delivery that is retried (the receiver was down) first tries the links its last attempt
showed: checking them costs the CDN a request, not the vendor's API budget. Only when one of
them fails (expired, typically) is the source asked again, so a delivery retried for hours
does not spend the account's hourly budget on every attempt.

Sinks never import sources: the application injects the :class:`PictureLinks`.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

import httpx
import structlog

from printfleet.core.pictures import (
    NO_PICTURES,
    Pictures,
    PictureUnavailable,
    picture_url,
    redacted,
)

#: Seconds allowed to learn a print's current links (one vendor request, maybe a page more).
LOOKUP_TIMEOUT_S: Final = 5.0
#: Seconds allowed for checking one link (connect, headers, the first bytes).
CHECK_TIMEOUT_S: Final = 3.0
#: Bytes asked for (and at most read) when checking a link: enough to see it is an image.
CHECK_RANGE_BYTES: Final = 1024
#: Deliveries whose last shown links are remembered for their retries (oldest dropped first).
KEPT_MAX: Final = 1024

log = structlog.get_logger("printfleet.pictures")


@dataclass(frozen=True, slots=True)
class PrintRef:
    """Which print a payload is about, and what helps its source find it."""

    source: str
    printer_serial: str
    print_id: str
    created_at: datetime | None = None
    started_at: datetime | None = None


class PictureLinks(Protocol):
    """Asks a print's source for its current picture links (the application provides it)."""

    async def links(self, ref: PrintRef) -> Pictures:
        """The print's links as its source gives them now (not yet checked to answer).

        Raises:
            PictureUnavailable: the source could not be asked or does not know the print.
        """
        ...


def print_ref(payload: Mapping[str, Any]) -> PrintRef | None:
    """The print a ``print.*`` notification is about; ``None`` for any other payload
    (other events, grouped notifications, a payload without print or printer)."""
    event = payload.get("event")
    if not isinstance(event, Mapping) or payload.get("group"):
        return None
    kind = event.get("type")
    if not isinstance(kind, str) or not kind.startswith("print."):
        return None
    # "printfleet/<vendor>/<source>" (core.events.to_cloudevent)
    origin = event.get("source")
    parts = origin.split("/", 2) if isinstance(origin, str) else []
    data = event.get("data")
    if len(parts) != 3 or not parts[2] or not isinstance(data, Mapping):
        return None
    run, printer = data.get("print"), data.get("printer")
    serial = printer.get("serial") if isinstance(printer, Mapping) else event.get("subject")
    ident = run.get("id") if isinstance(run, Mapping) else None
    if not isinstance(ident, str) or not ident or not isinstance(serial, str) or not serial:
        return None
    assert isinstance(run, Mapping)
    return PrintRef(
        source=parts[2],
        printer_serial=serial,
        print_id=ident,
        created_at=_time(run.get("created_at")),
        started_at=_time(run.get("started_at")),
    )


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


class PictureFetcher:
    """Fresh, checked pictures for one sink's notifications (see the module docstring).

    ``client`` is the shared HTTP client (redirects off: a link that redirects is not used,
    the chat service would have to follow it blind).
    """

    def __init__(
        self,
        links: PictureLinks,
        *,
        client: httpx.AsyncClient,
        lookup_timeout: float = LOOKUP_TIMEOUT_S,
        check_timeout: float = CHECK_TIMEOUT_S,
        allow_plain_loopback: bool = False,
    ) -> None:
        # Plain http to a loopback host is the simulator's; from a real vendor it would make
        # the daemon send requests to local services (no chat service could show it anyway).
        self._allow_plain_loopback = allow_plain_loopback
        self._links = links
        self._client = client
        self._lookup_timeout = lookup_timeout
        self._check_timeout = check_timeout
        self._kept: OrderedDict[str, Pictures] = OrderedDict()

    def __repr__(self) -> str:
        return f"PictureFetcher(kept={len(self._kept)})"

    async def pictures(
        self, sink: str, payload: Mapping[str, Any], *, delivery_id: str | None = None
    ) -> Pictures:
        """The checked pictures of the print ``payload`` is about (none when it is not about
        one, or when nothing could be learned or checked in time). Never raises for I/O.

        ``delivery_id``: the links shown by an earlier attempt of the same delivery are
        reused while they still answer (see the module docstring).
        """
        ref = print_ref(payload)
        if ref is None:
            return NO_PICTURES
        kept = self._kept.get(delivery_id) if delivery_id is not None else None
        if kept is not None:
            again = await self._check(sink, ref, kept, quiet=True)
            if again == kept:
                return kept
        shown = await self._fresh(sink, ref)
        if delivery_id is not None and shown:
            self._kept[delivery_id] = shown
            self._kept.move_to_end(delivery_id)
            while len(self._kept) > KEPT_MAX:
                self._kept.popitem(last=False)
        return shown

    async def _fresh(self, sink: str, ref: PrintRef) -> Pictures:
        try:
            async with asyncio.timeout(self._lookup_timeout):
                fresh = await self._links.links(ref)
        except PictureUnavailable as err:
            self._unavailable(sink, ref, "links", err.reason)
            return NO_PICTURES
        except TimeoutError:
            self._unavailable(sink, ref, "links", f"no answer within {self._lookup_timeout:g} s")
            return NO_PICTURES
        return await self._check(sink, ref, fresh)

    async def _check(
        self, sink: str, ref: PrintRef, pictures: Pictures, *, quiet: bool = False
    ) -> Pictures:
        thumbnail, photo = await asyncio.gather(
            self._checked(sink, ref, "thumbnail", pictures.thumbnail, quiet),
            self._checked(sink, ref, "photo", pictures.photo, quiet),
        )
        return Pictures(thumbnail=thumbnail, photo=photo)

    async def _checked(
        self, sink: str, ref: PrintRef, which: str, url: str | None, quiet: bool
    ) -> str | None:
        """``url`` when it answers with an image; ``quiet``: a failure is not logged (a kept
        link from an earlier attempt that expired is expected, and is looked up afresh)."""
        if url is None:
            return None
        if picture_url(url) is None or (  # the resolver should have dropped it; never fetch it
            not self._allow_plain_loopback and urlsplit(url).scheme.lower() != "https"
        ):
            self._unavailable(sink, ref, which, "not an acceptable link")
            return None
        reason = await self._problem(url)
        if reason is None:
            return url
        if not quiet:
            self._unavailable(sink, ref, which, reason, link=url)
        return None

    async def _problem(self, url: str) -> str | None:
        """Why ``url`` cannot be shown (``None`` when it answers with an image).

        A ranged GET, not HEAD: signed S3-style links are signed for one method, so HEAD on
        a GET link is refused even while the link is good.
        """
        try:
            async with asyncio.timeout(self._check_timeout):
                request = self._client.build_request(
                    "GET",
                    url,
                    headers={"Range": f"bytes=0-{CHECK_RANGE_BYTES - 1}"},
                    timeout=self._check_timeout,
                )
                response = await self._client.send(request, stream=True)
                try:
                    status = response.status_code
                    kind = response.headers.get("Content-Type", "")
                    if status in (200, 206):
                        read = 0
                        async for chunk in response.aiter_bytes():
                            read += len(chunk)
                            if read >= CHECK_RANGE_BYTES:
                                break  # enough; closing drops the rest
                finally:
                    await response.aclose()
        except TimeoutError:
            return f"no answer within {self._check_timeout:g} s"
        except httpx.HTTPError as err:
            # Only the class: httpx messages may quote the URL, query string included.
            return f"request failed ({type(err).__name__})"
        if status not in (200, 206):
            return f"HTTP {status}"
        if not kind.lower().startswith("image/"):
            return "not an image (Content-Type " + (kind[:60] or "missing") + ")"
        return None

    @staticmethod
    def _unavailable(
        sink: str, ref: PrintRef, which: str, reason: str, *, link: str | None = None
    ) -> None:
        log.info(
            "picture.unavailable",
            sink=sink,
            source=ref.source,
            printer=ref.printer_serial,
            print_id=ref.print_id,
            picture=which,
            reason=reason,
            **({"link": redacted(link)} if link is not None else {}),
        )
