"""Which sources a SIGHUP adds, removes or changes: a pure comparison of two source sets.

Each side maps a source name to what it was built from (the config section plus a digest of
its secret files' content, so a rotated secret file is a change even when the config text is
the same). Only the names in the result are ever logged, never what they map to.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SourceSetChange:
    """Names of the sources to start, stop, rebuild and leave alone, each sorted."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)


def diff_source_sets(
    running: Mapping[str, object], wanted: Mapping[str, object]
) -> SourceSetChange:
    """Compare what runs with what the new config wants, by name.

    A source whose settings differ in any way is ``changed`` (rebuilt under the same name, so
    its stored state carries over); a renamed source is one removed and one added.
    """
    return SourceSetChange(
        added=tuple(sorted(set(wanted) - set(running))),
        removed=tuple(sorted(set(running) - set(wanted))),
        changed=tuple(sorted(n for n in wanted if n in running and running[n] != wanted[n])),
        unchanged=tuple(sorted(n for n in wanted if n in running and running[n] == wanted[n])),
    )
