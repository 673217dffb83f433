"""The fleet's Prometheus series: gauges read from the current FleetView at scrape, print counts.

Both are custom collectors (client_python's "read at scrape time") on the registry the
application owns, and both keep their own text for the ``/metrics`` writer in cached blocks
(:class:`~printfleet.metrics.exposition.BlockCollector`), because at 100,000 printers their
~1.2 million and ~300,000 samples are what a scrape would spend seconds on.

* :class:`FleetCollector` reads the current :class:`~printfleet.core.fleet.FleetView` (and the
  request budgets and outbox counts) at scrape time. It keeps no per-printer state between
  scrapes except a text cache of the printers of the view last rendered (per printer, and
  joined per source and family), so a removed printer or source leaves no stale series, and
  an unchanged printer's lines are reused.
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
from types import MappingProxyType
from typing import Final

from prometheus_client import Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from printfleet.core.events import EventType
from printfleet.core.fleet import FleetView
from printfleet.core.identifiers import safe_text
from printfleet.core.model import Printer, PrinterStatus, Snapshot
from printfleet.metrics.exposition import (
    Block,
    blocks_text,
    escape_help,
    escape_label,
    go_float,
    line,
    number,
)
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
    series does not exist), grouped by source. A ``Counter`` child costs a child object, a
    lock, a value object, a kwargs dict and label tuples per series; a row is one small list.

    Both scrape paths emit what the ``Counter`` did minus its ``_created`` samples:
    :meth:`collect` yields a counter family, and :meth:`blocks` (what the ``/metrics`` writer
    uses) writes the same lines as ``generate_latest`` would (labels sorted, values as Go
    formats them), one cached block per source, re-made only for sources whose counts moved.

    Counts change on the event loop and are read by the scraping thread, so both hold a lock;
    a scrape holds it only to render the sources that changed.
    """

    NAME: Final = _PRINTS_FAMILY.name
    HELP: Final = _PRINTS_FAMILY.documentation
    LABELS: Final = ("source", "serial", "result")  # as declared; written sorted in the text

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[str, dict[str, list[int]]] = {}
        self._blocks: dict[str, Block] = {}  # per source; absent = to be rendered
        # The serials object each source was last tracked with: the same (unchanged)
        # snapshot's printers again need no look-up per printer.
        self._tracked: dict[str, object] = {}
        self._header: Final = Block(
            f"# HELP {self.NAME}_total {escape_help(self.HELP)}\n"
            f"# TYPE {self.NAME}_total counter\n".encode()
        )

    def track(self, source: str, serials: Iterable[str]) -> None:
        """Create the three series of each printer of ``source`` at 0 unless they exist.

        Passing the very same ``serials`` object as the last time for ``source`` (an
        unchanged snapshot's printers) is a no-op, so it must not be mutated in between
        (snapshots never are).
        """
        with self._lock:
            if self._tracked.get(source) is serials:
                return
            rows = self._rows.setdefault(source, {})
            changed = False
            for serial in serials:
                row = rows.get(serial)
                if row is None:
                    rows[serial] = [0, 0, 0]
                    changed = True
                elif min(row) < 0:  # a print came before tracking
                    row[:] = [max(count, 0) for count in row]
                    changed = True
            if changed:
                self._blocks.pop(source, None)
            self._tracked[source] = serials

    def inc(self, source: str, serial: str, result: int) -> None:
        """Count one print with ``result`` (an index into PRINT_RESULTS), creating its series."""
        with self._lock:
            rows = self._rows.setdefault(source, {})
            row = rows.get(serial)
            if row is None:
                row = rows[serial] = [_ABSENT, _ABSENT, _ABSENT]
            row[result] = max(row[result], 0) + 1
            self._blocks.pop(source, None)

    def restore(self, source: str, serial: str, result: int, count: int) -> None:
        """Set one series to ``count`` (at start, from the print history, so the counter
        continues across restarts instead of starting from 0 again)."""
        with self._lock:
            rows = self._rows.setdefault(source, {})
            row = rows.setdefault(serial, [_ABSENT, _ABSENT, _ABSENT])
            row[result] = max(count, 0)
            self._blocks.pop(source, None)

    def remove(self, source: str, serial: str) -> None:
        """Delete the printer's series (if any); it starts from zero if it is tracked again."""
        with self._lock:
            rows = self._rows.get(source)
            if rows is not None and rows.pop(serial, None) is not None:
                self._blocks.pop(source, None)
                self._tracked.pop(source, None)

    def forget_source(self, source: str) -> None:
        """Delete every series of ``source`` (a source removed from the configuration)."""
        with self._lock:
            self._rows.pop(source, None)
            self._blocks.pop(source, None)
            self._tracked.pop(source, None)

    def _snapshot(self) -> list[tuple[str, str, tuple[int, ...]]]:
        """``(source, serial, counts)`` per printer, copied under the lock."""
        with self._lock:
            rows = [
                (source, serial, tuple(row))
                for source, printers in self._rows.items()
                for serial, row in printers.items()
            ]
        return [(safe_text(source), safe_text(serial), row) for source, serial, row in rows]

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

    def prepare(self, *, gzip: bool) -> None:
        """Render (and with ``gzip`` compress) the blocks of the sources whose counts moved."""
        for block in self.blocks():
            if gzip:
                block.segment()

    def blocks(self) -> list[Block]:
        """The family as blocks: the header, then one per source (as ``generate_latest``)."""
        with self._lock:
            out = [self._header]
            for source, rows in self._rows.items():
                block = self._blocks.get(source)
                if block is None:
                    block = self._blocks[source] = Block(_prints_text(source, rows).encode())
                out.append(block)
        return out

    def render(self) -> str:
        """The same text ``generate_latest`` writes for the family (format 0.0.4)."""
        return blocks_text(self.blocks())


