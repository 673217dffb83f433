"""Formlabs Fleet Control groups and their job queues as normalized values (formlabs.md §6.9).

``GET /groups/`` lists ``Workgroup`` records; only groups with ``has_fleet_control`` true have
a queue worth reading (the vendor: "always empty unless the group has Fleet Control on"), so
only those cost a ``GET /groups/{id}/queue/``. Queue items (``DeveloperAPIMyCloudQueueItems``)
are untrusted input: every record is counted when it is an object at all, lenient on its
fields (a missing or unreadable ``created_at`` only leaves it out of the oldest time), and
counts are capped. What cannot be read is skipped with a reason, never a failed poll.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from printfleet.core.model import Queue, SkippedRecord
from printfleet.core.queues import MAX_QUEUE_ITEMS
from printfleet.sources.mapping import (
    REASON_DUPLICATE,
    REASON_NOT_OBJECT,
    REASON_TOO_DEEP,
    TOO_DEEP,
    as_bool,
    as_mapping,
    as_str,
    parse_time,
)

#: Fleet Control groups read per queue fetch: each costs one request of the account's
#: hourly budget. Beyond this the rest are skipped (and counted) rather than spending it.
MAX_QUEUE_GROUPS: Final = 200
#: Printer serials kept per group (a group's printers list is untrusted too).
MAX_GROUP_PRINTERS: Final = 10_000
#: Group names are at most 40 characters per the vendor; longer is cut, not refused.
MAX_NAME_CHARS: Final = 100
REASON_MISSING_ID: Final = "missing id"
REASON_TOO_MANY_GROUPS: Final = f"more than {MAX_QUEUE_GROUPS} Fleet Control groups"
KIND_GROUP: Final = "group"
KIND_QUEUE_ITEM: Final = "queue_item"


@dataclass(frozen=True, slots=True)
class FleetGroup:
    """A Workgroup with Fleet Control on: the queue to read and the printers it feeds."""

    id: str
    name: str
    printers: tuple[str, ...]


def fleet_groups(records: Iterable[Any]) -> tuple[list[FleetGroup], list[SkippedRecord]]:
    """The Fleet Control groups among ``/groups/`` records, in the vendor's order.

    A group without Fleet Control is no error (its queue is always empty); a record that is
    not an object or has no ``id`` is skipped, as is every group past
    :data:`MAX_QUEUE_GROUPS`. Duplicate ids keep the first record.
    """
    groups: dict[str, FleetGroup] = {}
    skipped: list[SkippedRecord] = []
    for value in records:
        record = as_mapping(value)
        if record is None:
            reason = REASON_TOO_DEEP if value is TOO_DEEP else REASON_NOT_OBJECT
            skipped.append(SkippedRecord(KIND_GROUP, None, reason))
            continue
        group_id = as_str(record.get("id"))
        if group_id is None:
            skipped.append(SkippedRecord(KIND_GROUP, None, REASON_MISSING_ID))
            continue
        if as_bool(record.get("has_fleet_control")) is not True:
            continue
        if group_id in groups:
            skipped.append(SkippedRecord(KIND_GROUP, group_id, REASON_DUPLICATE))
            continue
        if len(groups) >= MAX_QUEUE_GROUPS:
            skipped.append(SkippedRecord(KIND_GROUP, group_id, REASON_TOO_MANY_GROUPS))
            continue
        name = (as_str(record.get("name")) or group_id)[:MAX_NAME_CHARS]
        groups[group_id] = FleetGroup(group_id, name, _serials(record.get("printers")))
    return list(groups.values()), skipped


def _serials(value: Any) -> tuple[str, ...]:
    """Printer serials of a group: strings (or ``{"serial": ...}`` objects, leniently)."""
    if not isinstance(value, list):
        return ()
    serials: list[str] = []
    for item in value[:MAX_GROUP_PRINTERS]:
        mapping = as_mapping(item)
        serial = as_str(mapping.get("serial")) if mapping is not None else as_str(item)
        if serial is not None:
            serials.append(serial)
    return tuple(dict.fromkeys(serials))


def map_queue(
    group: FleetGroup, items: Iterable[Any], as_of: datetime
) -> tuple[Queue, list[SkippedRecord]]:
    """``group``'s queue from its ``/groups/{id}/queue/`` items.

    Every object is one job (its fields are not needed to count it); a non-object is skipped.
    ``oldest_at`` is the earliest readable ``created_at`` that is not ahead of ``as_of`` (a job
    from the future is not believed to have waited). Counting stops at :data:`MAX_QUEUE_ITEMS`.
    """
    count = 0
    oldest: datetime | None = None
    skipped: list[SkippedRecord] = []
    for value in items:
        record = as_mapping(value)
        if record is None:
            reason = REASON_TOO_DEEP if value is TOO_DEEP else REASON_NOT_OBJECT
            skipped.append(SkippedRecord(KIND_QUEUE_ITEM, None, reason))
            continue
        if count >= MAX_QUEUE_ITEMS:
            break
        count += 1
        created = parse_time(record.get("created_at"))
        if created is not None and created <= as_of and (oldest is None or created < oldest):
            oldest = created
    queue = Queue(
        key=group.id,
        name=group.name,
        items=count,
        printers=group.printers,
        oldest_at=oldest,
        as_of=as_of,
    )
    return queue, skipped
