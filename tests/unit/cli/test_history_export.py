"""`printfleet history export`: the real command line over a real state database."""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import printfleet
from printfleet.cli.history import COLUMNS, as_json
from printfleet.core.history import PrintRecord
from printfleet.store import FILENAME, Store

DAEMON_DIR = str(Path(printfleet.__file__).resolve().parent.parent)
NOW = datetime.now(UTC).replace(microsecond=0)

#: Vendor text a spreadsheet would run as a formula (OWASP "CSV Injection" examples).
HOSTILE = ['=HYPERLINK("http://evil.example","x")', "+1+1", "-2+3", "@SUM(A1)", "\tcmd"]


def record(print_id: str, hours_ago: float, **kw: object) -> PrintRecord:
    at = NOW - timedelta(hours=hours_ago)
    fields: dict[str, object] = {
        "source": "lab",
        "serial": "F1",
        "printer_name": "Bob",
        "group": "Lab A",
        "print_id": print_id,
        "name": f"job {print_id}",
        "outcome": "finished",
        "finished_at": at,
        "started_at": at - timedelta(hours=2),
        "duration_s": 7200.0,
        "material": "Grey V5",
        "volume_ml": 12.5,
    }
    fields.update(kw)
    return PrintRecord(**fields)  # type: ignore[arg-type]


RECORDS = [
    record("old", 50, verdict="FAILURE", verdict_note='warped, see "notes"', verdict_by="ana"),
    record("mid", 5, group=None, started_at=None, duration_s=None, volume_ml=None),
    record("new", 1, source="other", outcome="aborted", name="tray, 2nd\nrun ünï"),
]


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n\n[mqtt]\nenabled = false\n\n'
        "[metrics]\nenabled = false\n\n[rules]\npacks = []\n"
    )
    return path


@pytest.fixture
def filled(config: Path) -> Path:
    with Store.open(config.parent / "state" / FILENAME) as store:
        store.commit(history=RECORDS)
    return config


def export(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PRINTFLEET_")}
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [DAEMON_DIR, environ.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "printfleet", "history", "export", "-c", str(config), *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=environ,
        timeout=60,
        check=False,
    )


def test_json_lines_oldest_first_every_field(filled: Path) -> None:
    result = export(filled)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines == [as_json(r) for r in sorted(RECORDS, key=lambda r: r.finished_at)]
    assert list(lines[0]) == list(COLUMNS)
    assert lines[0]["finished_at"].endswith("Z")
    assert lines[1]["duration_s"] is None
    assert result.stderr == ""


def test_since_until_and_source_select(filled: Path) -> None:
    recent = export(filled, "--since", "6h")
    assert [json.loads(x)["print_id"] for x in recent.stdout.splitlines()] == ["mid", "new"]
    iso = (NOW - timedelta(hours=10)).isoformat()
    window = export(filled, "--since", "3d", "--until", iso, "--source", "lab")
    assert [json.loads(x)["print_id"] for x in window.stdout.splitlines()] == ["old"]
    none = export(filled, "--source", "nope")
    assert (none.returncode, none.stdout) == (0, "")


def test_csv_has_a_header_and_defuses_formulas(config: Path) -> None:
    hostile = [
        record(f"h{n}", 10 - n, name=text, printer_name=text, material=text)
        for n, text in enumerate(HOSTILE)
    ]
    with Store.open(config.parent / "state" / FILENAME) as store:
        store.commit(history=[*RECORDS, *hostile])
    result = export(config, "--csv")
    assert result.returncode == 0, result.stderr
    rows = list(csv.reader(io.StringIO(result.stdout, newline="")))
    assert tuple(rows[0]) == COLUMNS
    by_id = {
        row[COLUMNS.index("print_id")]: dict(zip(COLUMNS, row, strict=True)) for row in rows[1:]
    }
    assert len(by_id) == len(RECORDS) + len(HOSTILE)
    for n, text in enumerate(HOSTILE):
        row = by_id[f"h{n}"]
        assert row["name"] == row["printer_name"] == row["material"] == "'" + text
    old = by_id["old"]
    assert old["verdict_note"] == 'warped, see "notes"'  # quoted by the csv module, not altered
    assert (old["volume_ml"], old["duration_s"], old["group"]) == ("12.5", "7200.0", "Lab A")
    assert by_id["mid"]["group"] == ""  # None is an empty cell
    assert by_id["new"]["name"] == "tray, 2nd\nrun ünï"


def test_a_bad_since_is_a_usage_error(filled: Path) -> None:
    result = export(filled, "--since", "yesterday")
    assert result.returncode == 2
    assert "'yesterday' is neither a duration" in result.stderr
    assert result.stdout == ""


def test_no_database_yet_is_empty_not_an_error(config: Path) -> None:
    result = export(config, "--csv")
    assert result.returncode == 0
    assert result.stdout.splitlines() == [",".join(COLUMNS)]
    assert "no print history yet" in result.stderr
    assert not (config.parent / "state" / FILENAME).exists()  # not created by a reader


def test_reads_while_another_connection_writes(filled: Path) -> None:
    """A daemon in the middle of a poll commit (holding the write lock) does not block it."""
    writer = sqlite3.connect(filled.parent / "state" / FILENAME, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("DELETE FROM print_history")  # not committed: readers see the old rows
        result = export(filled)
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == len(RECORDS)
