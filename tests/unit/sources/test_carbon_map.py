"""Carbon JSON -> normalized model: the samples' story, then the drift the API allows."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from printfleet.core.model import Printer, PrinterStatus, PrintStatus
from printfleet.errors import BadResponse
from printfleet.sources.carbon_map import map_print, map_printers, map_prints, print_key
from printfleet.sources.mapping import MappingError

SAMPLES: dict[str, Any] = json.loads(
    (Path(__file__).parents[2] / "fixtures" / "carbon-samples.json").read_text()
)
NOW = datetime(2025, 6, 17, 14, 30, tzinfo=UTC)


def printer_records() -> list[dict[str, Any]]:
    """A deep copy of the sample /printers page's ``printers`` list."""
    return copy.deepcopy(SAMPLES["get_printers"]["body"]["printers"])


def printer_record(serial: str = "4M02KD") -> dict[str, Any]:
    return next(p for p in printer_records() if p["serial"] == serial)


def print_records() -> list[dict[str, Any]]:
    """A deep copy of the sample /prints page's ``prints`` list."""
    return copy.deepcopy(SAMPLES["get_prints"]["body"]["prints"])


def map_one(
    record: dict[str, Any], *, now: datetime = NOW, offline_after: timedelta | None = None
) -> Printer:
    printers, runs, skipped = map_printers(
        [record], source="factory", now=now, offline_after=offline_after
    )
    assert (runs, skipped) == ({}, [])
    return printers[record["serial"]]


@pytest.fixture
def fleet() -> dict[str, Printer]:
    """The three sample printers mapped at 2025-06-17T14:30Z without a staleness limit."""
    printers, runs, skipped = map_printers(
        printer_records(), source="factory", now=NOW, offline_after=None
    )
    assert (runs, skipped) == ({}, [])
    return printers


# --- the samples' story ------------------------------------------------------------------------


def test_sample_printers_all_map(fleet: dict[str, Printer]) -> None:
    """Every printer in the sample /printers page maps, keyed by serial."""
    assert list(fleet) == ["4M02KD", "7R01TX", "2L00AB"]


def test_4m02kd_is_printing_kt7q3ma_with_2875_s_left(fleet: dict[str, Printer]) -> None:
    """4M02KD prints KT7Q3MA with 2875 s remaining; progress is elapsed over elapsed+remaining."""
    printer = fleet["4M02KD"]
    assert (printer.status, printer.status_raw) == (PrinterStatus.PRINTING, "PRINTING")
    assert printer.online
    run = printer.current_print
    assert run is not None
    assert (run.id, run.name, run.status) == ("KT7Q3MA", "midsole_batch_0617", PrintStatus.PRINTING)
    assert run.remaining_s == 2875.0
    elapsed = (NOW - datetime(2025, 6, 17, 12, 58, 10, tzinfo=UTC)).total_seconds()
    assert run.elapsed_s == elapsed
    assert run.progress == pytest.approx(elapsed / (elapsed + 2875))
    assert run.printer_serial == "4M02KD"


def test_4m02kd_printer_facts(fleet: dict[str, Printer]) -> None:
    """Alias, hw_type, firmware and queue length come from the record."""
    printer = fleet["4M02KD"]
    assert printer.name == "Midsole Line 1"
    assert (printer.model, printer.model_code) == ("L1", "L1")
    assert printer.firmware == "1.19.3-1012.4"
    assert printer.queue_length == 3
    assert printer.alerts == ()
    assert printer.last_seen_at == datetime(2025, 6, 17, 14, 29, 52, tzinfo=UTC)
    assert printer.raw["url"] == "https://l1042.acme.print.carbon3d.com"


def test_7r01tx_is_idle_with_an_oxygen_shortage(fleet: dict[str, Printer]) -> None:
    """7R01TX is idle, has no current print, falls back to its name, and shows its alert."""
    printer = fleet["7R01TX"]
    assert printer.status is PrinterStatus.IDLE
    assert printer.current_print is None
    assert printer.name == "M2118"
    assert printer.alerts == ("oxygen shortage",)


