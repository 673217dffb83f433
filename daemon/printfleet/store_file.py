"""The state database file: opening it, keeping its schema current, replacing it when unusable.

Everything here runs once, when :meth:`printfleet.store.Store.open` is called; the store's
queries never need it again except :func:`describe`, which words every SQLite failure as a
:class:`~printfleet.errors.StoreError`. Kept apart from :mod:`printfleet.store` so that the
store reads as its tables and transactions, and the start-up concerns — WAL mode, the
integrity check, migrations, moving a bad file aside — read as one sequence.

**Never a crash loop.** A database that is corrupt or cannot be opened is renamed to
``state.sqlite3.corrupt-<timestamp>`` (with its ``-wal``/``-shm``), logged once as an error,
and replaced by an empty one. One written by a newer printfleet (a higher ``user_version``) is
moved aside the same way as ``.unsupported-<timestamp>``.
"""

from __future__ import annotations

import os
import sqlite3
from datetime import UTC
from pathlib import Path
from typing import Final

import structlog

from printfleet.clock import Clock
from printfleet.errors import StoreError

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "describe", "open_database"]

# Same logger name as the store: the file's replacement is the store's event.
log = structlog.get_logger("printfleet.store")

# Each entry upgrades the schema by one version (PRAGMA user_version). Append, never edit.
MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        """CREATE TABLE snapshot (
            source   TEXT PRIMARY KEY,
            taken_at INTEGER NOT NULL,  -- microseconds since the epoch, UTC
            body     TEXT NOT NULL      -- codec JSON of the snapshot without printers
        )""",
        """CREATE TABLE snapshot_printer (
            source TEXT NOT NULL,
            serial TEXT NOT NULL,
            body   TEXT NOT NULL,       -- codec JSON of one printer, without raw
            PRIMARY KEY (source, serial)
        ) WITHOUT ROWID""",
        """CREATE TABLE state (
            key   TEXT PRIMARY KEY,
            value TEXT NOT NULL         -- JSON
        ) WITHOUT ROWID""",
        """CREATE TABLE outbox (
            seq              INTEGER PRIMARY KEY,  -- insertion order: ties of created_at
            id               TEXT NOT NULL UNIQUE,
            sink             TEXT NOT NULL,
            event_id         TEXT NOT NULL,
            key              TEXT NOT NULL,
            created_at       INTEGER NOT NULL,
            enqueued_at      INTEGER NOT NULL,     -- age for expiry (reset by replay)
            payload          TEXT NOT NULL,
            attempt          INTEGER NOT NULL DEFAULT 0,
            due_at           INTEGER,              -- only the head of each key has one
            first_attempt_at INTEGER,
            last_error       TEXT,
            dead             INTEGER NOT NULL DEFAULT 0,
            dead_at          INTEGER,
            response         TEXT
        )""",
        "CREATE INDEX outbox_order ON outbox (sink, key, dead, created_at, seq)",
        "CREATE INDEX outbox_due ON outbox (sink, due_at) WHERE due_at IS NOT NULL",
        "CREATE INDEX outbox_head ON outbox (sink, key) WHERE due_at IS NOT NULL",
        """CREATE TABLE delivered (
            n            INTEGER PRIMARY KEY,
            id           TEXT NOT NULL UNIQUE,
            sink         TEXT NOT NULL,
            delivered_at INTEGER NOT NULL
        )""",
    ),
    (
        # One row per print that reached an outcome (core.history.PrintRecord), written in the
        # poll's commit; the key makes a re-detected outcome a no-op. Times in microseconds.
        """CREATE TABLE print_history (
            source       TEXT NOT NULL,
            print_id     TEXT NOT NULL,
            serial       TEXT NOT NULL,
            printer_name TEXT NOT NULL,
            grp          TEXT,
            name         TEXT NOT NULL,
            outcome      TEXT NOT NULL,
            finished_at  INTEGER NOT NULL,
            started_at   INTEGER,
            duration_s   REAL,
            material     TEXT,
            volume_ml    REAL,
            verdict      TEXT,
            verdict_note TEXT,
            verdict_by   TEXT,
            PRIMARY KEY (source, print_id)
        ) WITHOUT ROWID""",
        # The export order (and the keyset paging of Store.iter_print_history) in one index.
        "CREATE INDEX print_history_time ON print_history (finished_at, source, print_id)",
        # Running sums of print_history per printer, outcome and material ('' when unknown),
        # kept by the same INSERT: what the counters start from, without scanning a history
        # that grows by millions of rows a year in a large fleet.
        """CREATE TABLE print_totals (
            source      TEXT NOT NULL,
            serial      TEXT NOT NULL,
            outcome     TEXT NOT NULL,
            material    TEXT NOT NULL,
            prints      INTEGER NOT NULL,
            volume_ml   REAL NOT NULL,     -- summed over the prints with a known volume
            with_volume INTEGER NOT NULL,
            PRIMARY KEY (source, serial, outcome, material)
        ) WITHOUT ROWID""",
    ),
    (
        # The digests' event log (printfleet.core.digest.LOGGED_TYPES only): offline spans and
        # warnings over a period. Written in the poll commit, pruned after 35 days.
        """CREATE TABLE event_log (
            seq     INTEGER PRIMARY KEY,
            time    INTEGER NOT NULL,   -- microseconds since the epoch, UTC
            type    TEXT NOT NULL,
            source  TEXT NOT NULL,
            subject TEXT NOT NULL,
            details TEXT NOT NULL       -- JSON object
        )""",
        "CREATE INDEX event_log_time ON event_log (time)",
        "CREATE INDEX event_log_subject ON event_log (source, subject, time)",
    ),
)
SCHEMA_VERSION: Final = len(MIGRATIONS)

