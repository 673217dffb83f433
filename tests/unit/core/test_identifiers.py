"""Names from outside (serials, sources, slots) as topic levels, Home Assistant ids, metric
labels, SQLite keys and log lines: any code point, any length, no exception, no collision."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import structlog
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from printfleet.core.fleet import AccountHealth, FleetView
from printfleet.core.identifiers import (
    KEEP_BYTES,
    MAX_HA_ID,
    MAX_LEVEL_BYTES,
    from_topic_level,
    ha_id,
    is_shortened,
    safe_text,
    topic_level,
)
from printfleet.core.model import Material, Printer, PrinterStatus, Snapshot, Vendor
from printfleet.logs import configure_logging
from printfleet.metrics.fleet import FleetCollector
from printfleet.sinks.homeassistant import node_id
from printfleet.sinks.mqtt.topics import printer_topic
from printfleet.store import FILENAME, Store
from printfleet.testing import FakeClock

T0 = datetime(2026, 1, 1, tzinfo=UTC)

#: Any code point at all, lone surrogates included; short and very long texts.
ANY_TEXT = st.text(st.characters(codec=None, categories=None), max_size=300)
LONG_TEXT = st.text(st.characters(codec=None, categories=None), min_size=100, max_size=2000)
NAMES = st.one_of(ANY_TEXT, LONG_TEXT, st.sampled_from(["a/b", "a_b", "+", "#", "%", "~", ""]))

#: Home Assistant's own entity id rule (homeassistant/core.py VALID_ENTITY_ID, object part).
HA_OBJECT_ID = re.compile(r"^(?!.+__)(?!_)[\da-z_]+(?<!_)$")
#: Discovery topic node/object ids (home-assistant.io MQTT discovery docs).
HA_TOPIC_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
FUZZ = settings(max_examples=300, deadline=None)

#: Code points mosquitto refuses in a topic (lib/utf8_mosq.c, mosquitto_validate_utf8_len).
_BROKER_REFUSES = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef]")


def valid_level(level: str) -> bool:
    """A valid MQTT topic level that mosquitto accepts, within our 128-byte cap."""
    data = level.encode("utf-8")  # raises for a lone surrogate
    return (
        not set(level) & {"/", "+", "#"}
        and _BROKER_REFUSES.search(level) is None
        and all(ord(c) & 0xFFFE != 0xFFFE for c in level)
        and len(data) <= MAX_LEVEL_BYTES
    )


@pytest.mark.parametrize(
    ("text", "level"),
    [
        ("Form4-CapableBeaver", "Form4-CapableBeaver"),
        ("lab", "lab"),
        ("SN 12.5 ü", "SN 12.5 ü"),
        ("a/b", "a%2Fb"),
        ("a_b", "a_b"),
        ("+", "%2B"),
        ("#", "%23"),
        ("100%", "100%25"),
        ("x~y", "x%7Ey"),
        ("bell\x07", "bell%07"),
        ("\x01", "%01"),
        ("\ud800X", "%ED%A0%80X"),
        ("\ufffe", "%EF%BF%BE"),
    ],
)
def test_topic_levels_golden(text: str, level: str) -> None:
    """Ordinary serials keep their topic level; `/ + # % ~` and control characters are %XX."""
    assert topic_level(text) == level
    assert from_topic_level(level) == text


def test_ordinary_printer_topics_are_unchanged() -> None:
    """The topics users already subscribe to stay exactly as they were."""
    assert printer_topic("printfleet", "lab", "Form4-CapableBeaver") == (
        "printfleet/lab/Form4-CapableBeaver"
    )


def test_the_six_printers_of_the_report_get_six_topics() -> None:
    """`a/b`, `a_b`, `+`, `#`, `_` and `%2F` no longer share topics or Home Assistant ids."""
    serials = ["a/b", "a_b", "+", "#", "_", "%2F"]
    assert len({printer_topic("p", "lab", s) for s in serials}) == len(serials)
    assert len({node_id("lab", s) for s in serials}) == len(serials)


def test_a_70000_character_serial_is_shortened_with_a_stable_hash() -> None:
    """A huge serial becomes 100 bytes + `~` + 16 hex digits, the same every time."""
    serial = "S" * 70_000
    level = topic_level(serial)
    assert level == "S" * KEEP_BYTES + "~" + level[-16:]
    assert re.fullmatch(r"[0-9a-f]{16}", level[-16:])
    assert topic_level(serial) == level
    assert topic_level(serial + "x") != level
    assert is_shortened(level)
    with pytest.raises(ValueError, match="shortened"):
        from_topic_level(level)


@pytest.mark.parametrize("level", ["%", "%2", "%zz", "a/b", "%41", "x~y", "%ED%A0"])
def test_levels_this_encoding_never_produces_are_refused(level: str) -> None:
    """from_topic_level accepts only canonical levels, so each text has exactly one."""
    with pytest.raises(ValueError, match=r"topic level|escape"):
        from_topic_level(level)


@FUZZ
@given(NAMES)
@example("\ud800X")
@example("\U0010ffff\x00/+#%~")
def test_any_name_is_one_valid_level_and_back(text: str) -> None:
    """Every name becomes a valid, capped topic level that decodes back (unless shortened)."""
    level = topic_level(text)
    assert valid_level(level), level
    if is_shortened(level):
        assert len(topic_level(text).encode()) <= KEEP_BYTES + 17
    else:
        assert from_topic_level(level) == text


@FUZZ
@given(NAMES, NAMES)
def test_distinct_names_never_share_a_level_or_an_id(first: str, second: str) -> None:
    """Two different serials get two different topic levels and Home Assistant ids."""
    if first != second:
        assert topic_level(first) != topic_level(second)
        assert ha_id(first) != ha_id(second)
        assert node_id("lab", first) != node_id("lab", second)


@FUZZ
@given(NAMES)
@example("a__b_")
@example("_")
@example("")
def test_any_name_is_a_valid_home_assistant_id(text: str) -> None:
    """ha_id output passes Home Assistant's entity id rule and its discovery topic charset."""
    for value in (ha_id(text), node_id("lab", text)):
        assert HA_OBJECT_ID.match(value), value
        assert HA_TOPIC_ID.match(value), value
        assert len(value) <= MAX_HA_ID