def test_2l00ab_is_offline(fleet: dict[str, Printer]) -> None:
    """2L00AB reports OFFLINE, so it is offline with status OFFLINE."""
    printer = fleet["2L00AB"]
    assert (printer.status, printer.online) == (PrinterStatus.OFFLINE, False)
    assert printer.name == "Spare"


def test_sample_prints_map_with_their_statuses() -> None:
    """The /prints sample maps queued, printing and finished prints by their ids; its
    ``failed`` (an assumed spelling, carbon.md §8.2) is UNKNOWN, not an outcome."""
    prints, skipped = map_prints(print_records())
    assert skipped == []
    assert {key: run.status for key, run in prints.items()} == {
        "3e8c1f5a-6b02-4d97-a4e3-9c7b0d2f8a16": PrintStatus.QUEUED,
        "KT7Q3MA": PrintStatus.PRINTING,
        "KT7Q2LA": PrintStatus.FINISHED,
        "JN4X8PA": PrintStatus.UNKNOWN,
    }


def test_failed_print_carries_feedback_and_facts() -> None:
    """The failed print keeps its operator feedback as message, plus printer and resin."""
    prints, _ = map_prints(print_records())
    failed = prints["JN4X8PA"]
    assert failed.message == "Stopped at 31%: parts detached from platform"
    assert failed.printer_serial == "7R01TX"
    assert failed.material == "EPU 43"
    assert failed.material_code is None  # Carbon names resins; it has no material codes
    assert failed.user == "m.ortiz@acme.example"
    assert failed.elapsed_s == 3995.0
    assert failed.status_raw == "failed"


def test_finished_print_has_full_progress_and_no_message() -> None:
    """A finished print is at progress 1.0; its (positive) feedback is not a message."""
    prints, _ = map_prints(print_records())
    finished = prints["KT7Q2LA"]
    assert finished.progress == 1.0
    assert finished.message is None
    assert finished.finished_at == datetime(2025, 6, 17, 12, 41, 55, tzinfo=UTC)


def test_current_print_and_its_history_record_share_an_id(fleet: dict[str, Printer]) -> None:
    """The printer's current PrintRef and the /prints record of that print have one id."""
    prints, _ = map_prints(print_records())
    current = fleet["4M02KD"].current_print
    assert current is not None
    assert prints[current.id].status is PrintStatus.PRINTING


def test_prints_response_object_is_accepted() -> None:
    """map_prints also accepts the whole PrintsResponse and reads its ``prints``."""
    prints, _ = map_prints(copy.deepcopy(SAMPLES["get_prints"]["body"]))
    assert len(prints) == 4


def test_printers_response_object_is_accepted() -> None:
    """map_printers also accepts the whole PrintersResponse and reads its ``printers``."""
    body = copy.deepcopy(SAMPLES["get_printers"]["body"])
    printers, _, _ = map_printers(body, source="factory", now=NOW, offline_after=None)
    assert list(printers) == ["4M02KD", "7R01TX", "2L00AB"]


# --- printer state and online -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "status", "online"),
    [
        ("PRINTING", PrinterStatus.PRINTING, True),
        ("printing", PrinterStatus.PRINTING, True),
        ("Idle", PrinterStatus.IDLE, True),
        ("ERROR", PrinterStatus.ERROR, True),
        ("paused", PrinterStatus.PAUSED, True),
        ("MAINTENANCE", PrinterStatus.MAINTENANCE, True),
        ("OFFLINE", PrinterStatus.OFFLINE, False),
        ("offline", PrinterStatus.OFFLINE, False),
        ("DISCONNECTED", PrinterStatus.UNKNOWN, False),
        ("Disconnected", PrinterStatus.UNKNOWN, False),
        ("HEATING", PrinterStatus.UNKNOWN, True),
        ("", PrinterStatus.UNKNOWN, True),
        (None, PrinterStatus.UNKNOWN, True),
        (3, PrinterStatus.UNKNOWN, True),
    ],
)
def test_printer_state_case_insensitively(state: Any, status: PrinterStatus, online: bool) -> None:
    """printer_state maps case-insensitively; unknown words are UNKNOWN with the raw kept."""
    record = printer_record()
    record["status"]["printer_state"] = state
    printer = map_one(record)
    assert (printer.status, printer.online) == (status, online)
    expected_raw = "" if state is None else state if isinstance(state, str) else str(state)
    assert printer.status_raw == expected_raw


