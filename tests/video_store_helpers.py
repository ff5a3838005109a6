"""What the video store tests share: stores of each kind on one hand-driven lease clock.

``memory`` is one object (its ``other`` is itself); ``sqlite`` a file of its own, opened
again for another worker's view; ``redis`` a namespace of its own on the session's real
``redis-server``, opened again through the same connection pool. Every store reads
:class:`Clock` for its leases, so a lease lapses exactly when a test moves it.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sora2_async.fastapi import MemoryVideoStore, SQLiteVideoStore
from tests.helpers import store_makers

STORE_KINDS = ["memory", "sqlite", "redis"]


class Clock:
    """A lease clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Stores:
    """Makes stores of one kind on one :class:`Clock`; closes them at the end."""

    def __init__(self, kind: str, directory: Path, redis: Any = None) -> None:
        self.kind, self.directory, self.redis = kind, directory, redis
        self.clock = Clock()
        self.opened: list[Any] = []

    def make(self, *, lease_ttl: float = 30.0, **options: Any) -> Any:
        """A fresh, empty store."""
        if self.kind == "memory":
            return MemoryVideoStore(lease_ttl=lease_ttl, clock=self.clock, **options)
        if self.kind == "sqlite":
            path = self.directory / f"videos-{uuid.uuid4().hex[:8]}.sqlite"
            return self._sqlite(path, lease_ttl, **options)
        return self._redis(uuid.uuid4().hex, lease_ttl, **options)

    def other(self, store: Any) -> Any:
        """Another worker's view of ``store``."""
        if self.kind == "memory":
            return store
        if self.kind == "sqlite":
            return self._sqlite(store.path, store.lease_ttl)
        return self._redis(store._namespace, store.lease_ttl)

    def _sqlite(self, path: Path, lease_ttl: float, **options: Any) -> Any:
        store = SQLiteVideoStore(
            path, lease_ttl=lease_ttl, clock=self.clock, poll_interval=0.05, **options
        )
        self.opened.append(store)
        return store

    def _redis(self, namespace: str, lease_ttl: float, **options: Any) -> Any:
        from sora2_async.redis import RedisVideoStore

        store = RedisVideoStore(
            self.redis,
            namespace=namespace,
            lease_ttl=lease_ttl,
            server_clock=self.clock,
            poll_interval=0.05,
            **options,
        )
        self.opened.append(store)
        return store

    async def aclose(self) -> None:
        for store in self.opened:
            await store.aclose()


@contextlib.asynccontextmanager
async def stores_of(
    kind: str, request: pytest.FixtureRequest, directory: Path
) -> AsyncIterator[Stores]:
    """:class:`Stores` of ``kind`` (on the session's ``redis-server`` for ``redis``)."""
    async with store_makers(kind, request, lambda redis: Stores(kind, directory, redis)) as made:
        yield made
