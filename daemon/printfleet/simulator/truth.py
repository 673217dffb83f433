"""Ground truth: every real transition the simulated fleet makes, for scoring the daemon.

Times are the instants the transition happened on the simulator clock:

- ``print.started``: the run entered ``PREPRINT`` (Formlabs ``print_started_at``, Carbon
  ``started_at``). A Formlabs run is already visible as ``QUEUED`` 30-150 s earlier.
- ``print.paused``: the run entered ``PAUSING``; ``print.resumed``: it went back to ``PRINTING``.
- ``print.finished`` / ``print.failed`` / ``print.aborted``: the run reached ``FINISHED`` /
  ``ERROR`` / ``ABORTED`` (Carbon ``finished`` / ``failed`` / ``canceled``).
- ``printer.offline``: the printer stopped pinging (Formlabs ``last_pinged_at`` freezes, Carbon
  ``printer_state`` becomes ``OFFLINE``); a daemon can only notice after its own threshold.
- ``printer.online``: it pinged again. ``printer.added`` / ``printer.removed``: fleet churn.
- ``print.rated``: a person rated an ended Formlabs run (``print_run_success``); ``detail`` is
  the verdict (SUCCESS or FAILURE). The run is still on its printer then (the operator rates
  it while the parts are on the platform), and is cleared 5-40 minutes later.
- ``material.low``: a Formlabs cartridge fell below 15 % (``RESIN_LOW`` event); ``detail`` holds the
  cartridge serial. Carbon exposes no resin level, so it never has this kind.

``print_id`` is the Formlabs run ``guid`` or the Carbon short ``print_id`` (Carbon's ``PrintRef``
has no uuid, so that is the id a daemon sees on ``/printers``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class TruthKind(StrEnum):
    """Kinds of ground-truth transitions; the values are printfleet event type strings."""

    PRINT_STARTED = "print.started"
    PRINT_PAUSED = "print.paused"
    PRINT_RESUMED = "print.resumed"
    PRINT_FINISHED = "print.finished"
    PRINT_FAILED = "print.failed"
    PRINT_ABORTED = "print.aborted"
    PRINTER_OFFLINE = "printer.offline"
    PRINTER_ONLINE = "printer.online"
    PRINTER_ADDED = "printer.added"
    PRINTER_REMOVED = "printer.removed"
    MATERIAL_LOW = "material.low"
    PRINT_RATED = "print.rated"


@dataclass(frozen=True, slots=True)
class GroundTruthEvent:
    """One real transition of the simulated fleet.

    ``kind`` compares equal to its string value (``event.kind == "print.finished"``).
    """

    time: datetime
    vendor: str
    account: str
    serial: str
    kind: TruthKind
    print_id: str | None = None
    detail: str | None = None