@pytest.mark.parametrize(
    ("updated_at", "offline_after", "online"),
    [
        ("2025-06-17T14:26:00.000Z", timedelta(minutes=5), True),
        ("2025-06-17T14:20:00.000Z", timedelta(minutes=5), False),
        ("2025-06-17T14:20:00.000Z", None, True),
        ("2025-06-17T14:40:00.000Z", timedelta(minutes=5), True),
        (None, timedelta(minutes=5), False),
        (None, None, True),
    ],
)
def test_staleness_only_counts_when_offline_after_is_set(
    updated_at: str | None, offline_after: timedelta | None, online: bool
) -> None:
    """updated_at older than offline_after makes a printer offline, but only when it is set."""
    record = printer_record()
    record["updated_at"] = updated_at
    assert map_one(record, offline_after=offline_after).online is online


def test_offline_state_wins_over_a_fresh_updated_at() -> None:
    """An OFFLINE printer is offline even when its record was updated a moment ago."""
    record = printer_record("2L00AB")
    record["updated_at"] = "2025-06-17T14:29:59Z"
    assert not map_one(record, offline_after=timedelta(minutes=5)).online


# --- alerts and current print --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alerts", "expected"),
    [
        (["oxygen shortage"], ("oxygen shortage",)),
        (["resin low", "oxygen shortage", "resin low"], ("oxygen shortage", "resin low")),
        ([], ()),
        (None, ()),
        ("oxygen shortage", ("oxygen shortage",)),
        (["", None, {"a": 1}, "door open"], ("door open",)),
    ],
)
def test_alerts_are_a_sorted_set_of_strings(alerts: Any, expected: tuple[str, ...]) -> None:
    """status.alerts become a sorted, deduplicated tuple of the strings in it."""
    record = printer_record()
    record["status"]["alerts"] = alerts
    assert map_one(record).alerts == expected


def test_missing_alerts_key_is_no_alert() -> None:
    """An absent alerts field (it is optional) means no alerts."""
    record = printer_record()
    del record["status"]["alerts"]
    assert map_one(record).alerts == ()


@pytest.mark.parametrize(
    ("current", "expected_id"),
    [
        (
            {
                "name": "a",
                "print_id": "AB12CDE",
                "build_uuid": "b-1",
                "started_at": "2025-06-17T14:00:00Z",
            },
            "AB12CDE",
        ),
        (
            {
                "name": "a",
                "print_id": None,
                "build_uuid": "b-1",
                "started_at": "2025-06-17T14:00:00.000Z",
            },
            "b-1@2025-06-17T14:00:00Z",
        ),
        ({"name": "a", "print_id": None, "build_uuid": "b-1", "started_at": None}, "b-1"),
        ({"name": "a", "print_id": "", "build_uuid": None, "started_at": None}, None),
        (None, None),
        ([], None),
    ],
)
def test_current_print_id_prefers_print_id(current: Any, expected_id: str | None) -> None:
    """The current print's id is print_id, else build_uuid@started_at, else build_uuid."""
    record = printer_record()
    record["prints"]["current"] = current
    run = map_one(record).current_print
    assert (run.id if run else None) == expected_id


def test_current_print_without_print_id_matches_its_history_record() -> None:
    """A started print with no print_id gets the same id from the PrintRef and /prints."""
    record = printer_record()
    record["prints"]["current"]["print_id"] = None
    history = {**print_records()[1], "print_id": None}
    current = map_one(record).current_print
    assert current is not None
    assert map_print(history).id == current.id


