"""A record that differs from the last fetch's only in its heartbeat fields is patched (its
heartbeat, ``online`` and raw text brought up to date), not mapped again; any other difference
maps it again. Either way the printer equals what a full mapping gives."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from printfleet.core.model import Printer, plain
from printfleet.sources import carbon_map, formlabs_map
from printfleet.sources.mapping import Heartbeat, Record, RecordStream

FIXTURES = Path(__file__).parents[2] / "fixtures"
FORMLABS = json.loads((FIXTURES / "formlabs-samples.json").read_text("utf-8"))
CARBON = json.loads((FIXTURES / "carbon-samples.json").read_text("utf-8"))
NOW = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
OFFLINE_AFTER = timedelta(minutes=5)


def stamp(at: datetime, *, millis: bool = False) -> str:
    text = at.isoformat(timespec="milliseconds" if millis else "seconds")
    return text.replace("+00:00", "Z")


def formlabs_records(pinged: datetime, temperature: float = 31.5) -> list[dict[str, Any]]:
    body: list[dict[str, Any]] = copy.deepcopy(FORMLABS["list_printers"]["body"])
    for record in body:
        record["printer_status"]["last_pinged_at"] = stamp(pinged)
        record["printer_status"]["current_temperature"] = temperature
    return body


def carbon_records(updated: datetime) -> list[dict[str, Any]]:
    body: list[dict[str, Any]] = copy.deepcopy(CARBON["get_printers"]["body"]["printers"])
    for record in body:
        record["updated_at"] = stamp(updated, millis=True)
        record["prints"]["current"] = None  # a started print is mapped on every fetch anyway
    return body


class Fetches:
    """One vendor's mapper with its cache, fed JSON text as the adapters feed it."""

    def __init__(self, vendor: str) -> None:
        self.vendor = vendor
        self.cache: Any = (
            formlabs_map.PrinterCache() if vendor == "formlabs" else carbon_map.PrinterCache()
        )

    def fetch(self, records: list[dict[str, Any]], now: datetime) -> dict[str, Printer]:
        stream = RecordStream(json.dumps(records))
        stream.expect(self.cache.known(), key="serial")
        return map_with(self.vendor, stream, now, self.cache)


def map_with(vendor: str, body: Any, now: datetime, cache: Any = None) -> dict[str, Printer]:
    if vendor == "formlabs":
        printers, _, skipped = formlabs_map.map_printers(
            body, source="lab", now=now, offline_after=OFFLINE_AFTER, cache=cache
        )
    else:
        printers, _, skipped = carbon_map.map_printers(
            body, source="lab", now=now, offline_after=OFFLINE_AFTER, cache=cache
        )
    assert skipped == []
    return printers


def assert_as_mapped(
    vendor: str, got: dict[str, Printer], records: list[dict[str, Any]], now: datetime
) -> None:
    """``got`` is what mapping ``records`` from scratch at ``now`` gives, raw text included."""
    fresh = map_with(vendor, RecordStream(json.dumps(records)), now)
    assert got == fresh
    for serial, printer in got.items():
        assert plain(printer.raw) == plain(fresh[serial].raw)
        if printer.current_print is not None:
            assert fresh[serial].current_print is not None
            assert plain(printer.current_print.raw) == plain(fresh[serial].current_print.raw)


def test_a_new_formlabs_ping_is_patched_not_mapped() -> None:
    fetches = Fetches("formlabs")
    first = fetches.fetch(formlabs_records(NOW - timedelta(seconds=20)), NOW)
    assert fetches.cache.mapped == len(first)
    later = NOW + timedelta(seconds=30)
    records = formlabs_records(NOW + timedelta(seconds=10), temperature=32.1)
    second = fetches.fetch(records, later)
    assert (fetches.cache.mapped, fetches.cache.reused) == (0, len(first))
    assert all(p.last_seen_at == NOW + timedelta(seconds=10) for p in second.values())
    assert all(p.online for p in second.values())
    assert all(p.raw["printer_status"]["current_temperature"] == 32.1 for p in second.values())
    assert_as_mapped("formlabs", second, records, later)


def test_a_formlabs_printer_whose_pings_stop_goes_offline_and_back_online() -> None:
    fetches = Fetches("formlabs")
    pinged = NOW - timedelta(seconds=20)
    fetches.fetch(formlabs_records(pinged), NOW)
    # Pings stopped 6 minutes ago; only the temperature still moves.
    later = NOW + timedelta(minutes=6)
    records = formlabs_records(pinged, temperature=29.4)
    stale = fetches.fetch(records, later)
    assert fetches.cache.reused == len(stale)
    assert not any(p.online for p in stale.values())
    assert_as_mapped("formlabs", stale, records, later)
    records = formlabs_records(later)
    back = fetches.fetch(records, later)
    assert fetches.cache.reused == len(back)
    assert all(p.online for p in back.values())
    assert_as_mapped("formlabs", back, records, later)