_SMALL_COUNTS: Final = tuple(go_float(n) for n in range(8))  # most counts are small


def _prints_text(source: str, rows: Mapping[str, list[int]]) -> str:
    """The ``prints_total`` lines of one source's printers."""
    source_label = escape_label(safe_text(source))
    lines = []
    small = _SMALL_COUNTS
    for serial, counts in rows.items():
        labels = f'serial="{escape_label(safe_text(serial))}",source="{source_label}"}} '
        for start, count in zip(_TOTAL_STARTS, counts, strict=True):
            if count >= 0:
                value = small[count] if count < len(small) else go_float(count)
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

    The per-printer families are cached as one :class:`Block` per source and family: a
    source whose snapshot is the very same object as at the last render costs nothing; in
    another snapshot, a printer that is the same object (the identity contract of unchanged
    records) or an equal one keeps its cached lines, and only a family in which some
    printer's lines changed (or printers came, went or moved) is joined again. So a poll in
    which a tenth of the printers moved on re-renders those printers and a few families,
    not the fleet. The per-source families (health, budgets, outbox, queues) are small
    and read fresh at every scrape.
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
        self._sources: dict[str, _SourceText] = {}
        self._rendered: list[_SourceText] = []  # in the order of the view last rendered

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

    def prepare(self, *, gzip: bool) -> None:
        """Bring the per-printer blocks up to date with the current view (after a poll), and
        with ``gzip`` compress the ones that changed, so that the next scrape only joins."""
        for block in self._printer_blocks(self._view()):
            if gzip:
                block.segment()

    def blocks(self) -> list[Block]:
        """The same series as :meth:`collect`, as blocks of Prometheus text (format 0.0.4)."""
        view = self._view()
        out = self._printer_blocks(view)
        rows = self._source_rows(view)
        tail: list[str] = []
        for family, family_rows in zip(SOURCE_FAMILIES, rows, strict=True):
            tail.append(family.header)
            tail.extend(
                line(family.name, family.labels, labels, value) for labels, value in family_rows
            )
        out.append(Block("".join(tail).encode()))
        return out

    def render(self) -> str:
        """The same series as :meth:`collect`, as Prometheus text (format 0.0.4)."""
        return blocks_text(self.blocks())

    def forget_source(self, source: str) -> None:
        """Drop the cached text of ``source`` (it goes anyway once the view no longer has it)."""
        with self._lock:
            self._sources.pop(source, None)

    def _printer_blocks(self, view: FleetView) -> list[Block]:
        with self._lock:
            old = self._sources
            current: dict[str, _SourceText] = {}
            for source, snapshot in view.snapshots.items():
                text = old.get(source) or _SourceText(source)
                text.update(snapshot)
                current[source] = text
            # A source gone from the view takes its series (and its cache) with it.
            self._sources = current
            # Copied under the lock: every family of this scrape from the same snapshots.
            per_source = [tuple(text.blocks) for text in current.values()]
        out: list[Block] = []
        for index, header in enumerate(_HEADERS):
            out.append(header)
            out.extend(blocks[index] for blocks in per_source if blocks[index].data)
        return out

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


