"""Formlabs JSON -> normalized model: the samples' story, then the drift the API allows."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from printfleet.core.model import Printer, PrinterStatus, PrintStatus
from printfleet.errors import BadResponse
from printfleet.sources.formlabs_map import (
    ALERT_BUILD_PLATFORM_DIRTY,
    ALERT_BUILD_PLATFORM_MISSING,
    ALERT_CAMERA_DISCONNECTED,
    ALERT_NEEDS_CONFIRMATION,
    ALERT_TANK_MISSING,
    ALERT_TANK_MIXER_MISSING,
    ALERT_WAITING_FOR_RESOLUTION,
    map_events,
    map_inventory,
    map_print,
    map_printers,
    map_prints,
    unnamed_materials,
)
from printfleet.sources.mapping import MappingError

SAMPLES: dict[str, Any] = json.loads(
    (Path(__file__).parents[2] / "fixtures" / "formlabs-samples.json").read_text()
)
NOW = datetime(2025, 6, 18, 14, 30, tzinfo=UTC)
OFFLINE_AFTER = timedelta(minutes=5)

NIMBLE_RUN = "5b2f7c1a-9e4d-4c3b-8a6f-0d2e1b7c9f34"
CROWN_RUN = "c91d04e7-3a6b-4f28-b5d1-7e2a9c0f6b18"
HOUSING_RUN = "0e7a5c92-6d1f-4b3e-a8c4-92f1d6b0e357"
GEAR_RUN = "7f3b9e21-0c5d-4a86-9b2e-4d1c8a6f0e73"


def sample(name: str) -> Any:
    """A deep copy of one sample body, so tests can mutate it freely."""
    return copy.deepcopy(SAMPLES[name]["body"])


def printer_record(serial: str = "NimbleHeron") -> dict[str, Any]:
    return next(p for p in sample("list_printers") if p["serial"] == serial)


def map_one(record: dict[str, Any], *, now: datetime = NOW) -> Printer:
    printers, _, skipped = map_printers(
        [record], source="lab", now=now, offline_after=OFFLINE_AFTER
    )
    assert skipped == []
    return printers[record["serial"]]


@pytest.fixture
def fleet() -> dict[str, Printer]:
    """The three sample printers, mapped at 2025-06-18T14:30Z with offline_after 5 min."""
    printers, _, skipped = map_printers(
        sample("list_printers"), source="lab", now=NOW, offline_after=OFFLINE_AFTER
    )
    assert skipped == []
    return printers


# --- the samples' story ------------------------------------------------------------------------


def test_sample_printers_all_map(fleet: dict[str, Printer]) -> None:
    """Every printer in the sample /printers/ body maps, keyed by serial."""
    assert list(fleet) == ["NimbleHeron", "AmberLynx", "GentleBison"]


def test_nimble_heron_is_printing_bracket_at_layer_517(fleet: dict[str, Printer]) -> None:
    """NimbleHeron prints bracket_v7 at layer 517 of 1240, so progress is about 0.417."""
    printer = fleet["NimbleHeron"]
    run = printer.current_print
    assert printer.status is PrinterStatus.PRINTING
    assert printer.online
    assert run is not None
    assert (run.id, run.name, run.status) == (NIMBLE_RUN, "bracket_v7", PrintStatus.PRINTING)
    assert (run.layer, run.layers_total) == (517, 1240)
    assert run.progress == pytest.approx(0.417, abs=1e-3)
    assert run.remaining_s == 8449.0
    assert run.elapsed_s == 6011.0
    assert run.material == "Grey V5"
    assert run.user == "mara.quinn"
    assert run.printer_serial == "NimbleHeron"
    assert run.started_at == datetime(2025, 6, 18, 12, 49, 30, tzinfo=UTC)


def test_nimble_heron_printer_facts(fleet: dict[str, Printer]) -> None:
    """Alias, model name, group, firmware, location and the tank come from the record."""
    printer = fleet["NimbleHeron"]
    assert printer.name == "Lab Form 4 #1"
    assert (printer.model, printer.model_code) == ("Form 4", "FORM-4-0")
    assert printer.group == "Prototyping Lab"
    assert printer.firmware == "2.1.2"
    assert printer.location == "Building 2, bench A"
    assert printer.alerts == ()
    assert printer.tank is not None
    assert printer.tank.serial == "TNK-4A7B21C9"
    assert printer.tank.layers_printed == 18342
    assert printer.tank.first_filled_at == datetime(2025, 3, 2, 9, 41, 18, tzinfo=UTC)


def test_amber_lynx_is_idle_with_a_low_cartridge(fleet: dict[str, Printer]) -> None:
    """AmberLynx is idle with no current run and 87.4 ml left in its single cartridge."""
    printer = fleet["AmberLynx"]
    assert printer.status is PrinterStatus.IDLE
    assert printer.online
    assert printer.current_print is None
    assert printer.location is None
    (cartridge,) = printer.materials
    assert cartridge.slot == "main"
    assert cartridge.remaining_ml == 87.4
    assert cartridge.capacity_ml == 1000.0
    assert cartridge.remaining_ratio == pytest.approx(0.0874)
    assert (cartridge.name, cartridge.material) == ("Clear V5", "FLGPCL05")


def test_gentle_bison_errored_with_empty_front_cartridge_and_is_offline(
    fleet: dict[str, Printer],
) -> None:
    """GentleBison is in ERROR, its run failed with a message, FRONT is empty, and its
    last ping (09:14Z) is more than 5 minutes before 14:30Z, so it is offline."""
    printer = fleet["GentleBison"]
    assert printer.status is PrinterStatus.ERROR
    assert not printer.online
    assert printer.last_seen_at == datetime(2025, 6, 18, 9, 14, 2, tzinfo=UTC)
    assert printer.model == "Form 3L"
    run = printer.current_print
    assert run is not None
    assert (run.status, run.status_raw) == (PrintStatus.FAILED, "ERROR")
    assert run.message == "Resin could not be dispensed. Check the cartridges."
    front, back = printer.materials
    assert (front.slot, front.is_empty, front.remaining_ml) == ("FRONT", True, 0.0)
    assert front.remaining_ratio == 0.0
    assert (back.slot, back.remaining_ml) == ("BACK", 35.9)


def test_previous_print_runs_become_runs() -> None:
    """Each previous_print_run with a guid and a status is a run; ``{}`` is none."""
    _, runs, _ = map_printers(
        sample("list_printers"), source="lab", now=NOW, offline_after=OFFLINE_AFTER
    )
    assert set(runs) == {GEAR_RUN, CROWN_RUN}
    assert runs[GEAR_RUN].status is PrintStatus.ABORTED
    assert runs[GEAR_RUN].printer_serial == "NimbleHeron"
    assert runs[CROWN_RUN].status is PrintStatus.FINISHED
    assert runs[CROWN_RUN].progress == 1.0
    assert runs[CROWN_RUN].finished_at == datetime(2025, 6, 18, 10, 47, 55, tzinfo=UTC)


def test_vendor_record_is_kept_read_only_in_raw(fleet: dict[str, Printer]) -> None:
    """The printer and its run keep the vendor record under ``raw``, and it cannot be changed."""
    printer = fleet["NimbleHeron"]
    assert printer.raw["printer_status"]["camera_status"] == "ENABLED"
    assert printer.current_print is not None
    assert printer.current_print.raw["print_job"] == "e4a1c7d2-58b3-4f09-9a6e-2b7d0c3f1e85"
    with pytest.raises(TypeError):
        printer.raw["serial"] = "x"  # type: ignore[index]


def test_single_printer_endpoint_body_maps_like_the_list() -> None:
    """The GET /printers/{serial}/ record maps to the same printer as its list entry."""
    single = map_one(sample("get_printer"))
    assert single == map_one(printer_record("AmberLynx"))


def test_sample_prints_map_by_guid() -> None:
    """The /prints/ sample maps all four runs with their normalized statuses."""
    prints, skipped = map_prints(sample("list_prints")["results"])
    assert skipped == []
    assert {guid: run.status for guid, run in prints.items()} == {
        NIMBLE_RUN: PrintStatus.PRINTING,
        CROWN_RUN: PrintStatus.FINISHED,
        HOUSING_RUN: PrintStatus.FAILED,
        GEAR_RUN: PrintStatus.ABORTED,
    }
    assert prints[GEAR_RUN].progress == pytest.approx(212 / 930)
    assert prints[HOUSING_RUN].message == "Resin could not be dispensed. Check the cartridges."


def test_sample_events_yield_runs_and_newest_time() -> None:
    """Events yield the runs they carry (not the resin event) and the newest created_at."""
    runs, skipped, newest = map_events(sample("list_events")["results"])
    assert skipped == []
    assert set(runs) == {NIMBLE_RUN, CROWN_RUN, HOUSING_RUN}
    assert runs[HOUSING_RUN].status is PrintStatus.FAILED
    assert newest == datetime(2025, 6, 18, 12, 49, 31, tzinfo=UTC)


def test_sample_inventory_maps_tanks_cartridges_and_locations() -> None:
    """Tanks and cartridges map with the printer each is in, ``""`` for spares."""
    inventory = map_inventory(sample("list_tanks")["results"], sample("list_cartridges")["results"])
    assert inventory.skipped == ()
    assert [t.serial for t in inventory.tanks] == [
        "TNK-4A7B21C9",
        "TNK-E18C5D03",
        "TNK-3F9B02E6",
        "TNK-88D1C4A0",
    ]
    assert len(inventory.cartridges) == 5
    assert inventory.location["TNK-3F9B02E6"] == "GentleBison"
    assert inventory.location["TNK-88D1C4A0"] == ""
    assert inventory.location["CRT-A63F18C2"] == ""
    spare_tank = inventory.tanks[3]
    assert (spare_tank.layers_printed, spare_tank.first_filled_at) == (0, None)
    empty = next(c for c in inventory.cartridges if c.serial == "CRT-71C3E9B2")
    assert (empty.is_empty, empty.remaining_ml, empty.slot) == (True, 0.0, "")


# --- status normalisation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("IDLE", PrinterStatus.IDLE),
        ("PRINTING", PrinterStatus.PRINTING),
        ("PAUSED", PrinterStatus.PAUSED),
        ("ERROR", PrinterStatus.ERROR),
        ("OFFLINE", PrinterStatus.OFFLINE),
        ("MAINTENANCE", PrinterStatus.MAINTENANCE),
        ("WAITING_FOR_RESOLUTION", PrinterStatus.UNKNOWN),
        ("idle", PrinterStatus.UNKNOWN),
        ("CALIBRATING", PrinterStatus.UNKNOWN),
        ("", PrinterStatus.UNKNOWN),
    ],
)
def test_printer_status_by_exact_known_string(raw: str, expected: PrinterStatus) -> None:
    """Without a run, known printer strings map exactly; anything else is UNKNOWN, raw kept."""
    record = printer_record()
    record["printer_status"]["status"] = raw
    record["printer_status"]["current_print_run"] = None
    printer = map_one(record)
    assert (printer.status, printer.status_raw) == (expected, raw)


_RUN_PHASES = [
    # (printer word, current_print_run.status) -> (normalized printer status, phase)
    ("IDLE", None, PrinterStatus.IDLE, None),
    ("IDLE", "QUEUED", PrinterStatus.IDLE, None),
    ("PRINTING", "PREPRINT", PrinterStatus.PRINTING, "PREPRINT"),
    ("FILLING", "PREPRINT", PrinterStatus.PRINTING, "FILLING"),
    ("PREHEAT", "PREHEAT", PrinterStatus.PRINTING, "PREHEAT"),
    ("PRINTING", "PREHEAT", PrinterStatus.PRINTING, "PREHEAT"),
    ("PRECOAT", "PRECOAT", PrinterStatus.PRINTING, "PRECOAT"),
    ("PRINTING", "PRINTING", PrinterStatus.PRINTING, None),
    ("IDLE", "PRINTING", PrinterStatus.PRINTING, None),
    ("POSTCOAT", "POSTCOAT", PrinterStatus.PRINTING, "POSTCOAT"),
    ("PAUSING", "PAUSING", PrinterStatus.PAUSED, "PAUSING"),
    ("PRINTING", "PAUSING", PrinterStatus.PAUSED, "PAUSING"),
    ("PAUSED", "PAUSED", PrinterStatus.PAUSED, None),
    ("PAUSED", "PRINTING", PrinterStatus.PRINTING, None),
    ("ABORTING", "ABORTING", PrinterStatus.PRINTING, "ABORTING"),
    (
        "WAITING_FOR_RESOLUTION",
        "WAITING_FOR_RESOLUTION",
        PrinterStatus.PRINTING,
        "WAITING_FOR_RESOLUTION",
    ),
    ("PRINTING", "WAITING_FOR_RESOLUTION", PrinterStatus.PRINTING, "WAITING_FOR_RESOLUTION"),
    ("CALIBRATING", "PRINTING", PrinterStatus.PRINTING, "CALIBRATING"),
    # A fact about the machine wins over the run.
    ("ERROR", "PRINTING", PrinterStatus.ERROR, None),
    ("OFFLINE", "PRINTING", PrinterStatus.OFFLINE, None),
    ("MAINTENANCE", "PREPRINT", PrinterStatus.MAINTENANCE, None),
    # A run that is over (or a word we do not know) does not make the printer busy.
    ("IDLE", "FINISHED", PrinterStatus.IDLE, None),
    ("ERROR", "ERROR", PrinterStatus.ERROR, None),
    ("IDLE", "ABORTED", PrinterStatus.IDLE, None),
    ("POSTCOAT", "FINISHED", PrinterStatus.UNKNOWN, "POSTCOAT"),
    ("FILLING", None, PrinterStatus.UNKNOWN, "FILLING"),
    ("WAITING_FOR_RESOLUTION", None, PrinterStatus.UNKNOWN, "WAITING_FOR_RESOLUTION"),
    ("IDLE", "DEFROSTING", PrinterStatus.IDLE, None),
    ("STANDBY", "DEFROSTING", PrinterStatus.UNKNOWN, "STANDBY"),
]


@pytest.mark.parametrize(("word", "run_status", "expected", "phase"), _RUN_PHASES)
def test_printer_status_from_printer_word_and_run_status(
    word: str, run_status: str | None, expected: PrinterStatus, phase: str | None
) -> None:
    """The printer's status is derived from its word and its current run's status together;
    the vendor word stays in ``status_raw`` and the finer phase in ``phase``."""
    record = printer_record()
    status = record["printer_status"]
    status["status"] = word
    if run_status is None:
        status["current_print_run"] = None
    else:
        status["current_print_run"] = {**status["current_print_run"], "status": run_status}
    printer = map_one(record)
    assert (printer.status, printer.status_raw, printer.phase) == (expected, word, phase)


def test_a_run_without_guid_does_not_make_the_printer_busy() -> None:
    """A current run we cannot track (no guid) leaves the status to the printer's word."""
    record = printer_record()
    status = record["printer_status"]
    status["status"] = "IDLE"
    status["current_print_run"] = {"status": "PRINTING"}
    printer = map_one(record)
    assert (printer.status, printer.phase, printer.current_print) == (
        PrinterStatus.IDLE,
        None,
        None,
    )


