"""The MQTT topic contract: which topic carries what, and the payload bytes of each.

Pure functions (no connection, no clock), shared by the sink's event path and its
retained-state mirror, so the contract in DESIGN §6 is written down once.

Topics (DESIGN §6, ``<prefix>`` = ``[mqtt] topic_prefix``; ``<source>``, ``<serial>`` and slot
names are each one topic level, encoded by :func:`printfleet.core.identifiers.topic_level`:
``%``, ``/``, ``+``, ``#``, ``~`` and control characters percent-encoded, over-long names
shortened with a hash; the real serial stays in the payloads):

=========================================  ========  ==========================================
topic                                      retained  payload
=========================================  ========  ==========================================
``<prefix>/status``                        yes       ``online`` / ``offline`` (also the Last Will)
``<prefix>/<source>/<serial>/state``       yes       ``Printer.as_dict()`` + ``current_print``
``<prefix>/<source>/<serial>/<field>``     yes       one scalar, see :func:`field_values`
``<prefix>/events/<type with . -> />``     no        the CloudEvent bytes, QoS ``[mqtt] qos``
``<ha_prefix>/.../config``                 yes       Home Assistant discovery (homeassistant.py)
=========================================  ========  ==========================================
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from printfleet.core.delivery import Delivery
from printfleet.core.events import EventType, json_bytes
from printfleet.core.identifiers import topic_level, utf8
from printfleet.core.model import Printer, iso
from printfleet.errors import DeliveryFailed
from printfleet.sinks import homeassistant

ONLINE: Final = b"online"
OFFLINE: Final = b"offline"
NULL: Final = "null"

#: Message keys of discovery configs: ``ha:<component>/<key>``; the others are field names.
HA: Final = "ha:"


def status_topic(prefix: str) -> str:
    """``<prefix>/status``: ``online``/``offline``, retained, and the Last Will."""
    return f"{prefix}/status"


def printer_topic(prefix: str, source: str, serial: str) -> str:
    """``<prefix>/<source>/<serial>``: the root of one printer's retained topics."""
    return f"{prefix}/{topic_level(source)}/{topic_level(serial)}"


def event_topic(prefix: str, event_type: str) -> str:
    """``<prefix>/events/print/finished`` for ``print.finished``."""
    try:
        suffix = EventType(event_type).topic_suffix
    except ValueError:
        suffix = "/".join(topic_level(p) for p in event_type.split("."))
    return f"{prefix}/events/{suffix}"


def _percent(ratio: float | None) -> str:
    return NULL if ratio is None else f"{ratio * 100:.1f}"


def _integer(value: float | None) -> str:
    return NULL if value is None else str(round(value))


def field_values(printer: Printer) -> dict[str, str]:
    """The per-field scalars of ``printer`` (key -> payload text), as published.

    * ``status``: the normalized status (``PRINTING``); ``online``: ``true``/``false``;
    * ``progress``: percent of the current print with one decimal (``42.5``);
    * ``print_name``, ``print_status``, ``remaining_s`` (whole seconds), ``layer``,
      ``layers_total``: of the current print;
    * ``material_remaining``: percent left with one decimal; a printer with several material
      slots gets ``material_remaining/<slot>`` per slot instead;
    * ``last_seen``: RFC 3339 UTC time of the vendor's last heartbeat.

    ``null`` stands for "unknown / no current print" (an empty payload would delete the
    retained message rather than say so).
    """
    job = printer.current_print
    values = {
        "status": printer.status.value,
        "online": "true" if printer.online else "false",
        "progress": _percent(job.progress if job else None),
        "print_name": job.name if job else NULL,
        "print_status": job.status.value if job else NULL,
        "remaining_s": _integer(job.remaining_s if job else None),
        "layer": _integer(job.layer if job else None),
        "layers_total": _integer(job.layers_total if job else None),
        "last_seen": iso(printer.last_seen_at) or NULL,
    }
    materials = printer.materials
    if len(materials) == 1:
        values[homeassistant.MATERIAL_FIELD] = _percent(materials[0].remaining_ratio)
    else:
        for material in materials:
            key = f"{homeassistant.MATERIAL_FIELD}/{topic_level(material.slot)}"
            values[key] = _percent(material.remaining_ratio)
    return values


def state_payload(printer: Printer) -> bytes:
    """The normalized printer JSON of the ``state`` topic (``current_print`` included)."""
    data = printer.as_dict()
    data["current_print"] = printer.current_print.as_dict() if printer.current_print else None
    return json_bytes(data)


def delivery_message(delivery: Delivery, *, prefix: str, qos: int) -> tuple[str, bytes, int, bool]:
    """``(topic, payload, qos, retain)`` of one delivery.

    The payload is the CloudEvent exactly as :func:`~printfleet.core.events.encode_event`
    writes it, unless the delivery carries a ``body`` (a rule's own message: text, bytes, or
    JSON-ready data). ``topic`` defaults to the event's topic below ``prefix``.

    Raises:
        DeliveryFailed: (not retryable) when the payload has neither ``event`` nor ``body``.
    """
    payload = delivery.payload
    event = payload.get("event")
    if "body" in payload:
        body = payload["body"]
        if isinstance(body, bytes):
            data = body
        elif isinstance(body, str):
            data = utf8(body)
        else:
            data = json_bytes(body)
    elif isinstance(event, Mapping):
        # Same bytes as encode_event(); check_circular=False only skips a cycle check that a
        # JSON-decoded dict cannot need (a few microseconds per event).
        data = json_bytes(event, check_circular=False)
    else:
        raise DeliveryFailed("mqtt", "delivery has neither an event nor a body", retryable=False)
    topic = payload.get("topic")
    if not topic:
        if not isinstance(event, Mapping) or not isinstance(event.get("type"), str):
            raise DeliveryFailed("mqtt", "delivery has no topic and no event type", retryable=False)
        topic = event_topic(prefix, event["type"])
    return str(topic), data, int(payload.get("qos", qos)), bool(payload.get("retain", False))


def message_topic(prefix: str, ha_prefix: str, source: str, serial: str, name: str) -> str:
    """The topic of one retained message of a printer, by its message key.

    ``name`` is a field name (``status``, ``material_remaining/FRONT``), ``state``, or
    ``ha:<component>/<key>`` for a Home Assistant discovery config.
    """
    if name.startswith(HA):
        node = homeassistant.node_id(source, serial)
        return homeassistant.config_topic(ha_prefix, node, name[len(HA) :])
    return f"{printer_topic(prefix, source, serial)}/{name}"
