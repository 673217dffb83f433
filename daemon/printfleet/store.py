"""The state store: one SQLite file holding last snapshots, rule state, the outbox and the
print history.

Why this shape:

- **One transaction per poll.** :meth:`Store.commit` writes a source's new snapshot, the
  deliveries its events produced and the rule engine's state together, or nothing at all. A
  crash (``kill -9``, power loss) therefore leaves either the old snapshot and no deliveries (the
  next poll detects the same changes again, with the same stable ids) or the new snapshot with
  all its deliveries queued. No detected event is lost, none is announced twice.
- **WAL with ``synchronous=NORMAL``.** In WAL mode a committed transaction survives a crash of
  the process at any point: it is in the WAL file before ``COMMIT`` returns. What NORMAL gives
  up compared to FULL is durability of the *last* transactions across an OS crash or power cut
  (the database stays consistent; those transactions roll back). Thanks to the atomic commit
  above, a rolled-back poll is simply re-detected from the older snapshot, and a rolled-back
  "delivered" mark means one redelivery with the same event id (at-least-once, receivers
  dedupe). FULL would add an fsync to every poll and every delivery for no gain in those
  semantics, which matters on the SD cards and small VMs this daemon often runs on.
- **Per-printer rows.** A snapshot is stored as one row per printer plus one row for the
  source (vendor, print runs). ``commit`` writes only printers that changed since the last
  commit (compared in memory with ``==``) and deletes removed ones, so an unchanged
  10,000-printer fleet costs one small UPDATE. A heartbeat alone (``last_seen_at``, which the
  differ ignores and Formlabs moves about every minute for every printer) is written at most
  every 15 minutes per printer: rewriting the whole fleet each poll would cost ~0.3 s and
  ~10 MB of WAL per poll at 10,000 printers. So a loaded snapshot's ``last_seen_at`` may lag
  by up to that much; everything else is exact. Vendor ``raw`` records are not
  stored: only what the differ needs (Carbon's terms ask not to cache content longer than
  needed), and skipped-record reports, which are per fetch, are not kept either.
- **Outbox heads.** Deliveries with the same ordering key (``<source>/<serial>``) go out one
  at a time in ``created_at`` order. Only the oldest pending delivery of each key (its
  *head*) has a ``due_at``; the ones behind it have none and get one when they become the
  head. :meth:`Store.due` is then a plain index range scan however large a backlog grows.
- **Never a crash loop.** A database that is corrupt or cannot be opened is moved aside and
  replaced by an empty one; opening, migrating and that recovery live in
  :mod:`printfleet.store_file` (the tables are defined there, in ``MIGRATIONS``).
- **Print history in the poll's transaction.** The record of a print that reached an outcome
  is written by the same commit as the snapshot that showed the outcome, keyed by
  ``(source, print_id)``: a crash before the commit re-detects it (written then), one after
  it does not, and a record written twice is ignored. So reports count each print once across
  restarts, and so do the counters, which start from running sums (``print_totals``) that the
  same INSERT keeps, rather than from a scan of a history of millions of rows.

Errors: every failure of SQLite (disk full, I/O error, locked) is raised as
:class:`~printfleet.errors.StoreError` naming the operation and the file; the transaction is
rolled back, so the database is unchanged. A caller whose :meth:`Store.commit` fails keeps the
snapshot, deliveries and state it tried to write in memory and includes them in its next
commit (re-enqueueing the same delivery ids is a no-op), so nothing is lost while the disk is
full. Outbox workers leave an entry pending when marking it fails (it is delivered again later).

The store is synchronous (SQLite calls are short) and thread-safe: one lock serialises use of
its connection, so the metrics collector may read counts from its own thread.

Why one file: the snapshot rows, the rule state and the outbox table share one connection,
one lock and one transaction helper, and the atomic poll commit above spans all three; split
by table, the guarantee this module exists for would have no single place to be read.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import structlog

from printfleet.clock import Clock, SystemClock
from printfleet.core.codec import (
    printer_from_json,
    printer_to_json,
    snapshot_from_json,
    snapshot_to_json,
)
from printfleet.core.delivery import Delivery
from printfleet.core.digest import EVENT_LOG_RETENTION, LoggedEvent
from printfleet.core.events import json_text
from printfleet.core.history import HistoryChange, HistoryTotal, PrintRecord, Rating
from printfleet.core.identifiers import SURROGATES
from printfleet.core.model import (
    EMPTY,
    Print,
    Printer,
    Queue,
    Snapshot,
    frozen_mapping,
    iso,
    printer_without_raw,
)
from printfleet.errors import StoreError
from printfleet.store_file import describe, open_database

log = structlog.get_logger("printfleet.store")

FILENAME: Final = "state.sqlite3"
#: How many delivered ids are remembered, so the same decision is never enqueued twice.
DELIVERED_LOG_CAP: Final = 10_000
#: The event log is pruned at most this often (a DELETE over its time index).
EVENT_LOG_PRUNE_EVERY: Final = timedelta(hours=1)
#: Print history records read per query by :meth:`Store.iter_print_history`.
HISTORY_BATCH: Final = 1000
#: A printer whose only change is its heartbeat (``last_seen_at``) is rewritten this rarely.
LAST_SEEN_REFRESH: Final = timedelta(minutes=15)

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

_ENTRY_COLUMNS: Final = (
    "id, sink, event_id, key, created_at, payload, attempt, due_at, first_attempt_at, "
    "last_error, dead, response, enqueued_at, dead_at"
)


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """A persisted delivery and where it stands.

    ``due_at`` is ``None`` while the entry waits behind an earlier delivery with the same
    ordering key, and for dead-lettered entries. ``enqueued_at`` is when it was queued (or
    replayed): the outbox expires entries by this age.
    """

    delivery: Delivery
    attempt: int
    due_at: datetime | None
    first_attempt_at: datetime | None
    last_error: str | None
    dead: bool
    response: str | None
    enqueued_at: datetime
    dead_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class _Known:
    """What the database holds for one source's snapshot (to write only what changed)."""

    printers: Mapping[str, Printer]
    runs: Mapping[str, Print]
    vendor: str
    queues: Mapping[str, Queue]


