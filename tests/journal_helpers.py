"""What the journal tests share: journals of each kind, made fresh and closed at the end.

:class:`Journals` makes journals of one kind (``memory``: the in-test ``MemoryJournal``;
``sqlite``: a file of its own; ``redis``: a name of its own on the session's real
``redis-server``). A Redis journal reads the test's virtual clock (``server_clock``) and
holds it still while Redis answers (``held_clock``), so its leases lapse exactly when the
test means. :meth:`Journals.other` is another process's view of the same journal.
"""

from __future__ import annotations

import contextlib
import itertools
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from sora2_async import SQLiteJournal
from tests.helpers import store_makers
from tests.limiter_helpers import held_clock

JOURNAL_KINDS = ["memory", "sqlite", "redis"]


class Journals:
    """Makes journals of one kind; :meth:`aclose` closes every one it made."""

    def __init__(self, kind: str, directory: Path, redis: Any = None) -> None:
        self.kind = kind
        self.directory = directory
        self.redis = redis  # an entered coredis client, for the redis kind
        self.opened: list[Any] = []
        self._names = itertools.count()

    def __repr__(self) -> str:
        return f"<Journals {self.kind}>"

    def make(self, *, follower_ttl: float = 60.0) -> Any:
        """A fresh, empty journal."""
        if self.kind == "memory":
            from tests.test_journal import MemoryJournal

            return MemoryJournal()
        if self.kind == "sqlite":
            journal = SQLiteJournal(self.directory / f"journal-{next(self._names)}.sqlite")
            self.opened.append(journal)
            return journal
        return self._redis_journal(f"contract-{uuid.uuid4().hex}", follower_ttl)

    def other(self, journal: Any, *, owner: str | None = None) -> Any:
        """Another owner of ``journal``'s store (the same object in memory)."""
        if self.kind == "memory":
            return journal
        if self.kind == "sqlite":
            other = SQLiteJournal(journal.path)
            self.opened.append(other)
            return other
        return self._redis_journal(journal.name, journal.follower_ttl, owner=owner)

    def _redis_journal(self, name: str, follower_ttl: float, owner: str | None = None) -> Any:
        from sora2_async.redis import RedisJournal

        journal = held_clock(RedisJournal)(
            self.redis,
            name=name,
            namespace="contract",
            follower_ttl=follower_ttl,
            owner=owner,
            server_clock=anyio.current_time,
        )
        self.opened.append(journal)
        return journal

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            for journal in self.opened:
                await journal.aclose()


@contextlib.asynccontextmanager
async def journals_of(
    kind: str, request: pytest.FixtureRequest, directory: Path
) -> AsyncIterator[Journals]:
    """:class:`Journals` of ``kind``, on the session's ``redis-server`` for ``redis``."""
    async with store_makers(kind, request, lambda redis: Journals(kind, directory, redis)) as made:
        yield made
