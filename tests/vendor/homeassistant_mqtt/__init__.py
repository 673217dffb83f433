"""Home Assistant's MQTT discovery schemas for ``sensor`` and ``binary_sensor``, vendored.

Source: https://github.com/home-assistant/core (Apache-2.0, Copyright Home Assistant authors),
the development branch as of late 2026, after ``object_id`` was removed (2026.4) and before
the move from voluptuous to probatio:

* ``homeassistant/components/mqtt/schemas.py``: ``MQTT_ENTITY_COMMON_SCHEMA`` (with
  ``default_entity_id``), ``MQTT_ENTITY_DEVICE_INFO_SCHEMA``, ``MQTT_ORIGIN_INFO_SCHEMA``,
  the availability schemas;
* ``homeassistant/components/mqtt/config.py``: ``MQTT_RO_SCHEMA``;
* ``homeassistant/components/mqtt/sensor.py``: ``_PLATFORM_SCHEMA_BASE``,
  ``validate_sensor_state_and_device_class_config``, ``DISCOVERY_SCHEMA``;
* ``homeassistant/components/mqtt/binary_sensor.py``: ``DISCOVERY_SCHEMA``;
* ``homeassistant/core.py``: ``VALID_ENTITY_ID``.

Re-typed with voluptuous (what those files import); the few ``config_validation`` helpers
they use (``cv.string``, ``cv.template``, ``cv.icon``...) are reduced to the checks that matter
for discovery payloads, and the device/state class lists are those of
``SensorDeviceClass``/``SensorStateClass``/``BinarySensorDeviceClass``. Discovery schemas use
``extra=REMOVE_EXTRA``: Home Assistant silently *drops* keys it does not know (as it drops
``object_id`` since 2026.4), so :func:`validate` also reports every key that would be dropped.
Abbreviated keys are not expanded (printfleet writes full names).
"""

from __future__ import annotations

import re
from typing import Any

import voluptuous as vol

# -- homeassistant.helpers.config_validation (reduced) --------------------------------------


def string(value: Any) -> str:
    if value is None or isinstance(value, dict | list):
        raise vol.Invalid("string value is None or a container")
    return str(value)


def boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise vol.Invalid("invalid boolean value")


def positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise vol.Invalid("expected a positive integer")
    return value


def template(value: Any) -> str:
    if not isinstance(value, str):
        raise vol.Invalid("template value should be a string")
    return value


def icon(value: Any) -> str:
    value = string(value)
    if ":" in value:
        return value
    raise vol.Invalid('Icons should be specified in the form "prefix:name"')


def ensure_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def configuration_url(value: Any) -> str:
    value = string(value)
    if not re.match(r"^(https?|homeassistant)://", value):
        raise vol.Invalid("invalid url")
    return value


# -- homeassistant/components/mqtt/util.py ---------------------------------------------------


def valid_topic(topic: Any) -> str:
    topic = string(topic)
    try:
        raw = topic.encode("utf-8")
    except UnicodeError as err:
        raise vol.Invalid("MQTT topic name/filter must be valid UTF-8 string.") from err
    if not raw:
        raise vol.Invalid("MQTT topic name/filter must not be empty.")
    if len(raw) > 65535:
        raise vol.Invalid("MQTT topic name/filter must not be longer than 65535 encoded bytes.")
    if "\0" in topic:
        raise vol.Invalid("MQTT topic name/filter must not contain null character.")
    if any(char <= "\u001f" or "\u007f" <= char <= "\u009f" for char in topic):
        raise vol.Invalid("MQTT topic name/filter must not contain control characters.")
    if any(
        "\ufdd0" <= char <= "\ufdef" or (ord(char) & 0xFFFF) in (0xFFFE, 0xFFFF) for char in topic
    ):
        raise vol.Invalid("MQTT topic name/filter must not contain non-characters.")
    return topic


def valid_subscribe_topic(topic: Any) -> str:
    topic = valid_topic(topic)
    for i in (i for i, c in enumerate(topic) if c == "+"):
        if (i > 0 and topic[i - 1] != "/") or (i < len(topic) - 1 and topic[i + 1] != "/"):
            raise vol.Invalid("Single-level wildcard must occupy an entire level of the filter")
    index = topic.find("#")
    if index != -1:
        if index != len(topic) - 1:
            raise vol.Invalid("Multi-level wildcard must be the last character in the filter.")
        if len(topic) > 1 and topic[index - 1] != "/":
            raise vol.Invalid("Multi-level wildcard must be after a topic level separator.")
    return topic


def valid_qos_schema(value: Any) -> int:
    if value in (0, 1, 2):
        return int(value)
    raise vol.Invalid("invalid qos")