@pytest.mark.parametrize(
    ("raw", "status_raw"),
    [(None, ""), (7, "7"), (["IDLE"], '["IDLE"]'), ({"s": 1}, '{"s":1}')],
)
def test_printer_status_of_wrong_type_is_unknown(raw: Any, status_raw: str) -> None:
    """Without a run, a printer status that is not a string is UNKNOWN, kept as compact text."""
    record = printer_record()
    record["printer_status"]["status"] = raw
    record["printer_status"]["current_print_run"] = None
    printer = map_one(record)
    assert (printer.status, printer.status_raw) == (PrinterStatus.UNKNOWN, status_raw)


def test_unknown_printer_word_during_a_run_reads_as_the_run() -> None:
    """An unknown printer word while its run is printing reads PRINTING (formlabs.md §6.2:
    "is printing" comes from the run), the word kept in ``status_raw`` and ``phase``."""
    record = printer_record()
    record["printer_status"]["status"] = "BUSY_SOMEHOW"
    printer = map_one(record)
    assert (printer.status, printer.status_raw, printer.phase) == (
        PrinterStatus.PRINTING,
        "BUSY_SOMEHOW",
        "BUSY_SOMEHOW",
    )
    assert printer.current_print is not None
    assert printer.current_print.status is PrintStatus.PRINTING


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("QUEUED", PrintStatus.QUEUED),
        ("PREPRINT", PrintStatus.PREPARING),
        ("PREHEAT", PrintStatus.PREPARING),
        ("PRECOAT", PrintStatus.PREPARING),
        ("PRINTING", PrintStatus.PRINTING),
        ("POSTCOAT", PrintStatus.PRINTING),
        ("PAUSING", PrintStatus.PAUSED),
        ("PAUSED", PrintStatus.PAUSED),
        ("WAITING_FOR_RESOLUTION", PrintStatus.WAITING),
        ("ABORTING", PrintStatus.ABORTING),
        ("FINISHED", PrintStatus.FINISHED),
        ("ERROR", PrintStatus.FAILED),
        ("ABORTED", PrintStatus.ABORTED),
        ("COOLING", PrintStatus.UNKNOWN),
        ("printing", PrintStatus.UNKNOWN),
        (None, PrintStatus.UNKNOWN),
    ],
)
def test_print_status_enum_maps(raw: str | None, expected: PrintStatus) -> None:
    """Every StatusEnum value has its normalized status; others are UNKNOWN, raw kept."""
    run = map_print({"guid": "g1", "status": raw})
    assert run.status is expected
    assert run.status_raw == ("" if raw is None else raw)


