"""The retained-state mirror: what the broker holds for each printer, so only changes go out.

Retained state is latest-wins. :class:`RetainedMirror` remembers, per printer, a hash of each
retained payload the broker *acknowledged* (TeslaMate's "remember only what was published"),
and :meth:`RetainedMirror.sync` publishes the messages of a
:class:`~printfleet.core.fleet.FleetView` whose payload differs, clears (empty retained
payload) the topics of printers that disappeared, and after :meth:`~RetainedMirror.reconnected`
republishes everything, because a restarted broker may have lost its retained store.

Heartbeat-only changes (a newer ``last_seen_at`` with otherwise equal printer facts) are
published at most every ``heartbeat`` seconds per printer, so an idle fleet of 10,000 printers
does not rewrite 10,000 state messages on every poll.

Progress-only changes (:func:`progress_only`: progress, layer, elapsed and remaining time of the
same print) are published at most every ``min_interval`` seconds per printer (``[mqtt]
state_min_interval``); :attr:`RetainedMirror.next_due` tells the sink when the held-back
printers are due, so the latest progress goes out even if no new view comes.

The connection itself (when to sync, reconnecting) is the sink's job (:mod:`.sink`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import operator
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import aiomqtt

from printfleet import __version__
from printfleet.clock import Clock
from printfleet.config import MqttConfig
from printfleet.core.fleet import FleetView
from printfleet.core.identifiers import utf8
from printfleet.core.model import Print, Printer
from printfleet.sinks import homeassistant
from printfleet.sinks.mqtt.topics import (
    HA,
    field_values,
    message_topic,
    printer_topic,
    state_payload,
    status_topic,
)

#: Retained publishes kept in flight at once while syncing state.
SYNC_WINDOW: Final = 16

PrinterKey = tuple[str, str]  # (source, serial)

#: What moves while a print runs; a change of only these is held back by state_min_interval.
PROGRESS_FIELDS: Final = frozenset({"progress", "layer", "elapsed_s", "remaining_s"})


def _facts(cls: type, skip: frozenset[str]) -> operator.attrgetter[Any]:
    """The compared fields of dataclass ``cls`` except ``skip``, as one tuple-valued getter
    (compared in C: held-back printers are checked on every poll)."""
    names = [f.name for f in dataclasses.fields(cls) if f.compare and f.name not in skip]
    return operator.attrgetter(*names)


_print_facts = _facts(Print, PROGRESS_FIELDS)
_printer_facts = _facts(Printer, frozenset({"current_print"}))


@dataclass(slots=True)
class _Retained:
    """What the broker holds for one printer, and what it was rendered from.

    Payloads are not kept (at 10,000 printers with Home Assistant discovery they are ~100 MB),
    only a hash of each acknowledged one: a changed printer is re-rendered and only messages
    whose hash differs go out. Discovery configs are re-rendered only when their inputs
    (``identity``) change, or after a reconnect.
    """

    printer: Printer | None = None  # None: not confirmed on this connection yet
    last_seen: datetime | None = None
    published_at: float = -math.inf  # clock.monotonic() of the last sync that rendered it
    held: Printer | None = None  # the printer last held back as progress-only (not published)
    identity: tuple[Any, ...] | None = None  # discovery inputs; None: not confirmed
    # message key -> hash of the acknowledged payload; None: published on an earlier
    # connection and not yet republished on this one (still to be cleared if unwanted).
    digests: dict[str, int | None] = field(default_factory=dict)


def progress_only(old: Printer, new: Printer) -> bool:
    """Whether ``new`` differs from ``old`` only in how far the same print has come.

    Progress, layer, elapsed and remaining time of the same current print (and the heartbeat
    ``last_seen_at``, which ``==`` ignores); any other difference, a print starting or ending
    included, is not progress-only, and neither is no difference (a due heartbeat).
    """
    was, now = old.current_print, new.current_print
    if was is None or now is None or was is now or was == now:
        return False
    return bool(
        _print_facts(was) == _print_facts(now) and _printer_facts(old) == _printer_facts(new)
    )


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


class RetainedMirror:
    """The broker's retained printer topics as last acknowledged, and how to bring them up to date.

    Args:
        config: the ``[mqtt]`` section (prefixes, whether discovery is on).
        heartbeat: minimum seconds between republishing a printer whose only change is a
            newer ``last_seen_at``.
        clock: when a printer was published, for ``[mqtt] state_min_interval``.
        publish_timeout: how long one publish may wait for its PUBACK.
    """

    def __init__(
        self,
        config: MqttConfig,
        *,
        heartbeat: float,
        clock: Clock,
        publish_timeout: float = 10.0,
    ) -> None:
        self._config = config
        self._prefix = config.topic_prefix
        self._status_topic = status_topic(self._prefix)
        self._heartbeat = heartbeat
        self._clock = clock
        self._min_interval = config.state_min_interval.total_seconds()
        self._publish_timeout = publish_timeout
        self._retained: dict[PrinterKey, _Retained] = {}
        self._next_due: float | None = None

    @property
    def next_due(self) -> float | None:
        """``clock.monotonic()`` time by which the last :meth:`sync` held back progress is due
        (sync again then, with the latest view); None when nothing is held back."""
        return self._next_due

    def reconnected(self) -> None:
        """After a (re)connect: everything must be republished, and old topics stay known."""
        for entry in self._retained.values():
            entry.printer = entry.identity = None
            entry.digests = dict.fromkeys(entry.digests)

    async def sync(self, client: aiomqtt.Client, view: FleetView | None) -> tuple[int, int]:
        """Publish the retained messages that differ from what the broker acknowledged.

        Returns:
            ``(messages sent, printers re-rendered)``.

        Raises:
            aiomqtt.MqttError: a publish failed (what was acknowledged so far is kept).
        """
        rendered: list[tuple[PrinterKey, Printer, tuple[Any, ...] | None]] = []
        gone: list[PrinterKey] = []
        sent = 0
        now = self._clock.monotonic()
        self._next_due = None

        def changes() -> Iterator[tuple[PrinterKey, str, bytes]]:
            # Rendered as the publishers ask, so a full republish of a large fleet never
            # holds every payload at once (~130,000 messages at 10,000 printers).
            wanted: set[PrinterKey] = set()
            snapshots = view.snapshots if view is not None else {}
            for source, snapshot in snapshots.items():
                for serial, printer in snapshot.printers.items():
                    key = (source, serial)
                    wanted.add(key)
                    entry = self._retained.get(key)
                    if entry is not None and (
                        self._still_current(entry, printer) or self._held_back(entry, printer, now)
                    ):
                        continue
                    identity = self._identity(printer)
                    rendered.append((key, printer, identity))
                    yield from self._printer_changes(key, printer, entry, identity)
            gone.extend(key for key in self._retained if key not in wanted)
            for key in gone:
                yield from [(key, name, b"") for name in self._retained[key].digests]

        remaining = changes()

        loop = asyncio.get_running_loop()

        async def publisher() -> None:
            nonlocal sent
            # One deadline per publisher, moved on before each publish, instead of aiomqtt's
            # wait_for per message (which in Python 3.11 wraps each PUBACK wait in a Task).
            deadline = asyncio.timeout(None)
            try:
                async with deadline:
                    for key, name, payload in remaining:  # shared: each message goes out once
                        deadline.reschedule(loop.time() + self._publish_timeout)
                        await client.publish(
                            self._topic(key, name), payload, qos=1, retain=True, timeout=math.inf
                        )
                        sent += 1
                        digests = self._retained.setdefault(key, _Retained()).digests
                        if payload:
                            digests[name] = hash(payload)
                        else:
                            digests.pop(name, None)
            except TimeoutError:
                raise aiomqtt.MqttError("Operation timed out") from None

        # A sliding window of publishes awaiting their PUBACK (not batches: a batch waits
        # for its slowest PUBACK, and a broker that delays ACKs (Nagle) stalls every batch).
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(SYNC_WINDOW):
                    group.create_task(publisher())
        except BaseExceptionGroup as failed:
            raise _first_error(failed) from None
        for key, printer, identity in rendered:
            entry = self._retained.setdefault(key, _Retained())
            entry.printer, entry.last_seen, entry.identity = printer, printer.last_seen_at, identity
            entry.published_at, entry.held = now, None
        for key in gone:
            if not self._retained[key].digests:
                del self._retained[key]
        return sent, len(rendered)

    def _printer_changes(
        self,
        key: PrinterKey,
        printer: Printer,
        entry: _Retained | None,
        identity: tuple[Any, ...] | None,
    ) -> list[tuple[PrinterKey, str, bytes]]:
        """The messages of one printer that differ from what the broker holds (a list: the
        publishers update ``entry.digests`` while the caller is still yielding them).

        Discovery configs are rendered only when ``entry`` does not hold them for the same
        ``identity``."""
        kept_discovery = entry is not None and entry.identity == identity
        messages = self._printer_messages(key[0], printer, discovery=not kept_discovery)
        have = entry.digests if entry is not None else {}
        out = [(key, n, p) for n, p in messages.items() if have.get(n) != hash(p)]
        out += [
            (key, n, b"")
            for n in have
            if n not in messages and not (kept_discovery and n.startswith(HA))
        ]
        return out

    def _still_current(self, entry: _Retained, printer: Printer) -> bool:
        old = entry.printer
        if old is None or (old is not printer and old != printer):
            return False
        seen = printer.last_seen_at
        if seen is None or seen == entry.last_seen:
            return True
        if entry.last_seen is None:
            return False
        return (seen - entry.last_seen).total_seconds() < self._heartbeat

    def _held_back(self, entry: _Retained, printer: Printer, now: float) -> bool:
        """Whether a progress-only change waits for ``state_min_interval`` (noting when it is
        due in :attr:`next_due`)."""
        if self._min_interval <= 0 or entry.printer is None:
            return False
        due = entry.published_at + self._min_interval
        if now >= due:
            return False
        if printer is not entry.held:
            if not progress_only(entry.printer, printer):
                return False
            entry.held = printer
        self._next_due = due if self._next_due is None else min(self._next_due, due)
        return True

    def _identity(self, printer: Printer) -> tuple[Any, ...] | None:
        """What the printer's discovery configs are rendered from (None: discovery is off)."""
        if not self._config.homeassistant_discovery:
            return None
        slots = tuple(m.slot for m in printer.materials)  # which material entities exist
        return (
            printer.name,
            printer.vendor,
            printer.model,
            printer.firmware,
            printer.location,
            slots,
        )

    def _printer_messages(
        self, source: str, printer: Printer, *, discovery: bool
    ) -> dict[str, bytes]:
        """Message key -> payload of one printer (discovery configs when ``discovery``)."""
        messages = {"state": state_payload(printer)}
        for name, value in field_values(printer).items():
            messages[sys.intern(name)] = utf8(value)
        if not discovery or not self._config.homeassistant_discovery:
            return messages
        base = printer_topic(self._prefix, source, printer.serial)
        configs = homeassistant.discovery_configs(
            source=source,
            printer=printer,
            field_topics={name: f"{base}/{name}" for name in messages if name != "state"},
            availability_topic=self._status_topic,
            sw_version=__version__,
        )
        for entity, body in configs.items():
            messages[sys.intern(HA + entity)] = body
        return messages

    def _topic(self, key: PrinterKey, name: str) -> str:
        source, serial = key
        return message_topic(self._prefix, self._config.homeassistant_prefix, source, serial, name)

    def topics(self) -> Iterable[str]:
        """Every retained topic currently acknowledged by the broker."""
        for key, entry in self._retained.items():
            yield from (self._topic(key, n) for n, d in entry.digests.items() if d is not None)
