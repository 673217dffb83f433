"""Deliveries: what the rule engine decided to send where, before any wire format.

The outbox persists a :class:`Delivery` before it is sent; the sink named in ``sink`` turns
``payload`` into its wire format at send time (CloudEvent JSON, Slack blocks, an MQTT publish).

Well-known ``payload`` keys:
    ``event``     the CloudEvent dict (always present)
    ``status``    ``"firing"`` or ``"resolved"`` (rules with ``resolve``)
    ``rule``      the rule name, ``severity``, ``title``, ``text`` (rendered templates)
    ``topic``     MQTT only: the topic to publish to (events topic or a rule's own topic)
    ``retain``    MQTT only: publish retained
    ``group``     a grouped notification: list of the grouped events' subjects and count
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from printfleet.core.events import event_id


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message for one sink.

    ``id`` is stable for (event, rule, sink, status), so enqueuing the same decision twice is a
    no-op. ``key`` orders deliveries: those with the same key (``<source>/<serial>``) are sent
    in ``created_at`` order by each sink.
    """

    id: str
    sink: str
    event_id: str
    key: str
    created_at: datetime
    payload: Mapping[str, Any]


def delivery_id(event: str, rule: str, sink: str, status: str = "firing") -> str:
    """The stable id of the delivery of ``event`` by ``rule`` to ``sink``."""
    return event_id("delivery", event, rule, sink, status)