# --- online -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("last_pinged_at", "online"),
    [
        ("2025-06-18T14:26:00Z", True),  # 4 minutes ago
        ("2025-06-18T14:25:00Z", True),  # exactly offline_after ago
        ("2025-06-18T14:24:00Z", False),  # 6 minutes ago
        ("2025-06-18T14:35:00Z", True),  # in the future: our clock estimate is behind
        (None, False),  # never pinged
        ("yesterday", False),  # unreadable counts as never
    ],
)
def test_online_from_last_pinged_at(last_pinged_at: str | None, online: bool) -> None:
    """A printer is online when its last ping is at most offline_after old (or in the future)."""
    record = printer_record()
    record["printer_status"]["last_pinged_at"] = last_pinged_at
    assert map_one(record).online is online


def test_naive_now_is_taken_as_utc() -> None:
    """A naive ``now`` from the caller is read as UTC rather than failing the comparison."""
    printer = map_one(printer_record(), now=NOW.replace(tzinfo=None))
    assert printer.online


# --- progress -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"currently_printing_layer": 310, "layer_count": 1240}, 0.25),
        ({"currently_printing_layer": "310", "layer_count": "1240"}, 0.25),
        ({"currently_printing_layer": 310.0, "layer_count": 1240.0}, 0.25),
        ({"currently_printing_layer": 1300, "layer_count": 1240}, 1.0),
        ({"currently_printing_layer": -3, "layer_count": 1240}, 0.0),
        (
            {
                "currently_printing_layer": None,
                "layer_count": 0,
                "elapsed_duration_ms": 5,
                "estimated_duration_ms": 20,
            },
            0.25,
        ),
        (
            {
                "currently_printing_layer": None,
                "layer_count": None,
                "elapsed_duration_ms": "50",
                "estimated_duration_ms": "100",
            },
            0.5,
        ),
        ({"currently_printing_layer": None, "layer_count": None}, None),
        (
            {
                "currently_printing_layer": None,
                "layer_count": None,
                "elapsed_duration_ms": 5,
                "estimated_duration_ms": 0,
            },
            None,
        ),
    ],
)
def test_progress_from_layers_then_time(fields: dict[str, Any], expected: float | None) -> None:
    """Progress is layers done over total, else elapsed over estimated time, within 0..1."""
    record = {"guid": "g1", "status": "PRINTING", **fields}
    assert map_print(record).progress == expected


