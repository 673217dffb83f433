"""``printfleet history export``: the print history as JSON lines or CSV, for reports.

Reads the state database (safe beside a running daemon: SQLite WAL lets a second connection
read while the daemon writes); it never changes a record. One record per print that reached
an outcome, oldest first (:class:`printfleet.core.history.PrintRecord`).

**CSV and spreadsheets.** Print, printer and material names are vendor text that anyone with
access to the printer account can set. A cell that starts with ``=``, ``+``, ``-``, ``@``, a
tab or a carriage return is a formula to Excel, LibreOffice and Google Sheets (CSV injection);
such cells are written with a leading ``'``, as OWASP recommends, so they show as text. JSON
lines are data, not a spreadsheet, and stay exact.
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TextIO

from printfleet.config import Settings
from printfleet.core.durations import parse_duration
from printfleet.core.events import json_text
from printfleet.core.history import PrintRecord
from printfleet.core.identifiers import safe_text
from printfleet.core.model import iso
from printfleet.errors import EXIT_OK
from printfleet.store import FILENAME, Store

#: The columns, in PrintRecord's field order (the JSON keys are the same names).
COLUMNS: Final = tuple(f.name for f in dataclasses.fields(PrintRecord))
#: First characters that make a spreadsheet cell a formula (OWASP "CSV Injection").
FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")


def parse_since(text: str) -> datetime | timedelta:
    """``7d`` (a duration back from now) or an ISO date/time (``2026-11-01``,
    ``2026-11-01T08:00+01:00``; without a zone it is UTC).

    Raises:
        ValueError: neither; the message shows both forms.
    """
    try:
        return parse_duration(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration (e.g. 7d, 12h) nor an ISO date or time "
            "(e.g. 2026-11-01, 2026-11-01T08:00+01:00)"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def history_export(
    settings: Settings,
    *,
    since: datetime | timedelta | None,
    until: datetime | timedelta | None = None,
    source: str | None = None,
    as_csv: bool = False,
    out: TextIO,
    err: TextIO,
    now: datetime | None = None,
) -> int:
    """Write the print history of ``settings.daemon.state_dir`` to ``out``.

    ``since`` and ``until`` bound ``finished_at`` (since inclusive, until exclusive); a
    duration means that long before ``now``. JSON lines by default; with ``as_csv`` a CSV
    with a header row. Notes (no database yet) go to ``err`` so ``out`` stays data.

    Returns:
        0 (an empty history is not an error).

    Raises:
        StoreError: the state database cannot be opened or read.
    """
    now = now or datetime.now(UTC)
    path = settings.daemon.state_dir / FILENAME
    if not path.exists():
        err.write(f"no state database at {path}: no print history yet\n")
        _write((), as_csv=as_csv, out=out)
        return EXIT_OK
    with Store.open(path) as store:
        # Streamed batch by batch: a large fleet's year does not fit in memory at once.
        records = store.iter_print_history(
            since=_point(since, now), until=_point(until, now), source=source
        )
        _write(records, as_csv=as_csv, out=out)
    return EXIT_OK


def _write(records: Iterable[PrintRecord], *, as_csv: bool, out: TextIO) -> None:
    if as_csv:
        write_csv(records, out)
    else:
        for record in records:
            out.write(json_text(as_json(record)) + "\n")


def as_json(record: PrintRecord) -> dict[str, Any]:
    """One record as a JSON object: the PrintRecord fields, times in RFC 3339 UTC."""
    data = dataclasses.asdict(record)
    for key in ("finished_at", "started_at"):
        data[key] = iso(data[key])
    return data


def write_csv(records: Iterable[PrintRecord], out: TextIO) -> None:
    """A header row, then one row per record (RFC 4180; formula-like cells quoted with ')."""
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    for record in records:
        writer.writerow([_cell(value) for value in as_json(record).values()])


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    text = safe_text(str(value))  # the terminal or file needs UTF-8; CSV is for display
    return "'" + text if text.startswith(FORMULA_START) else text


def _point(value: datetime | timedelta | None, now: datetime) -> datetime | None:
    if isinstance(value, timedelta):
        return now - value
    return value
