"""``printfleet silence add|list|remove``: ad-hoc maintenance silences, kept in the state database.

Ad-hoc silences live in the state database under the key ``"silences"`` (a JSON list of
:meth:`printfleet.core.rules.windows.Silence.as_dict`); the daemon picks them up with
:func:`printfleet.rulepacks.loader.silences_from_state`. Safe to run beside the daemon (SQLite WAL).
``silence add --hold`` makes a hold silence (its notifications come as one summary when it
ends). ``silence list`` also shows the acks of ``printfleet ack`` (STATE ``ack``), and
``silence remove`` removes them by id too (:mod:`printfleet.cli.ack`).
"""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TextIO

from printfleet.config import Settings
from printfleet.core.model import iso
from printfleet.core.rules.windows import Silence
from printfleet.errors import EXIT_CONFIG, EXIT_ERROR, EXIT_OK
from printfleet.rulepacks.loader import silences_from_state
from printfleet.store import FILENAME, Store

SILENCES_KEY = "silences"


class SilenceStore(Protocol):
    """What ``silence`` needs of :class:`printfleet.store.Store`."""

    def load_state(self, key: str) -> Any | None: ...

    def commit(self, *, state: dict[str, Any] | None = None) -> int: ...

    def close(self) -> None: ...


def _open_store(settings: Settings) -> SilenceStore:
    return Store.open(settings.daemon.state_dir / FILENAME)


def silence_command(
    settings: Settings,
    action: str,
    args: argparse.Namespace,
    out: TextIO,
    *,
    now: datetime | None = None,
    open_store: Callable[[Settings], SilenceStore] = _open_store,
) -> int:
    """``silence add`` (``args.matchers: dict[str, str]``, ``args.duration: timedelta``,
    ``args.comment``), ``silence list`` and ``silence remove`` (``args.ids``).

    Ad-hoc silences start now and end after ``duration``; expired ones are pruned on every
    change. Returns 0, 1 for an unknown id, 2 for an invalid matcher or duration.

    Raises:
        StoreError: the state database cannot be used.
    """
    # Imported here: printfleet.cli.ack builds on this module's table and store helpers.
    from printfleet.cli.ack import RULES_STATE_KEY, ack_rows, firing_conditions, remove_acks
    from printfleet.core.rules.acks import ACKS_KEY, acks_from_state

    now = now or datetime.now(UTC)
    store = open_store(settings)
    try:
        current = list(silences_from_state(store.load_state(SILENCES_KEY)))
        if action == "add":
            return _add(store, current, args, out, now)
        acks = list(acks_from_state(store.load_state(ACKS_KEY)))
        firing = firing_conditions(store.load_state(RULES_STATE_KEY))
        if action == "list":
            show_expired = bool(getattr(args, "all", False))
            rows = ack_rows(acks, firing, now, show_expired=show_expired)
            return _list(current, out, now, show_expired=show_expired, extra=rows)
        if action == "remove":
            ids = list(getattr(args, "ids", []) or [])
            ack_ids = {a.id for a in acks}
            removed, _ = remove_acks(store, acks, firing, [i for i in ids if i in ack_ids], now)
            if removed:
                print(f"removed {', '.join(removed)}", file=out)
            rest = [i for i in ids if i not in ack_ids]
            return _remove(store, current, rest, out, now) if rest else EXIT_OK
        print(f"unknown silence action {action!r}; use add, list or remove", file=out)
        return EXIT_CONFIG
    finally:
        store.close()


