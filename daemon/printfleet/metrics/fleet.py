"""The fleet's Prometheus series: gauges read from the current FleetView at scrape, print counts.

Both are custom collectors (client_python's "read at scrape time") on the registry the
application owns, and both can write their own text for the ``/metrics`` writer
(:class:`~printfleet.metrics.exposition.TextCollector`), because at 10,000 printers their
~150,000 and ~30,000 samples are what a scrape spends its time on.

* :class:`FleetCollector` reads the current :class:`~printfleet.core.fleet.FleetView` (and the
  request budgets and outbox counts) at scrape time. It keeps no per-printer state between
  scrapes except a text cache keyed by the printer value, so a removed printer leaves no stale
  series, and an unchanged printer's lines are reused.
* :class:`PrintCounters` is ``prints_total``: a collector rather than a prometheus_client
  ``Counter``, because three series per printer at 10,000 printers cost ~17 MB as ``Counter``
  children and a few hundred bytes per printer as plain ints. It has no ``_created`` series:
  in the text format Prometheus stores those as 30,000 extra gauge series that nothing reads,
  and every series starts at 0 (see :meth:`~printfleet.metrics.observer.Metrics.track_fleet`).

Label choice: ``prints_total{source,serial,result}`` is per printer, as DESIGN §7 groups it
with the fleet metrics (result is ``finished``, ``failed`` or ``aborted``). A printer's series
are removed when ``printer.removed`` is emitted; if it comes back it starts from zero again,
which ``rate()``/``increase()`` treat as a counter reset.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from operator import itemgetter
from types import MappingProxyType
from typing import Final

from prometheus_client import Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from printfleet.core.events import EventType
from printfleet.core.fleet import FleetView
from printfleet.core.identifiers import safe_text
from printfleet.core.model import Printer, PrinterStatus
from printfleet.metrics.exposition import escape_help, escape_label, go_float, line, number
from printfleet.sources.base import BudgetStatus

PRINT_RESULTS: Final[Mapping[EventType, str]] = MappingProxyType(
    {
        EventType.PRINT_FINISHED: "finished",
        EventType.PRINT_FAILED: "failed",
        EventType.PRINT_ABORTED: "aborted",
    }
)

#: ``(pending per sink, dead per sink)`` as reported by the outbox.
OutboxCounts = tuple[Mapping[str, int], Mapping[str, int]]


# -- per-printer print counters ------------------------------------------------------------

#: Index of each print result in a :class:`PrintCounters` row (PRINT_RESULTS order).
RESULT_INDEX: Final[Mapping[EventType, int]] = MappingProxyType(
    {kind: index for index, kind in enumerate(PRINT_RESULTS)}
)
_RESULTS: Final = tuple(PRINT_RESULTS.values())
#: A count in a :class:`PrintCounters` row whose series does not exist.
_ABSENT: Final = -1

#: ``prints_total`` as a prometheus_client ``Counter`` declares it. Never registered and never
#: given a child (:class:`PrintCounters` keeps the counts): it supplies the family's name,
#: help and type, and keeps the declaration where tools that read this package's ``Counter``
#: calls (the dashboard and alert-rule tests) find every exported metric.
PRINTS_DECLARATION: Final = Counter(
    "printfleet_prints",
    "Print runs that ended, by printer and result (finished, failed, aborted).",
    ["source", "serial", "result"],
    registry=None,
)
_PRINTS_FAMILY: Final = next(iter(PRINTS_DECLARATION.describe()))


class PrintCounters(Collector):
    """``printfleet_prints_total{source,serial,result}``: what a labelled ``Counter`` exposes.

    One row per printer, ``[finished, failed, aborted]`` (``_ABSENT`` where that result's
    series does not exist). A ``Counter`` child costs a child object, a lock, a value object,
    a kwargs dict and label tuples per series; a row is one small list.

    Both scrape paths emit what the ``Counter`` did minus its ``_created`` samples:
    :meth:`collect` yields a counter family, and :meth:`render` (what the ``/metrics`` writer
    uses) writes the same lines as ``generate_latest`` would (labels sorted, values as Go
    formats them).

    Counts change on the event loop and are read by the scraping thread, so both hold a lock;
    a scrape holds it only to copy the rows.
    """

    NAME: Final = _PRINTS_FAMILY.name
    HELP: Final = _PRINTS_FAMILY.documentation
    LABELS: Final = ("source", "serial", "result")  # as declared; written sorted in the text

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[tuple[str, str], list[int]] = {}

    def track(self, source: str, serials: Iterable[str]) -> None:
        """Create the three series of each printer of ``source`` at 0 unless they exist."""
        with self._lock:
            rows = self._rows
            for serial in serials:
                row = rows.get((source, serial))
                if row is None:
                    rows[source, serial] = [0, 0, 0]
                elif min(row) < 0:  # a print came before tracking
                    row[:] = [max(count, 0) for count in row]

    def inc(self, source: str, serial: str, result: int) -> None:
        """Count one print with ``result`` (an index into PRINT_RESULTS), creating its series."""
        key = (source, serial)
        with self._lock:
            row = self._rows.get(key)
            if row is None:
                row = self._rows[key] = [_ABSENT, _ABSENT, _ABSENT]
            row[result] = max(row[result], 0) + 1

    def restore(self, source: str, serial: str, result: int, count: int) -> None:
        """Set one series to ``count`` (at start, from the print history, so the counter
        continues across restarts instead of starting from 0 again)."""
        with self._lock:
            row = self._rows.setdefault((source, serial), [_ABSENT, _ABSENT, _ABSENT])
            row[result] = max(count, 0)

    def remove(self, source: str, serial: str) -> None:
        """Delete the printer's series (if any); it starts from zero if it is tracked again."""
        with self._lock:
            self._rows.pop((source, serial), None)

    def forget_source(self, source: str) -> None:
        """Delete the series of every printer of ``source``."""
        with self._lock:
            self._rows = {key: row for key, row in self._rows.items() if key[0] != source}

    def _snapshot(self) -> list[tuple[str, str, tuple[int, ...]]]:
        """``(source, serial, counts)`` per printer, copied under the lock."""
        with self._lock:
            rows = [(key, tuple(row)) for key, row in self._rows.items()]
        return [(safe_text(source), safe_text(serial), row) for (source, serial), row in rows]

    def describe(self) -> Iterator[Metric]:
        """What the ``Counter`` described (lets the registry reject duplicate names)."""
        yield from PRINTS_DECLARATION.describe()

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.NAME, self.HELP, labels=self.LABELS)
        for source, serial, counts in self._snapshot():
            for result, count in zip(_RESULTS, counts, strict=True):
                if count >= 0:
                    family.add_metric((source, serial, result), float(count))
        yield family

    def render(self) -> str:
        """The same text ``generate_latest`` writes for the family (format 0.0.4)."""
        help_text = escape_help(self.HELP)
        lines = [f"# HELP {self.NAME}_total {help_text}\n# TYPE {self.NAME}_total counter\n"]
        values = [go_float(n) for n in range(8)]  # most counts are small
        for source, serial, counts in self._snapshot():
            labels = f'serial="{escape_label(serial)}",source="{escape_label(source)}"}} '
            for start, count in zip(_TOTAL_STARTS, counts, strict=True):
                if count >= 0:
                    value = values[count] if count < len(values) else go_float(count)
                    lines.append(f"{start}{labels}{value}\n")
        return "".join(lines)