class Store:
    """The state database. Open with :meth:`open`; use as a context manager or :meth:`close`."""

    def __init__(self, conn: sqlite3.Connection, path: Path, clock: Clock) -> None:
        """Use :meth:`open`."""
        self._conn: sqlite3.Connection | None = conn
        self._path = path
        self._clock = clock
        self._lock = threading.RLock()
        self._known: dict[str, _Known] = {}
        self._pruned_at: datetime | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path, *, clock: Clock | None = None) -> Store:
        """Open (creating directories, file and schema as needed) the database at ``path``.

        A corrupt or unopenable database is moved aside (``<name>.corrupt-<timestamp>``),
        logged once as an error and replaced by a fresh one; so is one written by a newer
        printfleet (``<name>.unsupported-<timestamp>``).

        Raises:
            StoreError: the directory cannot be created or written, the disk is full, the
                database is locked by another process, or a bad file cannot be moved aside.
        """
        clock = clock or SystemClock()
        path = Path(path)
        return cls(open_database(path, clock), path, clock)

    @property
    def path(self) -> Path:
        return self._path

    def close(self) -> None:
        """Close the database. Later calls raise :class:`StoreError`; closing twice is fine."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                with suppress(sqlite3.Error):
                    conn.execute("PRAGMA optimize")
                conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({str(self._path)!r})"

    # -- snapshots and state -----------------------------------------------------------------

    def load_snapshot(self, source: str) -> Snapshot | None:
        """The last committed snapshot of ``source`` (without vendor ``raw``), or ``None``.

        A stored snapshot that cannot be decoded is logged and treated as absent.

        Raises:
            StoreError: the database cannot be read.
        """
        with self._read("load the snapshot") as conn:
            row = conn.execute(
                "SELECT taken_at, body FROM snapshot WHERE source = ?", (source,)
            ).fetchone()
            if row is None:
                self._known.pop(source, None)
                return None
            printer_rows = conn.execute(
                "SELECT serial, body FROM snapshot_printer WHERE source = ? ORDER BY serial",
                (source,),
            ).fetchall()
        try:
            base = snapshot_from_json(json.loads(row[1]))
            printers = {
                _serial(serial): printer_from_json(json.loads(body))
                for serial, body in printer_rows
            }
        except (ValueError, TypeError, KeyError) as err:
            log.error("store.snapshot_unreadable", source=source, error=str(err))
            self._known.pop(source, None)
            return None
        snapshot = replace(base, taken_at=_from_us(row[0]), printers=frozen_mapping(printers))
        self._known[source] = _Known(
            printers, snapshot.runs, snapshot.vendor.value, snapshot.queues
        )
        return snapshot

    def load_state(self, key: str) -> Any | None:
        """The JSON value committed under ``key`` (rule timers, silences, watermarks), or ``None``.

        Raises:
            StoreError: the database cannot be read.
        """
        with self._read("load state") as conn:
            row = conn.execute(
                "SELECT value FROM state WHERE key = ?", (_text_key(key),)
            ).fetchone()
        return None if row is None else json.loads(row[0])

    def commit(
        self,
        *,
        snapshot: Snapshot | None = None,
        deliveries: Sequence[Delivery] = (),
        state: Mapping[str, Any] | None = None,
        history: Sequence[HistoryChange] = (),
        events: Sequence[LoggedEvent] = (),
    ) -> int:
        """Atomically store ``snapshot`` (replacing its source's), enqueue ``deliveries``, set
        ``state`` keys (a ``None`` value deletes the key), apply ``history`` in order and
        append ``events`` to the event log (older than 35 days are pruned, at most hourly).

        A delivery whose id is already queued, dead-lettered or recently delivered is ignored,
        so committing the same decision twice never sends it twice. Likewise a
        :class:`PrintRecord` whose ``(source, print_id)`` is already in the history is ignored
        (the first record stands), and a :class:`Rating` sets the verdict of the record it
        names (none yet: nothing to rate, ignored).

        Returns:
            How many deliveries were newly enqueued.

        Raises:
            StoreError: nothing was written (disk full, I/O error, locked); keep the arguments
                and pass them again with the next commit.
            TypeError: a payload or state value is not JSON-serialisable.
        """
        now = _us(self._clock.now())
        rows = [
            (
                d.id,
                d.sink,
                d.event_id,
                _text_key(d.key),
                _us(d.created_at),
                now,
                _dumps(d.payload),
                d.id,
            )
            for d in deliveries
        ]
        state_rows = [
            (_text_key(key), None if value is None else _dumps(value))
            for key, value in (state or {}).items()
        ]
        event_rows = [
            (_us(e.time), e.type, e.source, _text_key(e.subject), _dumps(dict(e.details)))
            for e in events
        ]
        prune = bool(event_rows) and (
            self._pruned_at is None or self._clock.now() - self._pruned_at >= EVENT_LOG_PRUNE_EVERY
        )
        known: _Known | None = None
        with self._transaction("commit") as conn:
            if snapshot is not None:
                known = self._write_snapshot(conn, snapshot)
            added = 0
            touched: set[tuple[str, str]] = set()
            for row in rows:
                cur = conn.execute(
                    "INSERT OR IGNORE INTO outbox "
                    "(id, sink, event_id, key, created_at, enqueued_at, payload) "
                    "SELECT ?, ?, ?, ?, ?, ?, ? "
                    "WHERE NOT EXISTS (SELECT 1 FROM delivered WHERE id = ?)",
                    row,
                )
                if cur.rowcount > 0:
                    added += 1
                    touched.add((row[1], row[3]))
            for sink, key in sorted(touched):
                _refresh_head(conn, sink, key, now)
            self._write_state(conn, state_rows)
            _write_history(conn, history)
            if event_rows:
                conn.executemany(
                    "INSERT INTO event_log (time, type, source, subject, details) "
                    "VALUES (?, ?, ?, ?, ?)",
                    event_rows,
                )
            if prune:
                conn.execute(
                    "DELETE FROM event_log WHERE time < ?",
                    (_us(self._clock.now() - EVENT_LOG_RETENTION),),
                )
        if prune:
            self._pruned_at = self._clock.now()
        if snapshot is not None and known is not None:
            self._known[snapshot.source] = known
        return added

    def logged_events(
        self, *, since: datetime, until: datetime, types: Sequence[str] = ()
    ) -> list[LoggedEvent]:
        """Event-log rows with ``since <= time < until`` (of ``types``, if given), oldest first.

        Raises:
            StoreError: the database cannot be read.
        """
        query = "SELECT time, type, source, subject, details FROM event_log "
        query += "WHERE time >= ? AND time < ?"
        params: list[Any] = [_us(since), _us(until)]
        if types:
            query += f" AND type IN ({', '.join('?' for _ in types)})"
            params.extend(types)
        with self._read("read the event log") as conn:
            rows = conn.execute(query + " ORDER BY time, seq", params).fetchall()
        return [_logged(r) for r in rows]

    def last_logged_events(self, *, before: datetime, types: Sequence[str]) -> list[LoggedEvent]:
        """The latest event-log row of ``types`` before ``before``, one per source and subject.

        Raises:
            StoreError: the database cannot be read.
        """
        marks = ", ".join("?" for _ in types)
        # SQLite takes the bare columns of a MAX() aggregate from the row holding the maximum.
        query = (
            "SELECT MAX(time), type, source, subject, details FROM event_log "  # noqa: S608
            f"WHERE time < ? AND type IN ({marks}) GROUP BY source, subject"
        )
        with self._read("read the event log") as conn:
            rows = conn.execute(query, [_us(before), *types]).fetchall()
        return [_logged(r) for r in rows]

    def _write_snapshot(self, conn: sqlite3.Connection, snapshot: Snapshot) -> _Known:
        source = snapshot.source
        known = self._known.get(source)
        if known is None:  # first commit since open: the database may hold an older one
            stored = {
                _serial(r[0])
                for r in conn.execute(
                    "SELECT serial FROM snapshot_printer WHERE source = ?", (source,)
                )
            }
            changed = list(snapshot.printers.items())
            removed = stored - snapshot.printers.keys()
            held = {serial: printer_without_raw(p) for serial, p in changed}
        else:
            # ``held`` mirrors the rows: a printer not rewritten keeps its stored version.
            changed, held = [], {}
            for serial, printer in snapshot.printers.items():
                old = known.printers.get(serial)
                if old is None or _printer_changed(old, printer):
                    changed.append((serial, printer))
                    held[serial] = printer_without_raw(printer)
                else:
                    held[serial] = old
            removed = known.printers.keys() - snapshot.printers.keys()
        if changed:
            conn.executemany(
                "INSERT OR REPLACE INTO snapshot_printer (source, serial, body) VALUES (?, ?, ?)",
                [(source, _serial_key(s), _dumps(printer_to_json(p))) for s, p in changed],
            )
        if removed:
            conn.executemany(
                "DELETE FROM snapshot_printer WHERE source = ? AND serial = ?",
                [(source, _serial_key(serial)) for serial in removed],
            )
        taken_at = _us(snapshot.taken_at)
        if (
            known is not None
            and known.vendor == snapshot.vendor.value
            and known.runs == snapshot.runs
            and known.queues == snapshot.queues
        ):
            conn.execute("UPDATE snapshot SET taken_at = ? WHERE source = ?", (taken_at, source))
        else:
            base = replace(snapshot, printers=EMPTY, skipped=())
            conn.execute(
                "INSERT OR REPLACE INTO snapshot (source, taken_at, body) VALUES (?, ?, ?)",
                (source, taken_at, _dumps(snapshot_to_json(base))),
            )
        return _Known(held, snapshot.runs, snapshot.vendor.value, snapshot.queues)

    def _write_state(
        self, conn: sqlite3.Connection, rows: Sequence[tuple[str, str | None]]
    ) -> None:
        for key, value in rows:
            if value is None:
                conn.execute("DELETE FROM state WHERE key = ?", (key,))
            else:
                conn.execute(
                    "INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", (key, value)
                )

    # -- print history -----------------------------------------------------------------------

    def print_history(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        source: str | None = None,
    ) -> list[PrintRecord]:
        """Prints that reached an outcome with ``since <= finished_at < until`` (either bound
        may be left open), of ``source`` or of all sources, oldest first.

        Raises:
            StoreError: the database cannot be read.
        """
        return list(self.iter_print_history(since, until, source))

    def iter_print_history(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        source: str | None = None,
        *,
        batch: int = HISTORY_BATCH,
    ) -> Iterator[PrintRecord]:
        """What :meth:`print_history` returns, read ``batch`` records at a time.

        For exports of any size: a year of a large fleet is millions of records, too many to
        hold at once. Each batch is its own short read (keyset paging on the sort order), so
        the lock is never held between batches and a writer is not kept waiting.

        Raises:
            StoreError: the database cannot be read.
        """
        where = ""
        params: list[Any] = []
        if since is not None:
            where += " AND finished_at >= ?"
            params.append(_us(since))
        if until is not None:
            where += " AND finished_at < ?"
            params.append(_us(until))
        if source is not None:
            where += " AND source = ?"
            params.append(_text_key(source))
        after: tuple[Any, ...] | None = None
        while True:
            # INDEXED BY: with a source filter the planner may take the primary key and sort
            # the source's whole history again for every batch.
            query = (
                f"SELECT {_HISTORY_COLUMNS} FROM print_history "  # noqa: S608
                f"INDEXED BY print_history_time WHERE 1 = 1{where}"
            )
            page = list(params)
            if after is not None:
                query += " AND (finished_at, source, print_id) > (?, ?, ?)"
                page += after
            query += " ORDER BY finished_at, source, print_id LIMIT ?"
            page.append(batch)
            with self._read("read the print history") as conn:
                rows = conn.execute(query, page).fetchall()
            for row in rows:
                yield _record(row)
            if len(rows) < batch:
                return
            last = rows[-1]
            after = (last[7], last[0], last[4])  # finished_at, source, print_id as stored

    def history_totals(self, source: str) -> list[HistoryTotal]:
        """The print history of ``source`` summed per printer, outcome and material (kept as
        running sums by :meth:`commit`, so this costs one row per printer and material however
        long the history is).

        Raises:
            StoreError: the database cannot be read.
        """
        with self._read("sum the print history") as conn:
            rows = conn.execute(
                "SELECT serial, outcome, material, prints, volume_ml, with_volume "
                "FROM print_totals WHERE source = ? ORDER BY serial, outcome, material",
                (_text_key(source),),
            ).fetchall()
        return [
            HistoryTotal(
                source=source,
                serial=serial,
                outcome=outcome,
                material=material or None,
                prints=int(prints),
                volume_ml=float(volume),
                with_volume=int(with_volume),
            )
            for serial, outcome, material, prints, volume, with_volume in rows
        ]

    # -- outbox ------------------------------------------------------------------------------

    def due(self, sink: str, now: datetime, limit: int = 100) -> list[OutboxEntry]:
        """Pending entries of ``sink`` due at ``now``: at most one per ordering key (its
        oldest pending one), oldest due first.

        Raises:
            StoreError: the database cannot be read.
        """
        with self._read("read due deliveries") as conn:
            rows = conn.execute(
                f"SELECT {_ENTRY_COLUMNS} FROM outbox "  # noqa: S608 (constant columns)
                "WHERE sink = ? AND due_at IS NOT NULL AND due_at <= ? "
                "ORDER BY due_at, seq LIMIT ?",
                (sink, _us(now), limit),
            ).fetchall()
        return [_entry(r) for r in rows]

    def next_due_at(self, sink: str) -> datetime | None:
        """When the next pending entry of ``sink`` becomes due (``None``: nothing pending).

        Raises:
            StoreError: the database cannot be read.
        """
        with self._read("read the next due time") as conn:
            row = conn.execute(
                "SELECT MIN(due_at) FROM outbox WHERE sink = ? AND due_at IS NOT NULL", (sink,)
            ).fetchone()
        return None if row is None or row[0] is None else _from_us(row[0])

    def mark_delivered(self, delivery_id: str) -> None:
        """Remove a delivered entry (remembering its id) and make the next one of its key due.

        Unknown ids (dropped meanwhile) are ignored.

        Raises:
            StoreError: the change was not written; the entry stays pending.
        """
        now = _us(self._clock.now())
        with self._transaction("mark a delivery as delivered") as conn:
            row = conn.execute(
                "SELECT sink, key FROM outbox WHERE id = ?", (delivery_id,)
            ).fetchone()
            if row is None:
                return
            conn.execute("DELETE FROM outbox WHERE id = ?", (delivery_id,))
            conn.execute(
                "INSERT OR REPLACE INTO delivered (id, sink, delivered_at) VALUES (?, ?, ?)",
                (delivery_id, row[0], now),
            )
            conn.execute(
                "DELETE FROM delivered WHERE n <= (SELECT MAX(n) FROM delivered) - ?",
                (DELIVERED_LOG_CAP,),
            )
            _refresh_head(conn, row[0], row[1], now)

    def reschedule(self, delivery_id: str, *, due_at: datetime, error: str) -> None:
        """Record a failed attempt (``attempt += 1``) and retry the entry at ``due_at``.

        Raises:
            StoreError: the change was not written.
        """
        now = _us(self._clock.now())
        with self._transaction("reschedule a delivery") as conn:
            conn.execute(
                "UPDATE outbox SET attempt = attempt + 1, last_error = ?, "
                "first_attempt_at = COALESCE(first_attempt_at, ?), "
                "due_at = CASE WHEN due_at IS NULL THEN NULL ELSE ? END "
                "WHERE id = ? AND dead = 0",
                (error, now, _us(due_at), delivery_id),
            )

    def dead_letter(
        self,
        delivery_id: str,
        *,
        error: str,
        response: str | None = None,
        attempted: bool = True,
    ) -> None:
        """Move an entry to the dead-letter table with the reason and the receiver's response.

        ``attempted`` says whether this follows a delivery attempt (counted in ``attempt``);
        expiry without a new attempt passes ``False``.

        Raises:
            StoreError: the change was not written.
        """
        now = _us(self._clock.now())
        with self._transaction("dead-letter a delivery") as conn:
            row = conn.execute(
                "SELECT sink, key FROM outbox WHERE id = ? AND dead = 0", (delivery_id,)
            ).fetchone()
            if row is None:
                return
            conn.execute(
                "UPDATE outbox SET dead = 1, dead_at = ?, due_at = NULL, last_error = ?, "
                "response = ?, attempt = attempt + ?, "
                "first_attempt_at = CASE WHEN ? THEN COALESCE(first_attempt_at, ?) "
                "ELSE first_attempt_at END "
                "WHERE id = ?",
                (now, error, response, int(attempted), int(attempted), now, delivery_id),
            )
            _refresh_head(conn, row[0], row[1], now)

    def expedite(self, sink: str) -> int:
        """Make every pending entry of ``sink`` that waits for a backoff due now (the sink
        recovered: no need to wait out each entry's backoff). Returns how many moved.

        Raises:
            StoreError: the change was not written.
        """
        now = _us(self._clock.now())
        with self._transaction("expedite deliveries") as conn:
            cur = conn.execute(
                "UPDATE outbox SET due_at = ? WHERE sink = ? AND due_at IS NOT NULL AND due_at > ?",
                (now, sink, now),
            )
            return max(0, cur.rowcount)

    def pending_count(self, sink: str | None = None) -> dict[str, int]:
        """Pending (not dead) entries per sink; ``{sink: n}`` (possibly 0) when ``sink`` is given.

        Raises:
            StoreError: the database cannot be read.
        """
        return self._count(dead=False, sink=sink)

    def dead_count(self, sink: str | None = None) -> dict[str, int]:
        """Dead-lettered entries per sink; ``{sink: n}`` (possibly 0) when ``sink`` is given.

        Raises:
            StoreError: the database cannot be read.
        """
        return self._count(dead=True, sink=sink)

    def _count(self, *, dead: bool, sink: str | None) -> dict[str, int]:
        with self._read("count deliveries") as conn:
            if sink is None:
                rows = conn.execute(
                    "SELECT sink, COUNT(*) FROM outbox WHERE dead = ? GROUP BY sink ORDER BY sink",
                    (int(dead),),
                ).fetchall()
                return {str(s): int(n) for s, n in rows}
            row = conn.execute(
                "SELECT COUNT(*) FROM outbox WHERE dead = ? AND sink = ?", (int(dead), sink)
            ).fetchone()
        return {sink: int(row[0])}

    def list_entries(
        self, *, sink: str | None = None, dead: bool = False, limit: int = 100
    ) -> list[OutboxEntry]:
        """Pending (or with ``dead``, dead-lettered) entries, oldest first.

        Raises:
            StoreError: the database cannot be read.
        """
        query = f"SELECT {_ENTRY_COLUMNS} FROM outbox WHERE dead = ?"  # noqa: S608
        params: list[Any] = [int(dead)]
        if sink is not None:
            query += " AND sink = ?"
            params.append(sink)
        query += " ORDER BY created_at, seq LIMIT ?"
        params.append(limit)
        with self._read("list deliveries") as conn:
            rows = conn.execute(query, params).fetchall()
        return [_entry(r) for r in rows]

    def replay(self, ids: Sequence[str] = (), *, sink: str | None = None) -> int:
        """Move dead-lettered entries back to pending, due now, attempts reset (the age for
        expiry restarts too; ``last_error`` is kept for reference). Selects ``ids`` and/or
        ``sink``; neither means every dead entry. Returns how many were replayed.

        Raises:
            StoreError: nothing was changed.
        """
        now = _us(self._clock.now())
        with self._transaction("replay deliveries") as conn:
            rows = self._select(conn, ids, sink, dead=True)
            if not rows:
                return 0
            conn.executemany(
                "UPDATE outbox SET dead = 0, dead_at = NULL, attempt = 0, "
                "first_attempt_at = NULL, response = NULL, due_at = NULL, enqueued_at = ? "
                "WHERE id = ?",
                [(now, r[0]) for r in rows],
            )
            for s, key in sorted({(r[1], r[2]) for r in rows}):
                _refresh_head(conn, s, key, now)
            return len(rows)

    def drop(self, ids: Sequence[str] = (), *, sink: str | None = None, dead: bool = True) -> int:
        """Delete dead-lettered (or with ``dead=False``, pending) entries selected by ``ids``
        and/or ``sink``; neither means all of them. Returns how many were deleted.

        Raises:
            StoreError: nothing was changed.
        """
        now = _us(self._clock.now())
        with self._transaction("drop deliveries") as conn:
            rows = self._select(conn, ids, sink, dead=dead)
            conn.executemany("DELETE FROM outbox WHERE id = ?", [(r[0],) for r in rows])
            if not dead:
                for s, key in sorted({(r[1], r[2]) for r in rows}):
                    _refresh_head(conn, s, key, now)
            return len(rows)

    @staticmethod
    def _select(
        conn: sqlite3.Connection, ids: Sequence[str], sink: str | None, *, dead: bool
    ) -> list[tuple[str, str, str]]:
        query = "SELECT id, sink, key FROM outbox WHERE dead = ?"
        params: list[Any] = [int(dead)]
        if sink is not None:
            query += " AND sink = ?"
            params.append(sink)
        if not ids:
            return [tuple(r) for r in conn.execute(query, params)]
        found: list[tuple[str, str, str]] = []
        for delivery_id in dict.fromkeys(ids):
            found += [tuple(r) for r in conn.execute(query + " AND id = ?", [*params, delivery_id])]
        return found

    # -- plumbing ----------------------------------------------------------------------------

    def _require(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"the state database {self._path} is closed")
        return self._conn

    @contextmanager
    def _read(self, what: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._require()
            try:
                yield conn
            except sqlite3.Error as err:
                raise StoreError(describe(what, self._path, err)) from err

    @contextmanager
    def _transaction(self, what: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._require()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as err:
                raise StoreError(describe(what, self._path, err)) from err
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as err:
                with suppress(sqlite3.Error):  # SQLite may have rolled back already
                    conn.execute("ROLLBACK")
                if isinstance(err, sqlite3.Error):
                    raise StoreError(describe(what, self._path, err)) from err
                raise


# -- helpers -----------------------------------------------------------------------------------


def _refresh_head(conn: sqlite3.Connection, sink: str, key: str, now: int) -> None:
    """Keep the invariant: only the oldest pending entry of (sink, key) has a ``due_at``."""
    head = conn.execute(
        "SELECT id, due_at FROM outbox WHERE sink = ? AND key = ? AND dead = 0 "
        "ORDER BY created_at, seq LIMIT 1",
        (sink, key),
    ).fetchone()
    for (other,) in conn.execute(
        # Without INDEXED BY the planner may pick outbox_due and scan every head of the sink.
        "SELECT id FROM outbox INDEXED BY outbox_head "
        "WHERE sink = ? AND key = ? AND due_at IS NOT NULL",
        (sink, key),
    ).fetchall():
        if head is None or other != head[0]:
            conn.execute("UPDATE outbox SET due_at = NULL WHERE id = ?", (other,))
    if head is not None and head[1] is None:
        conn.execute("UPDATE outbox SET due_at = ? WHERE id = ?", (now, head[0]))


_HISTORY_COLUMNS: Final = (
    "source, serial, printer_name, grp, print_id, name, outcome, finished_at, started_at, "
    "duration_s, material, volume_ml, verdict, verdict_note, verdict_by"
)


def _write_history(conn: sqlite3.Connection, changes: Sequence[HistoryChange]) -> None:
    for change in changes:
        if isinstance(change, Rating):
            conn.execute(
                "UPDATE print_history SET verdict = ?, verdict_note = ?, verdict_by = ? "
                "WHERE source = ? AND print_id = ?",
                (
                    _opt_text(change.verdict),
                    _opt_text(change.note),
                    _opt_text(change.by),
                    _text_key(change.source),
                    _text_key(change.print_id),
                ),
            )
            continue
        r = change
        cur = conn.execute(
            f"INSERT OR IGNORE INTO print_history ({_HISTORY_COLUMNS}) "  # noqa: S608
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                _text_key(r.source),
                _text_key(r.serial),
                _text_key(r.printer_name),
                _opt_text(r.group),
                _text_key(r.print_id),
                _text_key(r.name),
                r.outcome,
                _us(r.finished_at),
                None if r.started_at is None else _us(r.started_at),
                r.duration_s,
                _opt_text(r.material),
                r.volume_ml,
                _opt_text(r.verdict),
                _opt_text(r.verdict_note),
                _opt_text(r.verdict_by),
            ),
        )
        if cur.rowcount > 0:  # a new print, not one recorded already
            conn.execute(
                "INSERT INTO print_totals "
                "(source, serial, outcome, material, prints, volume_ml, with_volume) "
                "VALUES (?, ?, ?, ?, 1, ?, ?) "
                "ON CONFLICT (source, serial, outcome, material) DO UPDATE SET "
                "prints = prints + 1, volume_ml = volume_ml + excluded.volume_ml, "
                "with_volume = with_volume + excluded.with_volume",
                (
                    _text_key(r.source),
                    _text_key(r.serial),
                    r.outcome,
                    _text_key(r.material or ""),
                    r.volume_ml or 0.0,
                    int(r.volume_ml is not None),
                ),
            )


def _record(row: Sequence[Any]) -> PrintRecord:
    (
        source,
        serial,
        printer_name,
        group,
        print_id,
        name,
        outcome,
        finished_at,
        started_at,
        duration_s,
        material,
        volume_ml,
        verdict,
        verdict_note,
        verdict_by,
    ) = row
    return PrintRecord(
        source=source,
        serial=serial,
        printer_name=printer_name,
        group=group,
        print_id=print_id,
        name=name,
        outcome=outcome,
        finished_at=_from_us(finished_at),
        started_at=None if started_at is None else _from_us(started_at),
        duration_s=None if duration_s is None else float(duration_s),
        material=material,
        volume_ml=None if volume_ml is None else float(volume_ml),
        verdict=verdict,
        verdict_note=verdict_note,
        verdict_by=verdict_by,
    )


def _opt_text(text: str | None) -> str | None:
    return None if text is None else _text_key(text)


def _printer_changed(old: Printer | None, new: Printer) -> bool:
    if old is new:
        return False
    if old is None or old != new:
        return True
    before, after = old.last_seen_at, new.last_seen_at
    if before is None or after is None:
        return before is not after
    return abs(after - before) >= LAST_SEEN_REFRESH


def _entry(row: Sequence[Any]) -> OutboxEntry:
    (
        delivery_id,
        sink,
        event_id,
        key,
        created_at,
        payload,
        attempt,
        due_at,
        first_attempt_at,
        last_error,
        dead,
        response,
        enqueued_at,
        dead_at,
    ) = row
    return OutboxEntry(
        delivery=Delivery(
            id=delivery_id,
            sink=sink,
            event_id=event_id,
            key=key,
            created_at=_from_us(created_at),
            payload=json.loads(payload),
        ),
        attempt=int(attempt),
        due_at=None if due_at is None else _from_us(due_at),
        first_attempt_at=None if first_attempt_at is None else _from_us(first_attempt_at),
        last_error=last_error,
        dead=bool(dead),
        response=response,
        enqueued_at=_from_us(enqueued_at),
        dead_at=None if dead_at is None else _from_us(dead_at),
    )


def _logged(row: Sequence[Any]) -> LoggedEvent:
    time, kind, source, subject, details = row
    return LoggedEvent(str(kind), str(source), str(subject), _from_us(time), json.loads(details))


def _us(value: datetime) -> int:
    """Microseconds since the epoch (naive datetimes are taken as UTC); exact, sortable."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _from_us(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=int(value))


def _dumps(value: Any) -> str:
    # A lone surrogate (a vendor's "\ud800X") cannot be stored as UTF-8 text; JSON's own
    # \ud800 escape can, and json.loads gives back the exact string.
    return json_text(value, default=_json_default)


def _encodable(text: str) -> bool:
    return text.isascii() or SURROGATES.search(text) is None


def _serial_key(serial: str) -> str | bytes:
    """A serial as stored in ``snapshot_printer.serial``: the text itself, or, when it holds a
    lone surrogate (not UTF-8 encodable), its ``surrogatepass`` bytes as a BLOB. SQLite never
    compares a BLOB equal to TEXT, so every serial keeps a key of its own."""
    return serial if _encodable(serial) else serial.encode("utf-8", "surrogatepass")


def _serial(stored: str | bytes) -> str:
    """The serial back from :func:`_serial_key`'s form."""
    return stored if isinstance(stored, str) else stored.decode("utf-8", "surrogatepass")


def _text_key(key: str) -> str:
    """An outbox ordering key or state key that SQLite can store as text: unchanged unless it
    holds a lone surrogate, whose bytes are then written escaped (``\\xed\\xa0\\x80``).
    These keys only group rows, so the rare lossy case costs shared ordering, never a row.
    Print history text (vendor names) is stored the same way: exact unless it cannot be."""
    if _encodable(key):
        return key
    return key.encode("utf-8", "surrogatepass").decode("utf-8", "backslashreplace")


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")