@pytest.mark.parametrize(
    ("remaining_sec", "started_at", "progress"),
    [
        (600, "2025-06-17T14:20:00Z", 0.5),
        ("600", "2025-06-17T14:20:00Z", 0.5),
        (0, "2025-06-17T14:20:00Z", 1.0),
        (-5, "2025-06-17T14:20:00Z", 1.0),
        (600, "2025-06-17T14:40:00Z", 0.0),
        (None, "2025-06-17T14:20:00Z", None),
        (600, None, None),
        (0, "2025-06-17T14:30:00Z", None),
    ],
)
def test_current_print_progress(
    remaining_sec: Any, started_at: str | None, progress: float | None
) -> None:
    """Progress is elapsed/(elapsed+remaining) within 0..1, None when either is unknown."""
    record = printer_record()
    record["prints"]["current"].update(remaining_sec=remaining_sec, started_at=started_at)
    run = map_one(record).current_print
    assert run is not None
    assert run.progress == progress


def test_current_print_on_a_paused_printer_is_paused() -> None:
    """While the printer says PAUSED, its current print is PAUSED, not PRINTING."""
    record = printer_record()
    record["status"]["printer_state"] = "PAUSED"
    run = map_one(record).current_print
    assert run is not None
    assert (run.status, run.status_raw) == (PrintStatus.PAUSED, "")


@pytest.mark.parametrize(
    ("key", "value", "check"),
    [
        ("alias", "", lambda p: p.name == "L1042"),
        ("name", None, lambda p: p.name == "Midsole Line 1"),
        ("hw_type", None, lambda p: p.model == "UNKNOWN"),
        ("status", None, lambda p: p.status is PrinterStatus.UNKNOWN and p.online),
        ("prints", None, lambda p: p.current_print is None and p.queue_length is None),
        ("prints", [], lambda p: p.current_print is None),
        ("updated_at", "17/06/2025", lambda p: p.last_seen_at is None),
        ("brand_new_field", [1, {"x": None}], lambda p: p.raw["brand_new_field"][0] == 1),
    ],
)
def test_printer_drift_still_maps(key: str, value: Any, check: Any) -> None:
    """Nulls, wrong types, unreadable times and extra fields map without a skip."""
    record = printer_record()
    record[key] = value
    assert check(map_one(record))


def test_queue_length_as_string_is_read() -> None:
    """A queue_length sent as a numeric string reads as an int."""
    record = printer_record()
    record["prints"]["queue_length"] = "4"
    assert map_one(record).queue_length == 4


def test_printer_without_both_names_falls_back_to_serial() -> None:
    """With neither alias nor name, the printer is named by its serial."""
    record = printer_record()
    record["alias"] = None
    del record["name"]
    assert map_one(record).name == "4M02KD"


# --- skipping and shape -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (None, "not an object"),
        ("4M02KD", "not an object"),
        ({"name": "L1042"}, "missing serial"),
        ({"serial": "  "}, "missing serial"),
    ],
)
def test_unusable_printer_records_are_skipped(record: Any, reason: str) -> None:
    """A record that is not an object or has no serial is skipped; the rest still map."""
    printers, _, skipped = map_printers(
        [record, printer_record()], source="factory", now=NOW, offline_after=None
    )
    assert list(printers) == ["4M02KD"]
    assert [(s.kind, s.record_id, s.reason) for s in skipped] == [("printer", None, reason)]


def test_duplicate_serial_across_pages_keeps_the_last() -> None:
    """A serial repeated (pages shifted while walking) keeps the last record."""
    first, second = printer_record(), printer_record()
    second["status"]["printer_state"] = "IDLE"
    printers, _, skipped = map_printers(
        [first, second], source="factory", now=NOW, offline_after=None
    )
    assert printers["4M02KD"].status is PrinterStatus.IDLE
    assert [(s.record_id, s.reason) for s in skipped] == [("4M02KD", "duplicate")]


@pytest.mark.parametrize("body", [None, "x", 1, {"limit": 100}, {"printers": None}])
def test_printers_of_wrong_shape_is_bad_response(body: Any) -> None:
    """A /printers body that is neither a list nor an object with a list is a BadResponse."""
    with pytest.raises(BadResponse, match=r"^factory: "):
        map_printers(body, source="factory", now=NOW, offline_after=None)


def test_prints_of_wrong_shape_is_bad_response() -> None:
    """A /prints body that is not a list (nor an object with one) is a BadResponse."""
    with pytest.raises(BadResponse, match=r"^carbon: "):
        map_prints("nope")


