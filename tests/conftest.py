"""Fixtures shared by every test module: a fake clock and a state store on it.

Fixtures are found by pytest, never imported: a module that needs another start time overrides
``clock_start``, one that needs the database elsewhere overrides ``store_path``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import structlog

from printfleet.store import FILENAME, Store
from printfleet.testing import FakeClock


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """Each test starts with structlog's defaults, whatever an earlier test configured."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


def in_ci() -> bool:
    """True when running under CI, where missing real servers are failures, not skips."""
    return bool(os.environ.get("CI"))


@pytest.fixture
def clock_start() -> datetime:
    """Where the fake clock starts: 2026-01-01T00:00Z unless a module says otherwise."""
    return datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def clock(clock_start: datetime) -> FakeClock:
    """A clock that moves only when the test advances it."""
    return FakeClock(clock_start)


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    """Where the store's database lives: the usual file name in the test's own directory."""
    return tmp_path / FILENAME


@pytest.fixture
def store(store_path: Path, clock: FakeClock) -> Iterator[Store]:
    """An open state store on the fake clock, closed after the test."""
    with Store.open(store_path, clock=clock) as opened:
        yield opened
