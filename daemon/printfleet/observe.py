"""Hooks through which components report what they did (implemented by metrics.observer).

Components take an ``observer`` and call it; they never import prometheus themselves, and
tests can pass a recording observer or :data:`NULL_OBSERVER`.
"""

from __future__ import annotations

from typing import Protocol

from printfleet.core.events import ChangeEvent


class Observer(Protocol):
    def api_request(self, source: str, endpoint: str, code: str, seconds: float) -> None:
        """One HTTP request to a vendor finished. ``code`` is the status or an error kind
        (``timeout``, ``network``); ``endpoint`` is a bounded label such as ``/printers/``."""
        ...

    def host_limit_wait(self, vendor: str, host: str, seconds: float) -> None:
        """A request waited ``seconds`` for the request limit shared by every source of
        ``vendor`` at ``host`` (``[limits] <vendor>_host_requests_per_second``)."""
        ...

    def record_skipped(self, source: str, kind: str) -> None:
        """A malformed vendor record of ``kind`` (printer, print, ...) was skipped."""
        ...

    def records_polled(self, source: str, *, mapped: int, reused: int) -> None:
        """One printer fetch read ``mapped + reused`` records: ``reused`` were unchanged since
        the last fetch and not mapped again (:attr:`Snapshot.reused`)."""
        ...

    def unknown_status(self, source: str, field: str, value: str) -> None:
        """A record's status word was not one the mapper knows: ``field`` is
        ``printer.status`` or ``print.status``, ``value`` the raw word (at most 40 chars).
        Reported once per record per poll; the status was kept raw and read as UNKNOWN."""
        ...

    def poll_done(self, source: str, seconds: float, ok: bool) -> None:
        """One poll cycle of a source finished."""
        ...

    def poll_failed(self, source: str, error: str) -> None:
        """One poll of a source failed: ``error`` is ``auth``, ``unavailable``,
        ``bad_response``, ``rate_limited`` or ``crashed`` (an unexpected exception)."""
        ...

    def task_restarted(self, task: str) -> None:
        """A supervised task (``poll:<source>``, ``outbox:<sink>``, ``mqtt``) died and is
        being restarted."""
        ...

    def event_emitted(self, event: ChangeEvent) -> None:
        """The differ produced an event (counted in ``events_total`` / ``prints_total``)."""
        ...

    def rule_matched(self, rule: str) -> None:
        """A rule fired for an event."""
        ...

    def delivery_done(self, sink: str, result: str) -> None:
        """A delivery attempt ended: ``ok``, ``retry`` or ``dead``."""
        ...


class NullObserver:
    """Observes nothing."""

    def api_request(self, source: str, endpoint: str, code: str, seconds: float) -> None:
        pass

    def host_limit_wait(self, vendor: str, host: str, seconds: float) -> None:
        pass

    def record_skipped(self, source: str, kind: str) -> None:
        pass

    def records_polled(self, source: str, *, mapped: int, reused: int) -> None:
        pass

    def unknown_status(self, source: str, field: str, value: str) -> None:
        pass

    def poll_done(self, source: str, seconds: float, ok: bool) -> None:
        pass

    def poll_failed(self, source: str, error: str) -> None:
        pass

    def task_restarted(self, task: str) -> None:
        pass

    def event_emitted(self, event: ChangeEvent) -> None:
        pass

    def rule_matched(self, rule: str) -> None:
        pass

    def delivery_done(self, sink: str, result: str) -> None:
        pass


NULL_OBSERVER: Observer = NullObserver()
