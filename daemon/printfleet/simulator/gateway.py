"""One vendor's request pipeline: clock, lock, fleet advance, faults, the API, the request log.

Everything that touches fleet state runs under the simulator's lock; latency and hangs are
served afterwards (by the server thread, outside the lock) so a hanging request never blocks
other clients or the test driving the simulator.
"""

from __future__ import annotations

import random
import threading
import time
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import NamedTuple, Protocol

from printfleet.simulator.clock import SimClock
from printfleet.simulator.engine import Engine
from printfleet.simulator.faults import Faults
from printfleet.simulator.wire import Moment, Request, Response, html_response

_SERVER_ERRORS = {
    500: "<h1>Server Error (500)</h1>",
    502: "<html><head><title>502 Bad Gateway</title></head><body>Bad Gateway</body></html>",
    503: "<html><body><h1>503 Service Unavailable</h1><p>Please try again later.</p></body></html>",
}


class VendorApi(Protocol):
    """A simulated vendor API (``FormlabsApi`` / ``CarbonApi``)."""

    vendor: str
    base_url: str

    def handle(self, request: Request, moment: Moment) -> Response:
        """Answer one request (auth, limits, routing, views)."""
        ...

    def throttled(self, retry_after: int) -> Response:
        """The vendor's 429."""
        ...

    def expire_tokens(self) -> None:
        """Make every credential issued or seen so far fail once more."""
        ...


class RequestRecord(NamedTuple):
    """One served request: simulated time, vendor, method, request target, status (0 = reset),
    and when it came on the real monotonic clock (for requests-per-real-second counts)."""

    time: datetime
    vendor: str
    method: str
    path: str
    status: int
    monotonic: float = 0.0


class Gateway:
    """Runs requests for one vendor through faults and the API, and logs them."""

    def __init__(
        self,
        api: VendorApi,
        faults: Faults,
        *,
        engine: Engine,
        clock: SimClock,
        lock: threading.RLock,
        log: list[RequestRecord],
        seed: int,
    ) -> None:
        self.api = api
        self._all_faults = faults
        self._engine = engine
        self._clock = clock
        self._lock = lock
        self._log = log
        self._rng = random.Random(seed)  # fault draws only; the fleet has its own streams

    def handle(self, request: Request) -> Response:
        """Answer ``request``; the response's ``delay_s`` tells the server how long to stall."""
        faults = self._all_faults.for_vendor(self.api.vendor)
        with self._lock:
            now = self._clock.now()
            self._engine.advance_to(int(now.timestamp()))
            moment = Moment(now.timestamp(), self._clock.protocol_time(now))
            response = self._respond(request, now, moment)
            status = 0 if response.reset else response.status
            self._log.append(
                RequestRecord(
                    now, self.api.vendor, request.method, request.target, status, time.monotonic()
                )
            )
        # Like any real server, say what time it is: on the fleet's clock, the clock its
        # timestamps (last_pinged_at, updated_at) were written with.
        date = faults.date_header or format_datetime(now.astimezone(UTC), usegmt=True)
        response.headers.append(("Date", date))
        response.delay_s += max(0.0, faults.latency_s) + max(0.0, faults.hang_s)
        response.trickle_s = max(0.0, faults.trickle_s)
        return response

    def _respond(self, request: Request, now: datetime, moment: Moment) -> Response:
        faults = self._all_faults.for_vendor(self.api.vendor)
        mode = faults.outage_at(now)
        if mode == "reset":
            return Response(0, reset=True)
        if mode == "503":
            return html_response(503, _SERVER_ERRORS[503])
        if faults.force_429 > 0:
            faults.force_429 -= 1
            return self.api.throttled(max(1, faults.force_429_retry_after))
        if faults.error_rate > 0 and self._rng.random() < faults.error_rate:
            status = self._rng.choice(sorted(_SERVER_ERRORS))
            return html_response(status, _SERVER_ERRORS[status])
        response = self.api.handle(request, moment)
        if faults.truncate_rate > 0 and response.body and self._rng.random() < faults.truncate_rate:
            response.body = response.body[: len(response.body) // 2]
        return response