def _add(
    store: SilenceStore,
    current: list[Silence],
    args: argparse.Namespace,
    out: TextIO,
    now: datetime,
) -> int:
    matchers = getattr(args, "matchers", {}) or {}
    if not isinstance(matchers, Mapping):
        matchers = dict(matchers)
    duration = getattr(args, "duration", None) or timedelta(hours=1)
    if not isinstance(duration, timedelta) or duration <= timedelta(0):
        print("the duration must be longer than zero, e.g. --duration 2h", file=out)
        return EXIT_CONFIG
    try:
        silence = Silence(
            id=uuid.uuid4().hex[:8],
            match={str(k): (str(v),) for k, v in matchers.items()},
            starts_at=now,
            ends_at=now + duration,
            comment=str(getattr(args, "comment", None) or ""),
            origin="adhoc",
            created_by=str(getattr(args, "author", None) or ""),
            hold=bool(getattr(args, "hold", False)),
        )
    except ValueError as err:
        print(f"invalid silence: {err}", file=out)
        return EXIT_CONFIG
    kept = [s for s in current if not s.expired(now)]
    kept.append(silence)
    store.commit(state={SILENCES_KEY: [s.as_dict() for s in kept]})
    print(
        f"added silence {silence.id}: {_describe_match(silence)} until {iso(now + duration)}",
        file=out,
    )
    return EXIT_OK


#: Widest a ``silence list`` column grows before its text is cut with an ellipsis, so one long
#: matcher or comment cannot push the other columns off a terminal line.
MAX_COLUMN_WIDTH: dict[str, int] = {"ID": 12, "STATE": 9, "UNTIL": 20, "MATCH": 48, "COMMENT": 60}
ELLIPSIS = "…"


def _list(
    current: Sequence[Silence],
    out: TextIO,
    now: datetime,
    *,
    show_expired: bool,
    extra: Sequence[Mapping[str, str]] = (),
) -> int:
    rows = [s for s in current if show_expired or not s.expired(now)]
    if not rows and not extra:
        print("no ad-hoc silences", file=out)
        return EXIT_OK
    table = [
        {
            "ID": silence.id,
            "STATE": (
                "expired"
                if silence.expired(now)
                else "active"
                if silence.active(now)
                else "scheduled"
            ),
            "UNTIL": iso(silence.ends_at) if silence.ends_at else "-",
            "MATCH": _describe_match(silence),
            "COMMENT": silence.comment,
        }
        for silence in rows
    ]
    for line in render_table([*table, *extra], MAX_COLUMN_WIDTH):
        print(line, file=out)
    return EXIT_OK


def render_table(rows: Sequence[Mapping[str, str]], max_width: Mapping[str, int]) -> list[str]:
    """``rows`` as aligned text lines under a header of ``max_width``'s keys.

    Each column is as wide as its longest cell (or header), at most ``max_width[column]``; a
    longer cell is cut to fit and ends in an ellipsis. Line breaks and other control
    characters in a cell become spaces, so every row stays on one line. The last column is not
    padded (no trailing blanks).
    """
    columns = list(max_width)
    cells = [[_cell(row.get(column, ""), max_width[column]) for column in columns] for row in rows]
    widths = [
        max([len(column), *(len(line[i]) for line in cells)]) for i, column in enumerate(columns)
    ]
    lines = []
    for line in [columns, *cells]:
        text = "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        lines.append(text.rstrip())
    return lines


def _cell(value: str, width: int) -> str:
    text = "".join(" " if not ch.isprintable() else ch for ch in str(value))
    return text if len(text) <= width else text[: width - 1] + ELLIPSIS


def _remove(
    store: SilenceStore, current: list[Silence], ids: list[str], out: TextIO, now: datetime
) -> int:
    known = {s.id for s in current}
    unknown = [i for i in ids if i not in known]
    kept = [s for s in current if s.id not in ids and not s.expired(now)]
    removed = [i for i in ids if i in known]
    if removed:
        store.commit(state={SILENCES_KEY: [s.as_dict() for s in kept]})
        print(f"removed {', '.join(removed)}", file=out)
    for silence_id in unknown:
        print(f"no silence with id {silence_id!r} (see `printfleet silence list`)", file=out)
    return EXIT_ERROR if unknown else EXIT_OK


def _describe_match(silence: Silence) -> str:
    hold = " (hold)" if silence.hold else ""
    if not silence.match:
        return "everything" + hold
    return " ".join(f"{k}={','.join(v)}" for k, v in silence.match.items()) + hold
