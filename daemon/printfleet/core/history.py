"""Print history: one record per print that reached an outcome, for reports and digests.

The pipeline writes a record in the same store transaction as the poll that saw the outcome
(so it is counted once, across restarts), and updates it when a person rates the print.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class PrintRecord:
    """A print that finished, failed or was aborted, as the history export and digests see it."""

    source: str
    serial: str  # printer serial
    printer_name: str
    group: str | None
    print_id: str
    name: str
    outcome: str  # "finished", "failed" or "aborted" (the event type's second word)
    finished_at: datetime  # the vendor's time, else when printfleet saw the outcome
    started_at: datetime | None = None
    duration_s: float | None = None
    material: str | None = None
    volume_ml: float | None = None  # resin used; None when the vendor did not say
    verdict: str | None = None  # "SUCCESS" / "FAILURE" once a person rated it
    verdict_note: str | None = None
    verdict_by: str | None = None