# SQLite primary result codes (https://www.sqlite.org/rescode.html).
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY, _SQLITE_IOERR = 5, 6, 8, 10
_SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_CANTOPEN, _SQLITE_NOTADB = 11, 13, 14, 26
_UNUSABLE = frozenset({_SQLITE_CORRUPT, _SQLITE_NOTADB, _SQLITE_CANTOPEN, _SQLITE_READONLY})


class _Unusable(Exception):
    """The database file cannot be used and should be moved aside (internal)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def open_database(path: Path, clock: Clock) -> sqlite3.Connection:
    """A connection to the current-schema database at ``path``, creating what is missing.

    A file that cannot be used (corrupt, not a database, written by a newer printfleet) is
    moved aside with :func:`_move_aside`, logged once as an error and replaced by a fresh one.

    Raises:
        StoreError: the directory cannot be created or written, the disk is full, the
            database is locked by another process, or a bad file cannot be moved aside.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StoreError(f"cannot create the state directory {path.parent}: {err}") from err
    try:
        conn = _connect(path)
    except _Unusable as bad:
        moved = _move_aside(path, bad.reason, clock)
        log.error(
            "store.replaced",
            path=str(path),
            moved_to=str(moved),
            reason=bad.reason,
            hint="a fresh database was created; printers are re-learned on the next poll",
        )
        try:
            conn = _connect(path)
        except _Unusable as again:
            raise StoreError(
                f"cannot create a fresh state database at {path}: {again.reason}"
            ) from None
    return conn


def _connect(path: Path) -> sqlite3.Connection:
    """Open, check and migrate the database; raise :class:`_Unusable` when it must be replaced."""
    existed = path.exists()
    conn: sqlite3.Connection | None = None
    try:
        conn = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=False)
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()
        if mode is None or str(mode[0]).lower() != "wal":
            raise StoreError(f"cannot switch {path} to WAL mode (got {mode!r})")
        conn.execute("PRAGMA synchronous=NORMAL")
        check = conn.execute("PRAGMA quick_check").fetchall()
        if [tuple(r) for r in check] != [("ok",)]:
            raise _Unusable(f"integrity check failed: {'; '.join(str(r[0]) for r in check[:3])}")
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise _Unusable(
                f"schema version {version} is newer than this printfleet supports "
                f"({SCHEMA_VERSION}); it was written by a newer release"
            )
        for number in range(version, SCHEMA_VERSION):
            conn.execute("BEGIN IMMEDIATE")
            try:
                # Another process (a second daemon, `printfleet outbox list`) may have run this
                # migration while we waited for the write lock: re-check under the lock.
                if int(conn.execute("PRAGMA user_version").fetchone()[0]) > number:
                    conn.execute("COMMIT")
                    continue
                for statement in MIGRATIONS[number]:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number + 1}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return conn
    except sqlite3.Error as err:
        if conn is not None:
            conn.close()
        code = (getattr(err, "sqlite_errorcode", 0) or 0) & 0xFF
        if existed and code in _UNUSABLE:
            raise _Unusable(f"{getattr(err, 'sqlite_errorname', 'error')}: {err}") from None
        raise StoreError(describe("open", path, err)) from err
    except BaseException:
        if conn is not None:
            conn.close()
        raise


def _move_aside(path: Path, reason: str, clock: Clock) -> Path:
    label = "unsupported" if reason.startswith("schema version") else "corrupt"
    stamp = clock.now().astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.{label}-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.{label}-{stamp}-{n}")
    try:
        os.replace(path, target)
        for suffix in ("-wal", "-shm"):
            extra = path.with_name(path.name + suffix)
            if extra.exists():
                os.replace(extra, target.with_name(target.name + suffix))
    except OSError as err:
        raise StoreError(
            f"the state database {path} is unusable ({reason}) and could not be moved aside: "
            f"{err}; move or delete it by hand"
        ) from err
    return target


def describe(what: str, path: Path, err: sqlite3.Error) -> str:
    code = (getattr(err, "sqlite_errorcode", 0) or 0) & 0xFF
    if code == _SQLITE_FULL:
        hint = "the disk is full; free space in " + str(path.parent)
    elif code == _SQLITE_IOERR:
        hint = "disk I/O error; check the disk and file system"
    elif code in (_SQLITE_BUSY, _SQLITE_LOCKED):
        hint = "the database is locked by another process; retry"
    elif code == _SQLITE_READONLY:
        hint = f"the database is read-only; check ownership and permissions of {path.parent}"
    else:
        hint = str(err)
    return f"state database {path}: could not {what}: {hint} ({err})"