def test_finished_run_has_full_progress() -> None:
    """A FINISHED run reports progress 1.0 whatever its layer counters say."""
    run = map_print(
        {"guid": "g1", "status": "FINISHED", "currently_printing_layer": 3, "layer_count": 100}
    )
    assert run.progress == 1.0


def test_times_as_numeric_strings_become_seconds() -> None:
    """Millisecond counters sent as strings still give elapsed and remaining seconds."""
    run = map_print(
        {"guid": "g1", "elapsed_duration_ms": "6011000", "estimated_time_remaining_ms": "8449000"}
    )
    assert (run.elapsed_s, run.remaining_s) == (6011.0, 8449.0)


# --- timestamps ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "2025-06-18T14:29:41Z",
        "2025-06-18T14:29:41+00:00",
        "2025-06-18T14:29:41.000Z",
        "2025-06-18T14:29:41.000000+00:00",
        "2025-06-18T16:29:41+02:00",
        "2025-06-18T14:29:41",
        "2025-06-18 14:29:41",
        "2025-06-18T14:29:41z",
        "2025-06-18T14:29:41+0000",
        "2025-06-18T14:29:41 UTC",
        1750256981,
        1750256981.0,
        1750256981000,
    ],
)
def test_last_pinged_at_in_any_format(text: str | float) -> None:
    """Z, offsets, fractions, naive (UTC), space-separated and epoch (s or ms) times parse alike."""
    record = printer_record()
    record["printer_status"]["last_pinged_at"] = text
    assert map_one(record).last_seen_at == datetime(2025, 6, 18, 14, 29, 41, tzinfo=UTC)


