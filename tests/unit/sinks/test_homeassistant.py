"""Home Assistant discovery payloads: one device per printer, entities on the per-field topics."""

from __future__ import annotations

import json
from typing import Any

import pytest

from printfleet.core.model import Material, Printer, PrinterStatus, Vendor
from printfleet.sinks.homeassistant import (
    discovery_messages,
    node_id,
    removal_messages,
)

BASE = "printfleet/lab/Form4-X"
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
    """Config topics are <ha_prefix>/<component>/printfleet_<source>_<serial>/<key>/config."""
    node = "homeassistant/sensor/printfleet_lab_Form4-X"
    assert set(build()) == {
        f"{node}/status/config",
        f"{node}/progress/config",
        f"{node}/remaining_s/config",
        f"{node}/print_name/config",
        f"{node}/print_status/config",
        f"{node}/last_seen/config",
        f"{node}/material_remaining_FRONT/config",
        f"{node}/material_remaining_BACK/config",
        "homeassistant/binary_sensor/printfleet_lab_Form4-X/online/config",
    }


def test_the_device_block_names_vendor_model_and_firmware() -> None:
    """Every entity points at the same device: identifiers, manufacturer, model, sw_version."""
    devices = {json.dumps(c["device"], sort_keys=True) for c in build().values()}
    assert len(devices) == 1
    device = json.loads(devices.pop())
    assert device["identifiers"] == ["printfleet_lab_Form4-X"]
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
    for topic, config in build().items():
        key = topic.split("/")[-2]
        assert (
            config["state_topic"]
            == FIELDS[key.replace("material_remaining_", "material_remaining/")]
        )
        assert config["availability_topic"] == "printfleet/status"
        assert config["unique_id"] == f"printfleet_lab_Form4-X_{key}"
        assert config["object_id"] == f"printfleet_lab_form4-x_{key}".lower()


def test_online_is_a_connectivity_binary_sensor_with_true_false_payloads() -> None:
    """The online entity is a binary_sensor with device_class connectivity and true/false."""
    online = build()["homeassistant/binary_sensor/printfleet_lab_Form4-X/online/config"]
    assert online["device_class"] == "connectivity"
    assert (online["payload_on"], online["payload_off"]) == ("true", "false")


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("progress", {"unit_of_measurement": "%", "state_class": "measurement"}),
        ("remaining_s", {"device_class": "duration", "unit_of_measurement": "s"}),
        ("material_remaining_FRONT", {"unit_of_measurement": "%", "name": "Material FRONT"}),
        ("status", {"device_class": "enum"}),
    ],
)
def test_sensor_units_and_classes(key: str, expected: dict[str, Any]) -> None:
    """Progress and material are percentages, remaining time a duration in seconds."""
    config = build()[f"homeassistant/sensor/printfleet_lab_Form4-X/{key}/config"]
    assert expected.items() <= config.items()


def test_status_options_cover_every_printer_status() -> None:
    """The enum sensor lists every normalized status, so no state is ever rejected."""
    config = build()["homeassistant/sensor/printfleet_lab_Form4-X/status/config"]
    assert config["options"] == [s.value for s in PrinterStatus]


def test_unknown_values_render_as_none() -> None:
    """Sensors map the `null` payload to None, Home Assistant's 'unknown'."""
    config = build()["homeassistant/sensor/printfleet_lab_Form4-X/progress/config"]
    assert "None if value == 'null'" in config["value_template"]


def test_serials_with_unsafe_characters_give_valid_ids() -> None:
    """Characters Home Assistant rejects in node ids are replaced by underscores."""
    assert node_id("lab", "SN 12/34.5") == "printfleet_lab_SN_12_34_5"


def test_custom_discovery_prefix() -> None:
    """The configured discovery prefix is the first topic level."""
    assert all(t.startswith("ha/") for t in build(ha_prefix="ha"))


def test_removal_is_an_empty_retained_payload_per_config_topic() -> None:
    """Removing a printer publishes an empty payload on each of its config topics."""
    topics = list(build())
    assert removal_messages(topics) == dict.fromkeys(topics, b"")
