"""Print history as metrics: resin used per printer and material, and how long prints take.

- ``printfleet_resin_used_ml_total{source,serial,material}`` grows by a print's volume when it
  *finishes* with a known volume. Failed and aborted prints are left out: Formlabs reports the
  job's planned volume, not what was used before it stopped, so counting them would overstate.
- ``printfleet_print_duration_seconds{source,outcome}`` observes each print's duration once,
  at its outcome (prints without a known duration are not observed). Buckets from 15 minutes
  to 48 hours: resin prints take tens of minutes to about two days.

Both count on the outcome event, from the same :class:`~printfleet.core.history.PrintRecord`
the store keeps (:func:`~printfleet.core.history.record_from_event`), so a scrape and
``printfleet history export`` agree.

**Restarts.** The resin counter would start from 0 at every restart; legal for a Prometheus
counter, but a "resin used this year" panel then needs ``increase()`` across every restart.
So at start it is set from the store's print history (:meth:`HistoryMetrics.restore`), as the
print counters are. The histogram is not: a histogram can only be rebuilt by observing every
stored print again, which at 10,000 printers is millions of rows at each start; it starts
empty and ``rate()``/``increase()`` handle that reset.
"""

from __future__ import annotations

import threading
from collections.abc import Container, Iterable
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram

from printfleet.core.history import OUTCOMES, HistoryTotal, PrintRecord
from printfleet.core.identifiers import safe_text

#: 15 min, 30 min, 1 h, 2 h, 3 h, 4 h, 6 h, 8 h, 12 h, 18 h, 24 h, 36 h, 48 h.
PRINT_DURATION_BUCKETS: Final = (
    900.0,
    1800.0,
    3600.0,
    7200.0,
    10800.0,
    14400.0,
    21600.0,
    28800.0,
    43200.0,
    64800.0,
    86400.0,
    129600.0,
    172800.0,
)
#: Distinct ``material`` labels per printer; further names are counted under MATERIAL_OTHER.
#: (A printer uses a handful of resins; a vendor inventing names must not grow series forever.)
MATERIAL_SERIES: Final = 20
MATERIAL_OTHER: Final = "(other)"
#: Material names are vendor text: cut to this many characters in the label.
MATERIAL_LABEL_MAX: Final = 60


class HistoryMetrics:
    """The resin counter and the print-duration histogram (thread-safe)."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.resin = Counter(
            "printfleet_resin_used_ml",
            "Resin used by finished prints with a known volume, in ml, by printer and material "
            "(kept across restarts from the print history).",
            ["source", "serial", "material"],
            registry=registry,
        )
        self.durations = Histogram(
            "printfleet_print_duration_seconds",
            "How long prints took, observed once at their outcome (finished, failed, aborted).",
            ["source", "outcome"],
            buckets=PRINT_DURATION_BUCKETS,
            registry=registry,
        )
        self._lock = threading.Lock()
        # Material labels each printer has a series for, to cap them and to remove them.
        self._materials: dict[tuple[str, str], set[str]] = {}
        self._restored: set[str] = set()

    def track(self, sources: Iterable[str]) -> None:
        """Create each source's duration series at 0, so the first print shows in increase()."""
        for source in sources:
            for outcome in OUTCOMES.values():
                self.durations.labels(safe_text(source), outcome)

    def outcome(self, record: PrintRecord) -> None:
        """Count one print that reached its outcome."""
        if record.duration_s is not None:
            self.durations.labels(safe_text(record.source), record.outcome).observe(
                record.duration_s
            )
        if record.outcome == "finished" and record.volume_ml is not None:
            self._resin(record.source, record.serial, record.material).inc(record.volume_ml)

    def restore(self, source: str, totals: Iterable[HistoryTotal], serials: Container[str]) -> bool:
        """Start the resin counters of ``source`` from its history, once per source per
        process (a second call would count the history twice): ``False`` when already done.

        Only printers in ``serials`` (the restored snapshot's) get series back: a printer
        removed from the account had its series removed, and keeps it so.
        """
        with self._lock:
            if source in self._restored:
                return False
            self._restored.add(source)
        for total in totals:
            if total.outcome == "finished" and total.with_volume and total.serial in serials:
                self._resin(source, total.serial, total.material).inc(total.volume_ml)
        return True

    def remove(self, source: str, serial: str) -> None:
        """Delete a removed printer's resin series."""
        with self._lock:
            materials = self._materials.pop((source, serial), set())
        for material in materials:
            self.resin.remove(safe_text(source), safe_text(serial), material)

    def forget_source(self, source: str) -> None:
        """Delete every series of ``source``; restoring it from its history works again."""
        with self._lock:
            self._materials = {k: v for k, v in self._materials.items() if k[0] != source}
            self._restored.discard(source)
        self.resin.remove_by_labels({"source": safe_text(source)})
        self.durations.remove_by_labels({"source": safe_text(source)})

    def _resin(self, source: str, serial: str, material: str | None) -> Counter:
        label = safe_text(material or "")[:MATERIAL_LABEL_MAX]
        with self._lock:
            seen = self._materials.setdefault((source, serial), set())
            if label not in seen:
                if len(seen) >= MATERIAL_SERIES:
                    label = MATERIAL_OTHER
                seen.add(label)
        return self.resin.labels(safe_text(source), safe_text(serial), label)
