"""The lifecycle engine: moves the shared fleet through simulated time.

Each printer carries an agenda of timed actions planned in advance (a run's timeline, an idle gap);
one heap holds every printer's next action, so advancing costs O(transitions), not
O(printers x steps). Equal-time actions run in printer-key order, and every random choice comes from
the printer's own stream, so the history is fixed by the seed however time is sliced.

Side effects of a transition: the vendor's event feed (Formlabs ``/events/``), consumables
(cartridge volume, tank layers), and ground truth (see :mod:`printfleet.simulator.truth`).
"""

from __future__ import annotations

import heapq
import itertools
from datetime import UTC, datetime

from printfleet.simulator import catalog, queues
from printfleet.simulator.config import VENDORS, SimulatorConfig
from printfleet.simulator.factory import Factory
from printfleet.simulator.fleet import (
    IDLE,
    LINGER,
    MAINTENANCE,
    OFFLINE,
    RUNNING,
    Account,
    Printer,
    Run,
    VendorEvent,
)
from printfleet.simulator.lifecycle import (
    GO_OFFLINE,
    GO_ONLINE,
    HOUR,
    MAINT_END,
    MAINT_START,
    MINUTE,
    PROFILES,
    START_RUN,
    Odds,
    linger_s,
    plan_gap,
    plan_run,
)
from printfleet.simulator.rng import Rng, derive_seed
from printfleet.simulator.truth import GroundTruthEvent, TruthKind

SEGMENT = "seg"
CLEAR = "clear"
RATE = "rate"  # a person rates the ended run still on the printer (arg: the run's seq)
NOT_READY_ON = "not_ready_on"
NOT_READY_OFF = "not_ready_off"
LOW_FRACTION = 0.15  # RESIN_LOW below 15 % of a cartridge's initial volume
CHURN_MEAN_S = 6 * HOUR

_TERMINAL_TRUTH = {
    catalog.FINISHED: (TruthKind.PRINT_FINISHED, "PRINT_FINISHED", "finished"),
    catalog.ERROR: (TruthKind.PRINT_FAILED, "PRINT_ERROR", "stopped with an error"),
    catalog.ABORTED: (TruthKind.PRINT_ABORTED, "PRINT_ABORTED", "was aborted"),
}


def to_datetime(t: int) -> datetime:
    """Simulated epoch seconds as an aware UTC datetime."""
    return datetime.fromtimestamp(t, UTC)