# -- homeassistant/core.py -------------------------------------------------------------------

VALID_ENTITY_ID = re.compile(r"^(?!.+__)(?!_)[\da-z_]+(?<!_)\.(?!_)[\da-z_]+(?<!_)$")

# -- homeassistant/components/sensor/const.py, binary_sensor/__init__.py, helpers/entity.py --

SENSOR_DEVICE_CLASSES = frozenset(
    [
        "absolute_humidity",
        "apparent_power",
        "aqi",
        "area",
        "atmospheric_pressure",
        "battery",
        "blood_glucose_concentration",
        "carbon_dioxide",
        "carbon_monoxide",
        "conductivity",
        "current",
        "data_rate",
        "data_size",
        "date",
        "distance",
        "duration",
        "energy",
        "energy_distance",
        "energy_storage",
        "enum",
        "frequency",
        "gas",
        "humidity",
        "illuminance",
        "irradiance",
        "moisture",
        "monetary",
        "nitrogen_dioxide",
        "nitrogen_monoxide",
        "nitrous_oxide",
        "ozone",
        "ph",
        "pm1",
        "pm10",
        "pm25",
        "pm4",
        "power_factor",
        "power",
        "precipitation",
        "precipitation_intensity",
        "pressure",
        "reactive_energy",
        "reactive_power",
        "signal_strength",
        "sound_pressure",
        "speed",
        "sulphur_dioxide",
        "temperature",
        "timestamp",
        "volatile_organic_compounds",
        "volatile_organic_compounds_parts",
        "voltage",
        "volume",
        "volume_storage",
        "volume_flow_rate",
        "water",
        "weight",
        "wind_direction",
        "wind_speed",
    ]
)
STATE_CLASSES = frozenset({"measurement", "measurement_angle", "total", "total_increasing"})
BINARY_SENSOR_DEVICE_CLASSES = frozenset(
    [
        "battery",
        "battery_charging",
        "carbon_monoxide",
        "cold",
        "connectivity",
        "door",
        "garage_door",
        "gas",
        "heat",
        "light",
        "lock",
        "moisture",
        "motion",
        "moving",
        "occupancy",
        "opening",
        "plug",
        "power",
        "presence",
        "problem",
        "running",
        "safety",
        "smoke",
        "sound",
        "tamper",
        "update",
        "vibration",
        "window",
    ]
)
ENTITY_CATEGORIES = frozenset({"config", "diagnostic"})

# -- homeassistant/components/mqtt/schemas.py ------------------------------------------------

MQTT_AVAILABILITY_SCHEMA = vol.Schema(
    {
        vol.Exclusive("availability_topic", "availability"): valid_subscribe_topic,
        vol.Optional("availability_template"): template,
        vol.Optional("payload_available", default="online"): string,
        vol.Optional("payload_not_available", default="offline"): string,
        vol.Optional("availability_mode", default="latest"): vol.All(
            string, vol.In(["all", "any", "latest"])
        ),
        vol.Exclusive("availability", "availability"): vol.All(
            ensure_list,
            [
                {
                    vol.Required("topic"): valid_subscribe_topic,
                    vol.Optional("payload_available", default="online"): string,
                    vol.Optional("payload_not_available", default="offline"): string,
                    vol.Optional("value_template"): template,
                }
            ],
        ),
    }
)


def _has_identifier(value: dict[str, Any]) -> dict[str, Any]:
    if value.get("identifiers") or value.get("connections"):
        return value
    raise vol.Invalid(
        "Device must have at least one identifying value in 'identifiers' and/or 'connections'"
    )


MQTT_ENTITY_DEVICE_INFO_SCHEMA = vol.All(
    vol.Schema(
        {
            vol.Optional("identifiers", default=list): vol.All(ensure_list, [string]),
            vol.Optional("connections", default=list): vol.All(
                ensure_list, [vol.All(vol.Length(2), [string])]
            ),
            vol.Optional("manufacturer"): string,
            vol.Optional("model"): string,
            vol.Optional("model_id"): string,
            vol.Optional("name"): string,
            vol.Optional("hw_version"): string,
            vol.Optional("serial_number"): string,
            vol.Optional("sw_version"): string,
            vol.Optional("via_device"): string,
            vol.Optional("suggested_area"): string,
            vol.Optional("configuration_url"): configuration_url,
        }
    ),
    _has_identifier,
)

MQTT_ORIGIN_INFO_SCHEMA = vol.Schema(
    {
        vol.Required("name"): string,
        vol.Optional("sw_version"): string,
        vol.Optional("support_url"): configuration_url,
    }
)