def test_date_only_timestamp_is_midnight_utc() -> None:
    """A date-only value (seen in filters and hand-made data) is midnight UTC."""
    record = printer_record()
    record["tank_status"]["tank"]["first_fill_date"] = "2025-03-02"
    tank = map_one(record).tank
    assert tank is not None
    assert tank.first_filled_at == datetime(2025, 3, 2, tzinfo=UTC)


def test_fractional_seconds_beyond_microseconds_are_accepted() -> None:
    """Seven fraction digits are cut to microseconds instead of failing the parse."""
    run = map_print({"guid": "g1", "print_started_at": "2025-06-18T12:49:30.1234567Z"})
    assert run.started_at == datetime(2025, 6, 18, 12, 49, 30, 123456, tzinfo=UTC)


# --- cartridges, tanks, alerts -----------------------------------------------------------------


CARTRIDGE = {
    "serial": "CRT-1",
    "initial_volume_ml": 1000.0,
    "volume_dispensed_ml": 250.0,
    "is_empty": False,
    "display_name": "Grey V5",
    "material": "FLGPGR05",
}


@pytest.mark.parametrize(
    ("cartridge_status", "expected"),
    [
        ({"cartridge": CARTRIDGE, "last_modified": None}, [("main", "CRT-1", 750.0)]),
        (
            {"cartridge": CARTRIDGE, "cartridge_slot": ""},
            [("main", "CRT-1", 750.0)],
        ),
        (
            [
                {"cartridge": CARTRIDGE, "cartridge_slot": "FRONT"},
                {"cartridge": {**CARTRIDGE, "serial": "CRT-2"}, "cartridge_slot": "BACK"},
            ],
            [("FRONT", "CRT-1", 750.0), ("BACK", "CRT-2", 750.0)],
        ),
        (None, []),
        ([], []),
        ({}, []),
        (["CRT-1"], [("main", "CRT-1", None)]),
        (["CRT-1", "CRT-2"], [("main", "CRT-1", None), ("main-2", "CRT-2", None)]),
        ("CRT-1", [("main", "CRT-1", None)]),
        (
            [{"cartridge": CARTRIDGE}, {"cartridge": {**CARTRIDGE, "serial": "CRT-2"}}],
            [("main", "CRT-1", 750.0), ("main-2", "CRT-2", 750.0)],
        ),
        ([{"cartridge": None, "cartridge_slot": "BACK"}], []),
        ([{"cartridge": "CRT-9", "cartridge_slot": "BACK"}], [("BACK", "CRT-9", None)]),
        ([CARTRIDGE], [("main", "CRT-1", 750.0)]),
        ([7, None, True, {"cartridge": CARTRIDGE}], [("main", "CRT-1", 750.0)]),
        (
            {"cartridge": {**CARTRIDGE, "initial_volume_ml": "1000", "volume_dispensed_ml": "250"}},
            [("main", "CRT-1", 750.0)],
        ),
        ({"cartridge": {**CARTRIDGE, "volume_dispensed_ml": None}}, [("main", "CRT-1", None)]),
        ({"cartridge": {**CARTRIDGE, "volume_dispensed_ml": 1003.5}}, [("main", "CRT-1", 0.0)]),
    ],
)
def test_cartridge_status_shapes(cartridge_status: Any, expected: list[tuple[Any, ...]]) -> None:
    """cartridge_status as object, list, null, list of serials or junk all map to slots."""
    record = printer_record()
    record["cartridge_status"] = cartridge_status
    materials = map_one(record).materials
    assert [(m.slot, m.serial, m.remaining_ml) for m in materials] == expected


def test_cartridge_is_empty_as_string_is_read() -> None:
    """``is_empty: "true"`` reads as an empty cartridge."""
    record = printer_record()
    record["cartridge_status"]["cartridge"]["is_empty"] = "true"
    (material,) = map_one(record).materials
    assert material.is_empty


@pytest.mark.parametrize("tank_status", [None, {}, {"tank": None, "last_modified": None}, 5])
def test_missing_tank_on_a_resin_printer_is_an_alert(tank_status: Any) -> None:
    """A resin printer whose tank_status holds no tank has no tank and a "tank missing" alert."""
    record = printer_record()
    record["tank_status"] = tank_status
    printer = map_one(record)
    assert printer.tank is None
    assert printer.alerts == (ALERT_TANK_MISSING,)


@pytest.mark.parametrize("machine_type_id", ["PILK-1-0", "FS30-1-1", "WSHL-1-0", "UNKNOWN"])
def test_missing_tank_on_a_non_resin_machine_is_no_alert(machine_type_id: str) -> None:
    """Fuse, Wash, Cure and unknown machines hold no tank, so none missing is no alert."""
    record = printer_record()
    record["machine_type_id"] = machine_type_id
    record["tank_status"] = None
    assert map_one(record).alerts == ()


