"""Outbox workers: one per sink, delivering what the store has queued, in order per printer.

A worker loops: take the due entries of its sink (at most one per ordering key, see
:meth:`Store.due <printfleet.store.Store.due>`), deliver them (different keys concurrently,
up to ``concurrency``), then record each outcome:

- delivered: removed from the outbox (the next entry of its key becomes due);
- ``DeliveryFailed`` retryable (network, 429, 5xx): rescheduled after a capped exponential
  backoff with full jitter, or exactly the receiver's ``Retry-After`` when it sent one;
- ``DeliveryFailed`` not retryable (4xx other than 429): dead-lettered with the response;
- older than ``max_age`` (since it was queued): dead-lettered as expired.

When a whole batch fails the sink is *failing*: the worker logs that once, sends one entry at a
time (a probe) and waits a sink-wide backoff (or Retry-After) between probes, so an outage with
a large backlog does not hammer the receiver. The first success logs the recovery once and makes
every waiting entry due again.

Between batches the worker sleeps on the clock until the next entry is due, or until
:meth:`OutboxWorker.wake` says new deliveries were committed (and at least every
``idle_poll`` seconds, to notice changes made by ``printfleet outbox replay`` in another process).
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from datetime import timedelta
from typing import Final

import structlog

from printfleet.clock import Clock
from printfleet.core.backoff import backoff, clamp_wait
from printfleet.errors import DeliveryFailed, StoreError
from printfleet.observe import NULL_OBSERVER, Observer
from printfleet.sinks.base import Sink
from printfleet.store import OutboxEntry, Store
from printfleet.supervisor import error_text

log = structlog.get_logger("printfleet.outbox")

BATCH_SIZE: Final = 100


class OutboxWorker:
    """Delivers one sink's queued entries until cancelled (see the module docstring).

    Args:
        store: where entries are queued.
        sink: the (entered) sink to deliver to; ``sink.name`` selects the entries.
        clock: all waiting happens on it.
        observer: told ``delivery_done(sink, "ok" | "retry" | "dead")`` after each attempt.
        max_age: entries queued longer ago than this are dead-lettered as expired.
        backoff_base, backoff_cap: seconds; the exponential backoff's start and ceiling.
        concurrency: how many entries (of different keys) are in flight at once.
        rng: the jitter's random source (seed it in tests).
        idle_poll: longest sleep between looks at the table while idle, in seconds.
        batch_size: most entries taken per batch.
    """

    def __init__(
        self,
        store: Store,
        sink: Sink,
        *,
        clock: Clock,
        observer: Observer = NULL_OBSERVER,
        max_age: timedelta = timedelta(hours=24),
        backoff_base: float = 1.0,
        backoff_cap: float = 300.0,
        concurrency: int = 4,
        rng: random.Random | None = None,
        idle_poll: float = 30.0,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._store = store
        self._sink = sink
        self._name = sink.name
        self._clock = clock
        self._observer = observer
        self._max_age = max_age
        self._base = backoff_base
        self._cap = backoff_cap
        self._concurrency = concurrency
        self._rng = rng or random.Random()
        self._idle_poll = idle_poll
        self._batch_size = batch_size
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()
        self._waiting = False
        self._waiting_until: float | None = None
        self._hold_until = 0.0  # monotonic; no attempt before (Retry-After, failing sink)
        self._failing = False
        self._sink_failures = 0
        self._store_failing = False
        self._store_failures = 0
        self._draining = False
        self._run_task: asyncio.Task[None] | None = None
        self.delivered_total = 0

    @property
    def failing(self) -> bool:
        """Whether the last batch failed entirely (the sink is being probed)."""
        return self._failing

    def wake(self) -> None:
        """New deliveries were committed: look at the table now instead of at the next due time."""
        self._wake.set()

    async def run(self) -> None:
        """Deliver until cancelled (or, after :meth:`drain` began, until nothing is due)."""
        if self._run_task is not None:
            raise RuntimeError(f"the outbox worker of {self._name!r} is already running")
        if self._draining:
            # A supervisor restarting us during shutdown: drain() runs its own loop, and two
            # loops would deliver the same entries twice and out of order.
            return
        self._run_task = asyncio.current_task()
        try:
            await self._loop()
        finally:
            self._run_task = None
            self._set_waiting(None, waiting=False)

    async def drain(self, timeout: float) -> None:  # noqa: ASYNC109 (clock time)
        """Deliver what is due now for at most ``timeout`` seconds (clock time), then stop.

        Stops :meth:`run` if it is running (after its in-flight deliveries, or when the time is
        up, cancelling them). Whatever is not delivered stays persisted for the next start.
        """
        self._draining = True
        self._wake.set()
        task = self._run_task
        if task is None:
            task = asyncio.create_task(self._loop(), name=f"outbox-drain-{self._name}")
        timer = asyncio.create_task(self._clock.sleep(max(0.0, timeout)))
        try:
            await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            if not task.done():
                task.cancel()
            await asyncio.gather(task, timer, return_exceptions=True)
        try:
            left = self._store.pending_count(self._name)[self._name]
        except StoreError:
            left = -1
        log.info(
            "outbox.drained",
            sink=self._name,
            delivered=self.delivered_total,
            pending=left,
            timed_out=not task.done() or task.cancelled(),
        )

    async def wait_idle(self) -> None:
        """Return once the worker waits with nothing due now and no wake-up pending.

        For tests and diagnostics: after ``clock.advance`` or ``wake``, this returns only once
        the worker has handled what became due.
        """
        while not self._is_idle():
            self._changed.clear()
            await self._changed.wait()

    # -- the loop ----------------------------------------------------------------------------

    def _is_idle(self) -> bool:
        if not self._waiting or self._wake.is_set():
            return False
        return self._waiting_until is None or self._clock.monotonic() < self._waiting_until

    def _set_waiting(self, until: float | None, *, waiting: bool) -> None:
        self._waiting = waiting
        self._waiting_until = until
        self._changed.set()

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            hold = self._hold_until - self._clock.monotonic()
            if hold > 0:
                if self._draining:
                    return
                await self._idle(hold)
                continue
            try:
                limit = 1 if self._failing else self._batch_size
                entries = self._store.due(self._name, self._clock.now(), limit)
                next_due = None if entries else self._store.next_due_at(self._name)
            except StoreError as err:
                self._store_trouble(err)
                self._store_failures += 1
                pause = backoff(self._store_failures, base=self._base, cap=self._cap, rng=self._rng)
                self._hold_until = self._clock.monotonic() + max(pause, self._base)
                continue
            if entries:
                await self._deliver_batch(entries)
                continue
            if self._draining:
                return
            wait: float | None = None
            if next_due is not None:
                wait = max(0.0, (next_due - self._clock.now()).total_seconds())
            await self._idle(wait)

    async def _idle(self, delay: float | None) -> None:
        """Wait for ``delay`` seconds (``None``: no deadline) or a wake-up, capped by idle_poll."""
        delay = self._idle_poll if delay is None else min(delay, self._idle_poll)
        until = self._clock.monotonic() + delay
        self._set_waiting(until, waiting=True)
        woken = asyncio.ensure_future(self._wake.wait())
        timer = asyncio.ensure_future(self._sleep_until(until))
        try:
            await asyncio.wait({woken, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (woken, timer):
                task.cancel()
            await asyncio.gather(woken, timer, return_exceptions=True)
            self._set_waiting(None, waiting=False)

    async def _sleep_until(self, deadline: float) -> None:
        # The delay is computed when the sleep starts, not when it was scheduled, so a clock
        # that moved meanwhile cannot push the wake-up past the deadline.
        await self._clock.sleep(deadline - self._clock.monotonic())

    def _store_trouble(self, err: StoreError) -> None:
        """Log the store failing once (until a batch is recorded without store errors)."""
        if not self._store_failing:
            self._store_failing = True
            log.error(
                "outbox.store_failed",
                sink=self._name,
                error=str(err),
                hint="undelivered entries stay pending; delivered ones may be sent again",
            )

    async def _deliver_batch(self, entries: list[OutboxEntry]) -> None:
        started = self._clock.monotonic()
        outcomes: Counter[str] = Counter()
        waits: list[float] = []
        limiter = asyncio.Semaphore(self._concurrency)

        async def one(entry: OutboxEntry) -> None:
            async with limiter:
                outcome, retry_after = await self._attempt(entry)
            outcomes[outcome] += 1
            if retry_after is not None:
                waits.append(retry_after)

        async with asyncio.TaskGroup() as group:
            for entry in entries:
                group.create_task(one(entry))
        self.delivered_total += outcomes["ok"]
        log.info(
            "outbox.batch",
            sink=self._name,
            delivered=outcomes["ok"],
            retried=outcomes["retry"],
            dead=outcomes["dead"],
            expired=outcomes["expired"],
            store_errors=outcomes["store_error"],
            seconds=round(self._clock.monotonic() - started, 3),
        )
        self._after_batch(outcomes, waits)

    def _after_batch(self, outcomes: Counter[str], waits: list[float]) -> None:
        now = self._clock.monotonic()
        if outcomes["store_error"]:
            self._store_failures += 1
            delay = backoff(self._store_failures, base=self._base, cap=self._cap, rng=self._rng)
            self._hold_until = max(self._hold_until, now + max(delay, self._base))
        else:
            self._store_failures = 0
            if self._store_failing:
                self._store_failing = False
                log.info("outbox.store_recovered", sink=self._name)
        if outcomes["ok"]:
            if self._failing:
                self._failing = False
                log.info(
                    "outbox.sink_recovered", sink=self._name, failed_batches=self._sink_failures
                )
                try:
                    self._store.expedite(self._name)
                except StoreError as err:
                    log.warning("outbox.expedite_failed", sink=self._name, error=str(err))
            self._sink_failures = 0
        elif outcomes["retry"]:
            self._sink_failures += 1
            if not self._failing:
                self._failing = True
                log.warning("outbox.sink_failing", sink=self._name)
            if not waits:
                delay = backoff(self._sink_failures, base=self._base, cap=self._cap, rng=self._rng)
                self._hold_until = max(self._hold_until, now + delay)
        if waits:  # Retry-After wins: no attempt to this sink before the receiver said so
            self._hold_until = max(self._hold_until, now + max(waits))

    async def _attempt(self, entry: OutboxEntry) -> tuple[str, float | None]:
        """Deliver one entry and record the outcome; returns it and any Retry-After."""
        delivery = entry.delivery
        try:
            if self._clock.now() - entry.enqueued_at > self._max_age:
                self._store.dead_letter(
                    delivery.id,
                    error=_expired(entry, entry.last_error),
                    response=entry.response,
                    attempted=False,
                )
                self._observer.delivery_done(self._name, "dead")
                log.warning(
                    "outbox.expired", sink=self._name, delivery=delivery.id, attempts=entry.attempt
                )
                return "expired", None
            try:
                await self._sink.deliver(delivery)
            except DeliveryFailed as err:
                return self._failed(entry, err)
            except Exception as err:  # a bug in a sink must not stop the worker
                message = error_text(err)
                log.error(
                    "delivery.crashed",
                    sink=self._name,
                    delivery=delivery.id,
                    error_type=type(err).__name__,
                    message=message,
                    exc_info=err,
                )
                # Retried like a network failure, so a sink bug that only some payloads
                # trigger ends in the dead-letter table (max_age) instead of stopping the sink.
                return self._failed(
                    entry,
                    DeliveryFailed(
                        self._name, f"unexpected {type(err).__name__}: {message}", retryable=True
                    ),
                )
            self._store.mark_delivered(delivery.id)
            self._observer.delivery_done(self._name, "ok")
            log.debug(
                "delivery.sent",
                sink=self._name,
                delivery=delivery.id,
                event_id=delivery.event_id,
                attempt=entry.attempt + 1,
            )
            return "ok", None
        except StoreError as err:
            self._store_trouble(err)
            return "store_error", None

    def _failed(self, entry: OutboxEntry, err: DeliveryFailed) -> tuple[str, float | None]:
        delivery = entry.delivery
        message = _error_text(err)
        if not err.retryable:
            self._store.dead_letter(delivery.id, error=message, response=err.response)
            self._observer.delivery_done(self._name, "dead")
            log.warning(
                "outbox.dead_lettered",
                sink=self._name,
                delivery=delivery.id,
                event_id=delivery.event_id,
                status=err.status,
                error=message,
            )
            return "dead", None
        now = self._clock.now()
        if now - entry.enqueued_at >= self._max_age:
            self._store.dead_letter(
                delivery.id, error=_expired(entry, message, attempt=1), response=err.response
            )
            self._observer.delivery_done(self._name, "dead")
            log.warning(
                "outbox.expired", sink=self._name, delivery=delivery.id, attempts=entry.attempt + 1
            )
            return "expired", None
        if err.retry_after is not None:
            # Clamped again here: a sink of any kind may report any float.
            delay = clamp_wait(err.retry_after) or 0.0
        else:
            delay = backoff(entry.attempt + 1, base=self._base, cap=self._cap, rng=self._rng)
        self._store.reschedule(delivery.id, due_at=now + timedelta(seconds=delay), error=message)
        self._observer.delivery_done(self._name, "retry")
        log.debug(
            "delivery.retry_scheduled",
            sink=self._name,
            delivery=delivery.id,
            attempt=entry.attempt + 1,
            retry_in_s=round(delay, 1),
            error=message,
        )
        return "retry", delay if err.retry_after is not None else None


def _error_text(err: DeliveryFailed) -> str:
    return (
        err.message
        if err.status is None or str(err.status) in err.message
        else (f"HTTP {err.status}: {err.message}")
    )


def _expired(entry: OutboxEntry, last_error: str | None, attempt: int = 0) -> str:
    attempts = entry.attempt + attempt
    text = f"expired after {attempts} attempt{'s' if attempts != 1 else ''}"
    return f"{text}; last error: {last_error}" if last_error else text
