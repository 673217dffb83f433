"""Carbon wire format: the fleet as ``Printer`` (with its PrintRefs) and ``ModelPrint`` records.

Key sets and order follow ``shared/api/carbon-samples.json`` exactly; optional fields are sent as
null, as in the samples. Simulator assumptions (carbon.md §8 leaves them open):

- ``ModelPrint.status``: ``queued``, ``printing``, ``finished``, ``failed`` (the samples'
  assumption) and ``canceled`` for aborted prints (spelled like PrintedPartStatus).
- ``printer_state``: ``PRINTING``, ``IDLE``, ``OFFLINE`` (samples), plus the undocumented
  ``MAINTENANCE`` during some idle gaps, and ``STANDBY`` with the unknown-statuses fault.
- ``prints.last`` is the most recent print that reached a terminal status, whatever its outcome;
  ``prints.next`` is the queued print (``queue_length`` 0 or 1).
- Per-print details Carbon's API would know but the lifecycle does not model (cassette and platform
  serials, print orders, feedback text) are derived from the print's uuid, so they never change.
"""

from __future__ import annotations

from typing import Any

from printfleet.simulator import catalog
from printfleet.simulator.fleet import MAINTENANCE, Printer, Run
from printfleet.simulator.rng import Rng, derive_seed
from printfleet.simulator.wire import JsonObject, dumps, iso_millis

_FEEDBACK = {
    "SUCCESS": (5.0, "Clean release, no visible defects"),
    "FAILURE": (1.0, "Parts detached from platform"),
}


def carbon_status(run: Run) -> str:
    """The Carbon ``ModelPrint.status`` of a run."""
    return catalog.CARBON_STATUS_OF_RUN.get(run.status, catalog.CARBON_PRINTING)


def print_order_number(run: Run) -> str | None:
    """The run's print order number (stable; about 60 % of prints come from an order)."""
    rng = Rng(derive_seed(run.guid, "order"))
    return f"WO-{rng.randint(1000, 9999)}" if rng.chance(0.6) else None


def print_ref(run: Run | None, t: int) -> JsonObject | None:
    """A ``PrintRef`` (prints.last / current / next), or None."""
    if run is None:
        return None
    started = run.started_at is not None
    active = started and not run.terminal
    return {
        "name": run.name,
        "print_id": run.print_id if started else None,
        "build_uuid": run.build_uuid,
        "finished_at": iso_millis(run.finished_at) if run.terminal else None,
        "started_at": iso_millis(run.started_at),
        "remaining_sec": run.remaining_at(t) if active else None,
    }


def _state(p: Printer, unknown: bool) -> str:
    if not p.online:
        return catalog.CARBON_STATE_OFFLINE
    if p.phase == MAINTENANCE:
        return catalog.CARBON_STATE_MAINTENANCE
    if p.run is not None and not p.run.terminal:
        return catalog.CARBON_STATE_PRINTING
    if unknown and p.key % 3 == 0:
        return catalog.UNKNOWN_IDLE_STATUS
    return catalog.CARBON_STATE_IDLE


def printer_record(p: Printer, now: int, heartbeat_s: int, *, unknown: bool) -> JsonObject:
    """One ``Printer`` as the cloud saw it at the printer's last heartbeat before ``now``."""
    obs = p.observed_at(now, heartbeat_s)
    current = p.run if p.run is not None and not p.run.terminal else None
    customer = p.account.name.replace("carbon-", "acme")
    return {
        "name": p.name,
        "alias": p.alias,
        "serial": p.serial,
        "hw_type": p.model.code,
        "url": f"https://{p.name.lower()}.{customer}.print.carbon3d.com",
        "updated_at": iso_millis(obs),
        "status": {
            "alerts": list(p.alerts),
            "printer_state": _state(p, unknown),
            "software_version": p.model.firmware,
        },
        "prints": {
            "last": print_ref(p.last_run, obs),
            "current": print_ref(current, obs),
            "next": print_ref(p.next_run, obs),
            "queue_length": 1 if p.next_run is not None else 0,
        },
    }


