"""The differ: two successive snapshots of one source in, the changes between them out.

``diff(previous, current, now, settings)`` is pure and stateless beyond its two snapshots:
everything it needs to avoid repeating itself is *in* ``previous`` (the snapshot the poller
persisted after the last diff). So a restart from a stored snapshot neither re-announces old
transitions (they are already in ``previous``) nor misses ones that happened while stopped
(they show as differences against ``previous``).

How a poll cycle uses this module::

    cur = await source.fetch_printers()             # printers + runs the printer records mention
    lost = unresolved_prints(prev, cur)             # active prints that vanished without outcome
    batch = await source.fetch_runs(since=..., lookups=[PrintLookup(...) for p in lost])
    cur = replace(cur, runs={**cur.runs, **batch.runs})
    cur = carry_forward(prev, cur, now, settings)   # remember recent outcomes and lost prints
    events = diff(prev, cur, now, settings)
    store(cur)                                      # the next cycle's ``prev``

Decisions worth knowing (each has a test):

* The first snapshot (``previous is None``) is a silent baseline. With an empty store we cannot
  tell a change from a fact that has held for months, and announcing the whole fleet on every
  fresh install or wiped state directory would bury the real signal.
* A newly *added* printer is likewise its own baseline: ``printer.added`` carries its full state
  (status, alerts, materials); only print lifecycle events (keyed by print id across the whole
  source) are judged for it.
* ``printer.offline`` / ``printer.online`` come only from the ``online`` flag. When the same
  change also moves the normalized status into (or out of) ``OFFLINE``, that status change
  rides along in the offline/online event's ``changes`` instead of a second
  ``printer.status_changed`` — one real change, one notification. Any other status change
  still gets its own ``printer.status_changed``.
* No status flapping: a printer that reads UNKNOWN (a vendor word we do not know) emits no
  ``printer.status_changed``; leaving UNKNOWN is judged against the status last known before
  it (``Printer.known_status``, kept by ``carry_forward``), so ``IDLE -> UNKNOWN -> IDLE``
  emits nothing, ``IDLE -> UNKNOWN -> PRINTING`` one ``IDLE -> PRINTING``, and a change among
  unknown words none. Phase changes within one status (``PREHEAT`` -> ``PRINTING``) are not
  status changes; the phase is in the printer's state.
* A print's facts are merged from the printer's ``current_print`` (live) and ``runs``
  (history). An outcome in history wins over a live non-terminal view (the printer lags);
  otherwise the live view wins (history records go stale). Non-terminal history records never
  drive ``print.paused``/``resumed``/``progress`` or the waiting alert — only live views do.
* Terminal is final: once ``previous`` shows a print terminal, nothing more is said about it.
  ``carry_forward`` keeps terminal runs for ``run_retention`` so a print that stays on the
  printer, moves into history, or is fetched again never yields a second outcome.
* Occurrence ids use ``previous.taken_at`` as the discriminator for changes that can recur
  (status, alerts, pause, material, added/removed). It identifies "the change seen right after
  that snapshot", so re-running the diff on the same pair — or on the same ``previous`` and a
  later ``current`` after a crash before the new snapshot was stored — repeats the id and
  receivers can deduplicate. Once-per-print facts (started, milestone, outcome) and
  once-per-tank facts use no time at all.
* Vendor timestamps are only trusted when not ahead of ``current.taken_at``; within one print
  the outcome is never dated before its start. Times the vendor sends without a zone are read
  as UTC.

Performance: unchanged printers are skipped with ``==`` (which ignores ``raw`` and
``last_seen_at``) and cost one tank-age comparison and no allocation. Print ids are found
through the printer serial they belong to; only a history record without ``printer_serial``
makes the differ build a print-id index of the fleet, once per diff.

Layout: the settings live in :mod:`printfleet.core.thresholds` and the merged view of a print
(live vs history) in :mod:`printfleet.core.prints`. What stays here is one file on purpose:
the printer half and the print half of ``_Differ`` call into each other (a changed printer
judges its print first, a waiting print raises a printer alert, an offline event absorbs the
status change) and share one event list and one occurrence mark, so splitting them by subject
would scatter the rules above across files that only make sense read together.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from printfleet.core.alerts import ALERT_BLOCKED_WITH_QUEUE
from printfleet.core.events import (
    DEFAULT_SEVERITY,
    Change,
    ChangeEvent,
    EventType,
    Severity,
    event_id,
)
from printfleet.core.model import (
    EMPTY,
    Material,
    Print,
    Printer,
    PrinterStatus,
    PrintStatus,
    Snapshot,
    Tank,
    Vendor,
    frozen_mapping,
    iso,
)
from printfleet.core.prints import (
    PrintIndex,
    aware,
    end_time,
    expected_end,
    has_started,
    pick,
    shifted,
    start_time,
    views_of,
    with_serial,
    with_verdict_of,
)
from printfleet.core.queues import blocked_details, queue_events
from printfleet.core.thresholds import DiffSettings

__all__ = [
    "VERDICT_FAILURE",
    "VERDICT_SUCCESS",
    "WAITING_ALERT",
    "carry_forward",
    "diff",
    "source_event",
    "unresolved_prints",
]

#: ``printer.alert`` text raised while a print waits for an operator's resolution.
WAITING_ALERT = "waiting for resolution"

#: ``Print.verdict`` values (a person's rating of an ended print).
VERDICT_SUCCESS = "SUCCESS"
VERDICT_FAILURE = "FAILURE"

# Outcome event per terminal print status.
_OUTCOME: Mapping[PrintStatus, EventType] = {
    PrintStatus.FINISHED: EventType.PRINT_FINISHED,
    PrintStatus.FAILED: EventType.PRINT_FAILED,
    PrintStatus.ABORTED: EventType.PRINT_ABORTED,
}
_RESUMED_TO = frozenset({PrintStatus.PRINTING, PrintStatus.PREPARING})


# --- public functions ---------------------------------------------------------------------


def diff(
    previous: Snapshot | None, current: Snapshot, now: datetime, settings: DiffSettings
) -> list[ChangeEvent]:
    """The changes from ``previous`` to ``current``, ordered by printer serial, then time.

    ``current`` should already have been through :func:`carry_forward`. ``now`` only caps
    vendor timestamps when ``current.taken_at`` is ahead of it; otherwise the result depends
    on the two snapshots alone, so the same pair always yields the same events with the same
    ids. ``previous is None`` (nothing stored yet) is a silent baseline: no events.
    """
    if previous is None:
        return []
    differ = _Differ(previous, current, now, settings)
    differ.compare_printers()
    differ.compare_runs()
    differ.events.extend(queue_events(previous, current, settings))
    return differ.ordered()


def carry_forward(
    previous: Snapshot | None, current: Snapshot, now: datetime, settings: DiffSettings
) -> Snapshot:
    """``current`` with what ``previous`` knew about prints that ``current`` no longer shows.

    Added to ``current.runs`` (data in ``current`` always wins, except that a print never goes
    back from terminal to not terminal):

    * every print ``previous`` knew as terminal, while its end (``finished_at``, else
      ``started_at``, else ``created_at``) is within ``run_retention`` of
      ``current.taken_at`` — so its outcome is never announced twice;
    * every print ``previous`` knew as started but not ended that is now nowhere in
      ``current`` (it left its printer without an outcome), while its expected end
      (start + elapsed + remaining) is within ``run_retention`` — so a late history record
      can still be matched to it. A print with no vendor times at all cannot be aged and is
      not carried.

    Carried prints get ``printer_serial`` filled in. A printer that reads UNKNOWN also gets
    the status it was last known in (:attr:`Printer.known_status`). ``now`` only matters when
    ``current.taken_at`` is ahead of it (the earlier of the two is used).
    """
    if previous is None:
        return current
    current = _carry_known_status(previous, current)
    cutoff = shifted(min(now, current.taken_at), -settings.run_retention)
    cur_index = PrintIndex(current)
    runs: dict[str, Print] | None = None
    for serial, pv in views_of(previous):
        cv = cur_index.view(pv.id, serial)
        if pv.status.is_terminal:
            if cv is not None and cv.status.is_terminal:
                if pv.verdict is None or cv.verdict is not None:
                    continue
                # Shown again without its rating (a summary record): the rating stays known,
                # so it is neither lost from the stored state nor announced a second time.
                if runs is None:
                    runs = dict(current.runs)
                runs[pv.id] = with_serial(with_verdict_of(cv, pv), serial)
                continue
            ref = end_time(pv)
        elif has_started(pv):
            if cv is not None:
                continue
            ref = expected_end(pv)
        else:
            continue
        if ref is None or ref < cutoff:
            continue
        if runs is None:
            runs = dict(current.runs)
        runs[pv.id] = with_serial(_no_raw(pv), serial)
    if runs is None:
        return current
    return dataclasses.replace(current, runs=frozen_mapping(runs))


def _no_raw(run: Print) -> Print:
    """``run`` without its vendor record: a print carried from kept state, as it always was
    (kept state may now hold a printer record's text, see ``model.without_raw``)."""
    return run if run.raw is EMPTY else dataclasses.replace(run, raw=EMPTY)


def _carry_known_status(previous: Snapshot, current: Snapshot) -> Snapshot:
    """``current`` with each UNKNOWN printer remembering its last known status from
    ``previous`` (:attr:`Printer.known_status`), so the differ can tell a flap from a change."""
    changed: dict[str, Printer] | None = None
    prev_printers = previous.printers
    for serial, cp in current.printers.items():
        if cp.status is not PrinterStatus.UNKNOWN:
            continue
        pp = prev_printers.get(serial)
        known = pp.settled_status if pp is not None else None
        if known is None or known is cp.known_status:
            continue
        if changed is None:
            changed = dict(current.printers)
        changed[serial] = dataclasses.replace(cp, known_status=known)
    if changed is None:
        return current
    return dataclasses.replace(current, printers=frozen_mapping(changed))


def unresolved_prints(previous: Snapshot | None, current: Snapshot) -> list[Print]:
    """Active prints of ``previous`` that left their printer with no outcome in ``current``.

    A print counts when ``previous`` showed it active (on a printer, or carried forward in
    ``runs``), ``current`` does not show it on its printer, and no terminal status for it is
    visible anywhere in ``current``. These are what the poller looks up in the vendor history.
    Each is returned as ``previous`` knew it, with ``printer_serial`` filled in where known,
    sorted by printer serial then print id.
    """
    if previous is None:
        return []
    cur_index = PrintIndex(current)
    lost: list[Print] = []
    for serial, pv in views_of(previous):
        if not pv.status.is_active:
            continue
        on_printer = cur_index.on_printer(pv.id, serial)
        if on_printer is not None:
            continue  # still on its printer (whatever its status), not lost
        run = current.runs.get(pv.id)
        if run is not None and run.status.is_terminal:
            continue
        lost.append(with_serial(pv, serial))
    lost.sort(key=lambda p: (p.printer_serial or "", p.id))
    return lost


def source_event(
    kind: EventType,
    *,
    source: str,
    vendor: Vendor,
    time: datetime,
    details: Mapping[str, Any] = EMPTY,
    sequence: int | str = 0,
) -> ChangeEvent:
    """A ``source.*`` event (unreachable, recovered, auth_failed) about the account itself.

    ``sequence`` tells occurrences apart (e.g. the time the outage began, or a counter), so a
    redelivered event keeps its id. The subject is the source name.

    Raises:
        ValueError: ``kind`` is not a ``source.*`` event type.
    """
    if not kind.value.startswith("source."):
        raise ValueError(f"{kind.value} is not a source event")
    return ChangeEvent(
        id=event_id(source, source, kind.value, sequence),
        type=kind,
        source=source,
        vendor=vendor,
        subject=source,
        time=time,
        severity=DEFAULT_SEVERITY.get(kind, Severity.INFO),
        details=frozen_mapping(details),
    )


# --- the diff itself ----------------------------------------------------------------------


class _Differ:
    """One diff's working state (local to one call; never shared)."""

    __slots__ = (
        "age_hi",
        "age_lo",
        "cur",
        "cur_index",
        "events",
        "limit",
        "mark",
        "old_cutoff",
        "prev",
        "prev_index",
        "seen_prints",
        "settings",
    )

    def __init__(
        self, prev: Snapshot, cur: Snapshot, now: datetime, settings: DiffSettings
    ) -> None:
        self.prev = prev
        self.cur = cur
        self.settings = settings
        self.events: list[ChangeEvent] = []
        self.seen_prints: set[str] = set()
        self.prev_index = PrintIndex(prev)
        self.cur_index = PrintIndex(cur)
        # Discriminator of recurring changes: "first seen after this snapshot".
        self.mark = iso(prev.taken_at) or ""
        # Vendor times later than this are not believed.
        self.limit = min(now, cur.taken_at)
        # A print unknown to ``prev`` that ended before this is old history: never announced.
        self.old_cutoff = shifted(prev.taken_at, -settings.run_retention)
        # A tank first filled in (age_lo, age_hi] reached its maximum age between the two
        # snapshots: precomputed so the unchanged-printer path only compares.
        self.age_lo = shifted(prev.taken_at, -settings.tank_max_age)
        self.age_hi = shifted(cur.taken_at, -settings.tank_max_age)

    # -- printers -------------------------------------------------------------------------

    def compare_printers(self) -> None:
        prev_printers = self.prev.printers
        age_lo = self.age_lo
        age_hi = self.age_hi
        for serial, cp in self.cur.printers.items():
            pp = prev_printers.get(serial)
            if pp is None:
                self._added(cp)
            elif pp is cp or pp == cp:
                # Unchanged, but a tank can still come of age as time passes.
                tank = cp.tank
                if tank is not None:
                    ff = tank.first_filled_at
                    if ff is not None and ff.tzinfo is not None and age_lo < ff <= age_hi:
                        self._tank(pp, cp)
            else:
                self._changed(pp, cp)
        cur_printers = self.cur.printers
        for serial, pp in prev_printers.items():
            if serial not in cur_printers:
                self._removed(pp)

    def _added(self, cp: Printer) -> None:
        self._emit(EventType.PRINTER_ADDED, cp, cp.serial, self.cur.taken_at, self.mark)
        if cp.current_print is not None:
            self._print(cp.current_print.id, cp.serial)

    def _removed(self, pp: Printer) -> None:
        # Kept state may hold the last record's text (model.without_raw); a removed printer's
        # event says what is known of it now, as it always has: no vendor record.
        current = pp.current_print
        gone = dataclasses.replace(
            pp, raw=EMPTY, current_print=_no_raw(current) if current is not None else None
        )
        self._emit(EventType.PRINTER_REMOVED, gone, pp.serial, self.cur.taken_at, self.mark)

    def _changed(self, pp: Printer, cp: Printer) -> None:
        # The print first: at equal times its events read as the cause of the printer's
        # (print.paused, then printer.status_changed to PAUSED).
        if cp.current_print is not None:
            self._print(cp.current_print.id, cp.serial)
        self._status(pp, cp)
        if pp.alerts != cp.alerts:
            self._alerts(pp, cp)
        if pp.materials != cp.materials:
            self._materials(pp, cp)
        if cp.tank is not None:
            self._tank(pp, cp)

    def _status(self, pp: Printer, cp: Printer) -> None:
        # No flapping on words we do not know: UNKNOWN is never announced (its raw word is in
        # the printer's state, and the source logs and counts it), and leaving it is compared
        # with the status last known before it, so IDLE -> UNKNOWN -> IDLE says nothing and
        # IDLE -> UNKNOWN -> PRINTING says IDLE -> PRINTING once. A phase change within one
        # status (PREHEAT -> PRINTING, both PRINTING) is not a status change either.
        before = pp.settled_status
        status_changed = cp.status is not PrinterStatus.UNKNOWN and cp.status is not before
        status: dict[str, Change] = {}
        if status_changed:
            status["status"] = Change(before or pp.status, cp.status)
            if pp.status_raw != cp.status_raw:
                status["status_raw"] = Change(pp.status_raw, cp.status_raw)
        t = self.cur.taken_at
        if pp.online != cp.online:
            kind = EventType.PRINTER_ONLINE if cp.online else EventType.PRINTER_OFFLINE
            # The vendor's OFFLINE status is the same real change as the online flag.
            into_or_out_of_offline = (
                cp.status is PrinterStatus.OFFLINE
                if not cp.online
                else pp.status is PrinterStatus.OFFLINE
            )
            covered = status_changed and into_or_out_of_offline
            changes = {"online": Change(pp.online, cp.online), **(status if covered else {})}
            self._emit(kind, cp, cp.serial, t, self.mark, changes=changes)
            if status_changed and not covered:
                self._status_changed(pp, cp, status)
        elif status_changed:
            self._status_changed(pp, cp, status)

    def _status_changed(self, pp: Printer, cp: Printer, changes: dict[str, Change]) -> None:
        self._emit(
            EventType.PRINTER_STATUS_CHANGED,
            cp,
            cp.serial,
            self.cur.taken_at,
            changes["status"].before.value,
            cp.status.value,
            pp.status_raw,
            cp.status_raw,
            self.mark,
            changes=changes,
        )

    def _alerts(self, pp: Printer, cp: Printer) -> None:
        before = set(pp.alerts)
        after = set(cp.alerts)
        for text in sorted(before - after):
            self._alert(cp, text, raised=False)
        for text in sorted(after - before):
            self._alert(cp, text, raised=True)

    def _alert(
        self, printer: Printer, text: str, *, raised: bool, run: Print | None = None
    ) -> None:
        state = "raised" if raised else "cleared"
        details: dict[str, Any] = {"alert": text, "state": state}
        if text == ALERT_BLOCKED_WITH_QUEUE:
            # Which alert blocks it and how many jobs wait: what the person sent over needs.
            details.update(blocked_details(printer, self.cur))
        self._emit(
            EventType.PRINTER_ALERT,
            printer,
            printer.serial,
            self.cur.taken_at,
            text,
            state,
            *((run.id,) if run is not None else ()),
            self.mark,
            run=run,
            severity=Severity.WARNING if raised else Severity.INFO,
            details=details,
        )

    def _materials(self, pp: Printer, cp: Printer) -> None:
        before = {m.slot: m for m in pp.materials}
        for m in cp.materials:
            level = _material_level(m, self.settings)
            if level == 0:
                continue
            old = before.get(m.slot)
            # A different cartridge in the slot starts from "fine": its crossing is new.
            old_level = (
                _material_level(old, self.settings)
                if old is not None and old.serial == m.serial
                else 0
            )
            if level > old_level:
                self._emit(
                    EventType.MATERIAL_LOW,
                    cp,
                    cp.serial,
                    self.cur.taken_at,
                    m.slot,
                    m.serial,
                    level,
                    self.mark,
                    details={
                        "slot": m.slot,
                        "remaining_ml": m.remaining_ml,
                        "ratio": m.remaining_ratio,
                        "empty": level == 2,
                        "material": m.name or m.material,
                        "cartridge": m.serial,
                    },
                )

    def _tank(self, pp: Printer, cp: Printer) -> None:
        tank = cp.tank
        assert tank is not None
        old: Tank | None = pp.tank
        if old is not None and old.serial != tank.serial:
            old = None  # a different tank: judged from scratch
        max_layers = self.settings.tank_max_layers
        layers = tank.layers_printed
        if layers is not None and layers >= max_layers:
            old_layers = old.layers_printed if old is not None else None
            if old_layers is None or old_layers < max_layers:
                self._tank_event(cp, tank, "layers", {"layers_printed": layers})
        ff = aware(tank.first_filled_at)
        if ff is not None and ff <= self.age_hi:
            old_ff = aware(old.first_filled_at) if old is not None else None
            if old_ff is None or old_ff > self.age_lo:
                age = self.cur.taken_at - ff
                self._tank_event(cp, tank, "age", {"age_days": round(age / timedelta(days=1), 1)})

    def _tank_event(self, cp: Printer, tank: Tank, reason: str, facts: dict[str, Any]) -> None:
        self._emit(
            EventType.TANK_ATTENTION,
            cp,
            cp.serial,
            self.cur.taken_at,
            tank.serial or "",
            reason,
            details={
                "reason": reason,
                "tank": tank.serial,
                **facts,
                "max_layers": self.settings.tank_max_layers,
                "max_age_days": self.settings.tank_max_age / timedelta(days=1),
            },
        )

    # -- prints ---------------------------------------------------------------------------

    def compare_runs(self) -> None:
        prev_runs = self.prev.runs
        for rid, run in self.cur.runs.items():
            old = prev_runs.get(rid)
            if old is not None and (old is run or old == run):
                continue  # same record as before; printer-side changes were judged already
            self._print(rid, run.printer_serial)

    def _print(self, pid: str, serial: str | None) -> None:
        """Lifecycle events of print ``pid`` (on printer ``serial`` when known)."""
        if pid in self.seen_prints:
            return
        self.seen_prints.add(pid)
        live = self.cur_index.on_printer(pid, serial)
        cv = pick(live, self.cur.runs.get(pid))
        if cv is None:
            return  # gone without a trace: unresolved, the poller looks it up
        is_live = cv is live
        if serial is None:  # a history record not naming its printer: find it by print id
            serial = self.cur_index.serial_of(pid) or self.prev_index.serial_of(pid)
        pv = self.prev_index.view(pid, serial)
        if pv is not None:
            if pv == cv:
                return  # nothing new
            if pv.status.is_terminal:
                # Its outcome was reported: terminal is final. Only a person's rating, which
                # comes hours later, is still news about it.
                if cv.verdict is not None and cv.verdict != pv.verdict:
                    where = serial or cv.printer_serial or pv.printer_serial
                    printer = self._host(where)
                    self._rated(pv, cv, printer, printer.serial if printer else (where or ""))
                return
        elif cv.status.is_terminal or not is_live:
            end = end_time(cv)
            if end is not None and end < self.old_cutoff:
                return  # old history fetched late: not news
        serial = serial or cv.printer_serial or (pv.printer_serial if pv else None)
        printer = self._host(serial)
        subject = printer.serial if printer is not None else (serial or "")
        status_change = (
            {"status": Change(pv.status, cv.status)}
            if pv is not None and pv.status is not cv.status
            else {}
        )
        t_start: datetime | None = None

        if has_started(cv) and not (pv is not None and has_started(pv)):
            start = start_time(cv)
            old_news = (
                pv is None
                and cv.status.is_terminal
                and start is not None
                and start < self.prev.taken_at
            )
            if not old_news:
                t_start = self._time(cv.started_at)
                self._emit(
                    EventType.PRINT_STARTED,
                    printer,
                    subject,
                    t_start,
                    pid,
                    key=pid,
                    run=cv,
                    changes=status_change,
                )

        if is_live and cv.status.is_active:
            self._live(pid, pv, cv, printer, subject)

        if printer is not None and (is_live or cv.status.is_terminal):
            was_waiting = pv is not None and pv.status is PrintStatus.WAITING
            waiting = cv.status is PrintStatus.WAITING
            if waiting and not was_waiting and not _has_alert(printer, WAITING_ALERT):
                self._alert(printer, WAITING_ALERT, raised=True, run=cv)
            elif was_waiting and not waiting:
                before = self.prev.printers.get(printer.serial)
                if before is None or not _has_alert(before, WAITING_ALERT):
                    self._alert(printer, WAITING_ALERT, raised=False, run=cv)

        outcome = _OUTCOME.get(cv.status)
        if outcome is not None:
            t_end = self._time(cv.finished_at)
            if t_start is not None and t_end < t_start:
                t_end = t_start  # skewed vendor clocks: never end before the start
            self._emit(
                outcome,
                printer,
                subject,
                t_end,
                pid,
                outcome.value,
                key=pid,
                run=cv,
                changes=status_change,
            )
            # Rated before we saw the outcome (a late history record): the outcome, then it.
            if cv.verdict is not None and (pv is None or cv.verdict != pv.verdict):
                self._rated(pv, cv, printer, subject)

    def _rated(self, pv: Print | None, cv: Print, printer: Printer | None, subject: str) -> None:
        """``print.rated``: a person's verdict on an ended print, new or changed.

        Keyed by print and verdict, so a rating seen again (another record of the same print,
        a re-run diff) repeats its id and a changed rating is a new event. A print nobody
        rated never gets one; a rating withdrawn (back to unrated) is not announced, since
        the summary records that omit the rating look just the same.
        """
        outcome = _OUTCOME.get(cv.status)
        if outcome is None or cv.verdict is None:
            return  # only an ended print has an outcome to be judged against
        given = aware(cv.verdict_at)
        if given is not None and given < self.old_cutoff:
            # Rated long before the snapshot we compare with, and first seen now (a state
            # stored before ratings were read, a record that showed no rating): old news.
            return
        machine = outcome.value.removeprefix("print.")
        # The costly surprise: the printer said FINISHED, the person says the parts are bad.
        surprise = cv.status is PrintStatus.FINISHED and cv.verdict == VERDICT_FAILURE
        self._emit(
            EventType.PRINT_RATED,
            printer,
            subject,
            # When it was rated, as the vendor says; never before the print ended.
            max(self._time(cv.verdict_at), self._time(cv.finished_at)),
            cv.id,
            cv.verdict,
            key=cv.id,
            run=cv,
            changes={"verdict": Change(pv.verdict if pv is not None else None, cv.verdict)},
            details={
                "verdict": cv.verdict,
                "note": cv.verdict_note,
                "by": cv.verdict_by,
                "machine_outcome": machine,
            },
            severity=Severity.WARNING if surprise else Severity.INFO,
        )

    def _live(
        self, pid: str, pv: Print | None, cv: Print, printer: Printer | None, subject: str
    ) -> None:
        """Pause, resume and progress milestones of an active print seen on its printer."""
        t = self.cur.taken_at
        was_paused = pv is not None and pv.status is PrintStatus.PAUSED
        if cv.status is PrintStatus.PAUSED and not was_paused:
            self._emit(
                EventType.PRINT_PAUSED,
                printer,
                subject,
                t,
                pid,
                self.mark,
                key=pid,
                run=cv,
                changes={"status": Change(pv.status if pv else None, cv.status)},
            )
        elif was_paused and cv.status in _RESUMED_TO:
            self._emit(
                EventType.PRINT_RESUMED,
                printer,
                subject,
                t,
                pid,
                self.mark,
                key=pid,
                run=cv,
                changes={"status": Change(PrintStatus.PAUSED, cv.status)},
            )
        progress = cv.progress
        if progress is None:
            return
        before = pv.progress if pv is not None and pv.progress is not None else 0.0
        crossed: float | None = None
        for m in self.settings.milestones:
            if before < m <= progress:
                crossed = m  # several in one poll: only the highest is worth telling
        if crossed is not None:
            self._emit(
                EventType.PRINT_PROGRESS,
                printer,
                subject,
                t,
                pid,
                crossed,
                key=pid,
                run=cv,
                changes={"progress": Change(pv.progress if pv else None, progress)},
                details={"milestone": crossed},
            )

    def _host(self, serial: str | None) -> Printer | None:
        """The printer a print belongs to: as it is now, else as it was."""
        if serial is None:
            return None
        return self.cur.printers.get(serial) or self.prev.printers.get(serial)

    # -- plumbing -------------------------------------------------------------------------

    def _time(self, vendor: datetime | None) -> datetime:
        """A vendor time if it is believable (not ahead of the snapshot), else the snapshot's."""
        t = aware(vendor)
        if t is None or t > self.limit:
            return self.cur.taken_at
        return t

    def _emit(
        self,
        kind: EventType,
        printer: Printer | None,
        subject: str,
        time: datetime,
        *discriminators: object,
        key: str | None = None,
        run: Print | None = None,
        changes: Mapping[str, Change] | None = None,
        details: Mapping[str, Any] | None = None,
        severity: Severity | None = None,
    ) -> None:
        # Print events are keyed by print id (``key``) rather than the printer, so a record
        # that does not name its printer still gets the same id as one that does.
        self.events.append(
            ChangeEvent(
                id=event_id(self.cur.source, key or subject, kind.value, *discriminators),
                type=kind,
                source=self.cur.source,
                vendor=self.cur.vendor,
                subject=subject,
                time=time,
                severity=severity or DEFAULT_SEVERITY.get(kind, Severity.INFO),
                printer=printer,
                print=run,
                changes=frozen_mapping(changes),
                details=frozen_mapping(details),
            )
        )

    def ordered(self) -> list[ChangeEvent]:
        # Stable: events of one printer at the same instant keep their logical order
        # (started before progress before outcome).
        return sorted(self.events, key=lambda e: (e.subject, e.time))


def _has_alert(printer: Printer, text: str) -> bool:
    wanted = text.casefold()
    return any(a.casefold() == wanted for a in printer.alerts)


def _material_level(m: Material, settings: DiffSettings) -> int:
    """0 fine, 1 low, 2 empty."""
    if m.is_empty or (m.remaining_ml is not None and m.remaining_ml <= 0):
        return 2
    ratio = m.remaining_ratio
    if ratio is not None and ratio < settings.material_low_ratio:
        return 1
    low_ml = settings.material_low_ml
    if low_ml is not None and m.remaining_ml is not None and m.remaining_ml < low_ml:
        return 1
    return 0
