"""The rule engine: maps each event to the deliveries its rules decide, holding their timers.

One notification passes the steps of Alertmanager's pipeline, in its order: throttled (a
recent send for the same rule and subject) -> silenced (dropped, or held by a ``hold``
silence for its summary, :mod:`~printfleet.core.rules.holds`) -> deliveries (log only, or
group, render and fan out to each receiver and the rule's MQTT topic). Repeats of a condition
an :class:`~printfleet.core.rules.acks.Ack` covers are not sent (``acknowledged``). Each step
is one method of :class:`RuleEngine` (``_is_throttled``, ``_is_silenced``, ``_deliveries``,
``_fan_out``; acks and holds: ``_ack_for``, ``_hold``, ``_release_holds``).

One file at about 800 lines: conditions, timers, throttle windows and batches are one state
machine that every entry point changes, and splitting it would share its tables across modules.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any, Literal

from printfleet.core.delivery import Delivery, delivery_id
from printfleet.core.model import iso
from printfleet.core.rules.acks import Ack
from printfleet.core.rules.holds import HeldItem, Hold, restore_holds, summary_payload
from printfleet.core.rules.model import EVENT_TYPES, RESOLUTIONS, Rule, RuleSet
from printfleet.core.rules.names import alert_cleared, event_names, lookup
from printfleet.core.rules.records import Batch, Cond, Occurrence
from printfleet.core.rules.state import dump_state, restore_state
from printfleet.core.rules.windows import Silence, silence_fields
from printfleet.core.rules.wording import NO_VALUE, render_group, render_notification, safe_render

Outcome = Literal[
    "fired",
    "log-only",
    "pending",
    "grouped",
    "group-sent",
    "repeat",
    "resolved",
    "cancelled",
    "throttled",
    "silenced",
    "held",
    "acknowledged",
    "duplicate",
    "error",
]


@dataclass(frozen=True, slots=True)
class Decision:
    """What the engine decided for one rule and subject (collected when a ``trace`` is given)."""

    at: datetime
    rule: str
    subject: str
    outcome: Outcome
    detail: str = ""
    #: The rendered notification of a log-only rule (nothing else shows it), for ``rules test``.
    title: str | None = None
    text: str | None = None


@dataclass(frozen=True, slots=True)
class RuleCounters:
    """Cumulative counts per rule name since the engine started."""

    matched: Mapping[str, int]
    notified: Mapping[str, int]
    silenced: Mapping[str, int]
    throttled: Mapping[str, int]
    errors: Mapping[str, int]
    held: Mapping[str, int] = field(default_factory=dict)
    acknowledged: Mapping[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Run:
    """What one process/tick call collects."""

    now: datetime
    silences: Sequence[Silence]
    trace: list[Decision] | None
    out: list[Delivery] = field(default_factory=list)

    def note(
        self,
        rule: str,
        subject: str,
        outcome: Outcome,
        detail: str = "",
        *args: object,
        rendered: tuple[str, str] | None = None,
    ) -> None:
        """Record a decision; ``detail`` is formatted with ``args`` only when tracing."""
        if self.trace is not None:
            if args:
                detail = detail.format(*(iso(a) if isinstance(a, datetime) else a for a in args))
            title, text = rendered if rendered is not None else (None, None)
            self.trace.append(Decision(self.now, rule, subject, outcome, detail, title, text))


_PRUNE_EVERY = timedelta(minutes=5)


class RuleEngine:
    """Maps events to deliveries; holds timers, throttle windows, firing state and batches.

    Single-threaded: call from one task. Every call takes ``now``; :meth:`process` first fires
    whatever fell due before ``now`` (so a late tick cannot let a recovery cancel a hold-down
    that had already elapsed). Persist :meth:`state` after every call that returned
    deliveries or changed timers (cheap to call).
    """

    def __init__(
        self,
        rules: RuleSet,
        *,
        state: Mapping[str, Any] | None = None,
        silences: Sequence[Silence] = (),
        acks: Sequence[Ack] = (),
    ) -> None:
        self._set_rules(rules)
        self._adhoc: tuple[Silence, ...] = tuple(silences)
        self._acks: tuple[Ack, ...] = tuple(acks)
        self._holds: dict[str, Hold] = {}
        self._conds: dict[tuple[str, str, str, str, str], Cond] = {}
        self._batches: dict[tuple[str, str, tuple[str, ...]], Batch] = {}
        self._throttle: dict[tuple[str, str, str], datetime] = {}
        self._timers: list[tuple[datetime, int, str, tuple[Any, ...]]] = []
        self._seq = itertools.count()
        self._now: datetime | None = None
        self._next_prune: datetime | None = None
        self._matched: dict[str, int] = {}
        self._notified: dict[str, int] = {}
        self._silenced: dict[str, int] = {}
        self._throttled: dict[str, int] = {}
        self._errors: dict[str, int] = {}
        self._held: dict[str, int] = {}
        self._acknowledged: dict[str, int] = {}
        if state:
            self._load(state)

    # -- configuration ----------------------------------------------------------------------

    def _set_rules(self, rules: RuleSet) -> None:
        self.rules = rules
        self._rules = {r.name: r for r in rules.rules}
        by_type: dict[str, list[Rule]] = {t: [] for t in EVENT_TYPES}
        resolvers: dict[str, list[Rule]] = {t: [] for t in RESOLUTIONS}
        for rule in rules.rules:
            for t in EVENT_TYPES:
                if t in rule.types:
                    by_type[t].append(rule)
            if rule.stateful:
                for resolving, resolved in RESOLUTIONS.items():
                    if rule.types.intersection(resolved):
                        resolvers[resolving].append(rule)
        self._by_type = {t: tuple(rs) for t, rs in by_type.items() if rs}
        self._resolvers = {t: tuple(rs) for t, rs in resolvers.items() if rs}

    def replace_rules(self, rules: RuleSet) -> None:
        """Switch to a new rule set (SIGHUP), keeping state of rules that still exist.

        Pending hold-downs of a kept rule are re-timed with its new ``for``; firing state is
        kept where the rule still resolves or repeats; state of removed rules is dropped.
        """
        state = self.state()
        self._set_rules(rules)
        self._conds.clear()
        self._batches.clear()
        self._throttle.clear()
        self._timers.clear()
        self._holds.clear()
        self._load(state)

    def set_silences(self, silences: Sequence[Silence]) -> None:
        """Replace the ad-hoc silences (from the state store) applied on every call."""
        self._adhoc = tuple(silences)

    def set_acks(self, acks: Sequence[Ack]) -> None:
        """Replace the acknowledgements (from the state store) applied to repeats."""
        self._acks = tuple(acks)

    # -- metrics ----------------------------------------------------------------------------

    @property
    def matches(self) -> Mapping[str, int]:
        """Cumulative matches per rule (``printfleet_rule_matches_total{rule}``)."""
        return MappingProxyType(self._matched)

    @property
    def counters(self) -> RuleCounters:
        """A copy of all cumulative counters."""
        return RuleCounters(
            matched=dict(self._matched),
            notified=dict(self._notified),
            silenced=dict(self._silenced),
            throttled=dict(self._throttled),
            errors=dict(self._errors),
            held=dict(self._held),
            acknowledged=dict(self._acknowledged),
        )

    # -- entry points -----------------------------------------------------------------------

    def process(
        self,
        event: Mapping[str, Any],
        now: datetime,
        *,
        silences: Sequence[Silence] = (),
        trace: list[Decision] | None = None,
    ) -> list[Delivery]:
        """Deliveries caused by ``event`` at ``now`` (plus timers that fell due before it).

        ``silences`` are added to the rule set's and the ad-hoc ones for this call. When
        ``trace`` is a list, a :class:`Decision` is appended for every rule decision.
        """
        run = self._begin(now, silences, trace)
        self._run_due(run)
        self._release_holds(run)
        occ = Occurrence(event)
        clearing = occ.type == "printer.alert" and alert_cleared(occ.data)
        if (occ.type != "printer.alert" or clearing) and occ.type in self._resolvers:
            resolved = RESOLUTIONS[occ.type]
            wildcard = occ.type == "printer.removed"
            for rule in self._resolvers[occ.type]:
                for etype in resolved:
                    if etype in rule.types:
                        self._resolve(rule, occ, etype, None if wildcard else occ.disc, run)
        if clearing:
            return run.out
        for rule in self._by_type.get(occ.type, ()):
            if rule.when is None:
                matched: bool | None = True
            else:
                try:
                    matched = bool(rule.when(occ.names))
                except Exception as err:  # a data-dependent failure must not stop the others
                    matched = None
                    self._errors[rule.name] = self._errors.get(rule.name, 0) + 1
                    run.note(rule.name, occ.subject, "error", f"when: {type(err).__name__}: {err}")
            if matched:
                self._matched[rule.name] = self._matched.get(rule.name, 0) + 1
                self._trigger(rule, occ, run)
            elif matched is False and rule.stateful:
                self._resolve(rule, occ, occ.type, occ.disc, run)
        return run.out

    def tick(
        self,
        now: datetime,
        *,
        silences: Sequence[Silence] = (),
        trace: list[Decision] | None = None,
    ) -> list[Delivery]:
        """Fire everything due at ``now``: hold-downs, repeats and grouped batches."""
        run = self._begin(now, silences, trace)
        self._run_due(run)
        self._release_holds(run)
        self._prune_throttle(now)
        return run.out

    def next_deadline(self) -> datetime | None:
        """When :meth:`tick` next has something to do (``None``: nothing scheduled)."""
        while self._timers and not self._timer_valid(self._timers[0]):
            heapq.heappop(self._timers)
        deadline = self._timers[0][0] if self._timers else None
        release = self.next_release()
        if release is not None and (deadline is None or release < deadline):
            return release
        return deadline

    # -- conditions -------------------------------------------------------------------------

    def _begin(
        self, now: datetime, silences: Sequence[Silence], trace: list[Decision] | None
    ) -> _Run:
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware (UTC)")
        self._now = now
        active = (*self.rules.silences, *self._adhoc, *silences)
        return _Run(now=now, silences=active, trace=trace)

    def _trigger(self, rule: Rule, occ: Occurrence, run: _Run) -> None:
        if not rule.stateful:
            self._notify(rule, "firing", occ, run)
            return
        key = (rule.name, occ.source, occ.subject, occ.type, occ.disc)
        if key in self._conds:
            run.note(rule.name, occ.subject, "duplicate", "already {}", self._conds[key].phase)
            return
        cond = Cond(
            rule=rule.name,
            source=occ.source,
            subject=occ.subject,
            type=occ.type,
            disc=occ.disc,
            phase="pending",
            since=run.now,
            due=None,
            event=occ.event,
        )
        if rule.hold > timedelta(0):
            cond.due = run.now + rule.hold
            self._conds[key] = cond
            self._schedule_cond(cond)
            run.note(rule.name, occ.subject, "pending", "fires at {} unless resolved", cond.due)
        else:
            self._fire(rule, cond, run.now, run, occ=occ)

    def _fire(
        self,
        rule: Rule,
        cond: Cond,
        at: datetime,
        run: _Run,
        *,
        occ: Occurrence | None = None,
    ) -> None:
        notified = self._notify(rule, "firing", occ or Occurrence(cond.event), run, at=at)
        if rule.resolve or rule.repeat is not None:
            cond.phase = "firing"
            cond.notified = notified
            cond.since = at
            cond.due = None
            if rule.repeat is not None:
                cond.due = at + rule.repeat
                if cond.due <= run.now:  # fired late (restart): no burst of catch-up repeats
                    cond.due = run.now + rule.repeat
            self._conds[cond.key] = cond
            self._schedule_cond(cond)
        else:
            self._conds.pop(cond.key, None)

    def _resolve(
        self, rule: Rule, occ: Occurrence, etype: str, disc: str | None, run: _Run
    ) -> None:
        if disc is None:
            keys = [
                k
                for k in self._conds
                if k[0] == rule.name
                and k[1] == occ.source
                and k[2] == occ.subject
                and k[3] == etype
            ]
        else:
            keys = [(rule.name, occ.source, occ.subject, etype, disc)]
        for key in keys:
            cond = self._conds.pop(key, None)
            if cond is None:
                continue
            if cond.phase == "pending":
                run.note(rule.name, occ.subject, "cancelled", "{} before the hold-down", occ.type)
            elif self._unhold(key):
                # Held and never sent: nobody needs the firing nor the resolved notice.
                run.note(rule.name, occ.subject, "resolved", "taken out of the held summary")
            elif rule.resolve and cond.notified:
                # Sent before the hold (only reminders were held): the resolved notice is
                # news, and is held itself while the silence lasts.
                self._notify(rule, "resolved", occ, run, render=Occurrence(cond.event))
            else:
                run.note(rule.name, occ.subject, "resolved", "no resolved notice")

    # -- notifications ----------------------------------------------------------------------

    def _notify(
        self,
        rule: Rule,
        status: Literal["firing", "resolved"],
        occ: Occurrence,
        run: _Run,
        *,
        render: Occurrence | None = None,
        at: datetime | None = None,
        repeat: int = 0,
    ) -> bool:
        """Throttle, silence, then send (or batch) one notification; True when not dropped.

        ``occ`` is the event the notification is about (for ``resolved``: the resolving
        event); its wording comes from ``render`` (the firing event) when given.
        """
        at = at or run.now
        wording = render or occ
        if rule.severity is not None:
            severity = rule.severity.value
        else:
            severity = str(wording.data.get("severity") or "info")
        throttles = status == "firing" and repeat == 0 and rule.throttle is not None
        if throttles and self._is_throttled(rule, occ, at, run):
            return False
        silence = self._is_silenced(rule, occ, wording, severity, at, run)
        if silence is not None and not silence.hold:
            return False
        if throttles:
            self._throttle[(rule.name, occ.source, occ.subject)] = at
        if silence is not None:
            self._held[rule.name] = self._held.get(rule.name, 0) + 1
        else:
            self._notified[rule.name] = self._notified.get(rule.name, 0) + 1
        self._deliveries(
            rule, status, occ, wording, severity, at, run, render, repeat, hold=silence
        )
        return True

    def _is_throttled(self, rule: Rule, occ: Occurrence, at: datetime, run: _Run) -> bool:
        """Whether the rule already notified about this subject within its ``throttle``."""
        last = self._throttle.get((rule.name, occ.source, occ.subject))
        if rule.throttle is None or last is None or at >= last + rule.throttle:
            return False
        self._throttled[rule.name] = self._throttled.get(rule.name, 0) + 1
        run.note(rule.name, occ.subject, "throttled", "last sent {}", last)
        return True

    def _is_silenced(
        self,
        rule: Rule,
        occ: Occurrence,
        wording: Occurrence,
        severity: str,
        at: datetime,
        run: _Run,
    ) -> Silence | None:
        """The active silence matching the notification, if any (counted and traced if it
        drops it). A dropping silence wins over a ``hold`` one; a hold only applies to rules
        with receivers (nothing else could be summarised)."""
        if not run.silences:
            return None
        fields = silence_fields(wording.names, rule.name, severity)
        holding: Silence | None = None
        for silence in run.silences:
            if silence.matches(fields) and silence.active(at):
                if silence.hold and rule.notify:
                    holding = holding or silence
                    continue
                self._silenced[rule.name] = self._silenced.get(rule.name, 0) + 1
                run.note(rule.name, occ.subject, "silenced", "by silence {}", silence.id)
                return silence
        return holding

    def _deliveries(
        self,
        rule: Rule,
        status: Literal["firing", "resolved"],
        occ: Occurrence,
        wording: Occurrence,
        severity: str,
        at: datetime,
        run: _Run,
        render: Occurrence | None,
        repeat: int,
        *,
        hold: Silence | None = None,
    ) -> None:
        """What a notification that got through becomes: log only, a batch member, deliveries
        (or, under a ``hold`` silence, a held item plus the rule's MQTT publish)."""
        status_id = status if repeat == 0 else f"repeat-{repeat}"
        if hold is not None:
            self._hold(rule, status, occ, wording, severity, at, run, hold, repeat)
            if rule.mqtt is None:
                return
        if not rule.notify and rule.mqtt is None:  # log-only: render only for a trace
            if run.trace is not None:
                title, text = render_notification(rule, wording.names, status)
                outcome: Outcome = "resolved" if status == "resolved" else "log-only"
                run.note(
                    rule.name,
                    occ.subject,
                    outcome,
                    f"log only: '{title}'",
                    rendered=(title, text),
                )
            return
        grouped = bool(rule.group_by and rule.notify)
        if grouped and hold is None:
            self._join_batch(rule, status, occ, wording, status_id, at, run)
            if rule.mqtt is None:
                return
        title, text = render_notification(rule, wording.names, status)
        base: dict[str, Any] = {
            "event": dict(occ.event),
            "status": status,
            "rule": rule.name,
            "severity": severity,
            "title": title,
            "text": text,
        }
        if repeat:
            base["repeat"] = repeat
        if render is not None:
            base["resolves"] = render.id
        receivers = not grouped and hold is None
        self._fan_out(rule, occ, wording, base, status_id, run, receivers=receivers)
        if run.trace is not None and receivers:
            outcome = "repeat" if repeat else "resolved" if status == "resolved" else "fired"
            targets = [*rule.notify, *(["mqtt"] if rule.mqtt else [])]
            run.note(rule.name, occ.subject, outcome, f"to {', '.join(targets)}")

    def _fan_out(
        self,
        rule: Rule,
        occ: Occurrence,
        wording: Occurrence,
        base: dict[str, Any],
        status_id: str,
        run: _Run,
        *,
        receivers: bool,
    ) -> None:
        """One delivery for the rule's MQTT topic and (unless grouped) one per receiver."""
        key = f"{occ.source}/{occ.subject}"
        if rule.mqtt is not None:
            topic = safe_render(rule.mqtt.topic, wording.names, f"{rule.name}/{occ.subject}")
            run.out.append(
                Delivery(
                    id=delivery_id(occ.id, rule.name, "mqtt", status_id),
                    sink="mqtt",
                    event_id=occ.id,
                    key=key,
                    created_at=run.now,
                    payload={
                        **base,
                        "topic": topic,
                        "retain": rule.mqtt.retain,
                        "qos": rule.mqtt.qos,
                    },
                )
            )
        if not receivers:
            return
        for receiver in rule.notify:
            run.out.append(
                Delivery(
                    id=delivery_id(occ.id, rule.name, receiver, status_id),
                    sink=receiver,
                    event_id=occ.id,
                    key=key,
                    created_at=run.now,
                    payload=base,
                )
            )

    def _join_batch(
        self,
        rule: Rule,
        status: Literal["firing", "resolved"],
        occ: Occurrence,
        wording: Occurrence,
        status_id: str,
        at: datetime,
        run: _Run,
    ) -> None:
        names = wording.names
        values = tuple(_text(lookup(names, path.split("."))) for path in rule.group_by)
        key = (rule.name, status, values)
        batch = self._batches.get(key)
        if batch is None:
            batch = Batch(
                rule=rule.name,
                status=status,
                values=values,
                due=at + rule.group_wait,
                event=occ.event,
                render=wording.event,
                status_id=status_id,
            )
            self._batches[key] = batch
            batch.seq = next(self._seq)
            heapq.heappush(self._timers, (batch.due, batch.seq, "batch", key))
        printer = names.get("printer")
        name = printer.get("name") if isinstance(printer, Mapping) else None
        batch.members.append((occ.source, occ.subject, str(name or occ.subject)))
        run.note(rule.name, occ.subject, "grouped", "sent with its group at {}", batch.due)

    def _flush_batch(self, batch: Batch, run: _Run) -> None:
        rule = self._rules.get(batch.rule)
        self._batches.pop(batch.key, None)
        if rule is None or not batch.members:
            return
        count = len(batch.members)
        subjects = [m[1] for m in batch.members]
        group = {"count": count, "subjects": subjects}
        names = {**event_names(batch.render), "group": group}
        title, text = render_group(rule, names, batch.status, [m[2] for m in batch.members])
        occ = Occurrence(batch.event)
        severity = rule.severity.value if rule.severity else str(names.get("severity") or "info")
        payload: dict[str, Any] = {
            "event": dict(batch.event),
            "status": batch.status,
            "rule": rule.name,
            "severity": severity,
            "title": title,
            "text": text,
            "group": group,
        }
        if batch.status == "resolved":
            payload["resolves"] = batch.render.get("id")
        for receiver in rule.notify:
            run.out.append(
                Delivery(
                    id=delivery_id(occ.id, rule.name, receiver, f"{batch.status_id}/group"),
                    sink=receiver,
                    event_id=occ.id,
                    key=f"{occ.source}/{occ.subject}",
                    created_at=run.now,
                    payload=payload,
                )
            )
        label = subjects[0] if count == 1 else f"{count} subjects"
        run.note(rule.name, label, "group-sent", f"to {', '.join(rule.notify)}")

    # -- acknowledgements and holds ---------------------------------------------------------

    def _ack_for(self, rule: Rule, cond: Cond, occ: Occurrence, at: datetime) -> Ack | None:
        """The ack covering this firing condition's repeats, if any."""
        if not self._acks:
            return None
        severity = rule.severity.value if rule.severity else str(occ.data.get("severity") or "info")
        fields = silence_fields(occ.names, rule.name, severity)
        for ack in self._acks:
            if ack.covers(rule.name, cond.since, fields, at):
                return ack
        return None

    def _hold(
        self,
        rule: Rule,
        status: Literal["firing", "resolved"],
        occ: Occurrence,
        wording: Occurrence,
        severity: str,
        at: datetime,
        run: _Run,
        silence: Silence,
        repeat: int,
    ) -> None:
        title, text = render_notification(rule, wording.names, status)
        hold = self._holds.get(silence.id)
        if hold is None:
            hold = self._holds[silence.id] = Hold(silence=silence.id, since=at)
        key = occ if status == "firing" else wording  # a resolved notice is about its firing
        hold.add(
            HeldItem(
                rule=rule.name,
                status=status,
                source=key.source,
                subject=key.subject,
                type=key.type,
                disc=key.disc,
                severity=severity,
                title=title,
                text=text,
                at=at,
                event_id=occ.id,
                receivers=rule.notify,
                first=repeat == 0,
            ),
            repeat=repeat > 0,
        )
        run.note(rule.name, occ.subject, "held", "by silence {} until it ends", silence.id)

    def _unhold(self, key: tuple[str, str, str, str, str]) -> bool:
        """Take the held firing items of condition ``key`` out of every hold; True when one
        of them was its first notice (the alert was never sent, so nothing more is said)."""
        unsent = False
        for silence_id, hold in list(self._holds.items()):
            taken, first = hold.drop(key)
            unsent = unsent or first
            if taken and not hold.items and not hold.overflow:
                del self._holds[silence_id]  # all resolved: no summary at all
        return unsent

    def _known_silences(self) -> dict[str, Silence]:
        return {s.id: s for s in (*self.rules.silences, *self._adhoc)}

    def _release_holds(self, run: _Run) -> None:
        """One summary per receiver for each hold whose silence ended (or is gone)."""
        if not self._holds:
            return
        silences = {s.id: s for s in run.silences}
        for silence_id, hold in list(self._holds.items()):
            silence = silences.get(silence_id)
            if silence is not None and silence.active(run.now):
                continue
            del self._holds[silence_id]
            receivers = dict.fromkeys(r for item in hold.items for r in item.receivers)
            tz = silence.tz if silence is not None else None
            for receiver in receivers:
                payload = summary_payload(hold, receiver, run.now, tz)
                if payload is None:
                    continue
                event = payload["event"]
                run.out.append(
                    Delivery(
                        id=delivery_id(event["id"], f"held:{silence_id}", receiver, "summary"),
                        sink=receiver,
                        event_id=event["id"],
                        key=f"held/{silence_id}",
                        created_at=run.now,
                        payload=payload,
                    )
                )
            run.note(
                f"silence:{silence_id}",
                f"{len(hold.items) + hold.overflow} held",
                "group-sent",
                f"held summary to {', '.join(receivers)}",
            )

    def next_release(self) -> datetime | None:
        """When the earliest hold's silence ends and its summary goes out (``None``: nothing
        held; a removed silence's hold: now). Part of :meth:`next_deadline`."""
        if not self._holds or self._now is None:
            return None
        known = self._known_silences()
        ends: list[datetime] = []
        for silence_id in self._holds:
            silence = known.get(silence_id)
            end = self._now if silence is None else silence.ends_after(self._now)
            stuck = end is not None and end <= self._now
            if silence is not None and stuck and silence.active(self._now):
                end = self._now + timedelta(minutes=1)  # a wall-clock oddity (DST): look later
            if end is not None:
                ends.append(end)
        return min(ends, default=None)

    # -- timers -----------------------------------------------------------------------------

    def _schedule_cond(self, cond: Cond) -> None:
        if cond.due is None:
            cond.seq = -1
            return
        cond.seq = next(self._seq)
        heapq.heappush(self._timers, (cond.due, cond.seq, "cond", cond.key))

    def _timer_valid(self, timer: tuple[datetime, int, str, tuple[Any, ...]]) -> bool:
        _, seq, kind, key = timer
        entry = self._conds.get(key) if kind == "cond" else self._batches.get(key)
        return entry is not None and entry.seq == seq

    def _run_due(self, run: _Run) -> None:
        timers = self._timers
        while timers and timers[0][0] <= run.now:
            timer = heapq.heappop(timers)
            if not self._timer_valid(timer):
                continue
            due, _, kind, key = timer
            if kind == "batch":
                self._flush_batch(self._batches[key], run)
                continue
            cond = self._conds[key]
            rule = self._rules.get(cond.rule)
            if rule is None:
                self._conds.pop(cond.key, None)
            elif cond.phase == "pending":
                self._fire(rule, cond, due, run)
            elif rule.repeat is not None:
                cond.repeats += 1
                occ = Occurrence(cond.event)
                ack = self._ack_for(rule, cond, occ, due)
                if ack is not None:
                    self._acknowledged[rule.name] = self._acknowledged.get(rule.name, 0) + 1
                    by = f" by {ack.created_by}" if ack.created_by else ""
                    detail = f"repeat not sent: ack {ack.id}{by}"
                    run.note(rule.name, cond.subject, "acknowledged", detail)
                elif self._notify(rule, "firing", occ, run, at=due, repeat=cond.repeats):
                    cond.notified = True
                cond.due = due + rule.repeat
                if cond.due <= run.now:
                    cond.due = run.now + rule.repeat
                self._schedule_cond(cond)

    def _prune_throttle(self, now: datetime) -> None:
        """Forget throttle windows that ended (at most every few minutes: it is a full scan)."""
        if len(self._throttle) < 1024 or (self._next_prune and now < self._next_prune):
            return
        self._next_prune = now + _PRUNE_EVERY
        for key, last in list(self._throttle.items()):
            rule = self._rules.get(key[0])
            if rule is None or rule.throttle is None or last + rule.throttle <= now:
                del self._throttle[key]

    # -- persistence ------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Timers, firing conditions, throttle windows and batches as JSON-able data."""
        state = dump_state(
            self._rules, self._conds.values(), self._throttle, self._batches.values(), self._now
        )
        if self._holds:  # only when there are any: the state of a daemon without holds is as before
            state["held"] = [h.as_dict() for h in self._holds.values()]
        return state

    def _load(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state` output, dropping what the current rules no longer need."""
        restored = restore_state(state, self._rules)
        for cond in restored.conds:
            self._conds[cond.key] = cond
            self._schedule_cond(cond)
        self._throttle.update(restored.throttle)
        for batch in restored.batches:
            batch.seq = next(self._seq)
            self._batches[batch.key] = batch
            heapq.heappush(self._timers, (batch.due, batch.seq, "batch", batch.key))
        for hold in restore_holds(state.get("held")):
            self._holds[hold.silence] = hold


def _text(value: object) -> str:
    return NO_VALUE if value is None else str(value)