def printer_json(
    p: Printer, now: int, heartbeat_s: int, *, unknown: bool, malformed: bool
) -> bytes:
    """The printer's record as JSON bytes, cached until it changes or its next heartbeat."""

    def render() -> bytes:
        record = printer_record(p, now, heartbeat_s, unknown=unknown)
        if malformed:
            # A record a strict parser chokes on: the status object flattened to its state string.
            record["status"] = record["status"]["printer_state"]
        return dumps(record)

    return p.cached_json((p.observed_at(now, heartbeat_s), unknown, malformed), render)


def print_record(run: Run, t: int) -> JsonObject:
    """One ``ModelPrint`` of ``/prints``, sampled at ``t``."""
    rng = Rng(derive_seed(run.guid, "carbon"))
    # Draw everything up front, in a fixed order, so values never shift as the print progresses.
    order_uuid = rng.uuid4()
    cassette = f"C7A{rng.randint(0, 9999):04d}"
    cassette_nfc = rng.hex(14)
    platform = f"P3B{rng.randint(0, 9999):04d}"
    platform_nfc = rng.hex(14)
    measured_extra = rng.uniform(100.0, 800.0)
    consumed_factor = rng.uniform(0.97, 1.03)
    order_number = print_order_number(run)
    started = run.started_at is not None
    terminal = run.terminal
    sample = min(t, run.finished_at) if run.finished_at is not None else t
    work = run.work_at(sample)
    fraction = work / run.print_s if run.print_s else 0.0
    speed = None
    if terminal and work > 0:
        height_mm = run.layer_count * fraction * run.layer_thickness_mm
        speed = int(height_mm / (work / 3600))
    feedback = None
    if run.verdict is not None and run.verdict_at is not None and run.verdict_at <= t:
        rating, message = _FEEDBACK[run.verdict]
        feedback = {"feedback_rating": rating, "feedback_message": message}
    return {
        "name": run.name,
        "print_id": run.print_id if started else None,
        "uuid": run.guid,
        "build_uuid": run.build_uuid,
        "finished_at": iso_millis(run.finished_at) if terminal else None,
        "started_at": iso_millis(run.started_at),
        "remaining_sec": run.remaining_at(sample) if started and not terminal else None,
        "printed_by": f"{run.user.username}@acme.example" if started else None,
        "print_order_uuid": order_uuid if order_number else None,
        "print_order_number": order_number,
        "status": carbon_status(run),
        "origin": {
            "cassette_serial": cassette if started else None,
            "cassette_nfc_uid": cassette_nfc if started else None,
            "platform_serial": platform if started else None,
            "platform_nfc_uid": platform_nfc if started else None,
            "printer_serial": run.printer_serial,
            "software_version": run.firmware if started else None,
        },
        "config": {
            "resin_name": run.material,
            "print_profile": "Default",
            "release_film_nm": 25000 if started else None,
            "slice_thickness_nm": round(run.layer_thickness_mm * 1_000_000),
        },
        "metrics": {
            "average_speed_mmhr": speed,
            "consumed_resin_volume_ml": (
                round(run.volume_ml * fraction * consumed_factor, 1) if terminal else None
            ),
            "minimum_required_resin_volume_ml": round(run.volume_ml * 1.07, 1),
            "estimated_total_resin_volume_ml": run.volume_ml,
            "measured_resin_volume_ml": (
                round(run.volume_ml + measured_extra, 1) if started else None
            ),
        },
        "feedback": feedback,
    }


def malformed_printer(index: int) -> Any:
    """The ``index``-th kind of broken entry mixed into ``/printers``."""
    variant = index % 3
    if variant == 0:
        return {
            "name": f"X{9000 + index}",
            "alias": None,
            "serial": f"ZZ{index:04d}",
            "hw_type": "L1",
            "url": "https://broken.example",
            "updated_at": "2025-06-17T14:29:52.000Z",
            "status": "PRINTING",
            "prints": {"queue_length": 0},
        }
    if variant == 1:
        return {"name": f"X{9000 + index}", "hw_type": "M2", "status": {}, "prints": None}
    return None


def malformed_print(index: int) -> Any:
    """A broken ``/prints`` entry: no uuid, a numeric status, metrics as a string."""
    return {"name": f"broken_{index}", "uuid": None, "status": 7, "metrics": "n/a"}
