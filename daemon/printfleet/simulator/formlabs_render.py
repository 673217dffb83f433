"""Formlabs wire format: the fleet as ``DeveloperAPIMyPrinter``, print runs, events, consumables.

Key sets and order follow ``shared/api/formlabs-samples.json`` exactly. Simulator choices where the
vendor is silent: an idle printer has ``current_print_run: null``; a printer with no earlier run
has ``previous_print_run: {}``; ``previous_print_run`` carries the sample's eight summary keys;
``print_finished_at`` stays null on ERROR runs (as in the sample), also in
``previous_print_run``; Form 3L (``FRML-3-0``) printers
report ``cartridge_status`` as a FRONT/BACK list.

Documented variants, each on a seeded share of records (``SimulatorConfig.formlabs_*_share``):
``cartridge_status`` as a one-element list without ``cartridge_slot`` on single-cartridge printers;
``group: null`` (printers in no group, their runs and events); ``note`` a ``PrintRunNote`` once
someone annotates an ended run, else null; the 0.8.0 run shape with ``probably_finished``.
Always null here: ``print_run_success`` until a verdict, events' ``print_run`` on resin events.
After a run ends: ``build_platform_contents`` is ``POST_PRINT`` while it stays on the printer
(rated runs stay until rated and cleared; a Form Auto that harvested shows ``CONFIRMED_CLEAR``);
runs on Form Auto printers carry ``form_auto_serial`` and, once ended, ``harvest_status``;
idle gaps sometimes show ``READY_TO_PRINT_NOT_READY``.
``form_cell`` stays null: no simulated printer sits in a Form Cell, and ``FormCell.status``
values are undocumented, so any we sent would be invented.
"""

from __future__ import annotations

from typing import Any

from printfleet.simulator import catalog
from printfleet.simulator.fleet import LINGER, RUNNING, Cartridge, Group, Printer, Run, Tank, User
from printfleet.simulator.fleet import VendorEvent as Event
from printfleet.simulator.pictures import Links, static_links
from printfleet.simulator.rng import Rng, derive_seed
from printfleet.simulator.wire import JsonObject, dumps, iso_seconds

CDN = "https://cdn.example.com/formlabs"
FORM_AUTO_FIRMWARE = "1.4.2"
_PRINTING_STATES = frozenset(
    {
        catalog.PREPRINT,
        catalog.PREHEAT,
        catalog.PRECOAT,
        catalog.PRINTING,
        catalog.POSTCOAT,
        catalog.ABORTING,
    }
)


def _user(user: User) -> JsonObject:
    return {
        "id": user.id,
        "username": user.username,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "email": user.email,
    }


def _group(group: Group | None) -> JsonObject | None:
    return None if group is None else {"id": group.id, "name": group.name}


def _unknown_subset(key: int) -> bool:
    """The third of the fleet that speaks undocumented statuses when the fault flag is on."""
    return key % 3 == 0


