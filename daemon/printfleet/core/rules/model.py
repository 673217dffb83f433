"""What a rule pack defines once loaded: rules, their actions and the event types they match.

Resolution table (:data:`RESOLUTIONS`): ``printer.online`` resolves ``printer.offline``; a
cleared ``printer.alert`` resolves the same raised alert; ``source.recovered`` resolves
``source.unreachable`` and ``source.auth_failed``; ``print.resumed`` (or the print ending)
resolves ``print.paused``; ``printer.removed`` resolves everything open for that printer. For a
rule with ``when``, a later event of the same type for the same subject that no longer
satisfies ``when`` resolves too. Cleared alerts only resolve; they never trigger a rule.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from fnmatch import fnmatchcase
from types import MappingProxyType
from typing import Any

from printfleet.core.events import EventType, Severity
from printfleet.core.rules.names import typo_hint
from printfleet.core.rules.windows import Silence

#: A compiled ``when`` expression: names of one event -> does the rule apply?
Predicate = Callable[[Mapping[str, Any]], bool]
#: A compiled template: names of one event -> text.
Renderer = Callable[[Mapping[str, Any]], str]

EVENT_TYPES: tuple[str, ...] = tuple(t.value for t in EventType)

#: resolving event type -> the event types it resolves (for the same source and subject).
RESOLUTIONS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "printer.online": ("printer.offline",),
        "printer.alert": ("printer.alert",),  # only a cleared alert, and only the same alert
        "source.recovered": ("source.unreachable", "source.auth_failed"),
        "print.resumed": ("print.paused",),
        "print.finished": ("print.paused",),
        "print.failed": ("print.paused",),
        "print.aborted": ("print.paused",),
        "printer.removed": ("printer.offline", "printer.alert", "print.paused"),
    }
)
#: Event types that some later event resolves: the ones ``resolve`` and ``repeat`` make sense on.
RESOLVABLE_TYPES: frozenset[str] = frozenset(t for ts in RESOLUTIONS.values() for t in ts)


def expand_event_patterns(patterns: Iterable[str]) -> frozenset[str]:
    """The event types matched by ``patterns`` (exact names or globs like ``print.*``).

    Raises:
        ValueError: naming the first pattern that matches no event type.
    """
    types: set[str] = set()
    for pattern in patterns:
        matched = {t for t in EVENT_TYPES if fnmatchcase(t, pattern)}
        if not matched:
            hint = typo_hint(pattern, EVENT_TYPES)
            raise ValueError(
                f"unknown event type '{pattern}'; {hint}known types: {', '.join(EVENT_TYPES)}"
            )
        types |= matched
    return frozenset(types)


@dataclass(frozen=True, slots=True)
class MqttAction:
    """A rule's extra MQTT publish (``mqtt = { topic = ..., retain = ..., qos = ... }``)."""

    topic: Renderer
    retain: bool = False
    qos: int = 1


@dataclass(frozen=True, slots=True)
class Rule:
    """One ``[[rule]]`` of a rule pack, with expressions and templates already compiled.

    ``on`` holds the patterns as written; ``types`` the event types they expand to. A rule
    with ``hold``, ``resolve`` or ``repeat`` keeps a condition per subject (see module doc).
    ``notify = ()`` and no ``mqtt`` makes a log-only rule: it is counted and traced, nothing
    is sent.
    """

    name: str
    on: tuple[str, ...]
    pack: str = "<memory>"
    line: int | None = None
    when: Predicate | None = None
    when_source: str | None = None
    hold: timedelta = timedelta(0)
    throttle: timedelta | None = None
    repeat: timedelta | None = None
    resolve: bool = False
    severity: Severity | None = None
    notify: tuple[str, ...] = ()
    mqtt: MqttAction | None = None
    title: Renderer | None = None
    text: Renderer | None = None
    group_by: tuple[str, ...] = ()
    group_wait: timedelta = timedelta(0)
    group_title: Renderer | None = None
    group_text: Renderer | None = None
    description: str = ""
    types: frozenset[str] = field(init=False, repr=False, compare=False)
    #: Whether the rule keeps a per-subject condition (hold-down, resolve or repeat).
    stateful: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "types", expand_event_patterns(self.on))
        stateful = self.hold > timedelta(0) or self.resolve or self.repeat is not None
        object.__setattr__(self, "stateful", stateful)


@dataclass(frozen=True, slots=True)
class RuleSet:
    """Everything the loaded rule packs define."""

    rules: tuple[Rule, ...] = ()
    silences: tuple[Silence, ...] = ()
    packs: tuple[str, ...] = ()
