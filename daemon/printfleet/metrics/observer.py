"""The Metrics object the daemon reports into: Observer calls become Prometheus counters.

:class:`Metrics` implements :class:`~printfleet.observe.Observer`. Components call it as
things happen; it keeps counters and histograms (``api_requests_total``,
``api_request_duration_seconds``, ``host_limit_wait_seconds_total``,
``poll_duration_seconds``, ``events_total``, ``prints_total``, ``print_verdicts_total``,
``rule_matches_total``, ``deliveries_total``, ``records_skipped_total``,
``records_mapped_total``, ``records_reused_total``,
``unknown_status_total``, ``poll_failures_total``,
``task_restarts_total``, ``resin_used_ml_total``, ``print_duration_seconds``)
plus ``build_info``, all on a :class:`~prometheus_client.CollectorRegistry` the application
owns (never the global default registry). ``prints_total`` is kept by a
:class:`~printfleet.metrics.fleet.PrintCounters` collector (see there for why).

Label choice: ``events_total{source,type}`` is per source, not per printer, to keep it
bounded (18 types x sources); per-printer history lives in the events themselves.
"""

from __future__ import annotations

import contextlib
from collections.abc import Container, Iterable
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from printfleet import __version__
from printfleet.core.events import ChangeEvent, EventType
from printfleet.core.fleet import FleetView
from printfleet.core.history import OUTCOMES, HistoryTotal, record_from_event
from printfleet.metrics.fleet import PRINT_RESULTS, RESULT_INDEX, PrintCounters
from printfleet.metrics.history import HistoryMetrics

API_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
POLL_BUCKETS: Final = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
#: The ``error`` label values of ``printfleet_poll_failures_total``; ``crashed`` is a bug or an
#: input we did not foresee (also reported as ``bad_response`` in ``source.down``), the others
#: are vendor trouble.
#: Distinct ``value`` labels of ``printfleet_unknown_status_total`` per source and field;
#: further words are counted under :data:`UNKNOWN_OTHER`.
UNKNOWN_VALUE_SERIES: Final = 50
UNKNOWN_OTHER: Final = "(other)"
POLL_FAILURE_KINDS: Final = ("auth", "unavailable", "bad_response", "rate_limited", "crashed")
#: The ``verdict`` label values of ``printfleet_print_verdicts_total`` (Print.verdict, lower case).
VERDICT_LABELS: Final = ("success", "failure")