def run_record(
    run: Run, t: int, *, full: bool, unknown: bool = False, links: Links = static_links
) -> JsonObject:
    """A run as ``MyPrintRunReadOnly`` (``full=False``) or ``PrintRunWithFleetControlData``.

    Live fields (layer, elapsed, remaining) are sampled at ``t``, frozen at the run's end.
    ``links`` signs the picture links (:mod:`printfleet.simulator.pictures`).
    """
    end = run.finished_at
    sample = min(t, end) if end is not None else t
    started = run.started_at
    status = run.status
    if status == catalog.FINISHED:
        layer = run.layer_count
    else:
        layer = run.layer_count * run.work_at(sample) // run.print_s if started is not None else 0
    if unknown and status == catalog.PREPRINT and _unknown_subset(run.seq):
        status = catalog.UNKNOWN_PREPRINT_STATUS
    verdict = None
    if run.verdict is not None and run.verdict_at is not None and run.verdict_at <= t:
        verdict = {
            "print_run": run.guid,
            "print_run_success": run.verdict,
            "created_at": iso_seconds(run.verdict_at),
        }
    if run.dual:
        single, front, back = None, _nth(run.cartridges, 0), _nth(run.cartridges, 1)
    else:
        single, front, back = _nth(run.cartridges, 0), None, None
    finished = run.status == catalog.FINISHED
    record: JsonObject = {
        "guid": run.guid,
        "name": run.name,
        "printer": run.printer_serial,
        "status": status,
        "using_open_mode": False,
        "z_height_offset_mm": 0.0,
        "print_started_at": iso_seconds(started),
        "print_finished_at": _finished_at(run),
        "layer_count": run.layer_count,
        "volume_ml": run.volume_ml,
        "material": run.material,
        "layer_thickness_mm": run.layer_thickness_mm,
        "currently_printing_layer": layer,
        "estimated_duration_ms": run.estimated_s * 1000,
        "elapsed_duration_ms": (sample - started) * 1000 if started is not None else 0,
        "estimated_time_remaining_ms": run.remaining_at(sample) * 1000,
        "created_at": iso_seconds(run.created_at),
        "print_run_success": verdict,
        "firmware_version": run.firmware,
        "cartridge": single,
        "front_cartridge": front,
        "back_cartridge": back,
        "tank": run.tank,
        "cylinder": None,
        "note": _note(run, t),
        "print_thumbnail": {"thumbnail": links("thumbnails", run.guid, t)},
        # The Form 4 family (the printers with POSTCOAT) has the camera.
        "post_print_photo_url": (
            links("photos", run.guid, t) if finished and run.postcoat_s else None
        ),
        "user": _user(run.user),
        "user_custom_label": "",
        "group": _group(run.group),
        "adaptive_thickness": run.seq % 2 == 0,
        "message": run.message,
        "print_job": run.build_uuid if run.seq % 3 else None,
        "material_name": run.material_name,
        "print_settings_name": "Default",
        "print_settings_code": "DEFAULT",
    }
    if full:
        record["cloud_queue_item"] = None
    record["form_auto_serial"] = run.form_auto
    record["form_auto_fw_version"] = FORM_AUTO_FIRMWARE if run.form_auto else None
    # Set once the run has ended (run.harvest is decided then): null while it prints.
    record["harvest_status"] = run.harvest if end is not None and end <= sample else None
    if full:
        record["parts"] = _parts(run)
    if run.legacy:
        # 0.8.0 required it in both run models; 0.8.1 dropped it. Its meaning was never
        # documented: true once the run FINISHED is our guess.
        record["probably_finished"] = finished
    return record


def _note(run: Run, t: int) -> JsonObject | None:
    end = run.finished_at
    if run.note is None or end is None or t < end + run.note_delay_s:
        return None
    return {
        "print_run": run.guid,
        "note": run.note,
        "author": _user(run.user),
        "updated_at": iso_seconds(end + run.note_delay_s),
    }


def _finished_at(run: Run) -> str | None:
    # The vendor's ERROR sample keeps print_finished_at null; FINISHED and ABORTED runs have it.
    return None if run.status == catalog.ERROR else iso_seconds(run.finished_at)


def _nth(items: tuple[str, ...], index: int) -> str | None:
    return items[index] if index < len(items) else None


def _parts(run: Run) -> list[JsonObject]:
    rng = Rng(derive_seed(run.guid, "parts"))
    count = 1 + run.seq % 3
    base = run.name.rsplit("_", 1)[0]
    scene = rng.uuid4()
    mesh = rng.hex(16).lower()
    return [
        {
            "id": 7_700_000 + run.seq * 4 + i,
            "guid": rng.uuid4(),
            "display_name": base if i == 0 else f"{base} ({i + 1})",
            "end_layer": run.layer_count,
            "name": f"{base}.stl",
            "raw_mesh_hash": mesh,
            "start_layer": 1,
            "volume_ml": round(run.volume_ml / count, 1),
            "prepared_scene": scene,
        }
        for i in range(count)
    ]


def _previous(run: Run | None) -> JsonObject:
    if run is None:
        return {}
    return {
        "guid": run.guid,
        "name": run.name,
        "status": run.status,
        "print_started_at": iso_seconds(run.started_at),
        "print_finished_at": _finished_at(run),
        "material": run.material,
        "volume_ml": run.volume_ml,
        "layer_count": run.layer_count,
    }


