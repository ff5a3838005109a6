"""``RedisJournal``: one batch's journal in Redis, shared by every process of every host.

The :class:`~sora2_async.Journal` protocol, with follower leases
(:class:`~sora2_async._journal.FollowerLeases`): the process that follows a submitted task
holds its lease and renews it; when it dies, the lease lapses and another process adopts
the task (:meth:`RedisJournal.adopt`, or the same batch run again with this journal).

Every change is one call of one Lua script (``journal.lua``), so it is atomic, and it has
been applied by the server when the call returns: how durable that is is the server's
persistence (``appendonly yes`` with ``appendfsync always`` survives a crash of the server's
host; ``everysec`` may lose the last second; no persistence loses everything on a restart).
Leases expire on the server's clock (``TIME``), never a client's.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from importlib import resources
from types import TracebackType
from typing import Any

import coredis
import coredis.exceptions

from .._journal import JournalEntry, JournalError, JournalState
from .._journal_codec import status_fields
from .._journaled import Adoption
from .._models import TaskStatus, VideoRequest
from ._common import retrying, tagged_keys
from ._limiter import _namespace_for, _text
from ._rows import decode_row, entry_of, row_text

__all__ = ["RedisJournal"]

logger = logging.getLogger("sora2_async")

_SCRIPT = resources.files(__package__).joinpath("journal.lua").read_text(encoding="utf-8")
_KEYS = ("entries", "seq", "submitted", "leases", "owners", "tasks")


class RedisJournal:
    """A batch's :class:`~sora2_async.Journal` in Redis, with follower leases.

    Use it as ``async with RedisJournal.from_url(url, name="my-batch") as journal``, then
    ``client.batch(requests, journal=journal)``: run again anywhere (another host, after a
    crash), the batch resumes as with :class:`~sora2_async.SQLiteJournal`, and each running
    task is followed by one process only. ``client.as_completed(journal.adopt())`` delivers
    the tasks whose follower died.

    Args:
        client: a ``coredis.Redis`` (entered by :meth:`__aenter__` when this journal made
            it, else the caller's to enter and leave).
        name: the batch's identity (an output folder's name, say): one journal per name.
        namespace: the key's fingerprint (:meth:`from_url` derives it from the API key and
            the base URL): the journal's keys are ``{sora2:<namespace>:journal:<name>}:...``.
        follower_ttl: seconds a follower's lease lasts unless renewed (it is renewed every
            third of that): a dead follower's tasks are adopted after at most this long.
        owner: this journal's owner id in the leases (default: host, pid and a random part).
        unreachable_timeout: seconds a call waits, with backoff, for an unreachable server
            before it raises ``JournalError`` (a :class:`~sora2_async.Sora2Error`).
        server_clock: for tests in virtual time only: the script's clock instead of ``TIME``.

    Raises:
        ValueError: an empty ``name`` or ``namespace``, one with braces, or a
            ``follower_ttl`` that is not positive and finite.
    """

    def __init__(
        self,
        client: coredis.Redis[Any],
        *,
        name: str,
        namespace: str,
        follower_ttl: float = 60.0,
        owner: str | None = None,
        unreachable_timeout: float = 30.0,
        server_clock: Callable[[], float] | None = None,
        owns_client: bool = False,
    ) -> None:
        keys = tagged_keys("journal", namespace, name, (*_KEYS, "meta"))
        if not (follower_ttl > 0 and math.isfinite(follower_ttl)):
            raise ValueError(f"follower_ttl must be positive and finite, not {follower_ttl!r}")
        self._redis = client
        self._owns_client = owns_client
        self._name, self._namespace = name, namespace
        self._keys, self._meta_key = keys[:-1], keys[-1]  # meta: facts about the journal
        self._script = client.register_script(_SCRIPT)
        self._ttl = float(follower_ttl)
        self._owner = owner or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._unreachable_timeout = unreachable_timeout
        self._server_clock = server_clock
        self._closed = False

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        name: str,
        namespace: str | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        follower_ttl: float = 60.0,
        **kwargs: Any,
    ) -> RedisJournal:
        """The journal ``name`` on the Redis at ``url`` (``redis://host:port/db``), for one key.

        The namespace is a fingerprint of the API key and the base URL (from the arguments,
        else ``$NANOPHOTO_API_KEY`` and ``$NANOPHOTO_BASE_URL``), never the key itself.

        Raises:
            BudgetStoreError: when no namespace can be made (no key given or set).
            ValueError: as the constructor.
        """
        if namespace is None:
            namespace = _namespace_for(api_key, base_url)
        client: coredis.Redis[Any] = coredis.Redis.from_url(url, decode_responses=False)
        return cls(
            client,
            name=name,
            namespace=namespace,
            follower_ttl=follower_ttl,
            owns_client=True,
            **kwargs,
        )

    def __repr__(self) -> str:
        return f"<RedisJournal {self._name!r} {self._namespace} owner={self._owner}>"

    async def __aenter__(self) -> RedisJournal:
        if self._owns_client:
            await self._redis.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closed = True
        if self._owns_client:
            await self._redis.__aexit__(exc_type, exc, tb)

    async def aclose(self) -> None:
        """Refuse further calls (the client, if this journal made it, closes on ``__aexit__``)."""
        self._closed = True

    @property
    def name(self) -> str:
        """The batch's identity."""
        return self._name

    @property
    def owner(self) -> str:
        """This journal's owner id in the leases it holds."""
        return self._owner

    @property
    def follower_ttl(self) -> float:
        """Seconds a follower's lease lasts unless renewed."""
        return self._ttl

    # -- the journal protocol ------------------------------------------------------------------

    async def lookup(self, key: str) -> JournalEntry | None:
        """What is recorded for ``key``, or ``None``.

        Raises:
            JournalError: Redis stayed unreachable, or holds a row this SDK cannot read.
        """
        text = await self._command(lambda: self._redis.hget(self._keys[0], key))
        return None if text is None else self._entry(text)

    async def entries(self) -> list[JournalEntry]:
        """Every entry, in the order they were first recorded.

        Raises:
            JournalError: as :meth:`lookup`.
        """
        rows = await self._command(lambda: self._redis.hgetall(self._keys[0]))
        decoded = [decode_row(text, self._name) for text in rows.values()]
        decoded.sort(key=lambda row: int(row["seq"]))
        return [entry_of(row, self._name) for row in decoded]

    async def record_intent(self, key: str, request: VideoRequest) -> None:
        """``request``'s generate is about to be sent; applied by the server when it returns.

        Raises:
            JournalError: Redis stayed unreachable or refused the write (nothing written).
        """
        await self._write(key, request, JournalState.INTENT)

    async def record_task(self, key: str, request: VideoRequest, task_id: str) -> None:
        """The API accepted ``request`` as ``task_id``; this owner takes its follower lease
        in the same call (so that no other process adopts it before it is followed).

        Raises:
            JournalError: as :meth:`record_intent`.
        """
        await self._write(key, request, JournalState.SUBMITTED, mode="lease", task_id=task_id)

    async def record_rejected(self, key: str, request: VideoRequest, error: str) -> None:
        """The API refused the generate: no task exists.

        Raises:
            JournalError: as :meth:`record_intent`.
        """
        await self._write(key, request, JournalState.REJECTED, error=error)

    async def record_status(self, key: str, status: TaskStatus) -> None:
        """The task of ``key`` ended with ``status``; its lease is dropped.

        Raises:
            KeyError: when nothing is recorded for ``key``.
            JournalError: as :meth:`record_intent`.
        """
        state, fields = status_fields(status)
        outcome = await self._write(key, None, JournalState(state), mode="status", **fields)
        if outcome == "missing":
            raise KeyError(f"no journal entry for {key!r}")

    async def meta(self, name: str) -> str | None:
        """A fact recorded about the journal itself (never a secret), or ``None``.

        Raises:
            JournalError: as :meth:`lookup`.
        """
        value = await self._command(lambda: self._redis.hget(self._meta_key, name))
        return None if value is None else _text(value)

    async def init_meta(self, name: str, value: str) -> str:
        """Record ``value`` as ``name`` unless a value is recorded already; return the one
        recorded (atomically: of two processes that start a journal, one value wins).

        Raises:
            JournalError: as :meth:`lookup`.
        """
        await self._command(lambda: self._redis.hsetnx(self._meta_key, name, value))
        return await self.meta(name) or value

    # -- follower leases -----------------------------------------------------------------------

    async def claim(self, key: str) -> bool:
        """Hold the follower lease of ``key``'s ``SUBMITTED`` task: ``True`` when this owner
        holds it now, ``False`` when another owner's lease is live or the task is not
        ``SUBMITTED``.

        Raises:
            JournalError: as :meth:`lookup`.
        """
        return int(await self._call("claim", key)) == 1

    async def renew(self, key: str) -> bool:
        """Push this owner's lease of ``key`` a ``follower_ttl`` ahead (the same call as
        :meth:`claim`): ``False`` when another owner took it or the task ended.

        Raises:
            JournalError: as :meth:`lookup`.
        """
        return await self.claim(key)

    async def reserve(self, key: str) -> bool | None:
        """Hold the submitter's lease of ``key``, whose request is not submitted yet (the
        same lease, renewed the same way, that becomes its follower's once the task id is
        recorded): ``True`` when this owner holds it now, ``False`` when another owner's is
        live (it is sending that request), ``None`` when the entry is submitted or ended.

        Raises:
            JournalError: as :meth:`lookup`.
        """
        held = int(await self._call("reserve", key))
        return None if held == 2 else held == 1

    async def release(self, key: str) -> None:
        """Give up this owner's lease of ``key`` (harmless when it holds none).

        Raises:
            JournalError: as :meth:`lookup`.
        """
        await self._call("release", key)

    async def adoptable(self, limit: int | None = None) -> list[JournalEntry]:
        """Claim up to ``limit`` ``SUBMITTED`` tasks whose follower's lease lapsed, oldest
        first, in one atomic call, and return their entries: this owner follows them now
        (two owners never adopt the same task).

        Raises:
            JournalError: as :meth:`lookup`.
        """
        reply = await self._call("adopt", "" if limit is None else str(limit))
        return [self._entry(text) for text in list(reply)[1:]]

    async def held_elsewhere(self) -> int:
        """How many ``SUBMITTED`` tasks another owner's live lease holds.

        Raises:
            JournalError: as :meth:`lookup`.
        """
        reply = await self._call("adopt", "0")
        return int(reply[0])

    async def task_key(self, task_id: str) -> str | None:
        """The key of the entry of ``task_id``, or ``None``.

        Raises:
            JournalError: as :meth:`lookup`.
        """
        key = await self._command(lambda: self._redis.hget(self._keys[5], task_id))
        return None if key is None else _text(key)

    def adopt(self, *, watch: bool = False, every: float | None = None) -> Adoption:
        """The tasks whose follower died, claimed as their leases lapse, for
        ``client.as_completed(journal.adopt())`` (which then follows them under their leases
        and records how they end).

        It looks every ``every`` seconds (default: a third of ``follower_ttl``) and ends
        when no ``SUBMITTED`` task is left that another owner holds; with ``watch`` it never
        ends (a service that takes over whatever any process leaves behind).
        """
        return Adoption(self, watch=watch, every=every)

    # -- Redis ---------------------------------------------------------------------------------

    async def _write(
        self,
        key: str,
        request: VideoRequest | None,
        state: JournalState,
        *,
        mode: str = "",
        **fields: Any,
    ) -> str:
        text = row_text(request, state, fields)
        return _text(await self._call("write", key, text, mode))

    async def _call(self, op: str, *args: str) -> Any:
        now = "" if self._server_clock is None else repr(float(self._server_clock()))
        argv = [op, self._owner, now, repr(self._ttl), *args]
        return await self._command(lambda: self._script(keys=self._keys, args=argv))

    async def _run(self, send: Callable[[], Awaitable[Any]]) -> Any:
        """One round trip to Redis (every call goes through here)."""
        return await send()

    async def _command(self, send: Callable[[], Awaitable[Any]]) -> Any:
        """``send()`` awaited, again (with backoff) while Redis is unreachable, for at most
        ``unreachable_timeout`` seconds; every failure is a :class:`JournalError`."""
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        return await retrying(
            lambda: self._run(send),
            unreachable_for=self._unreachable_timeout,
            error=JournalError,
            what=f"the Redis journal {self._name!r}",
        )

    def _entry(self, text: Any) -> JournalEntry:
        return entry_of(decode_row(text, self._name), self._name)