class Metrics:
    """The :class:`~printfleet.observe.Observer` that turns reports into Prometheus series.

    Thread-safe (prometheus_client metrics are, and :class:`PrintCounters` locks), so it may be
    called from any task or thread.
    """

    def __init__(self, registry: CollectorRegistry, *, version: str = __version__) -> None:
        self.api_requests = Counter(
            "printfleet_api_requests",
            "Vendor API requests, by endpoint and HTTP status code (or error kind).",
            ["source", "endpoint", "code"],
            registry=registry,
        )
        self.api_request_duration = Histogram(
            "printfleet_api_request_duration_seconds",
            "Duration of vendor API requests.",
            ["source", "endpoint"],
            buckets=API_BUCKETS,
            registry=registry,
        )
        self.host_limit_wait_seconds = Counter(
            "printfleet_host_limit_wait_seconds",
            "Seconds requests waited for the request limit shared by every source of one "
            "vendor host ([limits] <vendor>_host_requests_per_second).",
            ["vendor", "host"],
            registry=registry,
        )
        self.records_skipped = Counter(
            "printfleet_records_skipped",
            "Malformed vendor records that were logged and skipped.",
            ["source", "kind"],
            registry=registry,
        )
        self.records_reused = Counter(
            "printfleet_records_reused",
            "Printer records unchanged, or changed only in heartbeat fields, since the "
            "source's last fetch, so they were not mapped again.",
            ["source"],
            registry=registry,
        )
        self.records_mapped = Counter(
            "printfleet_records_mapped",
            "Printer records mapped (new or changed since the source's last fetch).",
            ["source"],
            registry=registry,
        )
        self.unknown_statuses = Counter(
            "printfleet_unknown_status",
            "Records whose status word the mapper did not know (read as UNKNOWN, never an "
            "outcome), by field and raw word (cut to 40 characters), once per record per poll.",
            ["source", "field", "value"],
            registry=registry,
        )
        # Distinct words per (source, field) with their own series; past the cap, "other".
        self._unknown_values: dict[tuple[str, str], set[str]] = {}
        self.poll_duration = Histogram(
            "printfleet_poll_duration_seconds",
            "Duration of one poll cycle of a source (successful or not).",
            ["source"],
            buckets=POLL_BUCKETS,
            registry=registry,
        )
        self.poll_failures = Counter(
            "printfleet_poll_failures",
            "Failed polls of a source, by kind (auth, unavailable, bad_response, rate_limited, "
            "crashed = an unexpected exception).",
            ["source", "error"],
            registry=registry,
        )
        self.task_restarts = Counter(
            "printfleet_task_restarts",
            "Supervised tasks (poll:<source>, outbox:<sink>, mqtt, timers, silences) "
            "restarted after they crashed.",
            ["task"],
            registry=registry,
        )
        self.events = Counter(
            "printfleet_events",
            "Change events detected, by source and event type.",
            ["source", "type"],
            registry=registry,
        )
        self.prints = PrintCounters()
        registry.register(self.prints)
        self.history = HistoryMetrics(registry)
        # A companion to prints_total, not a label on it: prints_total counts at the outcome,
        # when nobody has rated the print yet, and a counter cannot move a print from
        # "unrated" to "failure" hours later. Per source, not per printer (6 series a source
        # rather than 6 a printer); per-printer ratings are in the print.rated events.
        self.print_verdicts = Counter(
            "printfleet_print_verdicts",
            "Ratings people gave ended prints (print.rated), by machine result and verdict.",
            ["source", "result", "verdict"],
            registry=registry,
        )
        self.rule_matches = Counter(
            "printfleet_rule_matches",
            "Times a rule fired for an event.",
            ["rule"],
            registry=registry,
        )
        self.deliveries = Counter(
            "printfleet_deliveries",
            "Delivery attempts by sink and result (ok, retry, dead).",
            ["sink", "result"],
            registry=registry,
        )
        build = Gauge(
            "printfleet_build_info",
            "printfleet version (value is always 1).",
            ["version"],
            registry=registry,
        )
        build.labels(version).set(1)

    def api_request(self, source: str, endpoint: str, code: str, seconds: float) -> None:
        self.api_requests.labels(source, endpoint, code).inc()
        self.api_request_duration.labels(source, endpoint).observe(seconds)

    def host_limit_wait(self, vendor: str, host: str, seconds: float) -> None:
        self.host_limit_wait_seconds.labels(vendor, host).inc(seconds)

    def record_skipped(self, source: str, kind: str) -> None:
        self.records_skipped.labels(source, kind).inc()

    def records_polled(self, source: str, *, mapped: int, reused: int) -> None:
        self.records_mapped.labels(source).inc(mapped)
        self.records_reused.labels(source).inc(reused)

    def unknown_status(self, source: str, field: str, value: str) -> None:
        # Bounded labels: a vendor inventing words without end gets UNKNOWN_VALUE_SERIES series.
        seen = self._unknown_values.setdefault((source, field), set())
        if value not in seen:
            if len(seen) >= UNKNOWN_VALUE_SERIES:
                value = UNKNOWN_OTHER
            else:
                seen.add(value)
        self.unknown_statuses.labels(source, field, value[:40]).inc()

    def poll_done(self, source: str, seconds: float, ok: bool) -> None:
        # Failed polls show in source_up and in api_requests_total's codes; one histogram.
        self.poll_duration.labels(source).observe(seconds)

    def poll_failed(self, source: str, error: str) -> None:
        self.poll_failures.labels(source, error).inc()

    def task_restarted(self, task: str) -> None:
        self.task_restarts.labels(task).inc()

    def track_tasks(self, sources: Iterable[str], tasks: Iterable[str]) -> None:
        """Create every source's ``poll_failures_total`` and every task's ``task_restarts_total``
        series at 0, so the first failure shows in ``increase()`` and alerts; likewise every
        source's ``print_verdicts_total`` series, so the first rating counts."""
        sources = tuple(sources)
        for source in sources:
            for kind in POLL_FAILURE_KINDS:
                self.poll_failures.labels(source, kind)
        for task in tasks:
            self.task_restarts.labels(task)
        self.history.track(sources)
        for source in sources:
            for result in PRINT_RESULTS.values():
                for verdict in VERDICT_LABELS:
                    self.print_verdicts.labels(source, result, verdict)

    def event_emitted(self, event: ChangeEvent) -> None:
        self.events.labels(event.source, event.type.value).inc()
        result = RESULT_INDEX.get(event.type)
        if result is not None:
            self.prints.inc(event.source, event.subject, result)
            record = record_from_event(event)
            if record is not None:
                self.history.outcome(record)
        elif event.type is EventType.PRINTER_REMOVED:
            self.prints.remove(event.source, event.subject)
            self.history.remove(event.source, event.subject)
        elif event.type is EventType.PRINT_RATED:
            result_label = event.details.get("machine_outcome")
            verdict = str(event.details.get("verdict") or "").lower()
            if result_label in PRINT_RESULTS.values() and verdict in VERDICT_LABELS:
                self.print_verdicts.labels(event.source, result_label, verdict).inc()

    def restore_history(
        self, source: str, totals: Iterable[HistoryTotal], serials: Container[str]
    ) -> None:
        """Start ``prints_total`` and ``resin_used_ml_total`` of ``source`` from its stored
        print history (at start, before the first poll), so they continue across restarts.

        Only printers in ``serials`` (the restored snapshot's) get their series back.
        """
        totals = list(totals)
        if not self.history.restore(source, totals, serials):
            return  # done already: the live counts since then must stand
        counts: dict[tuple[str, int], int] = {}
        for total in totals:
            index = _OUTCOME_INDEX.get(total.outcome)
            if index is not None and total.serial in serials:
                key = (total.serial, index)
                counts[key] = counts.get(key, 0) + total.prints
        for (serial, index), count in counts.items():
            self.prints.restore(source, serial, index, count)

    def track_fleet(self, view: FleetView) -> None:
        """Create every printer's ``prints_total`` series at 0 when it is first seen.

        A counter that first appears already at 1 hides that first print from ``increase()``
        and ``rate()``; in a small fleet nearly every print would be such a first one.
        """
        for source, snapshot in view.snapshots.items():
            self.prints.track(source, snapshot.printers)

    def forget_source(self, source: str) -> None:
        """Remove every series of a source taken out of the config (SIGHUP), so dashboards
        stop showing an account nobody polls. Added again, it starts over from its history."""
        for metric in vars(self).values():
            # Every labelled metric with a ``source`` label, including ones added later.
            if isinstance(metric, MetricWrapperBase):
                with contextlib.suppress(ValueError):  # no such label
                    metric.remove_by_labels({"source": source})
        self.task_restarts.remove_by_labels({"task": f"poll:{source}"})
        self._unknown_values = {k: v for k, v in self._unknown_values.items() if k[0] != source}
        self.prints.forget_source(source)
        self.history.forget_source(source)

    def rule_matched(self, rule: str) -> None:
        self.rule_matches.labels(rule).inc()

    def delivery_done(self, sink: str, result: str) -> None:
        self.deliveries.labels(sink, result).inc()


#: A history outcome word -> its index in a PrintCounters row.
_OUTCOME_INDEX: Final = {
    OUTCOMES[kind]: RESULT_INDEX[kind] for kind in PRINT_RESULTS if kind in OUTCOMES
}