def _speaks_phases(key: int) -> bool:
    """Half of the fleet (by its fixed ordinal, so seeded) reports the run's phase as its own
    printer word (``FILLING``, ``PREHEAT``, ``PRECOAT``, ``POSTCOAT``, ``PAUSING``,
    ``ABORTING``), as real printers do; the rest only the coarse IDLE/PRINTING/PAUSED."""
    return key % 2 == 1


def _printer_status_string(p: Printer, unknown: bool) -> str:
    run = p.run
    if run is None or run.status in (catalog.QUEUED, catalog.FINISHED, catalog.ABORTED):
        if unknown and _unknown_subset(p.key):
            return catalog.UNKNOWN_IDLE_STATUS
        return "IDLE"
    if run.status in (catalog.WAITING_FOR_RESOLUTION, catalog.ERROR):
        return run.status
    if _speaks_phases(p.key):
        if run.status == catalog.PREPRINT:
            return catalog.FILLING
        if run.status in catalog.PRINTER_PHASE_WORDS:
            return run.status
    if run.status in (catalog.PAUSING, catalog.PAUSED):
        return "PAUSED"
    return "PRINTING"


def _cartridge_inside(c: Cartridge) -> JsonObject:
    return {
        "serial": c.serial,
        "material": c.material,
        "consumable_type": "RESIN_CARTRIDGE",
        "initial_volume_ml": c.initial_volume_ml,
        "volume_dispensed_ml": c.volume_dispensed_ml,
        "display_name": c.display_name,
        "is_empty": c.volume_dispensed_ml >= c.initial_volume_ml,
        "inside_printer": c.inside_printer,
        "connected_group": c.connected_group,
        "created_at": iso_seconds(c.created_at),
        "last_print_date": iso_seconds(c.last_print_date),
        "machine_type_id": c.machine_type_id,
    }


def _cartridge_status(p: Printer) -> JsonObject | list[JsonObject] | None:
    if not p.cartridges:
        return None
    if not p.model.dual_cartridge:
        c = p.cartridges[0]
        single = {"cartridge": _cartridge_inside(c), "last_modified": iso_seconds(c.last_modified)}
        # formlabs.md §6.1/§6.3: some single-cartridge printers send a list, slot left out.
        return [single] if p.cartridge_list else single
    return [
        {
            "cartridge": _cartridge_inside(c),
            "last_modified": iso_seconds(c.last_modified),
            "cartridge_slot": c.slot,
        }
        for c in p.cartridges
    ]


def _tank_status(tank: Tank | None) -> JsonObject | None:
    if tank is None:
        return None
    return {
        "tank": {
            "serial": tank.serial,
            "material": tank.material,
            "print_time_ms": tank.print_time_ms,
            "layers_printed": tank.layers_printed,
            "first_fill_date": iso_seconds(tank.first_fill_date),
            "heatmap": f"{CDN}/tank-heatmaps/{tank.serial}.png",
            "heatmap_gif": f"{CDN}/tank-heatmaps/{tank.serial}.gif" if tank.has_gif else None,
            "display_name": tank.display_name,
            "layer_count": tank.layers_printed or 0,
            "inside_printer": tank.inside_printer,
            "tank_type": tank.tank_type,
            "connected_group": tank.connected_group,
            "created_at": iso_seconds(tank.created_at),
            "last_print_date": iso_seconds(tank.last_print_date),
        },
        "last_modified": iso_seconds(tank.last_modified),
    }