def test_tank_layers_fall_back_to_layer_count() -> None:
    """A null layers_printed falls back to the tank's layer_count."""
    record = printer_record()
    record["tank_status"]["tank"]["layers_printed"] = None
    record["tank_status"]["tank"]["layer_count"] = "1200"
    tank = map_one(record).tank
    assert tank is not None
    assert tank.layers_printed == 1200


@pytest.mark.parametrize(
    ("key", "value", "alert"),
    [
        ("ready_to_print", "READY_TO_PRINT_NEEDS_CONFIRMATION", ALERT_NEEDS_CONFIRMATION),
        (
            "build_platform_contents",
            "BUILD_PLATFORM_CONTENTS_MISSING",
            ALERT_BUILD_PLATFORM_MISSING,
        ),
        (
            "build_platform_contents",
            "BUILD_PLATFORM_CONTENTS_CONFIRMED_DIRTY",
            ALERT_BUILD_PLATFORM_DIRTY,
        ),
        ("tank_mixer_state", "TANK_MIXER_STATE_MISSING", ALERT_TANK_MIXER_MISSING),
        ("camera_status", "DISCONNECTED", ALERT_CAMERA_DISCONNECTED),
    ],
)
def test_attention_states_are_alerts(key: str, value: str, alert: str) -> None:
    """Each attention state in printer_status raises its short, stable alert string."""
    record = printer_record()
    record["printer_status"][key] = value
    assert map_one(record).alerts == (alert,)


def test_alerts_are_sorted_and_include_a_run_waiting_for_resolution() -> None:
    """Several alerts come out sorted, and a run waiting for resolution is one of them."""
    record = printer_record()
    record["printer_status"]["camera_status"] = "DISCONNECTED"
    record["printer_status"]["current_print_run"]["status"] = "WAITING_FOR_RESOLUTION"
    record["tank_status"] = None
    printer = map_one(record)
    assert printer.alerts == tuple(
        sorted([ALERT_CAMERA_DISCONNECTED, ALERT_WAITING_FOR_RESOLUTION, ALERT_TANK_MISSING])
    )
    assert printer.current_print is not None
    assert printer.current_print.status is PrintStatus.WAITING


# --- other drift --------------------------------------------------------------------------------


def _set(path: tuple[str, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(record: dict[str, Any]) -> None:
        target = record
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def _drop(path: tuple[str, ...]) -> Callable[[dict[str, Any]], None]:
    def mutate(record: dict[str, Any]) -> None:
        target = record
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return mutate


@pytest.mark.parametrize(
    ("mutate", "check"),
    [
        (_set(("printer_status", "current_print_run"), None), lambda p: p.current_print is None),
        (_drop(("printer_status", "current_print_run")), lambda p: p.current_print is None),
        (
            _drop(("printer_status", "current_print_run", "guid")),
            lambda p: p.current_print is None and p.raw["printer_status"]["current_print_run"],
        ),
        (
            _set(("printer_status",), None),
            lambda p: p.status is PrinterStatus.UNKNOWN and not p.online,
        ),
        (_set(("group",), None), lambda p: p.group is None),
        (_set(("group",), "3f6c2a1e"), lambda p: p.group is None),
        (_set(("alias",), None), lambda p: p.name == "NimbleHeron"),
        (_set(("alias",), ""), lambda p: p.name == "NimbleHeron"),
        (
            _set(("machine_type_id",), "FORM-4L-0"),
            lambda p: (p.model, p.model_code) == ("FORM-4L-0", "FORM-4L-0"),
        ),
        (_drop(("machine_type_id",)), lambda p: p.model_code == "UNKNOWN"),
        (_set(("firmware_version",), 212), lambda p: p.firmware == "212"),
        (
            _set(("printer_status", "current_print_run", "probably_finished"), False),
            lambda p: p.current_print is not None,
        ),
        (_set(("total_print_time_ms",), 123), lambda p: p.raw["total_print_time_ms"] == 123),
        (_set(("total_number_of_prints",), True), lambda p: p.serial == "NimbleHeron"),
        (_set(("brand_new_field",), {"x": [1, 2]}), lambda p: p.status is PrinterStatus.PRINTING),
        (
            _set(("printer_status", "current_print_run", "user"), "mara"),
            lambda p: p.current_print is not None and p.current_print.user == "mara",
        ),
        (
            _set(("printer_status", "current_print_run", "material_name"), None),
            lambda p: (
                p.current_print is not None
                and (p.current_print.material, p.current_print.material_code)
                == ("Grey V5", "FLGPGR05")
            ),
        ),
        (
            _set(("printer_status", "current_print_run", "name"), None),
            lambda p: p.current_print is not None and p.current_print.name == NIMBLE_RUN,
        ),
        (
            _set(("printer_status", "current_print_run", "printer"), None),
            lambda p: (
                p.current_print is not None and p.current_print.printer_serial == "NimbleHeron"
            ),
        ),
        (
            _set(("tank_status",), {"tank": "TNK-1"}),
            lambda p: p.tank is not None and p.tank.serial == "TNK-1",
        ),
    ],
)
def test_schema_drift_still_maps(
    mutate: Callable[[dict[str, Any]], None], check: Callable[[Printer], Any]
) -> None:
    """Nulls, missing keys, extra and removed fields and type drift map without a skip."""
    record = printer_record()
    mutate(record)
    assert check(map_one(record))


def test_paginated_printers_object_maps_its_results() -> None:
    """A 0.1.0-style ``{count, next, previous, results}`` body maps like the bare array."""
    body = {"count": 3, "next": None, "previous": None, "results": sample("list_printers")}
    paged, _, _ = map_printers(body, source="lab", now=NOW, offline_after=OFFLINE_AFTER)
    bare, _, _ = map_printers(
        sample("list_printers"), source="lab", now=NOW, offline_after=OFFLINE_AFTER
    )
    assert paged == bare


@pytest.mark.parametrize("body", [None, "printers", 3, {"detail": "Not found."}, {"results": 1}])
def test_printers_body_of_wrong_shape_is_bad_response(body: Any) -> None:
    """A body that is neither a list nor a page of results is a BadResponse naming the source."""
    with pytest.raises(BadResponse, match=r"^lab: "):
        map_printers(body, source="lab", now=NOW, offline_after=OFFLINE_AFTER)


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (None, "not an object"),
        ("NimbleHeron", "not an object"),
        ([1, 2], "not an object"),
        ({"alias": "no serial"}, "missing serial"),
        ({"serial": ""}, "missing serial"),
        ({"serial": None}, "missing serial"),
        ({"serial": True}, "missing serial"),
    ],
)
def test_unusable_printer_records_are_skipped_with_a_reason(record: Any, reason: str) -> None:
    """A record that is not an object or has no serial is skipped and the rest still map."""
    printers, _, skipped = map_printers(
        [record, printer_record()], source="lab", now=NOW, offline_after=OFFLINE_AFTER
    )
    assert list(printers) == ["NimbleHeron"]
    assert [(s.kind, s.record_id, s.reason) for s in skipped] == [("printer", None, reason)]