# --- ModelPrint ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("queued", PrintStatus.QUEUED),
        ("printing", PrintStatus.PRINTING),
        ("PRINTING", PrintStatus.PRINTING),
        ("finished", PrintStatus.FINISHED),
        ("failed", PrintStatus.UNKNOWN),
        ("error", PrintStatus.UNKNOWN),
        ("aborted", PrintStatus.UNKNOWN),
        ("canceled", PrintStatus.UNKNOWN),
        ("Cancelled", PrintStatus.UNKNOWN),
        ("rejected", PrintStatus.UNKNOWN),
        ("complete", PrintStatus.UNKNOWN),
        ("paused", PrintStatus.UNKNOWN),
        ("in_progress", PrintStatus.UNKNOWN),
        ("", PrintStatus.UNKNOWN),
        (None, PrintStatus.UNKNOWN),
        (5, PrintStatus.UNKNOWN),
    ],
)
def test_print_status_words(raw: Any, expected: PrintStatus) -> None:
    """queued/printing/finished map; any other word is UNKNOWN (never an outcome), raw kept."""
    run = map_print({"print_id": "AB12CDE", "status": raw})
    assert run.status is expected
    assert run.status_raw == ("" if raw is None else raw if isinstance(raw, str) else str(raw))


@pytest.mark.parametrize("status", ["aborted", "canceled", "error", "mystery"])
def test_unsuccessful_prints_carry_feedback_as_message(status: str) -> None:
    """A print not known to be successful carries the operator's feedback as its message."""
    run = map_print({"print_id": "A", "status": status, "feedback": {"feedback_message": "warped"}})
    assert run.message == "warped"


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (
            {
                "print_id": "P1",
                "uuid": "u1",
                "build_uuid": "b1",
                "started_at": "2025-06-17T09:00:00Z",
            },
            "P1",
        ),
        (
            {
                "print_id": None,
                "uuid": "u1",
                "build_uuid": "b1",
                "started_at": "2025-06-17T09:00:00+00:00",
            },
            "b1@2025-06-17T09:00:00Z",
        ),
        ({"print_id": None, "uuid": "u1", "build_uuid": "b1", "started_at": None}, "u1"),
        ({"uuid": None, "build_uuid": "b1"}, "b1"),
    ],
)
def test_print_id_order(record: dict[str, Any], expected: str) -> None:
    """A /prints id is print_id, else build_uuid@started_at, else uuid, else build_uuid."""
    assert map_print(record).id == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [(None, "not an object"), ("KT7Q3MA", "not an object"), ({"name": "x"}, "missing print id")],
)
def test_map_print_rejects_unusable_records(raw: Any, message: str) -> None:
    """map_print raises MappingError for a non-object or a print with no usable id."""
    with pytest.raises(MappingError, match=message):
        map_print(raw)


def test_prints_skip_unusable_and_keep_the_last_duplicate() -> None:
    """/prints records without an id are skipped and a repeated id keeps the last."""
    records = print_records()
    later = {**records[1], "remaining_sec": 100}
    prints, skipped = map_prints([records[1], {"name": "orphan"}, later])
    assert prints["KT7Q3MA"].remaining_s == 100.0
    assert [(s.kind, s.record_id, s.reason) for s in skipped] == [
        ("print", None, "missing print id"),
        ("print", "KT7Q3MA", "duplicate"),
    ]


def test_print_drift_still_maps() -> None:
    """Null sub-objects, numbers as strings and unknown keys still give a print."""
    run = map_print(
        {
            "print_id": "A",
            "status": "printing",
            "origin": None,
            "config": [],
            "feedback": "none",
            "remaining_sec": "120",
            "extra": {"k": 1},
        }
    )
    assert (run.printer_serial, run.material, run.remaining_s) == (None, None, 120.0)
    assert run.raw["extra"] == {"k": 1}


def test_print_key_is_public_for_lookups() -> None:
    """print_key gives the adapter the same id rule the mappers use."""
    started = datetime(2025, 6, 17, 9, tzinfo=UTC)
    assert print_key(None, "b1", started) == "b1@2025-06-17T09:00:00Z"
