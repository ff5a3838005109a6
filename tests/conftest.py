"""Shared fixtures: every async test runs on asyncio and trio, both in virtual time.

``anyio_backend`` is function-scoped so that each test gets a fresh clock: trio runs with
``MockClock(autojump_threshold=0)`` and asyncio with a ``looptime`` loop, so hours of
polling pass in milliseconds and no test sleeps for real. Tests that need real time (a real
server on loopback) use the ``real_time_backend`` fixture instead via
``@pytest.mark.parametrize("anyio_backend", REAL_TIME_BACKENDS, indirect=True)``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import looptime
import pytest
import trio.testing

VIRTUAL_TIME_BACKENDS = ["asyncio", "trio"]
REAL_TIME_BACKENDS = ["asyncio-real", "trio-real"]


@pytest.fixture(autouse=True)
def state_folder(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Every test (and every ``sora2`` it starts) gets a state folder of its own: the
    command's default budget store lives there, never in the real home."""
    folder = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("XDG_STATE_HOME", str(folder))
    return folder


@pytest.fixture(params=VIRTUAL_TIME_BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    return backend(request.param)


def backend(name: str) -> tuple[str, dict[str, Any]]:
    """The backend called ``name``: in virtual time, or ``-real`` for real time."""
    if name == "trio":
        return "trio", {"clock": trio.testing.MockClock(autojump_threshold=0)}
    if name == "asyncio":
        return "asyncio", {"loop_factory": looptime.new_event_loop}
    if name == "trio-real":
        return "trio", {}
    if name == "asyncio-real":
        return "asyncio", {}
    raise ValueError(name)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ``NANOPHOTO_API_KEY`` or ``NANOPHOTO_BASE_URL`` from the real environment: a
    client built in the test sees only what the test sets. Use it with
    ``pytestmark = pytest.mark.usefixtures("clean_env")``."""
    monkeypatch.delenv("NANOPHOTO_API_KEY", raising=False)
    monkeypatch.delenv("NANOPHOTO_BASE_URL", raising=False)


@pytest.fixture
def api() -> Any:
    """The mocked API wire: a ``respx.MockRouter`` on ``tests.helpers.BASE`` (relative routes
    are the API's paths), for the helpers of :mod:`tests.helpers`; routes left uncalled are
    fine. Yields the router (an ``Iterator[respx.MockRouter]``)."""
    import respx

    from tests.helpers import BASE

    with respx.mock(base_url=BASE, assert_all_called=False) as mock:
        yield mock


@pytest.fixture(scope="session")
def redis_server() -> Iterator[Any]:
    """One ``redis-server`` for the session (Debian's, started on a free loopback port with
    persistence off, stopped at the end). Skipped where it is not installed, except in CI,
    whose ``.ci/run`` installs it: there a missing server is a failure."""
    from tests.helpers import RedisServer

    try:
        server = RedisServer()
    except FileNotFoundError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        server.stop()