MQTT_ENTITY_COMMON_SCHEMA = MQTT_AVAILABILITY_SCHEMA.extend(
    {
        vol.Optional("device"): MQTT_ENTITY_DEVICE_INFO_SCHEMA,
        vol.Optional("entity_picture"): configuration_url,
        vol.Optional("origin"): MQTT_ORIGIN_INFO_SCHEMA,
        vol.Optional("enabled_by_default", default=True): boolean,
        vol.Optional("entity_category"): vol.In(ENTITY_CATEGORIES),
        vol.Optional("icon"): icon,
        vol.Optional("json_attributes_topic"): valid_subscribe_topic,
        vol.Optional("json_attributes_template"): template,
        vol.Optional("default_entity_id"): string,
        vol.Optional("unique_id"): string,
    }
)

# -- homeassistant/components/mqtt/config.py -------------------------------------------------

MQTT_RO_SCHEMA = vol.Schema(
    {
        vol.Optional("qos", default=0): valid_qos_schema,
        vol.Optional("encoding", default="utf-8"): string,
        vol.Required("state_topic"): valid_subscribe_topic,
        vol.Optional("value_template"): template,
    }
)

# -- homeassistant/components/mqtt/sensor.py -------------------------------------------------

_SENSOR_BASE = MQTT_RO_SCHEMA.extend(
    {
        vol.Optional("device_class"): vol.Any(vol.In(SENSOR_DEVICE_CLASSES), None),
        vol.Optional("expire_after"): positive_int,
        vol.Optional("force_update", default=False): boolean,
        vol.Optional("last_reset_value_template"): template,
        vol.Optional("name"): vol.Any(string, None),
        vol.Optional("options"): ensure_list,
        vol.Optional("suggested_display_precision"): positive_int,
        vol.Optional("state_class"): vol.Any(vol.In(STATE_CLASSES), None),
        vol.Optional("unit_of_measurement"): vol.Any(string, None),
    }
).extend(MQTT_ENTITY_COMMON_SCHEMA.schema)


def validate_sensor_state_and_device_class_config(config: dict[str, Any]) -> dict[str, Any]:
    if "last_reset_value_template" in config and config.get("state_class") != "total":
        raise vol.Invalid("last_reset_value_template needs state class total")
    if (options := config.get("options")) is not None:
        if not options:
            raise vol.Invalid("An empty options list is not allowed")
        if config.get("state_class") or config.get("unit_of_measurement"):
            raise vol.Invalid(
                "Specifying `options` is not allowed together with the `state_class` "
                "or `unit_of_measurement` option"
            )
        if config.get("device_class") != "enum":
            raise vol.Invalid("The option `options` must be used together with device class enum")
    return config


SENSOR_DISCOVERY_SCHEMA = vol.All(
    _SENSOR_BASE.extend({}, extra=vol.REMOVE_EXTRA),
    validate_sensor_state_and_device_class_config,
)

# -- homeassistant/components/mqtt/binary_sensor.py ------------------------------------------

BINARY_SENSOR_DISCOVERY_SCHEMA = MQTT_RO_SCHEMA.extend(
    {
        vol.Optional("device_class"): vol.Any(vol.In(BINARY_SENSOR_DEVICE_CLASSES), None),
        vol.Optional("expire_after"): positive_int,
        vol.Optional("force_update", default=False): boolean,
        vol.Optional("name"): vol.Any(string, None),
        vol.Optional("off_delay"): positive_int,
        vol.Optional("payload_off", default="OFF"): string,
        vol.Optional("payload_on", default="ON"): string,
    }
).extend(MQTT_ENTITY_COMMON_SCHEMA.schema, extra=vol.REMOVE_EXTRA)

DISCOVERY_SCHEMAS = {
    "sensor": SENSOR_DISCOVERY_SCHEMA,
    "binary_sensor": BINARY_SENSOR_DISCOVERY_SCHEMA,
}


def validate(component: str, config: dict[str, Any]) -> list[str]:
    """Problems Home Assistant would have with one discovery config (empty: accepted as is).

    Schema errors, keys Home Assistant would silently drop, and a ``default_entity_id`` that
    is not a valid entity id of ``component``.
    """
    try:
        validated = DISCOVERY_SCHEMAS[component](dict(config))
    except vol.Invalid as err:
        return [str(err)]
    problems = [
        f"key {key!r} is dropped by Home Assistant" for key in config if key not in validated
    ]
    entity_id = config.get("default_entity_id")
    if entity_id is not None and (
        not VALID_ENTITY_ID.match(entity_id) or not entity_id.startswith(f"{component}.")
    ):
        problems.append(f"default_entity_id {entity_id!r} is not a valid {component} entity id")
    return problems