#: How each result's ``_total`` line starts (labels in sorted order).
_TOTAL_STARTS: Final = tuple(f'{PrintCounters.NAME}_total{{result="{r}",' for r in _RESULTS)

# -- scrape-time fleet gauges --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Family:
    """One gauge family of the fleet collector."""

    name: str
    help: str
    labels: tuple[str, ...]

    def empty(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(self.name, self.help, labels=self.labels)

    @property
    def header(self) -> str:
        return f"# HELP {self.name} {escape_help(self.help)}\n# TYPE {self.name} gauge\n"


PRINTER_INFO = Family(
    "printfleet_printer_info",
    "Printer facts as labels (value is always 1).",
    ("source", "serial", "name", "model", "vendor", "group", "firmware"),
)
PRINTER_UP = Family(
    "printfleet_printer_up",
    "1 when the vendor reports the printer online, else 0.",
    ("source", "serial"),
)
PRINTER_STATUS = Family(
    "printfleet_printer_status",
    "Normalized printer status: 1 for the current one, 0 for every other.",
    ("source", "serial", "status"),
)
PRINT_PROGRESS = Family(
    "printfleet_print_progress_ratio",
    "Progress of the printer's current print, 0 to 1.",
    ("source", "serial"),
)
PRINT_REMAINING = Family(
    "printfleet_print_remaining_seconds",
    "Estimated time left in the printer's current print.",
    ("source", "serial"),
)
PRINT_LAYERS = Family(
    "printfleet_print_layers",
    "Layers of the current print: kind=done printed so far, kind=total in the job.",
    ("source", "serial", "kind"),
)
MATERIAL_REMAINING = Family(
    "printfleet_material_remaining_ratio",
    "Fraction of resin left in each material slot, 0 to 1.",
    ("source", "serial", "slot"),
)
SOURCE_UP = Family(
    "printfleet_source_up",
    "1 when the source's last poll succeeded, else 0.",
    ("source",),
)
SOURCE_LAST_SUCCESS = Family(
    "printfleet_source_last_success_timestamp_seconds",
    "Unix time of the source's last successful poll.",
    ("source",),
)
API_BUDGET = Family(
    "printfleet_api_budget_remaining",
    "Vendor API requests this daemon may make now without waiting.",
    ("source",),
)
OUTBOX_PENDING = Family(
    "printfleet_outbox_pending",
    "Deliveries waiting in the outbox, per sink.",
    ("sink",),
)
OUTBOX_DEAD = Family(
    "printfleet_outbox_dead",
    "Deliveries in the dead-letter table, per sink.",
    ("sink",),
)
QUEUE_ITEMS = Family(
    "printfleet_queue_items",
    "Jobs waiting in a queue: a Formlabs Fleet Control group's (group = its id) or a Carbon "
    "printer's own (group = the printer serial).",
    ("source", "group"),
)

PRINTER_FAMILIES: Final = (
    PRINTER_INFO,
    PRINTER_UP,
    PRINTER_STATUS,
    PRINT_PROGRESS,
    PRINT_REMAINING,
    PRINT_LAYERS,
    MATERIAL_REMAINING,
)
SOURCE_FAMILIES: Final = (
    SOURCE_UP,
    SOURCE_LAST_SUCCESS,
    API_BUDGET,
    OUTBOX_PENDING,
    OUTBOX_DEAD,
    QUEUE_ITEMS,
)
_STATUSES: Final = tuple(PrinterStatus)

#: One sample: (family index, label values, value).
Sample = tuple[int, tuple[str, ...], float]
#: One series of a source-level family: (label values, value).
Row = tuple[tuple[str, ...], float]


def printer_samples(source: str, printer: Printer) -> list[Sample]:
    """Every fleet sample of one printer, as ``(index into PRINTER_FAMILIES, labels, value)``.

    Values the vendor did not report (no current print, unknown remaining time) have no
    sample rather than a made-up zero.
    """
    # Label values must encode as UTF-8 (the exposition is bytes): a vendor's lone surrogate
    # becomes U+FFFD here; the exact serial stays in events and MQTT payloads.
    source, serial = safe_text(source), safe_text(printer.serial)
    key = (source, serial)
    samples: list[Sample] = [
        (
            0,
            (
                source,
                serial,
                safe_text(printer.name),
                safe_text(printer.model),
                printer.vendor.value,
                safe_text(printer.group or ""),
                safe_text(printer.firmware or ""),
            ),
            1.0,
        ),
        (1, key, 1.0 if printer.online else 0.0),
    ]
    samples.extend(
        (2, (source, serial, s.value), 1.0 if s is printer.status else 0.0) for s in _STATUSES
    )
    job = printer.current_print
    if job is not None:
        if job.progress is not None:
            samples.append((3, key, job.progress))
        if job.remaining_s is not None:
            samples.append((4, key, job.remaining_s))
        if job.layer is not None:
            samples.append((5, (source, serial, "done"), float(job.layer)))
        if job.layers_total is not None:
            samples.append((5, (source, serial, "total"), float(job.layers_total)))
    for material in printer.materials:
        ratio = material.remaining_ratio
        if ratio is not None:
            samples.append((6, (source, serial, safe_text(material.slot)), ratio))
    return samples


def _no_budgets() -> Mapping[str, BudgetStatus]:
    return {}


def _no_outbox() -> OutboxCounts:
    return {}, {}


def _no_sinks() -> tuple[str, ...]:
    return ()


def outbox_rows(counts: Mapping[str, int], sinks: Iterable[str]) -> list[Row]:
    """One series per configured sink (0 when its outbox is empty), plus any other sink
    that still has entries (a receiver removed from the config keeps its backlog visible).

    Without the zeros a healthy, empty outbox has no series at all, and a dashboard panel
    over it says "No data" instead of 0.
    """
    merged = dict.fromkeys(sinks, 0) | dict(counts)
    return [((sink,), float(merged[sink])) for sink in sorted(merged)]


class FleetCollector(Collector):
    """Fleet and self-health gauges computed from the current values at every scrape.

    Args:
        view: returns the current :class:`FleetView` (the poller swaps it; never mutated).
        budgets: returns the request budget per source (``Source.budget()``, no I/O).
        outbox: returns ``(pending, dead)`` delivery counts per sink.
        sinks: returns the configured sink names; each gets both outbox series, 0 when empty.

    All four are called from the scraping thread, so they must be cheap, must not block,
    and must only read values that are replaced as a whole (never mutated in place).
    """

    def __init__(
        self,
        view: Callable[[], FleetView],
        budgets: Callable[[], Mapping[str, BudgetStatus]] = _no_budgets,
        outbox: Callable[[], OutboxCounts] = _no_outbox,
        sinks: Callable[[], Iterable[str]] = _no_sinks,
    ) -> None:
        self._view = view
        self._budgets = budgets
        self._outbox = outbox
        self._sinks = sinks
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str], tuple[Printer, tuple[str, ...]]] = {}

    def describe(self) -> Iterator[Metric]:
        """The family names (lets the registry reject duplicates) without reading the fleet."""
        for family in (*PRINTER_FAMILIES, *SOURCE_FAMILIES):
            yield family.empty()

    def collect(self) -> Iterator[Metric]:
        view = self._view()
        families = [f.empty() for f in PRINTER_FAMILIES]
        for source, printer in self._printers(view):
            for index, labels, value in printer_samples(source, printer):
                families[index].add_metric(labels, value)
        yield from families
        for family, rows in zip(SOURCE_FAMILIES, self._source_rows(view), strict=True):
            metric = family.empty()
            for labels, value in rows:
                metric.add_metric(labels, value)
            yield metric

    def render(self) -> str:
        """The same series as :meth:`collect`, as Prometheus text (format 0.0.4)."""
        view = self._view()
        texts: list[tuple[str, ...]] = []
        with self._lock:
            old = self._cache
            cache: dict[tuple[str, str], tuple[Printer, tuple[str, ...]]] = {}
            for source, printer in self._printers(view):
                key = (source, printer.serial)
                entry = old.get(key)
                # Printer equality ignores raw and last_seen_at, which no gauge shows.
                if entry is None or (entry[0] is not printer and entry[0] != printer):
                    entry = (printer, _printer_text(source, printer))
                cache[key] = entry
                texts.append(entry[1])
            self._cache = cache
        out: list[str] = []
        for index, family in enumerate(PRINTER_FAMILIES):
            out.append(family.header)
            out.append("".join(map(itemgetter(index), texts)))
        for family, rows in zip(SOURCE_FAMILIES, self._source_rows(view), strict=True):
            out.append(family.header)
            out.extend(line(family.name, family.labels, labels, value) for labels, value in rows)
        return "".join(out)

    @staticmethod
    def _printers(view: FleetView) -> Iterator[tuple[str, Printer]]:
        for source, snapshot in view.snapshots.items():
            for printer in snapshot.printers.values():
                yield source, printer

    def _source_rows(self, view: FleetView) -> list[list[Row]]:
        up: list[Row] = [((name,), 1.0 if h.up else 0.0) for name, h in view.health.items()]
        last: list[Row] = [
            ((name,), h.last_success_at.timestamp())
            for name, h in view.health.items()
            if h.last_success_at is not None
        ]
        budget: list[Row] = [((n,), float(b.remaining)) for n, b in self._budgets().items()]
        pending, dead = self._outbox()
        sinks = tuple(self._sinks())
        # Read from the current snapshots: a queue that is gone has no series.
        queues: list[Row] = [
            ((safe_text(source), safe_text(key)), float(queue.items))
            for source, snapshot in view.snapshots.items()
            for key, queue in snapshot.queues.items()
        ]
        return [up, last, budget, outbox_rows(pending, sinks), outbox_rows(dead, sinks), queues]


def _printer_text(source: str, printer: Printer) -> tuple[str, ...]:
    """One printer's lines, one string per family in PRINTER_FAMILIES order."""
    source, serial = safe_text(source), safe_text(printer.serial)
    key = f'source="{escape_label(source)}",serial="{escape_label(serial)}"'
    lines: list[list[str]] = [[] for _ in PRINTER_FAMILIES]
    for index, labels, value in printer_samples(source, printer):
        family = PRINTER_FAMILIES[index]
        extra = ""
        if len(labels) > 2:  # every printer family starts with source and serial
            extra = "".join(
                f',{n}="{escape_label(v)}"'
                for n, v in zip(family.labels[2:], labels[2:], strict=True)
            )
        lines[index].append(f"{family.name}{{{key}{extra}}} {number(value)}\n")
    return tuple("".join(chunk) for chunk in lines)
