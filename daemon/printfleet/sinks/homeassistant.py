"""Home Assistant MQTT discovery: each printer a device with sensors (pure payload builders).

Nothing here touches the network. :func:`discovery_messages` returns the retained config
messages for one printer, keyed by topic; the MQTT sink publishes them next to the state
topics they point at and clears them (empty retained payload) when the printer goes away,
which is how Home Assistant removes discovered entities.

Layout (``node`` = :func:`node_id`, ``printfleet_<source>_<serial>_<hash>`` in ``[a-z0-9_]``)::

    <ha_prefix>/sensor/<node>/<key>/config          status, progress, remaining, print_name,
                                                     print_status, material_remaining[_<slot>],
                                                     last_seen
    <ha_prefix>/binary_sensor/<node>/online/config  connectivity

Every entity reads one per-field topic of the MQTT sink (``state_topic``) and uses the
daemon's ``<prefix>/status`` as availability, so all entities turn unavailable when the daemon
goes offline (its Last Will). Per-field topics carry ``null`` when the value is unknown; the
``value_template`` turns that into Home Assistant's ``None`` (state *unknown*).

Ids: the node id (also the device identifier) is :func:`~printfleet.core.identifiers.ha_id` of
``printfleet_<source level>/<serial level>``, so two printers never share one, whatever their
serials hold; each entity's ``unique_id`` is ``<node>_<key>`` and its ``default_entity_id``
``<component>.<node>_<key>`` (capped by the same rule). ``default_entity_id`` replaced
``object_id`` in Home Assistant 2025.10 (``object_id`` was removed in 2026.4), which is the
oldest release these payloads are written for; tests validate every payload against Home
Assistant's own discovery schemas (``tests/vendor/homeassistant_mqtt``).

Reference: https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from printfleet.core.events import json_bytes
from printfleet.core.identifiers import from_topic_level, ha_id, topic_level
from printfleet.core.model import Printer, PrinterStatus, PrintStatus, Vendor

MANUFACTURER: Mapping[Vendor, str] = {Vendor.FORMLABS: "Formlabs", Vendor.CARBON: "Carbon"}

#: Field keys of the MQTT sink that become entities (material slots add ``material_remaining*``).
FIELD_ENTITIES = ("status", "online", "progress", "remaining_s", "print_name", "print_status")
MATERIAL_FIELD = "material_remaining"

# ``null`` on a per-field topic means "unknown"; Home Assistant's MQTT entities treat a
# rendered "None" as unknown (PAYLOAD_NONE), which keeps a stale value from lingering.
NULL_TEMPLATE = "{{ None if value == 'null' else value }}"


def node_id(source: str, serial: str) -> str:
    """Discovery node id and device identifier of a printer (``printfleet_lab_form4_x_<hash>``).

    The ``/`` between the (topic-level encoded, so ``/``-free) source and serial makes the
    pair unambiguous, and always counts as a change, so the id always carries the hash of
    the exact pair: ``lab``/``a_b`` and ``lab_a``/``b`` differ.
    """
    return ha_id(f"printfleet_{topic_level(source)}/{topic_level(serial)}")


def entity_key(key: str) -> str:
    """The id part of one entity (``status``; ``material_remaining_front_<hash>``)."""
    return ha_id(key)


def _slot_name(level: str) -> str:
    try:
        return from_topic_level(level)
    except ValueError:  # a shortened slot name: show what is left of it
        return level


def device(source: str, printer: Printer) -> dict[str, Any]:
    """The Home Assistant device block of ``printer``."""
    info: dict[str, Any] = {
        "identifiers": [node_id(source, printer.serial)],
        "name": printer.name,
        "manufacturer": MANUFACTURER.get(printer.vendor, printer.vendor.value.title()),
        "model": printer.model,
        "serial_number": printer.serial,
    }
    if printer.firmware:
        info["sw_version"] = printer.firmware
    if printer.location:
        info["suggested_area"] = printer.location
    return info


def discovery_messages(
    *,
    source: str,
    printer: Printer,
    field_topics: Mapping[str, str],
    availability_topic: str,
    ha_prefix: str = "homeassistant",
    sw_version: str | None = None,
) -> dict[str, bytes]:
    """Retained discovery config messages (topic -> JSON bytes) for one printer.

    Args:
        source: the source (account) name the printer belongs to.
        printer: the printer as last seen.
        field_topics: per-field key -> the MQTT topic carrying that value, as published by
            the MQTT sink (``status``, ``online``, ``progress``, ``remaining_s``,
            ``print_name``, ``print_status``, ``last_seen``, ``material_remaining`` or
            ``material_remaining/<slot>``). Keys not listed get no entity.
        availability_topic: the daemon's ``<prefix>/status`` topic (``online``/``offline``).
        ha_prefix: Home Assistant's discovery prefix.
        sw_version: printfleet's version, announced as the discovery origin.
    """
    node = node_id(source, printer.serial)
    configs = discovery_configs(
        source=source,
        printer=printer,
        field_topics=field_topics,
        availability_topic=availability_topic,
        sw_version=sw_version,
    )
    return {config_topic(ha_prefix, node, entity): body for entity, body in configs.items()}


def config_topic(ha_prefix: str, node: str, entity: str) -> str:
    """The config topic of ``entity`` (``<component>/<key>``, as keyed by
    :func:`discovery_configs`) of the printer whose node id is ``node``."""
    component, _, key_id = entity.partition("/")
    return f"{ha_prefix}/{component}/{node}/{key_id}/config"


def discovery_configs(
    *,
    source: str,
    printer: Printer,
    field_topics: Mapping[str, str],
    availability_topic: str,
    sw_version: str | None = None,
) -> dict[str, bytes]:
    """Like :func:`discovery_messages`, keyed by entity (``<component>/<key>``) not topic."""
    node = node_id(source, printer.serial)
    common: dict[str, Any] = {
        "availability_topic": availability_topic,
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": device(source, printer),
        "origin": {"name": "printfleet", **({"sw_version": sw_version} if sw_version else {})},
    }
    configs: dict[str, bytes] = {}

    def add(component: str, key: str, name: str, topic: str, extra: Mapping[str, Any]) -> None:
        key_id = entity_key(key)
        unique_id = f"{node}_{key_id}"
        config = {
            "name": name,
            "unique_id": unique_id,
            # The entity id Home Assistant gives the entity the first time it sees it.
            "default_entity_id": f"{component}.{ha_id(unique_id)}",
            "state_topic": topic,
            **extra,
            **common,
        }
        configs[f"{component}/{key_id}"] = _encode(config)

    for key, topic in field_topics.items():
        if key == "online":
            add(
                "binary_sensor",
                key,
                "Online",
                topic,
                {"device_class": "connectivity", "payload_on": "true", "payload_off": "false"},
            )
        elif key == MATERIAL_FIELD or key.startswith(MATERIAL_FIELD + "/"):
            slot = _slot_name(key.partition("/")[2])
            add(
                "sensor",
                key,
                f"Material {slot}" if slot else "Material",
                topic,
                {
                    "unit_of_measurement": "%",
                    "state_class": "measurement",
                    "suggested_display_precision": 0,
                    "icon": "mdi:cup-water",
                    "value_template": NULL_TEMPLATE,
                },
            )
        elif key in _SENSORS:
            name, extra = _SENSORS[key]
            add("sensor", key, name, topic, {**extra, "value_template": NULL_TEMPLATE})
    return configs


def removal_messages(topics: Iterable[str]) -> dict[str, bytes]:
    """Empty retained payloads for config ``topics``: Home Assistant removes those entities."""
    return dict.fromkeys(topics, b"")


def _encode(config: Mapping[str, Any]) -> bytes:
    return json_bytes(config)  # a lone surrogate in a vendor's name: JSON's \ud800 escape


_SENSORS: Mapping[str, tuple[str, Mapping[str, Any]]] = {
    "status": (
        "Status",
        {
            "device_class": "enum",
            "options": [s.value for s in PrinterStatus],
            "icon": "mdi:printer-3d",
        },
    ),
    "progress": (
        "Progress",
        {
            "unit_of_measurement": "%",
            "state_class": "measurement",
            "suggested_display_precision": 1,
            "icon": "mdi:progress-clock",
        },
    ),
    "remaining_s": (
        "Remaining time",
        {"device_class": "duration", "unit_of_measurement": "s", "state_class": "measurement"},
    ),
    "print_name": ("Current print", {"icon": "mdi:file-cad"}),
    "print_status": (
        "Print status",
        {"device_class": "enum", "options": [s.value for s in PrintStatus]},
    ),
    "last_seen": (
        "Last seen",
        {"device_class": "timestamp", "entity_category": "diagnostic"},
    ),
}
