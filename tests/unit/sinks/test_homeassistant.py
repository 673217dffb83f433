"""Home Assistant discovery payloads: one device per printer, entities on the per-field topics."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from printfleet.core.identifiers import ha_id
from printfleet.core.model import Material, Printer, PrinterStatus, Vendor
from printfleet.sinks.homeassistant import (
    discovery_messages,
    entity_key,
    node_id,
    removal_messages,
)

BASE = "printfleet/lab/Form4-X"
NODE = "printfleet_lab_form4_x_9136aadf"  # golden: ha_id("printfleet_lab/Form4-X")
FRONT = "material_remaining_front_5404d71b"
FIELDS = {
    key: f"{BASE}/{key}"
    for key in (
        "status",
        "online",
        "progress",
        "remaining_s",
        "print_name",
        "print_status",
        "last_seen",
        "layer",
        "material_remaining/FRONT",
        "material_remaining/BACK",
    )
}


def make_printer(**changes: Any) -> Printer:
    values: dict[str, Any] = {
        "serial": "Form4-X",
        "name": "Capable Beaver",
        "vendor": Vendor.FORMLABS,
        "model": "Form 4",
        "model_code": "FORM-4-0",
        "status": PrinterStatus.IDLE,
        "status_raw": "IDLE",
        "online": True,
        "firmware": "1.9.2",
        "materials": (Material(slot="FRONT"), Material(slot="BACK")),
    }
    values.update(changes)
    return Printer(**values)


def build(printer: Printer | None = None, **kwargs: Any) -> dict[str, dict[str, Any]]:
    messages = discovery_messages(
        source="lab",
        printer=printer or make_printer(),
        field_topics=kwargs.pop("field_topics", FIELDS),
        availability_topic="printfleet/status",
        sw_version="0.1.0",
        **kwargs,
    )
    return {topic: json.loads(payload) for topic, payload in messages.items()}


def test_every_entity_has_a_config_topic_under_the_printer_node() -> None:
    """Config topics are <ha_prefix>/<component>/<node id>/<key>/config."""
    node = f"homeassistant/sensor/{NODE}"
    assert set(build()) == {
        f"{node}/status/config",
        f"{node}/progress/config",
        f"{node}/remaining_s/config",
        f"{node}/print_name/config",
        f"{node}/print_status/config",
        f"{node}/last_seen/config",
        f"{node}/{FRONT}/config",
        f"{node}/{entity_key('material_remaining/BACK')}/config",
        f"homeassistant/binary_sensor/{NODE}/online/config",
    }


def test_the_device_block_names_vendor_model_and_firmware() -> None:
    """Every entity points at the same device: identifiers, manufacturer, model, sw_version."""
    devices = {json.dumps(c["device"], sort_keys=True) for c in build().values()}
    assert len(devices) == 1
    device = json.loads(devices.pop())
    assert device["identifiers"] == [NODE]
    assert device["serial_number"] == "Form4-X"  # the real serial stays in the payload
    assert device["name"] == "Capable Beaver"
    assert device["manufacturer"] == "Formlabs"
    assert device["model"] == "Form 4"
    assert device["sw_version"] == "1.9.2"


def test_carbon_printers_are_made_by_carbon() -> None:
    """A Carbon printer's device has manufacturer Carbon and no sw_version when unknown."""
    config = build(make_printer(vendor=Vendor.CARBON, firmware=None))
    device = next(iter(config.values()))["device"]
    assert device["manufacturer"] == "Carbon"
    assert "sw_version" not in device


def test_entities_read_the_field_topics_and_the_daemon_availability() -> None:
    """state_topic is the per-field topic; availability is the daemon's status topic."""
    by_key = {entity_key(k): topic for k, topic in FIELDS.items()}
    for topic, config in build().items():
        component, key = topic.split("/")[1], topic.split("/")[-2]
        assert config["state_topic"] == by_key[key]
        assert config["availability_topic"] == "printfleet/status"
        assert config["unique_id"] == f"{NODE}_{key}"
        assert config["default_entity_id"] == f"{component}.{ha_id(f'{NODE}_{key}')}"
        assert "object_id" not in config  # removed in Home Assistant 2026.4


def test_online_is_a_connectivity_binary_sensor_with_true_false_payloads() -> None:
    """The online entity is a binary_sensor with device_class connectivity and true/false."""
    online = build()[f"homeassistant/binary_sensor/{NODE}/online/config"]
    assert online["device_class"] == "connectivity"
    assert (online["payload_on"], online["payload_off"]) == ("true", "false")


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("progress", {"unit_of_measurement": "%", "state_class": "measurement"}),
        ("remaining_s", {"device_class": "duration", "unit_of_measurement": "s"}),
        (FRONT, {"unit_of_measurement": "%", "name": "Material FRONT"}),
        ("status", {"device_class": "enum"}),
    ],
)
def test_sensor_units_and_classes(key: str, expected: dict[str, Any]) -> None:
    """Progress and material are percentages, remaining time a duration in seconds."""
    config = build()[f"homeassistant/sensor/{NODE}/{key}/config"]
    assert expected.items() <= config.items()


def test_status_options_cover_every_printer_status() -> None:
    """The enum sensor lists every normalized status, so no state is ever rejected."""
    config = build()[f"homeassistant/sensor/{NODE}/status/config"]
    assert config["options"] == [s.value for s in PrinterStatus]


def test_unknown_values_render_as_none() -> None:
    """Sensors map the `null` payload to None, Home Assistant's 'unknown'."""
    config = build()[f"homeassistant/sensor/{NODE}/progress/config"]
    assert "None if value == 'null'" in config["value_template"]


def test_serials_with_unsafe_characters_give_valid_ids() -> None:
    """Characters Home Assistant rejects in ids become underscores, plus a hash of the serial."""
    assert re.fullmatch(r"printfleet_lab_sn_12_2f34_5_[0-9a-f]{8}", node_id("lab", "SN 12/34.5"))


@pytest.mark.parametrize(
    ("first", "second"),
    [("a/b", "a_b"), ("+", "#"), ("A", "a"), ("a_b", "a__b")],
)
def test_serials_that_used_to_collide_get_distinct_device_ids(first: str, second: str) -> None:
    """Serials that the old `_` replacement merged now get different node ids and topics."""
    assert node_id("lab", first) != node_id("lab", second)


def test_the_source_serial_split_is_unambiguous() -> None:
    """Source `lab_a` with serial `b` is a different device than source `lab` with `a_b`."""
    assert node_id("lab_a", "b") != node_id("lab", "a_b")


def test_custom_discovery_prefix() -> None:
    """The configured discovery prefix is the first topic level."""
    assert all(t.startswith("ha/") for t in build(ha_prefix="ha"))


def test_removal_is_an_empty_retained_payload_per_config_topic() -> None:
    """Removing a printer publishes an empty payload on each of its config topics."""
    topics = list(build())
    assert removal_messages(topics) == dict.fromkeys(topics, b"")
