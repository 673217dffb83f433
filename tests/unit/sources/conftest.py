"""Fixtures for the source tests: no secret a source registered outlives its test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from printfleet.logs import forget_secrets


@pytest.fixture(autouse=True)
def _forget_registered_secrets() -> Iterator[None]:
    """Secrets the sources register for log redaction do not leak into other tests."""
    yield
    forget_secrets()
