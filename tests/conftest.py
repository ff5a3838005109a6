"""Shared fixtures: every async test runs on asyncio and trio, both in virtual time.

``anyio_backend`` is function-scoped so that each test gets a fresh clock: trio runs with
``MockClock(autojump_threshold=0)`` and asyncio with a ``looptime`` loop, so hours of
polling pass in milliseconds and no test sleeps for real. Tests that need real time (a real
server on loopback) use the ``real_time_backend`` fixture instead via
``@pytest.mark.parametrize("anyio_backend", REAL_TIME_BACKENDS, indirect=True)``.
"""

from __future__ import annotations

from typing import Any

import looptime
import pytest
import trio.testing

VIRTUAL_TIME_BACKENDS = ["asyncio", "trio"]
REAL_TIME_BACKENDS = ["asyncio-real", "trio-real"]


@pytest.fixture(params=VIRTUAL_TIME_BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    name: str = request.param
    if name == "trio":
        return "trio", {"clock": trio.testing.MockClock(autojump_threshold=0)}
    if name == "asyncio":
        return "asyncio", {"loop_factory": looptime.new_event_loop}
    if name == "trio-real":
        return "trio", {}
    if name == "asyncio-real":
        return "asyncio", {}
    raise ValueError(name)
