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

**Blocks and gzip.** At 100,000 printers the fleet text is ~125 MB, and even formatting it from
a per-printer cache, joining it and compressing it takes seconds. So the collectors that can
(:class:`BlockCollector`) keep their text as :class:`Block` s, one per source and family, that
change only when that source's printers do; a scrape is the list of current blocks. Each
block also keeps its text compressed, made once, as a raw deflate segment that ends on a byte
boundary (a sync flush) without ending the stream, so segments compressed apart can follow
one another in one deflate stream. A gzip scrape is one ordinary gzip member: a header, the
cached segments, an empty final block and the CRC-32 of the text (computed over the cached
text at each scrape, ~3 GB/s). Concatenated gzip members (RFC 1952 §2.2) would be simpler,
but some clients (httpx, for one) read only the first member and silently drop the rest.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Final, Protocol, runtime_checkable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

#: zlib level of the cached deflate segments. Level 1 makes the fleet text ~20x smaller (most of
#: it is repeated label names); level 6 (gzip's default) saves another ~20 % for ~3x the CPU.
GZIP_LEVEL: Final = 1


class Block:
    """Part of an exposition: text (format 0.0.4) and, once asked for, its deflate segment.

    Immutable once made; the segment is computed at most a few times (two threads asking
    at once may both compress it, and either result is the same bytes), so blocks can be
    shared between the rendering and the scraping threads without a lock.
    """

    __slots__ = ("_segment", "data")

    def __init__(self, data: bytes) -> None:
        self.data: Final = data
        self._segment: bytes | None = None

    def segment(self) -> bytes:
        """The text as raw deflate blocks ending in a sync flush (``b""`` for no text)."""
        segment = self._segment
        if segment is None:
            segment = deflate_segment(self.data) if self.data else b""
            self._segment = segment
        return segment

    @property
    def compressed(self) -> bool:
        """Whether :meth:`segment` is made already."""
        return self._segment is not None


def deflate_segment(data: bytes) -> bytes:
    """``data`` as raw deflate that can be followed by more (no final block, byte-aligned)."""
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)


#: A gzip header: deflate, no name, mtime 0 (the same bytes every time), OS unknown.
_GZIP_HEADER: Final = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
#: An empty final deflate block (fixed Huffman codes, just the end-of-block code).
_DEFLATE_END: Final = b"\x03\x00"


@runtime_checkable
class BlockCollector(Protocol):
    """A collector that also keeps its families as Prometheus text (format 0.0.4) blocks.

    ``blocks()`` must hold the same samples ``collect()`` yields, as ``generate_latest``
    would write them, and is called from the scraping thread. ``prepare(gzip=...)`` brings
    the cached blocks up to date (and compresses the new ones when ``gzip``); the health
    server calls it from its rendering thread after each poll, so that a scrape finds
    them made. ``render()`` is the text of ``blocks()`` as one string.
    """

    def collect(self) -> Iterable[Metric]: ...

    def blocks(self) -> list[Block]: ...

    def prepare(self, *, gzip: bool) -> None: ...

    def render(self) -> str: ...


#: The old name: a collector that writes its own text.
TextCollector = BlockCollector


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


def block_collectors(registry: CollectorRegistry) -> list[BlockCollector]:
    """The collectors of ``registry`` that keep their text as blocks."""
    return [c for c in collectors(registry) if isinstance(c, BlockCollector)]


def exposition_blocks(registry: CollectorRegistry) -> list[Block]:
    """Prometheus text (format 0.0.4) of ``registry`` as blocks, in the order to write them.

    The collectors that are not :class:`BlockCollector` s are formatted by
    ``generate_latest`` now (one block, first); the block collectors' families follow in
    registration order, from their caches.
    """
    fast: list[BlockCollector] = []
    others: list[Collector] = [registry.restricted_registry(["target_info"])]
    for collector in collectors(registry):
        if isinstance(collector, BlockCollector):
            fast.append(collector)
        else:
            others.append(collector)
    blocks = [Block(generate_latest(_Collectors(others)))]
    for collector in fast:
        blocks.extend(collector.blocks())
    return blocks


def exposition(registry: CollectorRegistry) -> bytes:
    """Prometheus text (format 0.0.4) of ``registry``, with :class:`BlockCollector` s fast.

    Equivalent to ``generate_latest(registry)`` (the same samples; the families that
    block collectors write come last, in registration order).
    """
    return b"".join(block.data for block in exposition_blocks(registry))


def gzip_body(blocks: Iterable[Block]) -> list[bytes]:
    """The gzip-encoded body of ``blocks`` (one gzip member), in parts to write in order."""
    parts = [_GZIP_HEADER]
    crc = size = 0
    for block in blocks:
        if block.data:
            parts.append(block.segment())
            crc = zlib.crc32(block.data, crc)
            size += len(block.data)
    parts.append(_DEFLATE_END + struct.pack("<II", crc, size & 0xFFFFFFFF))
    return parts


def blocks_text(blocks: Iterable[Block]) -> str:
    """The text of ``blocks`` as one string."""
    return b"".join(block.data for block in blocks).decode()


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
