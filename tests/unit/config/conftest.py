"""Fixtures for the config tests: each starts and ends with no secret registered for redaction."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from printfleet.logs import forget_secrets


@pytest.fixture(autouse=True)
def _no_registered_secrets() -> Iterator[None]:
    """Loading registers secrets (fuzzed inline ones too) for redaction; none outlive the test."""
    forget_secrets()
    yield
    forget_secrets()
