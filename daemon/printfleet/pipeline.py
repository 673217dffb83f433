"""From poll cycles to persisted deliveries: events → rules → one atomic store commit.

For every cycle the pipeline builds the MQTT event deliveries (every event is published),
asks the rule engine for notifications, and commits the new snapshot, the deliveries and the
rule timers in one transaction. Only then are the outbox workers woken. A crash before the
commit re-detects the same changes on restart (the old snapshot is still stored); a crash
after it finds them in the outbox. Either way nothing detected is lost and nothing is
announced twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import structlog

from printfleet.clock import Clock
from printfleet.core.delivery import Delivery, delivery_id
from printfleet.core.digest import LoggedEvent, logged_events
from printfleet.core.events import ChangeEvent, to_cloudevent
from printfleet.core.fleet import AccountHealth, FleetView
from printfleet.core.history import HistoryChange, history_changes
from printfleet.core.model import Snapshot
from printfleet.core.rules.engine import Decision
from printfleet.errors import StoreError
from printfleet.observe import NULL_OBSERVER, Observer
from printfleet.poller import Cycle

#: Rule decisions that made a notification (logged as ``rule.matched``).
_MATCHED = frozenset({"fired", "log-only", "repeat", "resolved", "group-sent"})
#: Decisions that change what people hear later, logged at info as ``rule.<outcome>``.
_NOTABLE = frozenset({"acknowledged", "held"})


class StateStore(Protocol):
    """What the pipeline needs of the store (:class:`printfleet.store.Store` has this shape)."""

    def commit(
        self,
        *,
        snapshot: Snapshot | None = None,
        deliveries: Sequence[Delivery] = (),
        state: dict[str, Any] | None = None,
        history: Sequence[HistoryChange] = (),
        events: Sequence[LoggedEvent] = (),
    ) -> int: ...

    def load_state(self, key: str) -> Any | None: ...


class Digests(Protocol):
    """What the pipeline needs of the digests (:class:`printfleet.digests.DigestRunner`)."""

    def next_due(self) -> datetime | None: ...

    def collect(self, now: datetime, view: FleetView) -> tuple[list[Delivery], dict[str, Any]]: ...


class Rules(Protocol):
    """What the pipeline needs of the rule engine (``RuleEngine`` has this shape)."""

    def process(
        self, event: dict[str, Any], now: datetime, *, trace: list[Decision] | None = None
    ) -> list[Delivery]: ...

    def tick(self, now: datetime, *, trace: list[Decision] | None = None) -> list[Delivery]: ...

    def next_deadline(self) -> datetime | None: ...

    def state(self) -> dict[str, Any]: ...

    @property
    def matches(self) -> Mapping[str, int]: ...


@dataclass
class _Pending:
    """A commit that failed (disk full, I/O error), kept in memory until the store works again."""

    snapshots: dict[str, Snapshot] = field(default_factory=dict)
    deliveries: list[Delivery] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)
    history: list[HistoryChange] = field(default_factory=list)
    events: list[LoggedEvent] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.snapshots or self.deliveries or self.state or self.history or self.events)


class Pipeline:
    """Turns cycles into committed deliveries and keeps the shared :class:`FleetView`."""

    def __init__(
        self,
        *,
        store: StateStore,
        rules: Rules,
        clock: Clock,
        mqtt_prefix: str | None,
        mqtt_qos: int = 1,
        observer: Observer = NULL_OBSERVER,
        on_committed: Callable[[set[str]], None] = lambda sinks: None,
        on_view: Callable[[FleetView], None] = lambda view: None,
        on_event: Callable[[ChangeEvent], None] = lambda event: None,
        digests: Digests | None = None,
    ) -> None:
        self._store = store
        self._rules = rules
        self._clock = clock
        self._mqtt_prefix = mqtt_prefix
        self._mqtt_qos = mqtt_qos
        self._observer = observer
        self._on_committed = on_committed
        self._on_view = on_view
        self._on_event = on_event
        self._digests = digests
        self._view = FleetView()
        self._pending = _Pending()
        self._store_failing = False
        self._matches_seen: dict[str, int] = dict(rules.matches)
        self._log = structlog.get_logger("printfleet.pipeline")

    @property
    def view(self) -> FleetView:
        return self._view

    def seed(self, source: str, snapshot: Snapshot | None) -> None:
        """Make a restored snapshot visible (metrics, MQTT state) before the first poll."""
        if snapshot is not None:
            self._publish_view(
                self._view.with_source(source, snapshot=snapshot, health=AccountHealth())
            )

    def forget(self, source: str) -> None:
        """Take a removed source out of the view: its MQTT retained topics are cleared and its
        gauges vanish from /metrics. What the store holds of it stays (re-adding resumes)."""
        if source in self._view.snapshots or source in self._view.health:
            self._publish_view(self._view.without_source(source))

    async def handle(self, cycle: Cycle) -> None:
        """Process one poll cycle: events → deliveries → atomic commit → wake sinks."""
        now = self._clock.now()
        deliveries: list[Delivery] = []
        decisions: list[Decision] = []
        for event in cycle.events:
            envelope = to_cloudevent(event)
            if self._mqtt_prefix is not None:
                deliveries.append(self._mqtt_delivery(event, envelope, now))
            deliveries.extend(self._rules.process(envelope, now, trace=decisions))
        deliveries.extend(self._rules.tick(now, trace=decisions))
        self._count_matches()
        state = dict(cycle.state)
        state["rules"] = self._rules.state()
        persisted = self._commit(
            cycle.snapshot,
            deliveries,
            state,
            history=history_changes(cycle.events),
            events=logged_events(cycle.events),
        )
        # Announced only after the commit: an event logged as detected is then durable. A
        # kill -9 before the commit re-detects it from the stored snapshot after the restart,
        # unless the printer moved on meanwhile, so it must not have been announced yet.
        # When the store fails the deliveries wait in memory, and ``persisted`` says so.
        for event in cycle.events:
            self._announce(event, persisted)
        self._log_decisions(decisions, source=cycle.source)
        self._publish_view(
            self._view.with_source(cycle.source, snapshot=cycle.snapshot, health=cycle.health)
        )

    def _announce(self, event: ChangeEvent, persisted: bool) -> None:
        # The cycle is committed: an observer that raises must not make the poller think it
        # was not (it would diff against the older snapshot and announce the change twice).
        try:
            self._observer.event_emitted(event)
            self._on_event(event)
        except Exception as err:
            self._log.error(
                "event.announce_failed",
                error_type=type(err).__name__,
                id=event.id,
                exc_info=err,
            )
        # Named after the type (event.print.finished), so `grep '"event.print.'` finds them;
        # the prefix keeps them apart from log lines like source.recovered.
        self._log.info(
            f"event.{event.type.value}",
            type=event.type.value,
            source=event.source,
            subject=event.subject,
            id=event.id,
            print=event.print.name if event.print else None,
            persisted=persisted,
        )

    async def tick(self) -> None:
        """Fire due rule timers (hold-downs, repeats, grouped batches) and due digests."""
        now = self._clock.now()
        decisions: list[Decision] = []
        deliveries = self._rules.tick(now, trace=decisions)
        self._count_matches()
        digest_state: dict[str, Any] = {}
        if self._digests is not None:
            # In a thread: at 10,000 printers reading a day of history and events and
            # summing them takes a second or two, which the event loop (polls, deliveries)
            # should not wait for. The store serialises its own use; the view is immutable.
            digests, digest_state = await asyncio.to_thread(self._digests.collect, now, self._view)
            deliveries.extend(digests)
        # Read after the await: a poll may have committed newer rule state meanwhile, and
        # writing the copy taken before it would roll the engine back on a restart.
        state: dict[str, Any] = {"rules": self._rules.state(), **digest_state}
        # Any decision may have changed the engine's state (a hold-down that fired into a
        # hold silence sends nothing but must survive a restart), so persist it then too.
        if deliveries or self._pending or decisions or len(state) > 1:
            self._commit(None, deliveries, state)
        self._log_decisions(decisions)

    def _log_decisions(self, decisions: list[Decision], **context: str) -> None:
        """One ``rule.*`` line per rule decision: ``rule.matched`` (info) when a notification
        was made (sent, log-only, repeated, resolved, a group sent), ``rule.error`` (warning)
        when a ``when`` failed, ``rule.acknowledged`` / ``rule.held`` (info) when an ack kept
        a repeat back or a hold silence kept a notification for its summary, else
        ``rule.<outcome>`` at debug (throttled, silenced, pending, grouped, cancelled,
        duplicate)."""
        for d in decisions:
            fields = {"rule": d.rule, "subject": d.subject, "detail": d.detail, **context}
            if d.outcome in _MATCHED:
                self._log.info("rule.matched", outcome=d.outcome, **fields)
            elif d.outcome == "error":
                self._log.warning("rule.error", **fields)
            elif d.outcome in _NOTABLE:
                self._log.info(f"rule.{d.outcome}", **fields)
            else:
                self._log.debug(f"rule.{d.outcome}", **fields)

    async def run_timers(self, *, max_sleep: float = 30.0) -> None:
        """Tick the rule engine whenever a timer or a digest is due (runs until cancelled)."""
        while True:
            deadlines = [self._rules.next_deadline()]
            if self._digests is not None:
                deadlines.append(self._digests.next_due())
            deadline = min((d for d in deadlines if d is not None), default=None)
            now = self._clock.now()
            delay = max_sleep if deadline is None else (deadline - now).total_seconds()
            await self._clock.sleep(min(max(delay, 0.0), max_sleep))
            await self.tick()

    def _count_matches(self) -> None:
        """Report rule firings since the last call to the observer (rule_matches_total)."""
        for rule, count in self._rules.matches.items():
            for _ in range(count - self._matches_seen.get(rule, 0)):
                self._observer.rule_matched(rule)
            self._matches_seen[rule] = count

    def _mqtt_delivery(
        self, event: ChangeEvent, envelope: dict[str, Any], now: datetime
    ) -> Delivery:
        topic = f"{self._mqtt_prefix}/events/{event.type.topic_suffix}"
        return Delivery(
            id=delivery_id(event.id, "", "mqtt"),
            sink="mqtt",
            event_id=event.id,
            key=f"{event.source}/{event.subject}",
            created_at=now,
            payload={"event": envelope, "topic": topic, "qos": self._mqtt_qos, "retain": False},
        )

    def _commit(
        self,
        snapshot: Snapshot | None,
        deliveries: list[Delivery],
        state: dict[str, Any],
        *,
        history: Sequence[HistoryChange] = (),
        events: Sequence[LoggedEvent] = (),
    ) -> bool:
        """Commit what is pending plus this; ``False`` when the store failed (kept in memory)."""
        pending = self._pending
        # Kept to undo this call's additions when the store raises something unforeseen
        # (not a StoreError): such a failure comes from this cycle's data, and left pending
        # it would fail every later commit of every source too.
        before = _Pending(
            dict(pending.snapshots),
            list(pending.deliveries),
            dict(pending.state),
            list(pending.history),
            list(pending.events),
        )
        if snapshot is not None:
            pending.snapshots[snapshot.source] = snapshot
        pending.deliveries.extend(deliveries)
        pending.state.update(state)
        pending.history.extend(history)
        pending.events.extend(events)
        sinks: set[str] = set()
        committed = False
        try:
            snapshots: list[Snapshot | None] = [*pending.snapshots.values()] or [None]
            # Several snapshots only pile up after a store failure; commit them one by one,
            # deliveries, state and history with the first, so a partial success loses
            # nothing. (History records rest on the snapshot that showed the outcome; written
            # with an earlier one, a crash would re-detect them, and the key ignores them.)
            for index, snap in enumerate(snapshots):
                self._store.commit(
                    snapshot=snap,
                    deliveries=pending.deliveries if index == 0 else (),
                    state=pending.state if index == 0 else None,
                    history=pending.history if index == 0 else (),
                    events=pending.events if index == 0 else (),
                )
                if index == 0:
                    committed = True
                    sinks = {d.sink for d in pending.deliveries}
                    pending.deliveries = []
                    pending.state = {}
                    pending.history = []
                    pending.events = []
                if snap is not None:
                    del pending.snapshots[snap.source]
        except StoreError as err:
            self._store_trouble(err, pending)
            return False
        except Exception:
            if not committed:  # nothing of it was committed: forget this call's additions
                self._pending = before
            else:
                if snapshot is not None:
                    pending.snapshots.pop(snapshot.source, None)
                if sinks:
                    self._on_committed(sinks)
            raise
        if self._store_failing:
            self._log.info("store.recovered")
            self._store_failing = False
        if sinks:
            self._on_committed(sinks)
        return True

    def _store_trouble(self, err: StoreError, pending: _Pending) -> None:
        """Log a failing store once (until a commit succeeds again)."""
        if not self._store_failing:
            self._log.error(
                "store.commit_failed",
                error=str(err),
                pending_deliveries=len(pending.deliveries),
                hint="deliveries are kept in memory and committed when the store works again",
            )
        self._store_failing = True

    def _publish_view(self, view: FleetView) -> None:
        self._view = view
        try:
            self._on_view(view)
        except Exception as err:  # committed already; see _announce
            self._log.error("view.publish_failed", error_type=type(err).__name__, exc_info=err)