def printer_record(
    p: Printer, now: int, heartbeat_s: int, *, unknown: bool, links: Links = static_links
) -> JsonObject:
    """One ``DeveloperAPIMyPrinter`` as the cloud saw it at its last heartbeat before ``now``."""
    obs = p.observed_at(now, heartbeat_s)
    run = p.run
    printing = run is not None and run.status in _PRINTING_STATES
    form4 = p.model.extra_phases
    supported = not p.model.dual_cartridge
    if not supported:
        platform, ready = "BUILD_PLATFORM_CONTENTS_NOT_SUPPORTED", "READY_TO_PRINT_NOT_SUPPORTED"
    elif p.phase == LINGER and run is not None and run.harvest == catalog.HARVEST_FINISHED:
        # The Form Auto took the parts off: nothing for a person to clear.
        platform, ready = "BUILD_PLATFORM_CONTENTS_CONFIRMED_CLEAR", "READY_TO_PRINT_READY"
    elif p.phase == LINGER:
        # Parts on the platform until someone harvests them (and rates the print, often).
        platform, ready = "BUILD_PLATFORM_CONTENTS_POST_PRINT", "READY_TO_PRINT_NEEDS_CONFIRMATION"
    elif p.phase == RUNNING:
        platform, ready = "BUILD_PLATFORM_CONTENTS_UNCONFIRMED", "READY_TO_PRINT_NOT_READY"
    elif p.not_ready:
        platform, ready = "BUILD_PLATFORM_CONTENTS_CONFIRMED_CLEAR", "READY_TO_PRINT_NOT_READY"
    else:
        platform, ready = "BUILD_PLATFORM_CONTENTS_CONFIRMED_CLEAR", "READY_TO_PRINT_READY"
    temperature = 29.0 + (p.key % 20) / 10 + (5.0 if printing else 0.0) + (obs // 30 % 7) / 10
    return {
        "serial": p.serial,
        "alias": p.alias,
        "machine_type_id": p.model.code,
        "printer_status": {
            "status": _printer_status_string(p, unknown),
            "last_pinged_at": iso_seconds(obs),
            "hopper_level": None,
            "material_credit": None,
            "hopper_material": "",
            "last_modified": iso_seconds(obs if printing else p.changed_at),
            "current_temperature": round(temperature, 1),
            "current_print_run": (
                run_record(run, obs, full=False, unknown=unknown, links=links)
                if run is not None
                else None
            ),
            "form_cell": None,
            "last_printer_cooldown_started": None,
            "outer_boundary_offset_corrections": None,
            "build_platform_contents": platform,
            "tank_mixer_state": (
                "TANK_MIXER_STATE_PRESENT" if form4 else "TANK_MIXER_STATE_NOT_SUPPORTED"
            ),
            "ready_to_print": ready,
            "printer_capabilities": [],
            "printernet_capabilities": [] if form4 else None,
            "camera_status": "ENABLED" if form4 else "UNKNOWN",
        },
        "cartridge_status": _cartridge_status(p),
        "tank_status": _tank_status(p.tank),
        "group": _group(p.group),
        "previous_print_run": _previous(p.last_run),
        "firmware_version": p.model.firmware,
        "location": p.location,
    }


def printer_json(
    p: Printer,
    now: int,
    heartbeat_s: int,
    *,
    unknown: bool,
    malformed: bool,
    links: Links = static_links,
) -> bytes:
    """The printer's record as JSON bytes, cached until it changes or its next heartbeat."""

    def render() -> bytes:
        record = printer_record(p, now, heartbeat_s, unknown=unknown, links=links)
        if malformed:
            # A record a strict parser chokes on: the nested object flattened to its status string.
            record["printer_status"] = record["printer_status"]["status"]
        return dumps(record)

    return p.cached_json((p.observed_at(now, heartbeat_s), unknown, malformed), render)


def malformed_printer(index: int) -> Any:
    """The ``index``-th kind of broken printer entry mixed into ``/printers/``."""
    variant = index % 3
    if variant == 0:
        return {
            "serial": f"BrokenRecord{index}",
            "alias": None,
            "machine_type_id": "FORM-4-0",
            "printer_status": "PRINTING",
            "cartridge_status": None,
            "tank_status": None,
            "group": None,
            "previous_print_run": {},
            "firmware_version": "2.1.2",
            "location": None,
        }
    if variant == 1:
        return {"alias": "Serial-less printer", "machine_type_id": "FORM-3-1", "printer_status": {}}
    return None


def malformed_event(index: int, at: int) -> Any:
    """A broken ``/events/`` entry: ``print_run`` a bare string and ``id`` missing."""
    return {
        "printer": None,
        "created_at": iso_seconds(at),
        "print_run": f"not-a-run-{index}",
        "type": "PRINT_START",
    }


def event_record(event: Event, t: int, links: Links = static_links) -> JsonObject:
    """One ``UserEventReadOnly``; ``print_run`` is the run's state at ``t`` (not a snapshot)."""
    run = event.run
    return {
        "id": event.id,
        "printer": event.printer,
        "created_at": iso_seconds(event.created_at),
        "print_run": run_record(run, t, full=False, links=links) if run is not None else None,
        "tank": event.tank,
        "cartridge": event.cartridge,
        "type": event.type,
        "type_label": catalog.EVENT_LABELS.get(event.type, event.type),
        "action": "",
        "message": event.message,
        "was_read": False,
        "group": _group(event.group),
    }


def tank_record(tank: Tank) -> JsonObject:
    """One ``Tank`` of ``/tanks/``."""
    used = tank.layers_printed is not None
    return {
        "serial": tank.serial,
        "material": tank.material,
        "layers_printed": tank.layers_printed,
        "print_time_ms": tank.print_time_ms,
        "heatmap": f"{CDN}/tank-heatmaps/{tank.serial}.png" if used else "",
        "heatmap_gif": f"{CDN}/tank-heatmaps/{tank.serial}.gif" if tank.has_gif else None,
        "mechanical_version": tank.mechanical_version,
        "manufacture_date": iso_seconds(tank.manufacture_date),
        "manufacturer": "Formlabs",
        "display_name": tank.display_name,
        "lot_number": tank.lot_number,
        "layer_count": tank.layers_printed or 0,
        "last_modified": iso_seconds(tank.last_modified),
        "inside_printer": tank.inside_printer,
        "write_count": tank.write_count,
        "tank_type": tank.tank_type,
        "connected_group": tank.connected_group,
        "first_fill_date": iso_seconds(tank.first_fill_date),
        "created_at": iso_seconds(tank.created_at),
        "last_print_date": iso_seconds(tank.last_print_date),
    }


def cartridge_record(c: Cartridge) -> JsonObject:
    """One ``Cartridge`` of ``/cartridges/``."""
    return {
        "serial": c.serial,
        "consumable_type": "RESIN_CARTRIDGE",
        "machine_type_id": c.machine_type_id,
        "material": c.material,
        "initial_volume_ml": c.initial_volume_ml,
        "volume_dispensed_ml": c.volume_dispensed_ml,
        "dispense_count": c.dispense_count,
        "write_count": c.write_count,
        "mechanical_version": c.mechanical_version,
        "manufacture_date": iso_seconds(c.manufacture_date),
        "manufacturer": "Formlabs",
        "display_name": c.display_name,
        "lot_number": c.lot_number,
        "last_modified": iso_seconds(c.last_modified),
        "is_empty": c.volume_dispensed_ml >= c.initial_volume_ml,
        "inside_printer": c.inside_printer,
        "connected_group": c.connected_group,
        "created_at": iso_seconds(c.created_at),
        "last_print_date": iso_seconds(c.last_print_date),
    }


def group_record(group: Group, users: list[User], serials: list[str]) -> JsonObject:
    """One ``Workgroup`` of ``/groups/``."""
    admin = users[0] if users else None
    return {
        "id": group.id,
        "name": group.name,
        "remote_print_enabled_override": group.has_fleet_control,
        "created_at": iso_seconds(group.created_at),
        "memberships": [
            {
                "is_admin": user is admin,
                "user": user.username,
                "email": user.email,
                "first_name": user.first_name,
                "last_name": user.last_name,
            }
            for user in users[:2]
        ],
        "printers": serials,
        "invitations": [],
        "has_fleet_control": group.has_fleet_control,
        "has_fleet_control_updated_by": admin.id if admin and group.has_fleet_control else None,
        "settings": {"group": group.id, "update_mode": "NORMAL"},
    }
