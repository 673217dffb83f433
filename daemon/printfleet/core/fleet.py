"""The latest view of the whole fleet, read by metrics and health checks from another thread.

The poller replaces the whole :class:`FleetView` reference after each cycle (never mutates it),
so a reader sees one consistent picture.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from printfleet.core.model import Snapshot, empty_mapping


@dataclass(frozen=True, slots=True)
class AccountHealth:
    """How a source's polling is going."""

    up: bool = False
    last_success_at: datetime | None = None
    last_attempt_at: datetime | None = None
    last_error: str | None = None  # error kind: auth, rate_limited, unavailable, bad_response
    consecutive_failures: int = 0


@dataclass(frozen=True, slots=True)
class FleetView:
    """Latest good snapshot and health per source name."""

    snapshots: Mapping[str, Snapshot] = field(default_factory=empty_mapping)
    health: Mapping[str, AccountHealth] = field(default_factory=empty_mapping)

    def with_source(
        self, name: str, *, snapshot: Snapshot | None = None, health: AccountHealth
    ) -> FleetView:
        """A new view with ``name`` updated (the snapshot is kept when ``None``)."""
        snapshots = dict(self.snapshots)
        if snapshot is not None:
            snapshots[name] = snapshot
        healths = dict(self.health)
        healths[name] = health
        return replace(self, snapshots=snapshots, health=healths)

    def without_source(self, name: str) -> FleetView:
        """A new view in which ``name`` no longer appears (a source taken out of the config)."""
        snapshots = {n: s for n, s in self.snapshots.items() if n != name}
        healths = {n: h for n, h in self.health.items() if n != name}
        return replace(self, snapshots=snapshots, health=healths)
