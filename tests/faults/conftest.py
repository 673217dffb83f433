"""Fixtures of the fault-injection suite: a broker and the rig factory.

Each case gets its own simulator, receiver, state directory and daemon process (a case breaks
things on purpose; sharing them would couple the cases), and a broker of its own (restarting a
shared broker would break the others).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import in_ci
from tests.faults.harness import Rig, RigOptions
from tests.mosquitto import Mosquitto, mosquitto_binary

RigFactory = Callable[..., Awaitable[Rig]]


def _binary() -> str:
    binary = mosquitto_binary()
    if binary is None:
        if in_ci():
            pytest.fail("mosquitto is required in CI but is not installed")
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    return binary


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A running mosquitto with persistence (sessions and retained messages survive restart)."""
    server = Mosquitto(tmp_path / "mosquitto", persistence=True, binary=_binary())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def make_rig(tmp_path: Path, broker: Mosquitto) -> AsyncIterator[RigFactory]:
    """``await make_rig(**RigOptions fields)``: a started rig (simulator, receiver, recorder,
    config written); daemons started through it are stopped at teardown."""
    async with AsyncExitStack() as stack:

        async def factory(**options: Any) -> Rig:
            workdir = tmp_path / "rig"
            workdir.mkdir()
            return await stack.enter_async_context(Rig(workdir, broker, RigOptions(**options)))

        yield factory


@pytest.fixture
async def make_bare_rig(tmp_path: Path) -> AsyncIterator[RigFactory]:
    """Like ``make_rig`` without a broker (MQTT disabled): for start-up failures."""
    async with AsyncExitStack() as stack:

        async def factory(**options: Any) -> Rig:
            workdir = tmp_path / "rig"
            workdir.mkdir()
            options.setdefault("mqtt", False)
            return await stack.enter_async_context(Rig(workdir, None, RigOptions(**options)))

        yield factory
