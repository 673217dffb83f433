"""Property tests: mutated vendor records never crash a mapper and are never silently lost.

Each example takes real sample records, mutates them the way a drifting beta API might
(keys dropped, values nulled, types swapped, numbers sent as strings, random unicode,
nested objects replaced by anything), and feeds a list of them to every mapper. The
properties: no exception escapes (except ``BadResponse`` for a top level that is not a
list), every input record comes out either as a mapped item or as a ``SkippedRecord`` (a
repeated key keeps the last record and skips the earlier one as ``"duplicate"``), no skip
is the mappers' last-resort "unexpected error", and the normalized values are sane
(JSON-serialisable without NaN, progress within 0..1, timestamps aware UTC).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from printfleet.core.diff import carry_forward, diff
from printfleet.core.events import ChangeEvent, EventType
from printfleet.core.model import (
    Print,
    Printer,
    PrintStatus,
    SkippedRecord,
    Snapshot,
    Vendor,
    frozen_mapping,
)
from printfleet.core.thresholds import DiffSettings
from printfleet.errors import BadResponse
from printfleet.sources import carbon_map, formlabs_map
from printfleet.sources.mapping import (
    as_bool,
    as_float,
    as_int,
    as_mapping,
    as_str,
    parse_time,
    raw_text,
)

FIXTURES = Path(__file__).parents[2] / "fixtures"
FORMLABS = json.loads((FIXTURES / "formlabs-samples.json").read_text())
CARBON = json.loads((FIXTURES / "carbon-samples.json").read_text())

FORMLABS_PRINTERS: list[Any] = FORMLABS["list_printers"]["body"]
FORMLABS_PRINTS: list[Any] = [
    *FORMLABS["list_prints"]["body"]["results"],
    *(p["printer_status"]["current_print_run"] for p in FORMLABS_PRINTERS),
    *(p["previous_print_run"] for p in FORMLABS_PRINTERS),
]
FORMLABS_EVENTS: list[Any] = FORMLABS["list_events"]["body"]["results"]
FORMLABS_TANKS: list[Any] = FORMLABS["list_tanks"]["body"]["results"]
FORMLABS_CARTRIDGES: list[Any] = FORMLABS["list_cartridges"]["body"]["results"]
CARBON_PRINTERS: list[Any] = CARBON["get_printers"]["body"]["printers"]
CARBON_PRINTS: list[Any] = CARBON["get_prints"]["body"]["prints"]

SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# The only reasons a mapper may give; "unexpected error: ..." would mean a mapper bug.
EXPECTED_REASONS = {
    "not an object",
    "duplicate",
    "missing serial",
    "missing guid",
    "missing print id",
    "print_run: not an object",
    "print_run: missing guid",
    "printer_status: not an object",
    "status: not an object",
}

# --- strategies ----------------------------------------------------------------------------------

TRICKY_STRINGS = st.sampled_from(
    [
        "",
        "   ",
        "2025-06-18T14:29:41Z",
        "2025-06-18T14:29:41.1234567+02:00",
        "2025-06-18",
        "0001-01-01T00:00:00+14:00",
        "9999-12-31T23:59:59-14:00",
        "NaN",
        "inf",
        "1e400",
        "-1",
        "517",
        "12.5",
        "true",
        "IDLE",
        "PRINTING",
        "FINISHED",
        "WAITING_FOR_RESOLUTION",
        "DISCONNECTED",
        "failed",
        "\x00",
        "\U0001f9ab",
        "\u202eRTL",
    ]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | TRICKY_STRINGS
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=6,
)


class Damage:
    """Walks a JSON value and damages each node with probability ``rate``.

    The walk is driven by a seeded ``random.Random`` rather than one Hypothesis draw per node:
    a printer record has ~150 nodes, and per-node draws made each example ~50x slower. The
    seed, the rate and the pools of replacement values are still Hypothesis draws, so
    failures reproduce and the replacement values shrink.
    """

    def __init__(self, seed: int, rate: float, junk: list[Any], texts: list[str]) -> None:
        self.rng = random.Random(seed)
        self.rate = rate
        self.junk = junk
        self.texts = texts

    def apply(self, value: Any) -> Any:
        if self.rng.random() < self.rate:
            return self._break(value)
        if isinstance(value, dict):
            out = {k: self.apply(v) for k, v in value.items() if self.rng.random() >= self.rate}
            if self.rng.random() < self.rate:
                out[self.rng.choice(self.texts)] = self.rng.choice(self.junk)  # an extra field
            return out
        if isinstance(value, list):
            return [self.apply(v) for v in value]
        return value

    def _break(self, value: Any) -> Any:
        kind = self.rng.randrange(5)
        if kind == 0:
            return None
        if kind == 1:
            return self.rng.choice(self.junk)  # any type and nesting in place of this node
        if kind == 2:
            return self.rng.choice(self.texts)  # random unicode or a tricky string
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, int | float):
            return str(value)  # numbers as strings
        if isinstance(value, dict | list) and value:
            return list(value.values()) if isinstance(value, dict) else value[0]  # nesting drift
        return self.rng.choice(self.junk)


@st.composite
def damaged_records(draw: st.DrawFn, samples: list[Any]) -> list[Any]:
    """A list of sample records (drawn with replacement, so keys repeat), each damaged."""
    picks = draw(st.lists(st.sampled_from(samples), max_size=4))
    damage = Damage(
        seed=draw(st.integers(min_value=0, max_value=2**32 - 1)),
        rate=draw(st.sampled_from([0.0, 0.02, 0.05, 0.15, 0.4])),
        junk=draw(st.lists(JSON_VALUES, min_size=1, max_size=3)),
        texts=draw(st.lists(st.text(max_size=20) | TRICKY_STRINGS, min_size=1, max_size=3)),
    )
    return [damage.apply(record) for record in picks]


def records_from(samples: list[Any]) -> st.SearchStrategy[list[Any]]:
    return damaged_records(samples)


NOWS = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
)
OFFLINE_AFTER = st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=2))


# --- checks --------------------------------------------------------------------------------------


def check_skipped(skipped: list[SkippedRecord] | tuple[SkippedRecord, ...]) -> None:
    for record in skipped:
        assert record.reason in EXPECTED_REASONS, record


def check_time(value: datetime | None) -> None:
    assert value is None or value.utcoffset() == timedelta(0)


def check_print(run: Print) -> None:
    assert run.id
    # A rating is one of the two words or nothing; whatever else was sent is never a verdict.
    assert run.verdict in (None, "SUCCESS", "FAILURE")
    assert run.verdict is None or run.verdict_raw is None
    assert run.volume_ml is None or run.volume_ml >= 0.0
    assert run.progress is None or 0.0 <= run.progress <= 1.0
    assert run.remaining_s is None or run.remaining_s >= 0.0
    assert run.elapsed_s is None or run.elapsed_s >= 0.0
    for value in (run.created_at, run.started_at, run.finished_at):
        check_time(value)
    json.dumps(run.as_dict(), allow_nan=False)


def check_printer(serial: str, printer: Printer) -> None:
    assert printer.serial == serial
    assert printer.name
    assert list(printer.alerts) == sorted(set(printer.alerts))
    assert len({m.slot for m in printer.materials}) == len(printer.materials)
    check_time(printer.last_seen_at)
    json.dumps(printer.as_dict(), allow_nan=False)
    if printer.current_print is not None:
        check_print(printer.current_print)


def expected_keys(records: list[Any], key: str, status: str | None = None) -> set[str]:
    """Keys of the records a mapper must keep: objects whose key reads as text (and whose
    ``status`` block, when named, is absent, null or an object)."""
    keys = set()
    for record in records:
        mapping = as_mapping(record)
        if mapping is None or (text := as_str(mapping.get(key))) is None:
            continue
        block = mapping.get(status) if status else None
        if block is not None and as_mapping(block) is None:
            continue
        keys.add(text)
    return keys


# --- mapper properties ---------------------------------------------------------------------------


@SETTINGS
@given(records=records_from(FORMLABS_PRINTERS), now=NOWS, offline_after=OFFLINE_AFTER)
def test_formlabs_printers_never_crash_or_drop(
    records: list[Any], now: datetime, offline_after: timedelta
) -> None:
    """Every mutated Formlabs printer record becomes a printer or a skipped record."""
    printers, runs, skipped = formlabs_map.map_printers(
        records, source="lab", now=now, offline_after=offline_after
    )
    assert len(printers) + len(skipped) == len(records)
    assert set(printers) == expected_keys(records, "serial", "printer_status")
    check_skipped(skipped)
    for serial, printer in printers.items():
        check_printer(serial, printer)
    for guid, run in runs.items():
        assert run.id == guid
        check_print(run)


@SETTINGS
@given(records=records_from(FORMLABS_PRINTS))
def test_formlabs_prints_never_crash_or_drop(records: list[Any]) -> None:
    """Every mutated Formlabs print record becomes a print or a skipped record."""
    prints, skipped = formlabs_map.map_prints(records)
    assert len(prints) + len(skipped) == len(records)
    assert set(prints) == expected_keys(records, "guid")
    check_skipped(skipped)
    for guid, run in prints.items():
        assert run.id == guid
        check_print(run)


@SETTINGS
@given(records=records_from(FORMLABS_EVENTS))
def test_formlabs_events_never_crash_or_drop(records: list[Any]) -> None:
    """Every mutated event yields its run, is not about a print, or is skipped."""
    runs, skipped, newest = formlabs_map.map_events(records)
    usable: set[str] = set()
    unusable = 0
    for record in records:
        event = as_mapping(record)
        if event is None:
            unusable += 1
            continue
        run = event.get("print_run")
        if run is None or run == {}:
            continue  # not about a print
        guid = as_str(run.get("guid")) if isinstance(run, Mapping) else None
        if guid is None:
            unusable += 1
        else:
            usable.add(guid)
    assert len(skipped) == unusable
    assert set(runs) == usable
    check_skipped(skipped)
    check_time(newest)
    for run in runs.values():
        check_print(run)


@SETTINGS
@given(records=records_from(FORMLABS_EVENTS))
def test_formlabs_feed_never_crashes_and_caps_vendor_text(records: list[Any]) -> None:
    """Every mutated event is a feed record or left out (no id, type or time); texts are
    capped and the type is kept raw."""
    feed = formlabs_map.map_feed(records)
    assert len(feed) <= len(records)
    for record in feed:
        assert record.id
        assert record.type
        assert len(record.type) <= formlabs_map.FEED_TYPE_CHARS
        assert len(record.type_label) <= formlabs_map.FEED_LABEL_CHARS
        assert len(record.message) <= formlabs_map.FEED_MESSAGE_CHARS
        check_time(record.created_at)


@SETTINGS
@given(tanks=records_from(FORMLABS_TANKS), cartridges=records_from(FORMLABS_CARTRIDGES))
def test_formlabs_inventory_never_crashes_or_drops(tanks: list[Any], cartridges: list[Any]) -> None:
    """Every mutated tank and cartridge becomes an item or a skipped record."""
    inventory = formlabs_map.map_inventory(tanks, cartridges)
    skipped_tanks = [s for s in inventory.skipped if s.kind == "tank"]
    skipped_cartridges = [s for s in inventory.skipped if s.kind == "cartridge"]
    assert len(inventory.tanks) + len(skipped_tanks) == len(tanks)
    assert len(inventory.cartridges) + len(skipped_cartridges) == len(cartridges)
    check_skipped(inventory.skipped)
    assert set(inventory.location) == expected_keys(tanks, "serial") | expected_keys(
        cartridges, "serial"
    )
    for tank in inventory.tanks:
        json.dumps(tank.as_dict(), allow_nan=False)
    for cartridge in inventory.cartridges:
        json.dumps(cartridge.as_dict(), allow_nan=False)


@SETTINGS
@given(
    records=records_from(CARBON_PRINTERS),
    now=NOWS,
    offline_after=st.none() | OFFLINE_AFTER,
)
def test_carbon_printers_never_crash_or_drop(
    records: list[Any], now: datetime, offline_after: timedelta | None
) -> None:
    """Every mutated Carbon printer record becomes a printer or a skipped record."""
    printers, runs, skipped = carbon_map.map_printers(
        records, source="factory", now=now, offline_after=offline_after
    )
    assert runs == {}
    assert len(printers) + len(skipped) == len(records)
    assert set(printers) == expected_keys(records, "serial", "status")
    check_skipped(skipped)
    for serial, printer in printers.items():
        check_printer(serial, printer)


@SETTINGS
@given(records=records_from(CARBON_PRINTS))
def test_carbon_prints_never_crash_or_drop(records: list[Any]) -> None:
    """Every mutated Carbon print record becomes a print or a skipped record."""
    prints, skipped = carbon_map.map_prints(records)
    assert len(prints) + len(skipped) == len(records)
    check_skipped(skipped)
    for key, run in prints.items():
        assert run.id == key
        check_print(run)


# --- unknown status words never become outcomes -------------------------------------------------

#: The words each vendor's mapper may know: Formlabs' documented print ``StatusEnum``
#: (formlabs.md §6.10) and Carbon's ``finished`` plus the third-party ``queued``/``printing``
#: (carbon.md §8.2). Any other word must read as UNKNOWN and never yield an outcome event.
FORMLABS_PRINT_WORDS = frozenset(
    [
        "QUEUED",
        "PREPRINT",
        "PRINTING",
        "PAUSED",
        "PAUSING",
        "FINISHED",
        "ABORTING",
        "ABORTED",
        "ERROR",
        "WAITING_FOR_RESOLUTION",
        "PREHEAT",
        "PRECOAT",
        "POSTCOAT",
    ]
)
CARBON_PRINT_WORDS = frozenset({"queued", "printing", "finished"})
OUTCOMES = frozenset({EventType.PRINT_FINISHED, EventType.PRINT_FAILED, EventType.PRINT_ABORTED})
#: Words a real API might plausibly send (the issue's examples), plus arbitrary text.
PLAUSIBLE_WORDS = st.sampled_from(
    ["paused", "pending", "complete", "completed", "in_progress", "failed", "error", "aborted",
     "canceled", "cancelled", "success", "SUCCESS", "COMPLETE", "probably_finished", "FAILED",
     "Finished ", "finished\u200b", "STANDBY", "x" * 300]
)  # fmt: skip
UNKNOWN_WORDS = PLAUSIBLE_WORDS | st.text(min_size=1, max_size=50)
T0 = datetime(2025, 6, 18, 14, 0, tzinfo=UTC)


def known_word(vendor: Vendor, word: str) -> bool:
    if vendor is Vendor.CARBON:
        return word.strip().lower() in CARBON_PRINT_WORDS
    return word in FORMLABS_PRINT_WORDS


def snapshot(vendor: Vendor, minutes: int, printers: Any, runs: Mapping[str, Print]) -> Snapshot:
    return Snapshot(
        source="s",
        vendor=vendor,
        taken_at=T0 + timedelta(minutes=minutes),
        printers=frozen_mapping(dict(printers)),
        runs=frozen_mapping(dict(runs)),
    )


def diff_chain(snapshots: list[Snapshot]) -> list[ChangeEvent]:
    """Every event of polling ``snapshots`` in turn, through carry_forward and diff."""
    settings = DiffSettings()
    events: list[ChangeEvent] = []
    previous: Snapshot | None = None
    for current in snapshots:
        current = carry_forward(previous, current, current.taken_at, settings)
        events.extend(diff(previous, current, current.taken_at, settings))
        previous = current
    return events


@SETTINGS
@given(
    vendor=st.sampled_from([Vendor.FORMLABS, Vendor.CARBON]),
    first=UNKNOWN_WORDS,
    second=UNKNOWN_WORDS,
)
def test_unknown_print_status_words_never_become_outcomes(
    vendor: Vendor, first: str, second: str
) -> None:
    """A running print whose history record then says an unknown word (twice, changing
    word or not) is UNKNOWN with the word kept, and no poll yields an outcome event."""
    assume(not known_word(vendor, first) and not known_word(vendor, second))
    if vendor is Vendor.CARBON:
        record = dict(CARBON_PRINTS[1])  # printing, also on printer 4M02KD as prints.current
        printers, _, _ = carbon_map.map_printers(
            CARBON_PRINTERS[:1], source="s", now=T0, offline_after=None
        )
        idle = dict(CARBON_PRINTERS[0], prints=None)
        left, _, _ = carbon_map.map_printers([idle], source="s", now=T0, offline_after=None)
        mapper = carbon_map.map_print
    else:
        record = dict(FORMLABS_PRINTS[0])
        printers, left = {}, {}
        mapper = formlabs_map.map_print
    running = mapper(dict(record, status="printing" if vendor is Vendor.CARBON else "PRINTING"))
    one, two = (mapper(dict(record, status=word)) for word in (first, second))
    assert (one.status, two.status) == (PrintStatus.UNKNOWN, PrintStatus.UNKNOWN)
    assert (one.status_raw, two.status_raw) == (first, second)
    events = diff_chain(
        [
            snapshot(vendor, 0, printers, {running.id: running}),
            snapshot(vendor, 1, left, {one.id: one}),
            snapshot(vendor, 2, left, {two.id: two}),
            snapshot(vendor, 3, left, {two.id: two}),
        ]
    )
    assert [e.type for e in events if e.type in OUTCOMES] == []


# --- top-level shape -----------------------------------------------------------------------------

_NOW = datetime(2025, 6, 18, 14, 30, tzinfo=UTC)

TOP_LEVEL_MAPPERS: dict[str, tuple[str, Callable[[Any], object]]] = {
    "formlabs printers": ("results", lambda body: formlabs_map.map_printers(
        body, source="lab", now=_NOW, offline_after=timedelta(minutes=5))),
    "formlabs prints": ("results", formlabs_map.map_prints),
    "formlabs events": ("results", formlabs_map.map_events),
    "formlabs feed": ("results", formlabs_map.map_feed),
    "formlabs tanks": ("results", lambda body: formlabs_map.map_inventory(body, [])),
    "formlabs cartridges": ("results", lambda body: formlabs_map.map_inventory([], body)),
    "carbon printers": ("printers", lambda body: carbon_map.map_printers(
        body, source="factory", now=_NOW, offline_after=None)),
    "carbon prints": ("prints", carbon_map.map_prints),
}  # fmt: skip


@SETTINGS
@given(name=st.sampled_from(sorted(TOP_LEVEL_MAPPERS)), body=JSON_VALUES)
def test_only_a_list_top_level_is_accepted(name: str, body: Any) -> None:
    """Any body that is neither a list nor an object holding one raises BadResponse only."""
    list_key, mapper = TOP_LEVEL_MAPPERS[name]
    is_list = isinstance(body, list) or (
        isinstance(body, dict) and isinstance(body.get(list_key), list)
    )
    if is_list:
        mapper(body)
    else:
        with pytest.raises(BadResponse):
            mapper(body)


# --- helper properties ---------------------------------------------------------------------------


@SETTINGS
@given(value=JSON_VALUES)
def test_readers_are_total_and_typed(value: Any) -> None:
    """Each lenient reader returns its type or None for any JSON value and never raises."""
    when = parse_time(value)
    assert when is None or when.utcoffset() == timedelta(0)
    number = as_int(value)
    assert number is None or (type(number) is int and abs(number) < 2**63)
    real = as_float(value)
    assert real is None or (type(real) is float and real == real and abs(real) != float("inf"))
    flag = as_bool(value)
    assert flag is None or type(flag) is bool
    text = as_str(value)
    assert text is None or (type(text) is str and text.strip())
    assert isinstance(raw_text(value), str)


# Real UTC offsets are whole minutes (ISO 8601 and RFC 3339 cannot even write seconds).
OFFSETS = st.builds(
    lambda minutes: timezone(timedelta(minutes=minutes)),
    st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59),
)


@SETTINGS
@given(value=st.datetimes(timezones=OFFSETS) | st.datetimes())
def test_parse_time_round_trips_iso_text(value: datetime) -> None:
    """Any datetime written in ISO form parses back to the same instant (naive = UTC)."""
    aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value
    try:
        instant = aware.astimezone(UTC)
    except OverflowError:  # outside years 1..9999 once in UTC: parse_time says None
        assert parse_time(value.isoformat()) is None
        return
    assert parse_time(value.isoformat()) == instant


# --- print_run_success: an unknown word is never a verdict ---------------------------------------

RATING_WORDS = st.sampled_from(
    ["SUCCESS", "FAILURE", "UNKNOWN", "success", "Failure", " SUCCESS", "FAILED", "PASS", ""]
) | st.text(max_size=12)


@SETTINGS
@given(
    rating=st.none()
    | JSON_VALUES
    | st.fixed_dictionaries(
        {"print_run": st.text(max_size=8), "print_run_success": RATING_WORDS | JSON_VALUES}
    ),
    note=st.none()
    | JSON_VALUES
    | st.fixed_dictionaries({"note": JSON_VALUES, "author": JSON_VALUES}),
)
def test_formlabs_verdict_is_only_ever_the_two_documented_words(rating: Any, note: Any) -> None:
    """Whatever ``print_run_success`` holds, the verdict is SUCCESS or FAILURE exactly when
    the word (trimmed) is one of them; any other word is kept for counting, never mapped."""
    record = {**FORMLABS["list_prints"]["body"]["results"][0], "print_run_success": rating}
    record["note"] = note
    run = formlabs_map.map_print(record)
    word = rating.get("print_run_success") if isinstance(rating, dict) else None
    text = word.strip() if isinstance(word, str) else None
    if text in ("SUCCESS", "FAILURE"):
        assert (run.verdict, run.verdict_raw) == (text, None)
    else:
        assert run.verdict is None
        # Unrated (null, no word, "", UNKNOWN) leaves nothing to report; any other value is
        # kept as text for the unknown-status log and counter.
        unrated = word is None or text in ("", "UNKNOWN")
        assert (run.verdict_raw is None) is unrated
    assert run.verdict_note is None or isinstance(run.verdict_note, str)
    check_print(run)
