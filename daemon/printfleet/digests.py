"""Sending the configured ``[[digest]]`` summaries: when each is due, what it says, once.

The pipeline's timer loop asks :meth:`DigestRunner.next_due` when to wake and calls
:meth:`DigestRunner.collect` then; the deliveries and the state it returns go into one store
commit, so "the period ending at 07:30 was sent" and the queued message are durable together.

Exactly once per period, across restarts: the end of the last period sent is kept in the store
(state key ``digest:<name>``). At start, when one or more periods ended while the daemon was
stopped, only the latest is sent (its data says how many were missed), never one per missed
day. A digest configured for the first time starts with the next period: there is no history
of the time before it was configured to speak for. The delivery id is stable for (digest,
period end), so a commit repeated after a store failure enqueues it once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

import structlog

from printfleet.config.schema import DigestConfig
from printfleet.core.delivery import Delivery, delivery_id
from printfleet.core.digest import OFFLINE_TYPES, DigestSpec, LoggedEvent, compute_digest
from printfleet.core.digest_render import digest_event_id, digest_payload
from printfleet.core.digest_schedule import DigestSchedule
from printfleet.core.fleet import FleetView
from printfleet.core.history import PrintRecord
from printfleet.core.model import iso
from printfleet.core.rules.windows import Silence
from printfleet.errors import StoreError

log = structlog.get_logger("printfleet.digests")

#: After a failed computation (the store could not be read), try again this much later.
RETRY_AFTER: Final = timedelta(minutes=1)
_LONG_AGO: Final = datetime(2000, 1, 1, tzinfo=UTC)


class DigestStore(Protocol):
    """What digests read from the store (:class:`printfleet.store.Store` has this shape)."""

    def load_state(self, key: str) -> Any | None: ...

    def print_history(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        source: str | None = None,
    ) -> list[PrintRecord]: ...

    def logged_events(
        self, *, since: datetime, until: datetime, types: Sequence[str] = ()
    ) -> list[LoggedEvent]: ...

    def last_logged_events(
        self, *, before: datetime, types: Sequence[str]
    ) -> list[LoggedEvent]: ...


@dataclass
class _Digest:
    spec: DigestSpec
    schedule: DigestSchedule
    last_end: datetime | None  # end of the last period sent (or skipped when first seen)
    retry_at: datetime | None = None

    @property
    def state_key(self) -> str:
        return f"digest:{self.spec.name}"


def spec_from_config(config: DigestConfig) -> DigestSpec:
    match = Silence(id=f"digest:{config.name}", match=config.globs()) if config.match else None
    return DigestSpec(
        name=config.name,
        receiver=config.receiver,
        title=config.title or f"Digest {config.name}",
        match=match,
    )


class DigestRunner:
    """Every configured digest, its schedule and the last period sent."""

    def __init__(
        self, configs: Sequence[DigestConfig], store: DigestStore, *, default_timezone: str
    ) -> None:
        self._store = store
        self._digests: list[_Digest] = []
        for config in configs:
            saved = store.load_state(f"digest:{config.name}")
            last = None
            if isinstance(saved, dict) and isinstance(saved.get("last_end"), str):
                last = datetime.fromisoformat(saved["last_end"])
            self._digests.append(
                _Digest(
                    spec_from_config(config),
                    DigestSchedule.parse(config.schedule, default_timezone),
                    last,
                )
            )

    def next_due(self) -> datetime | None:
        """When the timer loop should next call :meth:`collect` (past: now)."""
        times: list[datetime] = []
        for d in self._digests:
            if d.retry_at is not None:
                times.append(d.retry_at)
            elif d.last_end is None:
                times.append(_LONG_AGO)  # initialise at once
            else:
                times.append(d.schedule.next_after(d.last_end))
        return min(times, default=None)

    def collect(self, now: datetime, view: FleetView) -> tuple[list[Delivery], dict[str, Any]]:
        """The digests due at ``now`` and the state that records them as sent."""
        deliveries: list[Delivery] = []
        state: dict[str, Any] = {}
        for d in self._digests:
            if d.retry_at is not None and now < d.retry_at:
                continue
            end = d.schedule.latest(now)
            if d.last_end is not None and end <= d.last_end:
                continue
            if d.last_end is None:
                log.info(
                    "digest.scheduled", digest=d.spec.name, next=iso(d.schedule.next_after(now))
                )
            else:
                try:
                    deliveries.append(self._build(d, end, now, view))
                except StoreError as err:
                    d.retry_at = now + RETRY_AFTER
                    log.warning("digest.failed", digest=d.spec.name, error=str(err))
                    continue
            d.last_end, d.retry_at = end, None
            state[d.state_key] = {"last_end": end.isoformat()}
        return deliveries, state

    def _build(self, d: _Digest, end: datetime, now: datetime, view: FleetView) -> Delivery:
        assert d.last_end is not None
        start = d.schedule.previous(end)
        missed = 0
        point = start
        while point > d.last_end and missed < 1000:
            missed += 1
            point = d.schedule.previous(point)
        records = self._store.print_history(since=start, until=end)
        events = self._store.logged_events(since=start, until=end)
        before = self._store.last_logged_events(before=start, types=sorted(OFFLINE_TYPES))
        digest = compute_digest(
            d.spec,
            start=start,
            end=end,
            records=records,
            events=events,
            before=before,
            snapshots=view.snapshots,
            missed=missed,
        )
        payload = digest_payload(digest, now=now, tz=d.schedule.tz)
        finished, failed, aborted = digest.totals
        log.info(
            "digest.sent",
            digest=d.spec.name,
            receiver=d.spec.receiver,
            period_start=iso(start),
            period_end=iso(end),
            missed=missed,
            finished=finished,
            failed=failed,
            aborted=aborted,
            printers=len(digest.printers),
        )
        event = digest_event_id(d.spec.name, end)
        return Delivery(
            id=delivery_id(event, f"digest:{d.spec.name}", d.spec.receiver),
            sink=d.spec.receiver,
            event_id=event,
            key=f"digest/{d.spec.name}",
            created_at=now,
            payload=payload,
        )