CHANGES: list[tuple[str, Callable[[dict[str, Any]], None]]] = [
    ("alias", lambda r: r.update(alias="Renamed")),
    ("status", lambda r: r["printer_status"].update(status="MAINTENANCE")),
    ("a new key", lambda r: r["printer_status"].update(hopper_level=3)),
    ("last_modified", lambda r: r["printer_status"].update(last_modified="2026-03-01T08:00:05Z")),
    ("tank", lambda r: r.update(tank_status=None)),
    ("a ping elsewhere", lambda r: r.update(firmware_version="last_pinged_at")),
    ("the key twice", lambda r: r.update(group={"last_pinged_at": "2026-01-01T00:00:00Z"})),
    ("a lone ping", lambda r: r["printer_status"].update(last_pinged_at=None) or r.update(x=1)),
]


@pytest.mark.parametrize(("what", "change"), CHANGES, ids=[c[0] for c in CHANGES])
def test_any_other_formlabs_change_maps_the_record_again(
    what: str, change: Callable[[dict[str, Any]], None]
) -> None:
    fetches = Fetches("formlabs")
    first = fetches.fetch(formlabs_records(NOW - timedelta(seconds=20)), NOW)
    records = formlabs_records(NOW - timedelta(seconds=5), temperature=30.0)
    change(records[0])
    second = fetches.fetch(records, NOW + timedelta(seconds=15))
    assert (fetches.cache.mapped, fetches.cache.reused) == (1, len(first) - 1)
    assert_as_mapped("formlabs", second, records, NOW + timedelta(seconds=15))


def test_a_new_carbon_updated_at_is_patched_and_ages_into_offline() -> None:
    fetches = Fetches("carbon")
    first = fetches.fetch(carbon_records(NOW - timedelta(seconds=20)), NOW)
    online = {s for s, p in first.items() if p.online}
    assert online  # the offline-state sample stays offline whatever its updated_at
    records = carbon_records(NOW + timedelta(seconds=10))
    second = fetches.fetch(records, NOW + timedelta(seconds=30))
    assert (fetches.cache.mapped, fetches.cache.reused) == (0, len(first))
    assert all(p.last_seen_at == NOW + timedelta(seconds=10) for p in second.values())
    assert_as_mapped("carbon", second, records, NOW + timedelta(seconds=30))
    records = carbon_records(NOW + timedelta(seconds=20))
    stale = fetches.fetch(records, NOW + timedelta(minutes=6))
    assert fetches.cache.reused == len(first)
    assert not any(p.online for p in stale.values())
    assert_as_mapped("carbon", stale, records, NOW + timedelta(minutes=6))


def test_any_other_carbon_change_maps_the_record_again() -> None:
    fetches = Fetches("carbon")
    first = fetches.fetch(carbon_records(NOW - timedelta(seconds=20)), NOW)
    records = carbon_records(NOW)
    records[0]["status"]["printer_state"] = "OFFLINE"
    second = fetches.fetch(records, NOW + timedelta(seconds=15))
    assert (fetches.cache.mapped, fetches.cache.reused) == (1, len(first) - 1)
    assert not second[records[0]["serial"]].online
    assert_as_mapped("carbon", second, records, NOW + timedelta(seconds=15))


@pytest.mark.parametrize(
    ("old", "new", "same"),
    [
        ('{"a":1,"s":{"t":"x","p":2}}', '{"a":1,"s":{"t":"y","p":3}}', True),
        ('{"a":1,"s":{"t":"x"}}', '{"a":1, "s": {"t" : {"deep": [1]}}}', False),  # spacing
        ('{"a":1,"s":{"t":"x"}}', '{"a":1,"s":{"t":{"deep":[1]}}}', True),
        ('{"a":1,"s":{"t":"x"}}', '{"a":2,"s":{"t":"x"}}', False),
        ('{"a":"\\u0074","s":{"t":"x"}}', '{"a":"\\u0074","s":{"t":"y"}}', False),  # escapes
        ('{"t":"x","s":{"p":1}}', '{"t":"y","s":{"p":1}}', False),  # not where it beats
        ('{"s":{"t":"x","t":"z"}}', '{"s":{"t":"y","t":"z"}}', False),  # a key twice
        ('{"a":"t","s":{}}', '{"a":"t","s":{}}', False),  # a value spelled as the key
        ('{"s":{"p":1,"t":"x"}}', '{"s":{"p":2,"t":"y"}}', True),  # in any order
        ('{"s":{"t":{"p":1}}}', '{"s":{"t":{"p":2}}}', False),  # one inside the other
        ('{"a":1,"s":{"t":"x"}}', '{"a":1,"s":{"t":"x\\n"}}', False),  # any escape
    ],
)
def test_only_the_heartbeat_values_may_differ(old: str, new: str, same: bool) -> None:
    beat = Heartbeat(("s",), ("t", "p"))
    assert beat.only_beat(old, Record(json.loads(new), new)) is same
