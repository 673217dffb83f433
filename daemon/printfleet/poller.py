"""One polling loop per source: fetch, resolve, diff, hand over; keep the last good state.

The poller is the only place that turns fetch failures into ``source.*`` events: an outage
yields ``source.unreachable`` once and ``source.recovered`` once, and because the differ only
ever compares two *successful* snapshots, an outage can never look like printers going
offline. After recovery the next diff is against the last good snapshot, so exactly the real
differences since then are reported.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import structlog

from printfleet.clock import Clock
from printfleet.core.diff import carry_forward, diff, source_event, unresolved_prints
from printfleet.core.events import ChangeEvent, EventType
from printfleet.core.feed import FeedRecord, WitnessMemory, reconcile
from printfleet.core.fleet import AccountHealth
from printfleet.core.model import (
    Print,
    PrinterStatus,
    PrintStatus,
    Snapshot,
    frozen_mapping,
    without_raw,
)
from printfleet.core.polling import Budget, PollPolicy, is_due, next_poll, queue_delay
from printfleet.core.queues import apply_queues
from printfleet.core.thresholds import DiffSettings
from printfleet.errors import AuthFailed, BadResponse, RateLimited, SourceError
from printfleet.observe import NULL_OBSERVER, Observer
from printfleet.sources.base import PrintLookup, Source
from printfleet.supervisor import error_text


@dataclass(frozen=True, slots=True)
class Cycle:
    """What one poll cycle produced, handed to the pipeline in one piece.

    ``snapshot`` is ``None`` when the fetch failed (the last good one stays in force).
    ``state`` holds the poller's own keys to persist atomically with the snapshot.
    """

    source: str
    snapshot: Snapshot | None
    events: tuple[ChangeEvent, ...]
    health: AccountHealth
    state: dict[str, object]


CycleHandler = Callable[[Cycle], Awaitable[None]]

# How long to wait before retrying after the vendor rejected our credentials: they will not
# fix themselves quickly, and hammering the token endpoint helps nobody.
AUTH_RETRY_S = 300.0
#: An unknown status word is cut to this many characters in logs and metric labels (bounded).
UNKNOWN_VALUE_CHARS = 40
#: How many distinct unknown words one poller logs (each once); a vendor sending endless new
#: words is still counted, but no longer fills the log.
UNKNOWN_LOG_LIMIT = 100
FIELD_PRINTER_STATUS = "printer.status"
FIELD_PRINT_STATUS = "print.status"
#: ``printfleet_unknown_status_total{field=...}`` of a feed type the adapter does not know.
FIELD_EVENT_TYPE = "event.type"
FIELD_PRINT_RUN_SUCCESS = "print_run_success"


class SourcePoller:
    """Polls one source forever (until cancelled).

    Args:
        previous: the last good snapshot restored from the store (``None`` on first start).
        watermark: the history watermark restored from the store.
        outage: the open outage restored from the store (``state`` key ``outage:<source>``).
        feed_memory: what each witness (poll, feed) already reported, restored from the
            store (``state`` key ``feed:<source>``; see :mod:`printfleet.core.feed`).
        handle: called once per cycle; must persist the snapshot and deliveries atomically.
    """

    def __init__(
        self,
        source: Source,
        *,
        handle: CycleHandler,
        clock: Clock,
        policy: PollPolicy,
        diff_settings: DiffSettings,
        previous: Snapshot | None = None,
        watermark: datetime | None = None,
        observer: Observer = NULL_OBSERVER,
        outage: Mapping[str, Any] | None = None,
        feed_memory: Any = None,
    ) -> None:
        self._source = source
        self._handle = handle
        self._clock = clock
        self._policy = policy
        self._diff = diff_settings
        self._previous = previous
        self._watermark = watermark
        self._observer = observer
        self._health = AccountHealth(
            last_success_at=previous.taken_at if previous else None,
        )
        self._last_change_at: datetime | None = None
        self._last_history_at: datetime | None = None
        # Queues with endpoints of their own (Formlabs): when last read, and the wait until
        # the next read (``queue_delay``). ``_queues_inline``: the source's printer fetch
        # carries its queues (Carbon), so there is nothing to read or carry.
        self._last_queue_at: datetime | None = None
        self._queue_wait = policy.queue_interval
        self._queues_inline = False
        self._first_poll_at: float | None = None
        self._last_outcome: str | None = None
        # The open outage ({"since", "kind", "changes"}), persisted with every cycle that
        # changes it: a restart mid-outage still announces the recovery, and the event ids
        # (derived from "since") never repeat those of an earlier outage.
        self._outage: dict[str, Any] | None = dict(outage) if outage else None
        if self._outage is not None:
            self._health = replace(
                self._health, up=False, last_error=self._outage.get("kind"), consecutive_failures=1
            )
        self._log = structlog.get_logger("printfleet.poller").bind(source=source.name)
        self._unknown_logged: set[tuple[str, str]] = set()
        self._memory = WitnessMemory.from_state(feed_memory)
        self._memory_state = self._memory.to_state()

    @property
    def name(self) -> str:
        return self._source.name

    @property
    def previous(self) -> Snapshot | None:
        return self._previous

    @property
    def health(self) -> AccountHealth:
        return self._health

    @property
    def last_outcome(self) -> str | None:
        """How this process' latest poll ended: ``"ok"``, an error kind (``auth``,
        ``unavailable``, ``bad_response``), ``rate_limited`` or ``crashed``; ``None`` before
        the first. Unlike :attr:`health` it never comes from a stored outage."""
        return self._last_outcome

    async def run(self) -> None:
        """Poll until cancelled."""
        while True:
            delay = await self.poll_once()
            await self._clock.sleep(delay)

    async def poll_once(self) -> float:
        """Run one cycle; return the delay before the next one."""
        started = time.perf_counter()
        now = self._clock.now()
        if self._first_poll_at is None:
            self._first_poll_at = self._clock.monotonic()
        # What a cycle changes in the poller is only kept once the pipeline took the cycle:
        # a poll that crashes half-way must leave the poller as if it had not run.
        kept = self._kept()
        try:
            cycle = await self._fetch_cycle(now)
            await self._handle(cycle)
        except RateLimited as err:
            # Not an outage: the vendor asked us to slow down. Keep health as it is.
            self._observer.poll_done(self.name, time.perf_counter() - started, ok=False)
            self._observer.poll_failed(self.name, "rate_limited")
            self._last_outcome = "rate_limited"
            self._log.warning("poll.rate_limited", retry_after=err.retry_after)
            return max(err.retry_after, self._policy.active_interval.total_seconds())
        except SourceError as err:
            # A fetch that failed part-way (the queue read after the history read) must not
            # keep the history cursor it advanced: the next poll asks for that window again.
            self._restore(kept)
            self._observer.poll_done(self.name, time.perf_counter() - started, ok=False)
            self._observer.poll_failed(self.name, _error_kind(err))
            self._last_outcome = _error_kind(err)
            await self._handle_failure(self._failure_cycle(err, now), kept)
            if isinstance(err, AuthFailed):
                return AUTH_RETRY_S
            return self._policy.interval.total_seconds()
        except Exception as err:
            # Anything else is a bug or an input nobody foresaw (a mapper, the differ, the
            # store choking on one vendor value). It fails this poll of this source like a
            # response we could not understand; the daemon and the other sources go on.
            self._restore(kept)
            self._observer.poll_done(self.name, time.perf_counter() - started, ok=False)
            self._observer.poll_failed(self.name, "crashed")
            self._last_outcome = "crashed"
            message = error_text(err)
            self._log.error(
                "poll.crashed", error_type=type(err).__name__, message=message, exc_info=err
            )
            crash = BadResponse(self.name, f"unexpected {type(err).__name__}: {message}")
            await self._handle_failure(self._failure_cycle(crash, now), kept)
            return self._policy.interval.total_seconds()
        self._observer.poll_done(self.name, time.perf_counter() - started, ok=True)
        self._last_outcome = "ok"
        assert cycle.snapshot is not None
        self._previous = cycle.snapshot
        if any(not e.type.value.startswith("source.") for e in cycle.events):
            self._last_change_at = now
        status = self._source.budget()
        decision = next_poll(
            self._previous,
            now=self._clock.now(),
            last_change_at=self._last_change_at,
            policy=self._policy,
            budget=Budget(
                status.remaining,
                status.capacity,
                status.window_s,
                # The source's budget starts fresh with us: nothing it spends comes back
                # before one window has passed since our first poll.
                refill_in_s=max(
                    0.0, self._first_poll_at + status.window_s - self._clock.monotonic()
                ),
            ),
        )
        self._log.debug(
            "poll.done",
            printers=len(cycle.snapshot.printers),
            events=len(cycle.events),
            duration_s=round(time.perf_counter() - started, 3),
            next_poll_s=round(decision.delay_s, 1),
            budget_left=int(status.remaining),
        )
        return decision.delay_s

    def _kept(self) -> tuple[Any, ...]:
        return (
            self._outage,
            self._watermark,
            self._last_history_at,
            self._health,
            self._memory,
            self._memory_state,
            self._last_queue_at,
            self._queue_wait,
        )

    def _restore(self, kept: tuple[Any, ...]) -> None:
        (
            self._outage,
            self._watermark,
            self._last_history_at,
            self._health,
            self._memory,
            self._memory_state,
            self._last_queue_at,
            self._queue_wait,
        ) = kept

    async def _handle_failure(self, cycle: Cycle, kept: tuple[Any, ...]) -> None:
        """Hand a failure cycle on; if that fails too, forget the outage it opened, so the
        next failure announces it again (its ``source.unreachable`` is not lost)."""
        try:
            await self._handle(cycle)
        except BaseException:
            self._restore(kept)
            raise

    async def _fetch_cycle(self, now: datetime) -> Cycle:
        feed: Sequence[FeedRecord] = ()
        fetched = await self._source.fetch_printers()
        self._report_records(fetched)
        current = _keep_unreadable(self._previous, fetched)
        lookups = [
            PrintLookup(
                printer_serial=run.printer_serial or "",
                print_id=run.id,
                created_at=run.created_at,
                started_at=run.started_at,
            )
            for run in unresolved_prints(self._previous, current)
            if run.printer_serial
        ]
        history_due = self._previous is not None and is_due(
            self._last_history_at, now, self._policy.history_interval
        )
        if lookups or history_due:
            since = (
                (self._watermark or self._previous.taken_at)
                if history_due and self._previous
                else None
            )
            batch = await self._source.fetch_runs(since=since, lookups=lookups)
            feed = batch.feed
            if history_due:
                self._last_history_at = now
                if batch.watermark is not None:
                    self._watermark = batch.watermark
            if batch.runs or batch.skipped:
                runs = {**batch.runs, **current.runs}
                current = replace(current, runs=runs, skipped=current.skipped + batch.skipped)
        current = await self._with_queues(current, now)
        self._report_unknown(current)
        current = carry_forward(self._previous, current, now, self._diff)
        current = apply_queues(current)
        events: list[ChangeEvent] = []
        state: dict[str, object] = {}
        if self._outage is not None:
            events.append(
                source_event(
                    EventType.SOURCE_RECOVERED,
                    source=self.name,
                    vendor=self._source.vendor,
                    time=current.taken_at,
                    details={"after_failures": self._health.consecutive_failures},
                    sequence=self._outage["since"],
                )
            )
            self._log.info("source.recovered", failures=self._health.consecutive_failures)
            self._outage = None
            state[f"outage:{self.name}"] = None
        # The differ's events and the vendor feed's, each real change once (core.feed).
        merged = reconcile(
            diff(self._previous, current, now, self._diff),
            feed,
            self._memory,
            previous=self._previous,
            current=current,
            now=now,
        )
        events.extend(merged.events)
        self._memory = merged.memory
        memory_state = merged.memory.to_state()
        if memory_state != self._memory_state:
            state[f"feed:{self.name}"] = memory_state
            self._memory_state = memory_state
        self._report_unmapped(feed)
        for skipped in current.skipped:
            self._observer.record_skipped(self.name, skipped.kind)
        if current.skipped:
            self._log.warning(
                "poll.records_skipped",
                count=len(current.skipped),
                first=[f"{s.kind}:{s.record_id}: {s.reason}" for s in current.skipped[:3]],
            )
        self._health = AccountHealth(
            up=True,
            last_success_at=now,
            last_attempt_at=now,
            last_error=None,
            consecutive_failures=0,
        )
        if self._watermark is not None:
            state[f"watermark:{self.name}"] = self._watermark.isoformat()
        return Cycle(
            source=self.name,
            # The events keep the vendor records they were detected in; the kept state does not.
            snapshot=without_raw(current, self._previous),
            events=tuple(events),
            health=self._health,
            state=state,
        )

    async def _with_queues(self, current: Snapshot, now: datetime) -> Snapshot:
        """``current`` with the source's queues: read when due, else carried from the last
        snapshot. A failed queue read keeps the last queues (and is retried when next due):
        printer state was read fine, and a queue endpoint failing is no source outage."""
        if self._queues_inline:
            return current
        previous = self._previous.queues if self._previous is not None else current.queues
        if not is_due(self._last_queue_at, now, self._queue_wait):
            return replace(current, queues=previous)
        try:
            batch = await self._source.fetch_queues()
        except AuthFailed:
            raise  # the credentials themselves: the whole source is down
        except SourceError as err:
            # Including a 429: the printer state of this cycle is good and is kept; the
            # budget's pause then holds back the next fetches anyway.
            self._last_queue_at = now
            kind = "rate_limited" if isinstance(err, RateLimited) else _error_kind(err)
            self._log.warning("queue.fetch_failed", error=kind, message=str(err))
            return replace(current, queues=previous)
        if batch is None:
            self._queues_inline = True
            return current
        self._last_queue_at = now
        status = self._source.budget()
        self._queue_wait = queue_delay(
            self._policy,
            batch.requests,
            Budget(status.remaining, status.capacity, status.window_s),
        )
        self._log.info(
            "queue.polled",
            queues=len(batch.queues),
            items=sum(q.items for q in batch.queues.values()),
            requests=batch.requests,
            next_in_s=round(self._queue_wait.total_seconds()),
        )
        return replace(current, queues=batch.queues, skipped=current.skipped + batch.skipped)

    def _report_records(self, fetched: Snapshot) -> None:
        """Count the printer records read: each was reused unchanged or mapped."""
        reused = getattr(fetched, "reused", 0)
        records = len(fetched.printers) + sum(1 for s in fetched.skipped if s.kind == "printer")
        self._observer.records_polled(self.name, mapped=max(0, records - reused), reused=reused)

    def _report_unknown(self, fetched: Snapshot) -> None:
        """Count every status word the mappers did not know, and log each word once.

        Run on what the vendor sent this cycle (before prints are carried forward), so each
        record is counted once per poll it appears in.
        """
        for field, value in unknown_statuses(fetched):
            self._observer.unknown_status(self.name, field, value)
            key = (field, value)
            if key not in self._unknown_logged and len(self._unknown_logged) < UNKNOWN_LOG_LIMIT:
                self._unknown_logged.add(key)
                self._log.warning("source.unknown_status", field=field, value=value)

    def _report_unmapped(self, feed: Sequence[FeedRecord]) -> None:
        """Count every feed entry of a type the adapter does not know; log each type once."""
        for record in feed:
            if record.known:
                continue
            value = record.type[:UNKNOWN_VALUE_CHARS]
            self._observer.unknown_status(self.name, FIELD_EVENT_TYPE, value)
            key = (FIELD_EVENT_TYPE, value)
            if key not in self._unknown_logged and len(self._unknown_logged) < UNKNOWN_LOG_LIMIT:
                self._unknown_logged.add(key)
                self._log.warning(
                    "feed.unmapped_type",
                    value=value,
                    label=record.type_label[:UNKNOWN_VALUE_CHARS],
                    hint="passed on as vendor.event; please report the type",
                )

    def _failure_cycle(self, err: SourceError, now: datetime) -> Cycle:
        kind = _error_kind(err)
        events: Sequence[ChangeEvent] = ()
        state: dict[str, object] = {}
        if self._outage is None or kind != self._outage["kind"]:
            if self._outage is None:
                self._outage = {"since": now.isoformat(), "kind": kind, "changes": 0}
            else:
                changes = int(self._outage.get("changes", 0)) + 1
                self._outage = {**self._outage, "kind": kind, "changes": changes}
            state[f"outage:{self.name}"] = dict(self._outage)
            sequence = f"{self._outage['since']}:{self._outage['changes']}:{kind}"
            event_type = (
                EventType.SOURCE_AUTH_FAILED if kind == "auth" else EventType.SOURCE_UNREACHABLE
            )
            events = (
                source_event(
                    event_type,
                    source=self.name,
                    vendor=self._source.vendor,
                    time=now,
                    details={"error": kind, "message": str(err)},
                    sequence=sequence,
                ),
            )
            self._log.warning("source.down", error=kind, message=str(err))
        self._health = AccountHealth(
            up=False,
            last_success_at=self._health.last_success_at,
            last_attempt_at=now,
            last_error=kind,
            consecutive_failures=self._health.consecutive_failures + 1,
        )
        return Cycle(
            source=self.name, snapshot=None, events=tuple(events), health=self._health, state=state
        )


def unknown_statuses(snapshot: Snapshot) -> list[tuple[str, str]]:
    """``(field, raw word)`` for each printer and print in ``snapshot`` whose status word the
    mapper did not know (status UNKNOWN with a raw word), the word cut to
    :data:`UNKNOWN_VALUE_CHARS`. A status the vendor left out (raw ``""``) is not a word."""
    found: list[tuple[str, str]] = []
    for printer in snapshot.printers.values():
        if printer.status is PrinterStatus.UNKNOWN and printer.status_raw:
            found.append((FIELD_PRINTER_STATUS, printer.status_raw[:UNKNOWN_VALUE_CHARS]))
        run = printer.current_print
        if run is not None:
            _unknown_of_run(run, found)
    for run in snapshot.runs.values():
        _unknown_of_run(run, found)
    return found


def _unknown_of_run(run: Print, found: list[tuple[str, str]]) -> None:
    if run.status is PrintStatus.UNKNOWN and run.status_raw:
        found.append((FIELD_PRINT_STATUS, run.status_raw[:UNKNOWN_VALUE_CHARS]))
    if run.verdict_raw:
        found.append((FIELD_PRINT_RUN_SUCCESS, run.verdict_raw[:UNKNOWN_VALUE_CHARS]))


def _keep_unreadable(previous: Snapshot | None, current: Snapshot) -> Snapshot:
    """``current`` plus the last good state of known printers whose record was skipped.

    A record that cannot be read says nothing about its printer; without this the printer
    would drop out of the snapshot and be announced as removed.
    """
    if previous is None or not current.skipped:
        return current
    kept = {
        s.record_id: previous.printers[s.record_id]
        for s in current.skipped
        if s.kind == "printer"
        and s.record_id is not None
        and s.record_id in previous.printers
        and s.record_id not in current.printers
    }
    if not kept:
        return current
    return replace(current, printers=frozen_mapping({**current.printers, **kept}))


def _error_kind(err: SourceError) -> str:
    if isinstance(err, AuthFailed):
        return "auth"
    if isinstance(err, BadResponse):
        return "bad_response"
    return "unavailable"