@given(NAMES)
def test_safe_text_always_encodes(text: str) -> None:
    """safe_text output is UTF-8 encodable and equal to the input when that already was."""
    out = safe_text(text)
    out.encode("utf-8")
    if not re.search("[\ud800-\udfff]", text):
        assert out == text


def make_printer(serial: str, name: str) -> Printer:
    return Printer(
        serial=serial,
        name=name,
        vendor=Vendor.FORMLABS,
        model="Form 4",
        model_code="FORM-4-0",
        status=PrinterStatus.IDLE,
        status_raw="IDLE",
        online=True,
        last_seen_at=T0,
        group=name,
        firmware=name,
        materials=(Material(slot=name, capacity_ml=1000, remaining_ml=500),),
    )


def make_view(*printers: Printer) -> FleetView:
    snapshot = Snapshot(
        source="lab",
        vendor=Vendor.FORMLABS,
        taken_at=T0,
        printers={p.serial: p for p in printers},
    )
    return FleetView(
        snapshots={"lab": snapshot}, health={"lab": AccountHealth(up=True, last_success_at=T0)}
    )


@FUZZ
@given(st.lists(NAMES, min_size=1, max_size=3, unique=True), NAMES)
def test_metric_labels_survive_any_code_point(serials: list[str], name: str) -> None:
    """Both exposition paths write text that Prometheus' own parser reads back, one series
    per printer."""
    collector = FleetCollector(lambda: make_view(*(make_printer(s, name) for s in serials)))
    registry = CollectorRegistry()
    registry.register(collector)
    for text in (generate_latest(registry).decode("utf-8"), collector.render()):
        families = {f.name: f for f in text_string_to_metric_families(text)}
        up = families["printfleet_printer_up"].samples
        assert {s.labels["serial"] for s in up} == {safe_text(s) for s in serials}


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Store]]:
    """One store for every fuzz example (opening one per example would dominate the run)."""
    path = tmp_path_factory.mktemp("store") / FILENAME
    with Store.open(path, clock=FakeClock(T0)) as store:
        yield path, store


@settings(FUZZ, max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(NAMES, min_size=1, max_size=4, unique=True))
@example(["\ud800X", "\ufffdX", "X"])
def test_the_store_round_trips_any_serial(
    shared_store: tuple[Path, Store], serials: list[str]
) -> None:
    """Whatever the serials, the snapshot read back (also after reopening) holds exactly them."""
    path, store = shared_store
    store.commit(snapshot=make_view(*(make_printer(s, s) for s in serials)).snapshots["lab"])
    loaded = store.load_snapshot("lab")
    assert loaded is not None
    assert sorted(loaded.printers) == sorted(serials)
    assert all(loaded.printers[s].name == s for s in serials)
    with Store.open(path, clock=FakeClock(T0)) as reopened:
        again = reopened.load_snapshot("lab")
    assert again is not None
    assert sorted(again.printers) == sorted(serials)


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """Our real logging configuration (JSON) writing into a strict-UTF-8 text stream."""
    stream = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict", write_through=True)
    configure_logging("info", "json", stream)  # type: ignore[arg-type]
    yield stream  # type: ignore[misc]
    structlog.reset_defaults()
    logging.getLogger().handlers.clear()


@settings(FUZZ, max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(NAMES)
@example("\ud800X")
def test_a_log_line_renders_for_any_serial(log_stream: io.TextIOWrapper, serial: str) -> None:
    """A log line naming any serial is written as one JSON line (no logging error, no loss)."""
    buffer = log_stream.buffer
    assert isinstance(buffer, io.BytesIO)
    start = buffer.tell()
    errors: list[BaseException] = []
    handler = logging.getLogger().handlers[-1]
    handler.handleError = lambda record: errors.append(RuntimeError(record))  # type: ignore[method-assign]
    structlog.get_logger("printfleet.test").warning("printer.seen", serial=serial)
    assert not errors
    line = buffer.getvalue()[start:].decode("utf-8")
    assert json.loads(line)["serial"] == safe_text(serial)
