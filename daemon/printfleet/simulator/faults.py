"""Fault knobs, changeable at runtime from tests (``sim.faults.formlabs.error_rate = 0.5``).

One :class:`VendorFaults` per vendor, grouped in :class:`Faults`. The server threads read the knobs
on every request, so a change applies from the next request on. Random faults draw from a stream
seeded by the simulator's seed, so a given request sequence fails the same way every run.

Order of application per request: outage (window or switch) -> forced 429 -> random 5xx -> the API
itself (auth, rate limits, routing; malformed records and unknown statuses are rendered here) ->
truncation -> latency and hang (real time, outside the simulator lock).

The hostile knobs (``extra_printers``, ``token_body``, ``huge_body_size``, ``endless_body``,
``trickle_s``, ``date_header``) send what a broken or malicious vendor could: they are applied
where the vendor would produce them (the printer list views, the token view, the server's
body writer, the gateway's ``Date``) and are off by default.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Literal, TypeVar

T = TypeVar("T")
U = TypeVar("U")

OutageMode = Literal["503", "reset"]


@dataclass(frozen=True, slots=True)
class OutageWindow:
    """A planned outage on the simulated clock: ``start <= now < end``."""

    start: datetime
    end: datetime
    mode: OutageMode = "503"


@dataclass(slots=True)
class VendorFaults:
    """Fault knobs for one vendor's server; the defaults inject nothing."""

    latency_s: float = 0.0
    """Extra real seconds before every response."""
    error_rate: float = 0.0
    """Probability that a request gets a 500, 502 or 503 (HTML body) instead of its answer."""
    hang_s: float = 0.0
    """Respond only after this many real seconds (to trigger client timeouts); 0 = off."""
    malformed_records: int = 0
    """Extra broken records mixed into printer lists (and Formlabs /events/, Carbon /prints)."""
    malformed_serials: set[str] = field(default_factory=set)
    """Real printers whose own record is rendered broken (e.g. ``printer_status`` a string)."""
    truncate_rate: float = 0.0
    """Probability that a response body is cut in half (valid HTTP, invalid JSON)."""
    outage: OutageMode | None = None
    """While set, every request (token requests too) gets a 503 or a connection reset."""
    outage_windows: list[OutageWindow] = field(default_factory=list)
    force_429: int = 0
    """The next N requests get 429 with ``Retry-After: force_429_retry_after``."""
    force_429_retry_after: int = 30
    unknown_statuses: bool = False
    """Render undocumented status strings (idle printers ``STANDBY``; Formlabs pre-print runs
    ``PREPRINT_CHECKS``) on about a third of the printers."""
    extra_printers: list[str] = field(default_factory=list)
    """Raw JSON texts spliced as-is into the printer list (Formlabs ``/printers/``, Carbon
    ``printers``): any nesting, any code point, any length. Every ``@now@`` in a text becomes
    the response's simulated time in the vendor's timestamp format (a spliced printer can keep
    heartbeating)."""
    token_body: str | None = None
    """Formlabs: answer a valid token request 200 with this raw text instead of a token."""
    huge_body_size: int = 0
    """Answer the printer list 200 with a valid JSON body of this many bytes (``[``, spaces,
    ``]``), generated lazily while it is sent, never held in memory; 0 = off."""
    endless_body: bool = False
    """Answer the printer list 200 with a body that never ends (no Content-Length; ``[`` and
    spaces until the client hangs up)."""
    trickle_s: float = 0.0
    """Send every response body one byte every this many real seconds (token requests too);
    0 = off."""
    date_header: str | None = None
    """Send this ``Date`` header instead of the fleet clock's (e.g. ``Fri, 31 Dec 9999
    23:59:59 GMT``)."""

    def clear(self) -> None:
        """Back to no faults at all."""
        fresh = VendorFaults()
        for spec in fields(self):
            setattr(self, spec.name, getattr(fresh, spec.name))

    def outage_at(self, now: datetime) -> OutageMode | None:
        """The outage mode in force at simulated ``now``, if any."""
        if self.outage is not None:
            return self.outage
        for window in self.outage_windows:
            if window.start <= now < window.end:
                return window.mode
        return None


@dataclass(slots=True)
class Faults:
    """All fault knobs: ``faults.formlabs`` and ``faults.carbon``."""

    formlabs: VendorFaults = field(default_factory=VendorFaults)
    carbon: VendorFaults = field(default_factory=VendorFaults)

    def for_vendor(self, vendor: str) -> VendorFaults:
        """The knobs of ``vendor`` (``"formlabs"`` or ``"carbon"``)."""
        if vendor == "formlabs":
            return self.formlabs
        if vendor == "carbon":
            return self.carbon
        raise ValueError(f"unknown vendor {vendor!r}")

    def clear(self) -> None:
        """Turn every fault off on both vendors."""
        self.formlabs.clear()
        self.carbon.clear()


NOW_MARK = "@now@"
"""Replaced by the response's simulated time in :attr:`VendorFaults.extra_printers` texts."""

_CHUNK = 64 * 1024


def spliced(texts: Sequence[str], now: str) -> list[bytes]:
    """The :attr:`VendorFaults.extra_printers` texts as body parts, ``@now@`` replaced.

    ``surrogatepass`` so a text may even carry a raw lone surrogate (invalid UTF-8 on the
    wire, as a broken vendor could send); JSON escapes (``\\ud800``) pass through as written.
    """
    return [text.replace(NOW_MARK, now).encode("utf-8", "surrogatepass") for text in texts]


def padded_json(size: int) -> Iterator[bytes]:
    """``size`` bytes of valid JSON (``[`` + spaces + ``]``), produced 64 KiB at a time."""
    if size < 2:
        raise ValueError("a padded JSON body needs at least 2 bytes")
    yield b"["
    left = size - 2
    block = b" " * _CHUNK
    while left > 0:
        step = min(left, _CHUNK)
        yield block if step == _CHUNK else block[:step]
        left -= step
    yield b"]"


def endless_json() -> Iterator[bytes]:
    """A JSON array that never closes: ``[`` then spaces forever, 64 KiB at a time."""
    yield b"["
    block = b" " * _CHUNK
    while True:
        yield block


def oversized_body(faults: VendorFaults) -> tuple[Iterator[bytes], int | None] | None:
    """The huge or endless printer-list body the knobs ask for (chunks, length), if any."""
    if faults.endless_body:
        return endless_json(), None
    if faults.huge_body_size > 0:
        return padded_json(faults.huge_body_size), faults.huge_body_size
    return None


def mix_in(rows: Sequence[T], count: int, make: Callable[[int], U]) -> Sequence[T | U]:
    """``rows`` with ``count`` broken records from ``make(i)`` spread evenly (deterministic)."""
    if count <= 0:
        return rows
    mixed: list[T | U] = list(rows)
    for i in range(count):
        mixed.insert((i + 1) * (len(mixed) + 1) // (count + 1), make(i))
    return mixed
