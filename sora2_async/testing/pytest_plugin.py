"""pytest fixtures for testing code that uses sora2_async, against the simulator.

Enable it with ``pytest -p sora2_async.testing.pytest_plugin``, or in a ``conftest.py``::

    pytest_plugins = ["sora2_async.testing.pytest_plugin"]

Fixtures:

``sora2_simulator``
    A fresh :class:`~sora2_async.testing.Simulator` (seed 0, default settings) per test.
    Configure it in the test (``sora2_simulator.failure_rate = 0.5``,
    ``sora2_simulator.faults = Faults(...)``), or override the fixture to build your own.

``sora2_client``
    A :class:`~sora2_async.Sora2Client` wired to ``sora2_simulator`` through its in-process
    transport, with the key ``"test-key"``; closed after the test. It is an async fixture:
    use it from tests marked ``@pytest.mark.anyio`` (anyio's pytest plugin runs them).

Example::

    import pytest
    from sora2_async import VideoRequest

    @pytest.mark.anyio
    async def test_my_pipeline(sora2_client, sora2_simulator):
        video = await my_pipeline(sora2_client, VideoRequest("a corgi surfing"))
        assert sora2_simulator.stats().tasks_created == 1

Under a virtual clock (trio's ``MockClock(autojump_threshold=0)``, or asyncio with
``looptime``) minutes of polling pass instantly; with a real clock, build the simulator with
``time_scale=600`` or shorter ``Durations``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from .._client import Sora2Client
from ._simulator import Simulator

__all__ = ["TEST_API_KEY", "sora2_client", "sora2_simulator"]

#: The key ``sora2_client`` uses.
TEST_API_KEY = "test-key"


@pytest.fixture
def sora2_simulator() -> Simulator:
    """A fresh simulator (seed 0, default settings)."""
    return Simulator(seed=0)


@pytest.fixture
async def sora2_client(
    sora2_simulator: Simulator, anyio_backend: Any
) -> AsyncIterator[Sora2Client]:
    """A client of ``sora2_simulator`` with key ``"test-key"``, closed after the test."""
    async with sora2_simulator.client(TEST_API_KEY) as client:
        yield client
