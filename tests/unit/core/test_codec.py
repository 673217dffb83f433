"""The snapshot codec: a lossless round trip through plain JSON, tolerant of older data."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from printfleet.core.codec import (
    print_from_json,
    print_to_json,
    printer_from_json,
    printer_to_json,
    snapshot_from_json,
    snapshot_to_json,
)
from printfleet.core.model import (
    Material,
    Print,
    Printer,
    PrinterStatus,
    PrintStatus,
    SkippedRecord,
    Snapshot,
    Tank,
    Vendor,
)

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)

# --- strategies ---------------------------------------------------------------------------

texts = st.text(max_size=12)
opt_texts = st.none() | texts
floats = st.floats(allow_nan=False, allow_infinity=False, width=64)
opt_floats = st.none() | floats
opt_ints = st.none() | st.integers(min_value=-(2**40), max_value=2**40)
aware_times = st.datetimes(
    min_value=datetime(1970, 1, 2),
    max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30))]),
)
opt_times = st.none() | aware_times
raw_values = st.recursive(
    st.none() | st.booleans() | st.integers() | texts | floats,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=6,
)
raws = st.dictionaries(texts, raw_values, max_size=3)

prints = st.builds(
    Print,
    id=texts,
    name=texts,
    status=st.sampled_from(PrintStatus),
    status_raw=texts,
    printer_serial=opt_texts,
    progress=opt_floats,
    layer=opt_ints,
    layers_total=opt_ints,
    created_at=opt_times,
    started_at=opt_times,
    finished_at=opt_times,
    elapsed_s=opt_floats,
    remaining_s=opt_floats,
    material=opt_texts,
    material_code=opt_texts,
    message=opt_texts,
    user=opt_texts,
    raw=raws,
)
materials = st.builds(
    Material,
    slot=texts,
    serial=opt_texts,
    material=opt_texts,
    name=opt_texts,
    capacity_ml=opt_floats,
    remaining_ml=opt_floats,
    is_empty=st.booleans(),
)
tanks = st.builds(
    Tank,
    serial=opt_texts,
    material=opt_texts,
    tank_type=opt_texts,
    layers_printed=opt_ints,
    first_filled_at=opt_times,
)
printers = st.builds(
    Printer,
    serial=texts,
    name=texts,
    vendor=st.sampled_from(Vendor),
    model=texts,
    model_code=texts,
    status=st.sampled_from(PrinterStatus),
    status_raw=texts,
    online=st.booleans(),
    last_seen_at=opt_times,
    group=opt_texts,
    firmware=opt_texts,
    location=opt_texts,
    current_print=st.none() | prints,
    materials=st.lists(materials, max_size=2).map(tuple),
    tank=st.none() | tanks,
    alerts=st.lists(texts, max_size=3).map(lambda a: tuple(sorted(set(a)))),
    queue_length=opt_ints,
    phase=opt_texts,
    known_status=st.none() | st.sampled_from(PrinterStatus),
    raw=raws,
)


@st.composite
def snapshots(draw: st.DrawFn) -> Snapshot:
    fleet = draw(st.lists(printers, max_size=4))
    runs = draw(st.lists(prints, max_size=3))
    return Snapshot(
        source=draw(texts),
        vendor=draw(st.sampled_from(Vendor)),
        taken_at=draw(aware_times),
        printers={p.serial: p for p in fleet},
        runs={r.id: r for r in runs},
        skipped=tuple(
            draw(
                st.lists(
                    st.builds(SkippedRecord, kind=texts, record_id=opt_texts, reason=texts),
                    max_size=2,
                )
            )
        ),
    )


def _through_text(data: dict[str, Any]) -> Any:
    """What the store does: JSON text and back (strict JSON, no NaN)."""
    return json.loads(json.dumps(data, allow_nan=False))


def _uncompared(snapshot: Snapshot) -> list[Any]:
    """The fields ``==`` ignores: raw records, last_seen_at and skipped records."""
    facts: list[Any] = [snapshot.skipped]
    for key, p in snapshot.printers.items():
        facts.append((key, p.last_seen_at, dict(p.raw)))
        if p.current_print is not None:
            facts.append((key, dict(p.current_print.raw)))
    facts.extend((key, dict(r.raw)) for key, r in snapshot.runs.items())
    return facts


# --- round trips --------------------------------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(snapshots())
def test_snapshot_round_trips_through_json_text(snapshot: Snapshot) -> None:
    """Every normalized field survives encoding, JSON text and decoding."""
    decoded = snapshot_from_json(_through_text(snapshot_to_json(snapshot)))
    assert decoded == snapshot
    assert list(decoded.printers) == list(snapshot.printers)
    assert list(decoded.runs) == list(snapshot.runs)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(snapshots())
def test_snapshot_round_trip_keeps_raw_when_asked(snapshot: Snapshot) -> None:
    """With ``with_raw`` the fields ``==`` ignores (raw, last_seen_at, skipped) survive too."""
    decoded = snapshot_from_json(_through_text(snapshot_to_json(snapshot, with_raw=True)))
    assert _uncompared(decoded) == _uncompared(snapshot)


@settings(max_examples=50, deadline=None)
@given(printers)
def test_printer_round_trips(printer: Printer) -> None:
    """A printer alone round-trips, including its current print, materials and tank."""
    decoded = printer_from_json(_through_text(printer_to_json(printer)))
    assert decoded == printer
    assert decoded.last_seen_at == printer.last_seen_at


@settings(max_examples=50, deadline=None)
@given(prints)
def test_print_round_trips(run: Print) -> None:
    """A print run alone round-trips."""
    assert print_from_json(_through_text(print_to_json(run))) == run


def test_raw_is_left_out_unless_asked() -> None:
    """Vendor records are not stored by default (they are large and not needed by the differ)."""
    run = Print(id="p1", name="n", status=PrintStatus.PRINTING, status_raw="PRINTING", raw={"a": 1})
    printer = Printer(
        serial="s",
        name="s",
        vendor=Vendor.FORMLABS,
        model="Form 4",
        model_code="FORM-4-0",
        status=PrinterStatus.PRINTING,
        status_raw="PRINTING",
        online=True,
        current_print=run,
        raw={"b": 2},
    )
    snapshot = Snapshot(source="lab", vendor=Vendor.FORMLABS, taken_at=T0, printers={"s": printer})
    encoded = snapshot_to_json(snapshot)
    assert "raw" not in encoded["printers"]["s"]
    assert "raw" not in encoded["printers"]["s"]["current_print"]
    decoded = snapshot_from_json(encoded)
    assert dict(decoded.printers["s"].raw) == {}


def test_decoded_mappings_are_read_only() -> None:
    """A decoded snapshot is as immutable as one an adapter built."""
    data = {"source": "lab", "vendor": "carbon", "taken_at": "2026-11-23T10:00:00Z"}
    decoded = snapshot_from_json(data)
    with pytest.raises(TypeError):
        decoded.printers["x"] = None  # type: ignore[index]


# --- tolerance of older / odd stored data -------------------------------------------------


@pytest.mark.parametrize(
    ("stored", "check"),
    [
        pytest.param(
            {"source": "lab", "vendor": "formlabs", "taken_at": "2026-11-23T10:00:00Z"},
            lambda s: s.printers == {} and s.runs == {} and s.skipped == (),
            id="no printers, runs or skipped",
        ),
        pytest.param(
            {
                "source": "lab",
                "vendor": "formlabs",
                "taken_at": "2026-11-23T10:00:00Z",
                "printers": {"F1": {"serial": "F1", "vendor": "formlabs"}},
            },
            lambda s: (
                s.printers["F1"].name == "F1"
                and s.printers["F1"].status is PrinterStatus.UNKNOWN
                and s.printers["F1"].online is True
                and s.printers["F1"].materials == ()
                and s.printers["F1"].tank is None
            ),
            id="printer with only serial and vendor",
        ),
        pytest.param(
            {
                "source": "lab",
                "vendor": "formlabs",
                "taken_at": "2026-11-23T10:00:00Z",
                "printers": {
                    "F1": {"serial": "F1", "vendor": "formlabs", "status": "LEVITATING"},
                },
            },
            lambda s: (
                s.printers["F1"].status is PrinterStatus.UNKNOWN
                and s.printers["F1"].status_raw == "LEVITATING"
            ),
            id="status string this version does not know",
        ),
        pytest.param(
            {
                "source": "lab",
                "vendor": "formlabs",
                "taken_at": "2026-11-23T10:00:00Z",
                "printers": [{"serial": "F1", "vendor": "formlabs"}],
                "runs": [{"id": "r1", "status": "FINISHED"}],
            },
            lambda s: list(s.printers) == ["F1"] and s.runs["r1"].status is PrintStatus.FINISHED,
            id="printers and runs as lists (Snapshot.as_dict shape)",
        ),
    ],
)
def test_older_stored_data_reads_with_defaults(stored: dict[str, Any], check: Any) -> None:
    """Keys missing from older stored data take defaults instead of failing the restart."""
    assert check(snapshot_from_json(stored))


@pytest.mark.parametrize(
    "stored",
    [
        pytest.param({"vendor": "formlabs", "taken_at": "2026-11-23T10:00:00Z"}, id="no source"),
        pytest.param({"source": "lab", "taken_at": "2026-11-23T10:00:00Z"}, id="no vendor"),
        pytest.param({"source": "lab", "vendor": "formlabs"}, id="no taken_at"),
        pytest.param(
            {"source": "lab", "vendor": "prusa", "taken_at": "2026-11-23T10:00:00Z"},
            id="unknown vendor",
        ),
        pytest.param(
            {"source": "lab", "vendor": "formlabs", "taken_at": "yesterday"}, id="bad time"
        ),
        pytest.param(
            {
                "source": "lab",
                "vendor": "formlabs",
                "taken_at": "2026-11-23T10:00:00Z",
                "printers": {"x": {"vendor": "formlabs"}},
            },
            id="printer without serial",
        ),
    ],
)
def test_unusable_stored_data_raises_value_error(stored: dict[str, Any]) -> None:
    """Data missing what cannot be defaulted raises ValueError naming the key."""
    with pytest.raises(ValueError, match=r"\S"):
        snapshot_from_json(stored)


def test_times_are_utc_with_z() -> None:
    """Stored times use the same RFC 3339 ``Z`` form as the event envelope."""
    snapshot = Snapshot(source="lab", vendor=Vendor.CARBON, taken_at=T0, printers={})
    assert snapshot_to_json(snapshot)["taken_at"] == "2026-11-23T10:00:00Z"
