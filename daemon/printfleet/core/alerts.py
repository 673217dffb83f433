"""The printer alert texts printfleet itself names, and which of them stop the next job.

Alerts are short, stable strings: rules and ``printer.alert`` events match on them, so they
are a contract. Vendor alerts with text of their own (Carbon ``status.alerts``) are kept as
sent and are not listed here.
"""

from __future__ import annotations

from typing import Final

ALERT_NEEDS_CONFIRMATION: Final = "needs confirmation to print"
ALERT_BUILD_PLATFORM_MISSING: Final = "build platform missing"
ALERT_BUILD_PLATFORM_DIRTY: Final = "build platform dirty"
ALERT_TANK_MIXER_MISSING: Final = "tank mixer missing"
ALERT_CAMERA_DISCONNECTED: Final = "camera disconnected"
ALERT_WAITING_FOR_RESOLUTION: Final = "waiting for resolution"
ALERT_TANK_MISSING: Final = "tank missing"
# Formlabs build_platform_contents = BUILD_PLATFORM_CONTENTS_POST_PRINT: the finished parts
# are still on the platform, so the next job cannot start until someone removes them.
ALERT_PARTS_ON_PLATFORM: Final = "parts on build platform"
# Formlabs ready_to_print = READY_TO_PRINT_NOT_READY.
ALERT_NOT_READY: Final = "not ready to print"
# Form Auto / Form Cell harvest_status FORM_CELL_HARVEST_FAILED / _ABORTED on the current run.
ALERT_HARVEST_FAILED: Final = "harvest failed"
ALERT_HARVEST_ABORTED: Final = "harvest aborted"
# Derived, not sent by a vendor: one of BLOCKING_ALERTS while the printer's queue (its
# Formlabs Fleet Control group's, or its own Carbon queue) holds jobs (core.queues).
ALERT_BLOCKED_WITH_QUEUE: Final = "blocked with jobs queued"

#: Alerts that mean the printer cannot start its next job until a person acts. A printer
#: showing one of these while its queue holds jobs is the costly silent state of a farm.
BLOCKING_ALERTS: Final = frozenset(
    {
        ALERT_NEEDS_CONFIRMATION,
        ALERT_BUILD_PLATFORM_MISSING,
        ALERT_BUILD_PLATFORM_DIRTY,
        ALERT_WAITING_FOR_RESOLUTION,
        ALERT_TANK_MISSING,
        ALERT_PARTS_ON_PLATFORM,
        ALERT_NOT_READY,
        ALERT_HARVEST_FAILED,
        ALERT_HARVEST_ABORTED,
    }
)