_HEADERS: Final = tuple(Block(family.header.encode()) for family in PRINTER_FAMILIES)
_NO_TEXT: Final = Block(b"")
#: A printer's cached lines: the printer they were made from, and one text per family.
_Entry = tuple[Printer, tuple[bytes, ...]]


class _SourceText:
    """One source's per-printer lines and, per family, their join as a block.

    Used under the collector's lock only.
    """

    __slots__ = ("blocks", "printers", "snapshot", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.snapshot: object = None
        self.printers: dict[str, _Entry] = {}
        self.blocks: list[Block] = [_NO_TEXT] * len(PRINTER_FAMILIES)

    def update(self, snapshot: Snapshot) -> None:
        """Re-render what changed since the last snapshot."""
        if snapshot is self.snapshot:
            return
        self.snapshot = snapshot
        old = self.printers
        new: dict[str, _Entry] = {}
        dirty = [False] * len(PRINTER_FAMILIES)
        source = self.source
        for serial, printer in snapshot.printers.items():
            entry = old.get(serial)
            if entry is None:
                entry = (printer, _printer_text(source, printer))
            elif entry[0] is not printer:
                # Printer equality ignores raw and last_seen_at, which no gauge shows. The
                # new object is kept, so the next snapshot's (the same one) is an `is` hit.
                if entry[0] == printer:
                    entry = (printer, entry[1])
                else:
                    lines = _printer_text(source, printer)
                    for index, (was, now) in enumerate(zip(entry[1], lines, strict=True)):
                        if was != now:
                            dirty[index] = True
                    entry = (printer, lines)
            new[serial] = entry
        if len(new) != len(old) or list(new) != list(old):
            dirty = [True] * len(PRINTER_FAMILIES)  # printers came, went or moved
        self.printers = new
        entries = list(new.values())
        for index, changed in enumerate(dirty):
            if changed:
                data = b"".join([entry[1][index] for entry in entries])
                self.blocks[index] = Block(data) if data else _NO_TEXT


#: Per current status, the ``printer_status`` line ends (one per status, 1.0 for the current):
#: a printer's lines are ``start + start.join(ends)`` (written for 100,000 printers).
_STATUS_ENDS: Final = {
    current: tuple(f',status="{s.value}"}} {"1.0" if s is current else "0.0"}\n' for s in _STATUSES)
    for current in _STATUSES
}
_UP: Final = ("} 0.0\n", "} 1.0\n")


def _printer_text(source: str, printer: Printer) -> tuple[bytes, ...]:
    """One printer's lines, one text per family in PRINTER_FAMILIES order.

    The same samples as :func:`printer_samples` (a test holds them equal), written directly:
    this runs for every printer that changed in a poll.
    """
    serial = escape_label(safe_text(printer.serial))
    key = f'source="{escape_label(safe_text(source))}",serial="{serial}"'
    info = (
        f'{PRINTER_INFO.name}{{{key},name="{escape_label(safe_text(printer.name))}",'
        f'model="{escape_label(safe_text(printer.model))}",vendor="{printer.vendor.value}",'
        f'group="{escape_label(safe_text(printer.group or ""))}",'
        f'firmware="{escape_label(safe_text(printer.firmware or ""))}"}} 1.0\n'
    )
    up = f"{PRINTER_UP.name}{{{key}{_UP[bool(printer.online)]}"
    start = f"{PRINTER_STATUS.name}{{{key}"
    status = start + start.join(_STATUS_ENDS[printer.status])
    progress = remaining = layers = ""
    job = printer.current_print
    if job is not None:
        if job.progress is not None:
            progress = f"{PRINT_PROGRESS.name}{{{key}}} {number(job.progress)}\n"
        if job.remaining_s is not None:
            remaining = f"{PRINT_REMAINING.name}{{{key}}} {number(job.remaining_s)}\n"
        if job.layer is not None:
            layers = f'{PRINT_LAYERS.name}{{{key},kind="done"}} {number(float(job.layer))}\n'
        if job.layers_total is not None:
            layers += (
                f'{PRINT_LAYERS.name}{{{key},kind="total"}} {number(float(job.layers_total))}\n'
            )
    materials = "".join(
        [
            f'{MATERIAL_REMAINING.name}{{{key},slot="{escape_label(safe_text(m.slot))}"}} '
            f"{number(ratio)}\n"
            for m in printer.materials
            if (ratio := m.remaining_ratio) is not None
        ]
    )
    return tuple(
        text.encode() if text else b""
        for text in (info, up, status, progress, remaining, layers, materials)
    )
