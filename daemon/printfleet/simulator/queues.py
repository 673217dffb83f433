"""Formlabs Fleet Control queues: jobs wait in a group's queue until one of its printers
starts a print, which takes the oldest job; people keep adding a few more.

Drawn from the account's own ``queue_rng``, never a printer's, so switching queues on leaves
every printer's lifecycle (and the ground truth other tests compare against) unchanged.
"""

from __future__ import annotations

from printfleet.simulator import catalog
from printfleet.simulator.fleet import Account, Group, QueueItem
from printfleet.simulator.rng import Rng
from printfleet.simulator.wire import iso_seconds

#: Jobs a Fleet Control group's queue starts with, and the most it ever holds (bounded).
INITIAL_ITEMS = (2, 6)
MAX_ITEMS = 40
#: The oldest seeded job waited up to this long (so some queues start past a 2 h backlog age).
SEED_AGE_S = 3 * 3600
#: After a printer takes a job, this many new ones are queued (mean 1: the queue drifts).
REFILL = (0, 2)


def item(account: Account, rng: Rng, created_at: int) -> QueueItem:
    """A new queue item created at ``created_at``."""
    base = rng.choice(catalog.JOB_NAMES)
    _code, material = rng.choice(catalog.FORMLABS_MATERIALS)
    user = rng.choice(account.users).username if account.users else "operator"
    return QueueItem(
        id=rng.uuid4(),
        name=f"{base}_q{rng.randint(1, 99)}",
        volume_ml=round(rng.uniform(5.0, 120.0), 1),
        material_name=material,
        created_at=created_at,
        username=user,
        machine_types=(),
    )


def seed(account: Account, rng: Rng, now: int) -> None:
    """Give every Fleet Control group of ``account`` its starting queue (oldest first)."""
    account.queue_rng = rng
    for group in account.groups:
        if not group.has_fleet_control:
            continue
        count = rng.randint(*INITIAL_ITEMS)
        times = sorted(now - rng.randint(60, SEED_AGE_S) for _ in range(count))
        account.queues[group.id] = [item(account, rng, t) for t in times]


def add(account: Account, group: Group, now: int, count: int = 1) -> list[QueueItem]:
    """Queue ``count`` new jobs in ``group`` (up to :data:`MAX_ITEMS`); returns them."""
    rng = account.queue_rng or Rng(0)
    queue = account.queues.setdefault(group.id, [])
    added = [item(account, rng, now) for _ in range(max(0, min(count, MAX_ITEMS - len(queue))))]
    queue.extend(added)
    return added


def take(account: Account, group: Group | None, now: int) -> QueueItem | None:
    """A printer of ``group`` starts a print: the oldest job leaves the queue, more arrive."""
    if group is None or not group.has_fleet_control:
        return None
    queue = account.queues.get(group.id)
    taken = queue.pop(0) if queue else None
    rng = account.queue_rng
    if rng is not None:
        add(account, group, now, rng.randint(*REFILL))
    return taken


def record(entry: QueueItem) -> dict[str, object]:
    """One ``DeveloperAPIMyCloudQueueItems`` as the API sends it."""
    return {
        "id": entry.id,
        "name": entry.name,
        "volume_ml": entry.volume_ml,
        "material_name": entry.material_name,
        "created_at": iso_seconds(entry.created_at),
        "username": entry.username,
        "allowed_machine_type_ids": list(entry.machine_types),
    }
