"""``printfleet outbox list|replay|drop``: look at and manage queued and dead-lettered deliveries.

Safe to run while the daemon is running (SQLite WAL allows a second connection); the daemon
notices replayed entries within its idle poll (30 s) or at its next commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final, TextIO

from printfleet.config import Settings
from printfleet.errors import EXIT_ERROR, EXIT_OK
from printfleet.store import FILENAME, OutboxEntry, Store

ACTIONS: Final = ("list", "replay", "drop")
LIST_LIMIT: Final = 1000
_ERROR_WIDTH: Final = 60


def outbox_command(
    settings: Settings,
    action: str,
    *,
    sink: str | None,
    dead: bool,
    ids: list[str],
    out: TextIO,
) -> int:
    """Run one outbox action against the store in ``settings.daemon.state_dir``.

    - ``list``: a table of pending entries (with ``dead``: the dead-letter table), oldest first.
    - ``replay``: dead-lettered entries back to pending, due now; selected by ``ids`` and/or
      ``sink``, every dead entry when neither is given.
    - ``drop``: delete pending entries (with ``dead``: dead-lettered ones) selected by ``ids``
      and/or ``sink``; one of them is required, so nothing is deleted by accident.

    Returns:
        0 on success; 1 when the request was incomplete or named ids that matched nothing
        (the message says which).

    Raises:
        StoreError: the state database cannot be opened or used.
    """
    if action not in ACTIONS:
        out.write(f"unknown outbox action {action!r}; use one of: {', '.join(ACTIONS)}\n")
        return EXIT_ERROR
    path = settings.daemon.state_dir / FILENAME
    if not path.exists():
        out.write(f"no state database at {path}: nothing queued yet\n")
        return EXIT_OK
    with Store.open(path) as store:
        if action == "list":
            return _list(store, sink=sink, dead=dead, out=out)
        if action == "replay":
            count = store.replay(ids, sink=sink)
            out.write(
                f"replayed {count} dead-letter deliver{'y' if count == 1 else 'ies'}; "
                "a running daemon sends them within 30 s\n"
            )
            return EXIT_OK if count or not ids else EXIT_ERROR
        return _drop(store, sink=sink, dead=dead, ids=ids, out=out)


def _list(store: Store, *, sink: str | None, dead: bool, out: TextIO) -> int:
    entries = store.list_entries(sink=sink, dead=dead, limit=LIST_LIMIT)
    counts = store.dead_count(sink) if dead else store.pending_count(sink)
    total = sum(counts.values())
    what = "dead-letter" if dead else "pending"
    if not entries:
        out.write(f"no {what} deliveries{f' for {sink}' if sink else ''}\n")
        return EXIT_OK
    rows = [
        (
            "ID",
            "SINK",
            "TYPE",
            "SUBJECT",
            "ATTEMPT",
            "DEAD SINCE" if dead else "DUE",
            "LAST ERROR",
        )
    ]
    rows += [_row(e) for e in entries]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        cells = [c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)]
        out.write("  ".join([*cells, r[-1]]).rstrip() + "\n")
    shown = len(entries)
    more = f" (showing the oldest {shown})" if total > shown else ""
    out.write(f"{total} {what} deliver{'y' if total == 1 else 'ies'}{more}\n")
    return EXIT_OK


def _drop(store: Store, *, sink: str | None, dead: bool, ids: Sequence[str], out: TextIO) -> int:
    if not ids and sink is None:
        table = "--dead " if dead else ""
        out.write(f"drop {table}needs --id ID... or --sink NAME (nothing was dropped)\n")
        return EXIT_ERROR
    count = store.drop(ids, sink=sink, dead=dead)
    table = "dead-letter" if dead else "pending"
    out.write(f"dropped {count} {table} deliver{'y' if count == 1 else 'ies'}\n")
    return EXIT_OK if count or not ids else EXIT_ERROR


def _row(entry: OutboxEntry) -> tuple[str, str, str, str, str, str, str]:
    delivery = entry.delivery
    event: Any = delivery.payload.get("event")
    event_type = str(event.get("type", "?")) if isinstance(event, dict) else "?"
    subject = str(event.get("subject", "")) if isinstance(event, dict) else ""
    status = delivery.payload.get("status")
    if status == "resolved":
        event_type += " (resolved)"
    if entry.dead:
        when = _time(entry.dead_at)
    elif entry.due_at is None:
        when = "after earlier"
    else:
        when = _time(entry.due_at)
    error = (entry.last_error or "").replace("\n", " ")
    if len(error) > _ERROR_WIDTH:
        error = error[: _ERROR_WIDTH - 1] + "…"
    return (
        delivery.id,
        delivery.sink,
        event_type,
        subject,
        str(entry.attempt),
        when,
        error,
    )


def _time(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.strftime("%Y-%m-%d %H:%M:%SZ")
