"""Fixtures shared by the CLI tests."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest

from printfleet.logs import forget_secrets


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No PRINTFLEET_* or systemd credentials from the outside; logging and secrets restored."""
    for name in list(os.environ):
        if name.startswith("PRINTFLEET_") or name == "CREDENTIALS_DIRECTORY":
            monkeypatch.delenv(name)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    forget_secrets()
    yield
    forget_secrets()
    root.handlers[:] = handlers
    root.setLevel(level)
