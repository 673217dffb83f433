"""Formlabs ratings, notes, harvest and platform words -> Print/Printer fields and alerts."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from printfleet.core.alerts import (
    ALERT_HARVEST_ABORTED,
    ALERT_HARVEST_FAILED,
    ALERT_NEEDS_CONFIRMATION,
    ALERT_NOT_READY,
    ALERT_PARTS_ON_PLATFORM,
)
from printfleet.core.model import Printer, PrintStatus, Snapshot, Vendor
from printfleet.poller import unknown_statuses
from printfleet.sources import carbon_map
from printfleet.sources.formlabs_map import map_print, map_printers

FIXTURES = Path(__file__).parents[2] / "fixtures"
SAMPLES: dict[str, Any] = json.loads((FIXTURES / "formlabs-samples.json").read_text())
CARBON: dict[str, Any] = json.loads((FIXTURES / "carbon-samples.json").read_text())
NOW = datetime(2025, 6, 18, 14, 30, tzinfo=UTC)


def print_record(**changes: Any) -> dict[str, Any]:
    record = copy.deepcopy(SAMPLES["list_prints"]["body"]["results"][0])
    record.update(changes)
    return record


def printer_with(status: dict[str, Any], run: dict[str, Any] | str | None = "keep") -> Printer:
    """NimbleHeron (printing in the sample) with ``printer_status`` keys replaced."""
    record = copy.deepcopy(SAMPLES["list_printers"]["body"][0])
    record["printer_status"].update(status)
    if run != "keep":
        record["printer_status"]["current_print_run"] = run
    printers, _, skipped = map_printers(
        [record], source="lab", now=NOW, offline_after=timedelta(minutes=5)
    )
    assert skipped == []
    return printers[record["serial"]]


def rating(word: Any) -> dict[str, Any]:
    return {"print_run": "x", "print_run_success": word, "created_at": "2025-06-18T15:00:00Z"}


# --- verdicts ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "verdict", "raw"),
    [
        (None, None, None),  # expect null until rated (formlabs.md §6.6)
        (rating("SUCCESS"), "SUCCESS", None),
        (rating("FAILURE"), "FAILURE", None),
        (rating("UNKNOWN"), None, None),  # the vendor's own "not rated"
        ({"print_run": "x"}, None, None),  # print_run_success is optional in PrintRunSuccess
        (rating(None), None, None),
        (rating("PARTIAL"), None, "PARTIAL"),  # a word we do not know: never a verdict
        (rating("success"), None, "success"),  # the enum is upper case: not guessed
        (rating(1), None, "1"),
        ("SUCCESS", None, None),  # not a PrintRunSuccess object at all
    ],
)
def test_print_run_success_maps_to_a_verdict_or_nothing(
    value: Any, verdict: str | None, raw: str | None
) -> None:
    run = map_print(print_record(print_run_success=value))
    assert (run.verdict, run.verdict_raw) == (verdict, raw)


def test_the_samples_rated_prints_read_as_rated() -> None:
    """The list_prints sample has one SUCCESS and FAILURE ratings; the others are unrated."""
    runs = [map_print(r) for r in SAMPLES["list_prints"]["body"]["results"]]
    verdicts = {r.verdict for r in runs}
    assert {"SUCCESS", "FAILURE", None} <= verdicts


def test_the_rating_time_is_read() -> None:
    run = map_print(print_record(print_run_success=rating("SUCCESS")))
    assert run.verdict_at == datetime(2025, 6, 18, 15, 0, tzinfo=UTC)
    unrated = map_print(print_record(print_run_success=rating("UNKNOWN")))
    assert unrated.verdict_at is None


def test_note_text_and_author_become_verdict_note_and_by() -> None:
    note = {
        "print_run": "x",
        "note": "Supports left marks on the arch",
        "author": {"id": 7, "username": "lena.k", "first_name": "Lena", "last_name": "K"},
        "updated_at": "2025-06-18T15:10:00Z",
    }
    run = map_print(print_record(print_run_success=rating("FAILURE"), note=note))
    assert (run.verdict, run.verdict_note, run.verdict_by) == (
        "FAILURE",
        "Supports left marks on the arch",
        "lena.k",
    )
    bare = map_print(print_record(note={"print_run": "x", "note": "ok"}))
    assert (bare.verdict, bare.verdict_note, bare.verdict_by) == (None, "ok", None)
    assert map_print(print_record(note="a string")).verdict_note is None


def test_unknown_rating_words_are_reported_as_print_run_success() -> None:
    """The poller counts them in printfleet_unknown_status_total{field="print_run_success"}."""
    record = copy.deepcopy(SAMPLES["list_printers"]["body"][0])
    record["printer_status"]["current_print_run"]["print_run_success"] = rating("MAYBE")
    printers, _, _ = map_printers(
        [record], source="lab", now=NOW, offline_after=timedelta(minutes=5)
    )
    snapshot = Snapshot(source="lab", vendor=Vendor.FORMLABS, taken_at=NOW, printers=printers)
    assert ("print_run_success", "MAYBE") in unknown_statuses(snapshot)
    assert printers[record["serial"]].current_print is not None
    assert printers[record["serial"]].current_print.verdict is None  # type: ignore[union-attr]


# --- volume and harvest ------------------------------------------------------------------


def test_volume_and_harvest_status_are_read() -> None:
    run = map_print(print_record(volume_ml=31.7, harvest_status="FORM_CELL_HARVEST_FINISHED"))
    assert (run.volume_ml, run.harvest_status) == (31.7, "FORM_CELL_HARVEST_FINISHED")
    odd = map_print(print_record(volume_ml="lots", harvest_status=None))
    assert (odd.volume_ml, odd.harvest_status) == (None, None)
    assert map_print(print_record(volume_ml=-3)).volume_ml == 0.0


def test_carbon_consumed_resin_is_the_volume() -> None:
    record = copy.deepcopy(CARBON["get_prints"]["body"]["prints"][0])
    record["metrics"] = {"consumed_resin_volume_ml": 42.5, "estimated_total_resin_volume_ml": 40}
    assert carbon_map.map_print(record).volume_ml == 42.5
    record["metrics"] = "n/a"
    assert carbon_map.map_print(record).volume_ml is None


# --- printer words and alerts ------------------------------------------------------------


def test_ready_and_platform_words_are_kept_raw() -> None:
    printer = printer_with({})
    assert printer.ready_to_print == "READY_TO_PRINT_NOT_READY"
    assert printer.build_platform_contents == "BUILD_PLATFORM_CONTENTS_UNCONFIRMED"


def test_parts_on_platform_is_an_alert_at_once() -> None:
    """POST_PRINT raises the alert as soon as the printer says it; a rule's `for` decides
    whether a short wait is news."""
    printer = printer_with(
        {
            "build_platform_contents": "BUILD_PLATFORM_CONTENTS_POST_PRINT",
            "ready_to_print": "READY_TO_PRINT_NEEDS_CONFIRMATION",
        },
        run=None,
    )
    assert ALERT_PARTS_ON_PLATFORM in printer.alerts
    assert ALERT_NEEDS_CONFIRMATION in printer.alerts
    cleared = printer_with(
        {"build_platform_contents": "BUILD_PLATFORM_CONTENTS_CONFIRMED_CLEAR"}, run=None
    )
    assert ALERT_PARTS_ON_PLATFORM not in cleared.alerts


def test_not_ready_is_an_alert_only_while_no_print_runs() -> None:
    """The sample's PRINTING Form 4 says READY_TO_PRINT_NOT_READY: no alert then; the same word
    on an idle printer means nothing can start."""
    printing = printer_with({})
    assert printing.current_print is not None
    assert printing.current_print.status is PrintStatus.PRINTING
    assert ALERT_NOT_READY not in printing.alerts
    idle = printer_with({"status": "IDLE"}, run=None)
    assert ALERT_NOT_READY in idle.alerts


@pytest.mark.parametrize(
    ("word", "alert"),
    [
        ("FORM_CELL_HARVEST_FAILED", ALERT_HARVEST_FAILED),
        ("FORM_CELL_HARVEST_ABORTED", ALERT_HARVEST_ABORTED),
        ("FORM_CELL_HARVEST_FINISHED", None),
        ("FORM_CELL_HARVEST_STARTED", None),
        (None, None),
        ("SOMETHING_NEW", None),
    ],
)
def test_harvest_status_of_the_current_run_raises_its_alert(
    word: str | None, alert: str | None
) -> None:
    run = copy.deepcopy(SAMPLES["list_printers"]["body"][0]["printer_status"]["current_print_run"])
    run.update(status="FINISHED", harvest_status=word)
    printer = printer_with({"status": "IDLE", "ready_to_print": "READY_TO_PRINT_READY"}, run=run)
    harvest = {a for a in printer.alerts if a.startswith("harvest")}
    assert harvest == ({alert} if alert else set())