def test_numeric_serial_is_read_as_text() -> None:
    """A serial sent as a number is kept as its decimal text."""
    record = printer_record()
    record["serial"] = 1234
    printers, _, _ = map_printers([record], source="lab", now=NOW, offline_after=OFFLINE_AFTER)
    assert list(printers) == ["1234"]


def test_duplicate_serial_keeps_the_last_and_skips_the_earlier() -> None:
    """Two records with one serial: the later one wins and the earlier counts as a duplicate."""
    first = printer_record()
    second = printer_record()
    second["alias"] = "renamed"
    printers, _, skipped = map_printers(
        [first, second], source="lab", now=NOW, offline_after=OFFLINE_AFTER
    )
    assert printers["NimbleHeron"].name == "renamed"
    assert [(s.kind, s.record_id, s.reason) for s in skipped] == [
        ("printer", "NimbleHeron", "duplicate")
    ]


def test_previous_run_without_status_is_not_a_run() -> None:
    """A previous_print_run with a guid but no status says nothing about an outcome."""
    record = printer_record()
    del record["previous_print_run"]["status"]
    _, runs, _ = map_printers([record], source="lab", now=NOW, offline_after=OFFLINE_AFTER)
    assert runs == {}


# --- prints, events, inventory drift -----------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [(None, "not an object"), ([], "not an object"), ({"name": "x"}, "missing guid")],
)
def test_map_print_rejects_unusable_records(raw: Any, message: str) -> None:
    """map_print raises MappingError (a ValueError) for a non-object or a run without guid."""
    with pytest.raises(MappingError, match=message):
        map_print(raw)
    assert issubclass(MappingError, ValueError)


def test_prints_without_guid_are_skipped_and_duplicates_keep_the_last() -> None:
    """In /prints/ results a guid-less run is skipped and a repeated guid keeps the last."""
    results = sample("list_prints")["results"]
    renamed = {**results[0], "name": "renamed"}
    prints, skipped = map_prints([results[0], {"name": "orphan"}, 5, renamed])
    assert prints[NIMBLE_RUN].name == "renamed"
    assert [(s.kind, s.record_id, s.reason) for s in skipped] == [
        ("print", None, "missing guid"),
        ("print", None, "not an object"),
        ("print", NIMBLE_RUN, "duplicate"),
    ]


def test_prints_page_object_is_accepted() -> None:
    """map_prints also accepts the page object and reads its ``results``."""
    prints, _ = map_prints(sample("list_prints"))
    assert len(prints) == 4


@pytest.mark.parametrize("mapper", [map_prints, map_events])
def test_history_of_wrong_shape_is_bad_response(mapper: Callable[[Any], Any]) -> None:
    """A prints or events body that is not a list is a BadResponse."""
    with pytest.raises(BadResponse, match=r"^formlabs: "):
        mapper({"detail": "Invalid page."})


def _event(event_id: int, created_at: str | None, status: str) -> dict[str, Any]:
    return {
        "id": event_id,
        "printer": "P1",
        "created_at": created_at,
        "print_run": {"guid": "g1", "status": status},
    }


