"""The ``/metrics`` text writer: Prometheus text format 0.0.4 of a registry, fleet series fast.

At 10,000 printers the fleet gauges are ~150,000 samples, and ``generate_latest`` formats
those in about a second. So the writer asks each collector of the registry whether it can
write its own text (:class:`TextCollector`: the fleet collector from a per-printer cache, the
print counters from their counts) and lets ``generate_latest`` format only the others.
Every collector's ``collect()`` still yields ordinary metric families, so any other consumer
of the registry (``generate_latest``, ``registry.get_sample_value``) sees the same samples.

The helpers below write values and labels exactly as prometheus_client does, so the fast
text and ``generate_latest`` agree byte for byte per family.

No ``_created`` series. prometheus_client adds a ``<name>_created`` sample to every counter,
histogram and summary child; the 0.0.4 text format has no place for it, so it is written as a
separate gauge family that Prometheus stores as one more series per child and nothing in our
dashboard or alert rules reads (``rate()`` and ``increase()`` handle resets without it). The
writer drops them for every family, as :class:`~printfleet.metrics.fleet.PrintCounters`
never had them. It filters here rather than calling ``disable_created_metrics()``, which flips
a process-wide flag inside prometheus_client (an application embedding printfleet, or a test
that enables it, would change what another registry exports).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Final, Protocol, runtime_checkable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString


@runtime_checkable
class TextCollector(Protocol):
    """A collector that can also write its families as Prometheus text (format 0.0.4).

    ``render()`` must return the same samples ``collect()`` yields, as ``generate_latest``
    would write them.
    """

    def collect(self) -> Iterable[Metric]: ...

    def render(self) -> str: ...


class _Collectors:
    """Some of a registry's collectors, as one collector for ``generate_latest``."""

    def __init__(self, collectors: Sequence[Collector]) -> None:
        self._collectors = collectors

    def collect(self) -> Iterator[Metric]:
        for collector in self._collectors:
            for metric in collector.collect():
                yield without_created(metric)


#: Families whose children prometheus_client gives a ``_created`` sample.
_WITH_CREATED: Final = frozenset({"counter", "histogram", "summary", "gaugehistogram"})


def without_created(metric: Metric) -> Metric:
    """``metric`` without its ``<name>_created`` samples (a copy; the collector's is untouched)."""
    if metric.type not in _WITH_CREATED:
        return metric
    created = metric.name + "_created"
    if not any(sample.name == created for sample in metric.samples):
        return metric
    copy = Metric(metric.name, metric.documentation, metric.type, metric.unit)
    copy.samples = [sample for sample in metric.samples if sample.name != created]
    return copy


def collectors(registry: CollectorRegistry) -> list[Collector]:
    """The collectors of ``registry`` in registration order (the order a scrape lists them).

    prometheus_client has no public way to list them; this reads the mapping its own
    ``collect()`` copies, under the same lock (unchanged since prometheus_client 0.1; the
    scrape tests fail loudly if that ever changes).
    """
    with registry._lock:
        return list(registry._collector_to_names)


def exposition(registry: CollectorRegistry) -> bytes:
    """Prometheus text (format 0.0.4) of ``registry``, with :class:`TextCollector` s fast.

    Equivalent to ``generate_latest(registry)`` (the same samples; the families that
    text collectors write come last, in registration order).
    """
    fast: list[TextCollector] = []
    others: list[Collector] = [registry.restricted_registry(["target_info"])]
    for collector in collectors(registry):
        if isinstance(collector, TextCollector):
            fast.append(collector)
        else:
            others.append(collector)
    head = generate_latest(_Collectors(others))
    return head + "".join(collector.render() for collector in fast).encode()


#: A sample value as ``generate_latest`` writes it (``0.0``, ``12.0``).
go_float: Callable[[float], str] = floatToGoString


def number(value: float) -> str:
    """A sample value as prometheus_client writes it (``1.0``, ``0.425``, ``+Inf``, ``NaN``)."""
    if math.isnan(value):
        return "NaN"
    if value in (math.inf, -math.inf):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def escape_label(value: str) -> str:
    """A label value as written between the quotes."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", r"\\").replace('"', r"\"").replace("\n", r"\n")
    return value


def escape_help(text: str) -> str:
    """A ``# HELP`` text as written."""
    return text.replace("\\", r"\\").replace("\n", r"\n")


def line(name: str, names: Sequence[str], values: Sequence[str], value: float) -> str:
    """One sample line, labels in the given order."""
    labels = ",".join(f'{n}="{escape_label(v)}"' for n, v in zip(names, values, strict=True))
    return f"{name}{{{labels}}} {number(value)}\n"
