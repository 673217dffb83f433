"""What counts as a change worth an event: the differ's settings, checked once.

Kept apart from the differ so the composition root and the poller can build and pass the
settings (from the ``[thresholds]`` config section) without reading the diff algorithm.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Protocol

__all__ = ["DiffSettings", "ThresholdValues"]


class ThresholdValues(Protocol):
    """The threshold settings the differ reads (``config.ThresholdsConfig`` has this shape).

    Declared here so the core can accept the config section without importing pydantic.
    """

    @property
    def progress_milestones(self) -> tuple[float, ...]: ...
    @property
    def material_low_ratio(self) -> float: ...
    @property
    def material_low_ml(self) -> float | None: ...
    @property
    def tank_max_layers(self) -> int: ...
    @property
    def tank_max_age(self) -> timedelta: ...
    @property
    def queue_backlog_items(self) -> int: ...
    @property
    def queue_backlog_age(self) -> timedelta: ...


@dataclasses.dataclass(frozen=True, slots=True)
class DiffSettings:
    """What counts as a change worth an event.

    ``milestones`` are progress fractions in (0, 1), stored sorted and deduplicated.
    ``run_retention`` is how long ended (and lost, unresolved) print runs are carried forward,
    and how old an unknown history record may be and still be announced.

    Raises:
        ValueError: a value is out of range.
    """

    milestones: tuple[float, ...] = (0.25, 0.5, 0.75)
    material_low_ratio: float = 0.15
    material_low_ml: float | None = None
    tank_max_layers: int = 75000
    tank_max_age: timedelta = timedelta(days=365)
    run_retention: timedelta = timedelta(hours=6)
    # queue.backlog: this many jobs waiting, or the oldest waiting this long (core.queues).
    queue_backlog_items: int = 10
    queue_backlog_age: timedelta = timedelta(hours=2)

    def __post_init__(self) -> None:
        if any(not 0 < m < 1 for m in self.milestones):
            raise ValueError(f"milestones must be fractions between 0 and 1: {self.milestones}")
        object.__setattr__(self, "milestones", tuple(sorted(set(self.milestones))))
        if not 0 <= self.material_low_ratio <= 1:
            raise ValueError(f"material_low_ratio must be in [0, 1]: {self.material_low_ratio}")
        if self.material_low_ml is not None and self.material_low_ml < 0:
            raise ValueError(f"material_low_ml must be >= 0: {self.material_low_ml}")
        if self.tank_max_layers < 1:
            raise ValueError(f"tank_max_layers must be >= 1: {self.tank_max_layers}")
        if self.tank_max_age <= timedelta(0):
            raise ValueError(f"tank_max_age must be positive: {self.tank_max_age}")
        if self.run_retention < timedelta(0):
            raise ValueError(f"run_retention must be >= 0: {self.run_retention}")
        if self.queue_backlog_items < 1:
            raise ValueError(f"queue_backlog_items must be >= 1: {self.queue_backlog_items}")
        if self.queue_backlog_age <= timedelta(0):
            raise ValueError(f"queue_backlog_age must be positive: {self.queue_backlog_age}")

    @classmethod
    def from_config(
        cls, thresholds: ThresholdValues, *, run_retention: timedelta = timedelta(hours=6)
    ) -> DiffSettings:
        """Settings from the ``[thresholds]`` config section (any object of that shape)."""
        return cls(
            milestones=tuple(thresholds.progress_milestones),
            material_low_ratio=thresholds.material_low_ratio,
            material_low_ml=thresholds.material_low_ml,
            tank_max_layers=thresholds.tank_max_layers,
            tank_max_age=thresholds.tank_max_age,
            queue_backlog_items=thresholds.queue_backlog_items,
            queue_backlog_age=thresholds.queue_backlog_age,
            run_retention=run_retention,
        )
