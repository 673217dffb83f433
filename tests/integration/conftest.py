"""Fixtures for the integration tests: real mosquitto brokers, started per test on a free port.

They skip when mosquitto is not installed, except under CI, where a missing broker is a broken
setup and fails the test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import in_ci
from tests.mosquitto import Mosquitto, make_tls_files, mosquitto_binary


def _require_binary() -> str:
    binary = mosquitto_binary()
    if binary is None:
        if in_ci():
            pytest.fail("mosquitto is required in CI but is not installed")
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    return binary


@pytest.fixture(name="mosquitto")
def mosquitto_fixture(tmp_path: Path) -> Iterator[Mosquitto]:
    """A running mosquitto on a free local port, stopped after the test."""
    broker = Mosquitto(tmp_path / "mosquitto", binary=_require_binary())
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(name="tls_mosquitto")
def tls_mosquitto_fixture(tmp_path: Path) -> Iterator[Mosquitto]:
    """Like :func:`mosquitto`, plus a TLS listener (``tls_url``; CA in ``tls.ca``)."""
    tls = make_tls_files(tmp_path / "tls")
    broker = Mosquitto(tmp_path / "mosquitto", tls=tls, binary=_require_binary())
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(name="persistent_mosquitto")
def persistent_mosquitto_fixture(tmp_path: Path) -> Iterator[Mosquitto]:
    """Like :func:`mosquitto`, but retained messages survive a :meth:`Mosquitto.restart`."""
    broker = Mosquitto(tmp_path / "mosquitto", persistence=True, binary=_require_binary())
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