@pytest.mark.parametrize(
    "events",
    [
        [
            _event(2, "2025-06-18T10:00:00Z", "FINISHED"),
            _event(1, "2025-06-18T09:00:00Z", "PRINTING"),
        ],
        [
            _event(1, "2025-06-18T09:00:00Z", "PRINTING"),
            _event(2, "2025-06-18T10:00:00Z", "FINISHED"),
        ],
        [_event(1, None, "PRINTING"), _event(2, "2025-06-18T10:00:00Z", "FINISHED")],
        [_event(2, "2025-06-18T10:00:00Z", "FINISHED"), _event(1, None, "PRINTING")],
    ],
)
def test_latest_event_wins_per_run(events: list[dict[str, Any]]) -> None:
    """When events repeat a run, the one with the latest created_at wins, in any order."""
    runs, skipped, newest = map_events(events)
    assert skipped == []
    assert runs["g1"].status is PrintStatus.FINISHED
    assert runs["g1"].printer_serial == "P1"
    assert newest == datetime(2025, 6, 18, 10, tzinfo=UTC)


def test_events_without_print_run_yield_nothing_and_bad_ones_are_skipped() -> None:
    """Non-print events yield no run; a non-object or guid-less print_run is skipped."""
    events = [
        {"id": 1, "created_at": "2025-06-18T08:00:00Z", "print_run": None, "type": "RESIN_LOW"},
        {"id": 2, "created_at": "2025-06-18T11:00:00Z", "print_run": {}},
        {"id": 3, "created_at": "2025-06-18T12:00:00Z", "print_run": {"name": "no guid"}},
        {"id": 4, "print_run": "g9"},
        "junk",
    ]
    runs, skipped, newest = map_events(events)
    assert runs == {}
    assert [(s.kind, s.record_id, s.reason) for s in skipped] == [
        ("event", "3", "print_run: missing guid"),
        ("event", "4", "print_run: not an object"),
        ("event", None, "not an object"),
    ]
    assert newest == datetime(2025, 6, 18, 12, tzinfo=UTC)


def test_inventory_skips_serial_less_items_and_keeps_the_last_duplicate() -> None:
    """Inventory items without a serial are skipped; a repeated serial keeps the last."""
    tanks = [{"serial": "T1", "layers_printed": 1}, {"serial": "T1", "layers_printed": 2}, 3]
    cartridges = [{"serial": None}, {"serial": "C1", "inside_printer": None}]
    inventory = map_inventory(tanks, cartridges)
    assert [(t.serial, t.layers_printed) for t in inventory.tanks] == [("T1", 2)]
    assert [c.serial for c in inventory.cartridges] == ["C1"]
    assert dict(inventory.location) == {"T1": "", "C1": ""}
    assert [(s.kind, s.record_id, s.reason) for s in inventory.skipped] == [
        ("tank", "T1", "duplicate"),
        ("tank", None, "not an object"),
        ("cartridge", None, "missing serial"),
    ]


def test_inventory_of_wrong_shape_is_bad_response() -> None:
    """A tanks or cartridges body that is not a list is a BadResponse."""
    with pytest.raises(BadResponse):
        map_inventory([], None)


# --- material names ------------------------------------------------------------------------------


def test_previous_runs_name_their_material_code() -> None:
    """A previous_print_run carries only the code (FLGPGR05); it is named, the code kept."""
    _, runs, _ = map_printers(
        sample("list_printers"), source="lab", now=NOW, offline_after=OFFLINE_AFTER
    )
    for run in runs.values():
        assert run.material_code in ("FLGPGR05", "FLGPCL05", "FLGPBK05")
        assert run.material in ("Grey V5", "Clear V5", "Black V5")


def test_current_run_keeps_both_name_and_code(fleet: dict[str, Printer]) -> None:
    """A run with material_name and material shows the name and keeps the code."""
    run = fleet["NimbleHeron"].current_print
    assert run is not None
    assert (run.material, run.material_code) == ("Grey V5", "FLGPGR05")


def test_undocumented_code_is_named_by_the_cartridge_in_the_same_fetch() -> None:
    """A code not in the docs (FLGPWH05) takes the name a cartridge gives it in this fetch."""
    record = printer_record("NimbleHeron")
    status = record["printer_status"]
    status["current_print_run"]["material"] = "FLGPWH05"
    status["current_print_run"]["material_name"] = None
    record["cartridge_status"]["cartridge"]["material"] = "FLGPWH05"
    record["cartridge_status"]["cartridge"]["display_name"] = "White V5"
    record["previous_print_run"] = {**status["current_print_run"], "guid": "prev-1"}
    record["previous_print_run"]["status"] = "FINISHED"
    printers, runs, _ = map_printers([record], source="lab", now=NOW, offline_after=OFFLINE_AFTER)
    run = printers["NimbleHeron"].current_print
    assert run is not None
    assert (run.material, run.material_code) == ("White V5", "FLGPWH05")
    assert (runs["prev-1"].material, runs["prev-1"].material_code) == ("White V5", "FLGPWH05")
    assert unnamed_materials([run, *runs.values()]) == set()


def test_unknown_code_is_kept_as_the_name_never_invented() -> None:
    """A code nobody names stays the name (and the code), and is reported as unnamed."""
    run = map_print(
        {"guid": "g1", "status": "FINISHED", "material": "FLXX9999", "material_name": None}
    )
    assert (run.material, run.material_code) == ("FLXX9999", "FLXX9999")
    assert unnamed_materials([run]) == {"FLXX9999"}


def test_material_name_without_a_code() -> None:
    """A run with only material_name (Durable) has no code."""
    run = map_print({"guid": "g1", "status": "FINISHED", "material_name": "Durable"})
    assert (run.material, run.material_code) == ("Durable", None)