class Engine:
    """Owns the fleet and advances it; callers hold the simulator lock around every use."""

    def __init__(self, config: SimulatorConfig, t0: int) -> None:
        self.config = config
        self.now = t0
        self.recording = True  # off while the fleet warms up before t0: that history is not truth
        self.truth: list[GroundTruthEvent] = []
        self.accounts: dict[str, list[Account]] = {vendor: [] for vendor in VENDORS}
        self.factory = Factory(config)
        self._odds = Odds.from_config(config)
        self._printers: dict[int, Printer] = {}
        self._serials: dict[tuple[str, str], Printer] = {}
        self._heap: list[tuple[int, int, int]] = []
        self._event_ids = itertools.count(900_001)
        self._churn_rng = Rng(derive_seed(config.seed, "churn"))

    # --- queries --------------------------------------------------------------------------------

    def printer(self, vendor: str, serial: str) -> Printer | None:
        """The live printer with this serial, if any."""
        return self._serials.get((vendor, serial))

    def printers(self, vendor: str) -> list[Printer]:
        """Every live printer of a vendor, in registration order."""
        return [p for account in self.accounts[vendor] for p in account.printers.values()]

    # --- membership -----------------------------------------------------------------------------

    def register(self, printer: Printer, start: int) -> None:
        """Put a printer in the fleet, idle from ``start``; records no truth (initial fleet)."""
        printer.account.printers[printer.serial] = printer
        printer.account.membership_version += 1
        self._printers[printer.key] = printer
        self._serials[(printer.vendor, printer.serial)] = printer
        self._start_gap(printer, start)
        self._schedule(printer)

    def add_printer(self, vendor: str, account: Account | None = None) -> Printer:
        """Register a brand-new printer now (truth ``printer.added``, event PRINTER_REGISTERED)."""
        account = account or self.accounts[vendor][0]
        printer = self.factory.printer(account, self.now)
        self.register(printer, self.now)
        self._record(printer, self.now, TruthKind.PRINTER_ADDED)
        label = printer.alias or printer.serial
        self._event(printer, self.now, "PRINTER_REGISTERED", f"{label} was added to your account")
        return printer

    def remove_printer(self, printer: Printer) -> None:
        """Deregister a printer now (truth ``printer.removed``, event PRINTER_DEREGISTERED)."""
        printer.seq += 1  # its pending heap entry is now stale
        del printer.account.printers[printer.serial]
        printer.account.membership_version += 1
        del self._printers[printer.key]
        del self._serials[(printer.vendor, printer.serial)]
        for cartridge in printer.cartridges:
            cartridge.inside_printer = ""
        if printer.tank is not None:
            printer.tank.inside_printer = ""
        self._record(printer, self.now, TruthKind.PRINTER_REMOVED)
        label = printer.alias or printer.serial
        self._event(printer, self.now, "PRINTER_DEREGISTERED", f"{label} was removed")

    def enable_churn(self) -> None:
        """Start adding and removing printers now and then (one schedule per vendor)."""
        for index, vendor in enumerate(VENDORS):
            if self.accounts[vendor]:
                when = self.now + int(self._churn_rng.expo(CHURN_MEAN_S)) + 60
                heapq.heappush(self._heap, (when, -1 - index, 0))

    # --- time -----------------------------------------------------------------------------------

    def advance_to(self, t: int) -> None:
        """Apply every planned action due at or before ``t`` in (time, printer key) order."""
        heap = self._heap
        while heap and heap[0][0] <= t:
            when, key, seq = heapq.heappop(heap)
            self.now = max(self.now, when)
            if key < 0:
                self._churn(VENDORS[-key - 1], when)
                continue
            printer = self._printers.get(key)
            if printer is None or printer.seq != seq:
                continue
            at, action, arg = printer.agenda.popleft()
            self._apply(printer, at, action, arg)
            self._schedule(printer)
        self.now = max(self.now, t)

    def _schedule(self, printer: Printer) -> None:
        if printer.agenda:
            printer.seq += 1
            heapq.heappush(self._heap, (printer.agenda[0][0], printer.key, printer.seq))

    def _apply(self, p: Printer, t: int, action: str, arg: int) -> None:
        if action == SEGMENT:
            self._enter_segment(p, t, arg)
        elif action == CLEAR:
            self._clear(p, t)
        elif action == START_RUN:
            self._start_run(p, t)
        elif action == RATE:
            self._rate(p, t, arg)
        elif action in (NOT_READY_ON, NOT_READY_OFF):
            p.not_ready = action == NOT_READY_ON
            p.touch(t)
        elif action == GO_OFFLINE:
            p.frozen_obs = p.observed_at(t, self.config.heartbeat_s)
            p.online = False
            p.phase = OFFLINE
            p.touch(t, visible=False)  # the cloud hears nothing; only Carbon's state string flips
            self._record(p, t, TruthKind.PRINTER_OFFLINE)
        elif action == GO_ONLINE:
            p.online = True
            p.phase = IDLE
            p.touch(t)
            self._record(p, t, TruthKind.PRINTER_ONLINE)
        elif action == MAINT_START:
            p.phase = MAINTENANCE
            p.touch(t)
        elif action == MAINT_END:
            p.phase = IDLE
            p.touch(t)
        else:  # pragma: no cover - agenda actions are all produced above
            raise AssertionError(f"unknown agenda action {action!r}")

    # --- runs -----------------------------------------------------------------------------------

    def _new_run(self, p: Printer, t: int) -> Run:
        run = self.factory.run(p, t)
        if not PROFILES[p.vendor].queued_phase:
            # Carbon lists queued prints in /prints (and as prints.next) from the moment they queue.
            p.account.add_run(run)
        return run

    def _start_run(self, p: Printer, t: int) -> None:
        profile = PROFILES[p.vendor]
        run = p.next_run or self._new_run(p, t)
        p.next_run = None
        run.tank = p.tank.serial if p.tank else None
        run.cartridges = tuple(c.serial for c in p.cartridges)
        run.form_auto = self._form_auto(p)
        p.not_ready = False
        if profile.queued_phase:
            run.created_at = t  # a Formlabs run exists once it is sent to the printer
            p.account.add_run(run)
            queues.take(p.account, p.group, t)  # a Fleet Control group's printer takes a job
        run.timeline = plan_run(run, t, p.rng, profile, self._odds)
        p.run = run
        p.phase = RUNNING
        p.alerts = ()
        p.touch(t)
        p.agenda.extend((seg.start, SEGMENT, i) for i, seg in enumerate(run.timeline))

    def _enter_segment(self, p: Printer, t: int, index: int) -> None:
        run = p.run
        assert run is not None
        old, new = run.status, run.timeline[index].status
        run.seg_index = index
        run.status = new
        p.touch(t)
        if new == catalog.PREPRINT:
            run.started_at = t
            self._record(p, t, TruthKind.PRINT_STARTED, run)
            self._run_event(p, t, "PRINT_START", run, "started")
            profile = PROFILES[p.vendor]
            if p.next_run is None and p.rng.chance(profile.prequeue_probability):
                p.next_run = self._new_run(p, t)
        elif new == catalog.PAUSING:
            self._record(p, t, TruthKind.PRINT_PAUSED, run)
        elif new == catalog.PAUSED:
            self._run_event(p, t, "PRINT_PAUSED", run, "paused")
        elif new == catalog.WAITING_FOR_RESOLUTION:
            run.message = p.rng.choice(catalog.RESOLUTION_MESSAGES)
            label = p.alias or p.serial
            self._event(p, t, "PRINT_RESOLUTION_REQUEST", f"{label}: {run.message}", run=run)
        if old == catalog.WAITING_FOR_RESOLUTION:
            self._run_event(p, t, "PRINT_RESOLUTION", run, "was resumed after a check")
            run.message = None  # an ERROR after a failed check gets its own message below
        if new == catalog.PRINTING and old == catalog.PAUSED:
            self._record(p, t, TruthKind.PRINT_RESUMED, run)
            self._run_event(p, t, "PRINT_RESUMED", run, "resumed")
        if new in catalog.TERMINAL:
            self._conclude(p, run, t)

    def _conclude(self, p: Printer, run: Run, t: int) -> None:
        profile = PROFILES[p.vendor]
        run.finished_at = t
        if run.status == catalog.ERROR and run.message is None:
            run.message = p.rng.choice(catalog.ERROR_MESSAGES)
        if profile.materials:
            self._consume(p, run, t)
        rated = p.rng.chance(0.3)  # someone rates the print later (print_run_success / feedback)
        if rated:
            run.verdict = "SUCCESS" if run.status == catalog.FINISHED else "FAILURE"
            run.verdict_at = t + p.rng.randint(600, 3 * 3600)
        kind, event_type, verb = _TERMINAL_TRUTH[run.status]
        self._record(p, t, kind, run)
        self._run_event(p, t, event_type, run, verb)
        linger = linger_s(run.status, p.rng, profile)
        if profile.linger:
            linger = self._aftercare(p, run, t, linger, rated)
        if linger:
            p.phase = LINGER
            p.agenda.append((t + linger, CLEAR, 0))
        else:
            self._clear(p, t)

    def _aftercare(self, p: Printer, run: Run, t: int, linger: int, rated: bool) -> int:
        """A Formlabs run after its end: harvest, rating, and how long it stays on the printer.

        Drawn from the run's own stream, so the printer's stream (and with it every seeded
        timeline) stays what it was; only the clearing of a rated or stuck run comes later.
        A rated run is rated while it is still the printer's current run (the parts still on
        the platform) and cleared 5-40 minutes after, so its rating is visible to a poller
        in ``current_print_run``. Returns the linger time.
        """
        side = Rng(derive_seed(self.config.seed, "aftercare", run.guid))
        config = self.config
        if run.form_auto is not None:
            if run.status == catalog.ERROR:
                run.harvest = catalog.HARVEST_FAILED
            elif run.status == catalog.ABORTED:
                run.harvest = catalog.HARVEST_ABORTED
            elif side.chance(config.formlabs_harvest_failed_share):
                run.harvest = catalog.HARVEST_FAILED
            else:
                run.harvest = catalog.HARVEST_FINISHED
            if run.harvest != catalog.HARVEST_FINISHED:
                # The Form Auto stopped: parts stay until someone frees them.
                linger = max(linger, side.randint(10 * MINUTE, 60 * MINUTE))
        if rated and run.verdict_at is not None:
            if run.status == catalog.FINISHED and side.chance(
                config.formlabs_verdict_failure_share
            ):
                run.verdict = "FAILURE"
            if run.note is not None:
                run.note_delay_s = run.verdict_at - t  # the note comes with the rating
            linger = max(linger, run.verdict_at - t + side.randint(5 * MINUTE, 40 * MINUTE))
            p.agenda.append((run.verdict_at, RATE, run.seq))
        return linger

    def _rate(self, p: Printer, t: int, seq: int) -> None:
        run = p.run
        if run is None or run.seq != seq or run.verdict is None:
            return  # pragma: no cover - a rated run is cleared only after its rating
        p.touch(t)
        self._record(p, t, TruthKind.PRINT_RATED, run, detail=run.verdict)

    def _form_auto(self, p: Printer) -> str | None:
        """The serial of the printer's Form Auto, for a seeded share of single-cartridge ones."""
        if p.vendor != "formlabs" or p.model.dual_cartridge:
            return None
        rng = Rng(derive_seed(self.config.seed, "form-auto", p.serial))
        if not rng.chance(self.config.formlabs_form_auto_share):
            return None
        return f"FA{p.serial[-6:]}"

    def _clear(self, p: Printer, t: int) -> None:
        p.last_run = p.run
        p.run = None
        p.touch(t)
        self._start_gap(p, t)

    def _start_gap(self, p: Printer, t: int) -> None:
        profile = PROFILES[p.vendor]
        p.phase = IDLE
        if p.next_run is None:
            p.next_run = self._new_run(p, t)
        if profile.materials:
            self._swap_cartridges(p, t, p.next_run)
        if profile.maintenance and p.rng.chance(0.05):
            p.alerts = (p.rng.choice(catalog.CARBON_ALERTS),)
        items = [(when, action, 0) for when, action in plan_gap(t, p.rng, profile, self._odds)]
        if profile.linger:
            items = self._not_ready_spell(p, t, items)
        p.agenda.extend(items)

    def _not_ready_spell(
        self, p: Printer, t: int, items: list[tuple[int, str, int]]
    ) -> list[tuple[int, str, int]]:
        """``items`` (a gap's agenda) with, on a seeded share of gaps, a spell in which the
        Formlabs printer says READY_TO_PRINT_NOT_READY; it ends before the next run starts."""
        side = Rng(derive_seed(self.config.seed, "not-ready", p.serial, t))
        end = items[-1][0]  # START_RUN
        if end - t < 4 * MINUTE or not side.chance(self.config.formlabs_not_ready_share):
            return items
        begin = t + side.randint(1 * MINUTE, (end - t) // 2)
        done = min(end - 1, begin + side.randint(3 * MINUTE, 20 * MINUTE))
        spell = [(begin, NOT_READY_ON, 0), (done, NOT_READY_OFF, 0)]
        # Stable: at equal times the gap's own actions come first.
        return sorted(items + spell, key=lambda item: item[0])

    # --- consumables ----------------------------------------------------------------------------

    def _consume(self, p: Printer, run: Run, t: int) -> None:
        """Dispense the resin and wear the tank in proportion to the layers actually printed."""
        fraction = run.work_at(t) / run.print_s if run.print_s else 1.0
        used = run.volume_ml * fraction
        if p.cartridges:
            share = used / len(p.cartridges)
            for cartridge in p.cartridges:
                cartridge.volume_dispensed_ml = round(
                    min(cartridge.initial_volume_ml, cartridge.volume_dispensed_ml + share), 1
                )
                cartridge.dispense_count = (cartridge.dispense_count or 0) + int(share * 7) + 1
                cartridge.write_count += 1
                cartridge.last_print_date = run.started_at
                cartridge.last_modified = t
                low = cartridge.remaining_ml < LOW_FRACTION * cartridge.initial_volume_ml
                if low and not cartridge.low_reported:
                    cartridge.low_reported = True
                    self._record(p, t, TruthKind.MATERIAL_LOW, detail=cartridge.serial)
                    label = p.alias or p.serial
                    self._event(
                        p,
                        t,
                        "RESIN_LOW",
                        f"{cartridge.display_name} cartridge in {label} is running low",
                        cartridge=cartridge.serial,
                    )
        tank = p.tank
        if tank is not None:
            layers = int(run.layer_count * fraction)
            tank.layers_printed = (tank.layers_printed or 0) + layers
            tank.print_time_ms = (tank.print_time_ms or 0) + run.work_at(t) * 1000
            tank.write_count += 1
            tank.last_print_date = run.started_at
            tank.last_modified = t
            if tank.first_fill_date is None:
                tank.first_fill_date = run.started_at

    def _swap_cartridges(self, p: Printer, t: int, upcoming: Run) -> None:
        """Operators replace a cartridge that cannot feed the next job, or one flagged low."""
        need = upcoming.volume_ml / max(1, len(p.cartridges)) + 10.0
        for index, cartridge in enumerate(p.cartridges):
            if cartridge.remaining_ml < need or (cartridge.low_reported and p.rng.chance(0.5)):
                cartridge.inside_printer = ""
                cartridge.last_modified = t
                fresh = self.factory.cartridge(p, t, cartridge.slot)
                p.cartridges[index] = fresh
                p.account.cartridges.append(fresh)
                p.touch(t)
                # formlabs.md §6.10 documents no cartridge event type; the simulator writes
                # one the daemon cannot know, so its unmapped-type path (vendor.event) is fed.
                self._event(
                    p,
                    t,
                    catalog.CARTRIDGE_SWAPPED,
                    f"{cartridge.display_name} cartridge {cartridge.serial} in "
                    f"{p.alias or p.serial} was replaced by {fresh.serial}",
                    cartridge=fresh.serial,
                )

    # --- churn ----------------------------------------------------------------------------------

    def _churn(self, vendor: str, t: int) -> None:
        rng = self._churn_rng
        account = rng.choice(self.accounts[vendor])
        idle = [p for p in account.printers.values() if p.phase == IDLE]
        if rng.chance(0.5) and len(account.printers) > 1 and idle:
            self.remove_printer(rng.choice(idle))
        else:
            self.add_printer(vendor, account)
        index = VENDORS.index(vendor)
        heapq.heappush(self._heap, (t + int(rng.expo(CHURN_MEAN_S)) + 60, -1 - index, 0))

    # --- records --------------------------------------------------------------------------------

    def _record(
        self,
        p: Printer,
        t: int,
        kind: TruthKind,
        run: Run | None = None,
        detail: str | None = None,
    ) -> None:
        if not self.recording:
            return
        print_id = None
        if run is not None:
            print_id = run.guid if p.vendor == "formlabs" else run.print_id
        self.truth.append(
            GroundTruthEvent(
                to_datetime(t), p.vendor, p.account.name, p.serial, kind, print_id, detail
            )
        )

    def _run_event(self, p: Printer, t: int, event_type: str, run: Run, verb: str) -> None:
        self._event(p, t, event_type, f"{run.name} {verb} on {p.alias or p.serial}", run=run)

    def _event(
        self,
        p: Printer,
        t: int,
        event_type: str,
        message: str,
        *,
        run: Run | None = None,
        cartridge: str | None = None,
    ) -> None:
        if not PROFILES[p.vendor].event_feed:
            return
        account = p.account
        event = VendorEvent(
            id=next(self._event_ids),
            created_at=t,
            type=event_type,
            printer=p.serial,
            run=run,
            tank=None,
            cartridge=cartridge,
            group=p.group,
            message=message,
        )
        account.events.append(event)
        account.event_times.append(t)
