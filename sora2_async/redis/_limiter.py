"""``RedisLimiter``: one key's budget in Redis, shared by every process of every host.

Every decision is one call of one Lua script (``admission.lua``) that reads the server's
clock (``TIME``), never a client's, and applies the rule of ``_admission`` to what the
store holds. The waiting half is ``_queue``'s, as for every store: only the fronts of this
process's queues call the script, and they sleep for the time it returns (plus jitter),
never looping on a busy store.

What can go wrong, and what happens then:

* **Redis restarted and lost its data.** The script cache is empty: the script is loaded
  again on ``NOSCRIPT``. The data is gone: the store's *epoch* changed, and every owner
  writes back the requests it made in the window and the leases it holds before it goes on,
  so the window is what it was, less what dead owners had spent.
* **Redis cannot be reached.** Requests wait, with backoff, and the limiter says so (a
  WARNING, and :meth:`RedisLimiter.on_unreachable` listeners): it never falls back to a
  budget of its own.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable
from importlib import resources
from types import TracebackType
from typing import Any

import anyio
import attrs
import coredis
import coredis.exceptions

from .._admission import PROMISE_SLIP, Contender
from .._errors import BudgetStoreError
from .._limits import BudgetState, Lease, Permit, RateLimit, RequestKind
from .._queue import QueuedLimiter

__all__ = ["RedisLimiter"]

logger = logging.getLogger("sora2_async")

_SCRIPT = resources.files(__package__).joinpath("admission.lua").read_text(encoding="utf-8")
_KEYS = (
    "entries",
    "inflight",
    "owners",
    "counts",
    "leases",
    "fronts",
    "ceiling",
    "epoch",
    "dues",
    "refused",
)
# A connection refused, reset or timed out; a server still loading its data after a restart.
_UNREACHABLE = (
    coredis.exceptions.ConnectionError,
    coredis.exceptions.BusyLoadingError,
    TimeoutError,
    OSError,
)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _float(value: Any) -> float:
    text = _text(value)
    return math.inf if text == "+inf" else -math.inf if text == "-inf" else float(text)


def _arg(value: float | None) -> str:
    if value is None:
        return ""
    return "+inf" if value == math.inf else repr(float(value))


class RedisLimiter(QueuedLimiter):
    """The budget of one key in Redis; use it as ``async with RedisLimiter.from_url(url)``.

    Args:
        client: a ``coredis.Redis`` (entered by :meth:`__aenter__` when this limiter made
            it, else the caller's to enter and leave).
        namespace: the keys' hash tag: every process of one key must use the same one
            (:meth:`from_url` derives it from the key and the base URL).
        rate_limit: the key's allowance (every process of one key should pass the same).
        margin: seconds added to the window (clock drift between us and the API's server).
        starve_after: how long a submission can be held back by polls.
        lease_ttl: seconds a process's leases outlive its last call.
        flight_ttl: the longest a request can be in flight.
        recheck: the longest a waiting request sleeps before it asks again (other
            processes' changes are not announced).
        jitter: at most this many seconds added to each wait, so that the processes woken by
            one change do not all call at once.
        local_clock: this process's own clock (default: the event loop's). Its offset to the
            server's is learned on every call, so a wrong or shifted local clock changes
            nothing: every time the store keeps is the server's.
        server_clock: for tests in virtual time only: the script's clock instead of the
            server's ``TIME``.
    """

    def __init__(
        self,
        client: coredis.Redis[Any],
        *,
        namespace: str,
        rate_limit: RateLimit | None = None,
        margin: float = 2.0,
        starve_after: float | None = None,
        lease_ttl: float = 60.0,
        flight_ttl: float = 120.0,
        recheck: float | None = None,
        jitter: float = 0.02,
        server_clock: Callable[[], float] | None = None,
        local_clock: Callable[[], float] = anyio.current_time,
        owns_client: bool = False,
    ) -> None:
        super().__init__(rate_limit, margin=margin, starve_after=starve_after)
        for name, value in (("lease_ttl", lease_ttl), ("flight_ttl", flight_ttl)):
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be positive and finite, not {value!r}")
        if not namespace or any(c in namespace for c in "{}"):
            raise ValueError(f"namespace must be a non-empty name without braces: {namespace!r}")
        self._redis = client
        self._owns_client = owns_client
        self._namespace = namespace
        self._keys = [f"{{sora2:{namespace}}}:{name}" for name in _KEYS]
        self._script = client.register_script(_SCRIPT)
        self._lease_ttl, self._flight_ttl = lease_ttl, flight_ttl
        self._recheck = recheck if recheck is not None else min(1.0, max(0.02, self._window / 3600))
        self._front_ttl = max(10 * self._recheck, 1.0)
        self._jitter = jitter
        self._serial = anyio.Lock()
        self._server_clock = server_clock
        self._local = local_clock
        self._offset = 0.0  # the server's clock minus the local one, as last seen
        self._synced = server_clock is not None
        self._epoch = ""
        self._mine: dict[str, tuple[float, bool]] = {}  # permit id -> (until, answered)
        self._my_leases: dict[str, float] = {}  # lease id -> due, on the server's clock
        self._renewed_at = -math.inf
        self._closed = False
        self._unreachable_since: float | None = None
        self._listeners: list[Callable[[BaseException | None], None]] = []
        self._last = BudgetState(
            limit=self._rate_limit.requests,
            configured_limit=self._rate_limit.requests,
            window=self._window,
            used=0,
            reserved=0,
            waiting_polls=0,
            waiting_generates=0,
            next_free_in=0.0,
            rate_limited=0,
            blocked_for=0.0,
        )

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        namespace: str | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        **kwargs: Any,
    ) -> RedisLimiter:
        """A limiter on the Redis at ``url`` (``redis://host:port/db``), for one key.

        The namespace is a fingerprint of the API key and the base URL (from the arguments,
        else ``$NANOPHOTO_API_KEY`` and ``$NANOPHOTO_BASE_URL``), never the key itself.

        Raises:
            BudgetStoreError: when no namespace can be made (no key given or set).
        """
        if namespace is None:
            namespace = _namespace_for(api_key, base_url)
        client: coredis.Redis[Any] = coredis.Redis.from_url(url, decode_responses=False)
        return cls(client, namespace=namespace, owns_client=True, **kwargs)

    def __repr__(self) -> str:
        return super().__repr__().replace(" ", f" {self._namespace} ", 1)

    async def __aenter__(self) -> RedisLimiter:
        if self._owns_client:
            await self._redis.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.aclose()
        finally:
            if self._owns_client:
                await self._redis.__aexit__(exc_type, exc, tb)

    @property
    def namespace(self) -> str:
        """The hash tag of this key's budget in Redis."""
        return self._namespace

    def on_unreachable(self, listener: Callable[[BaseException | None], None]) -> None:
        """Call ``listener(error)`` when Redis stops answering, and ``listener(None)`` when
        it is back."""
        self._listeners.append(listener)

    # -- the protocol --------------------------------------------------------------------------

    def _now(self) -> float:
        if self._server_clock is not None:
            return self._server_clock()
        return self._local() + self._offset

    async def snapshot(self) -> BudgetState:
        """A fresh snapshot of the store (it refreshes :attr:`last_state`)."""
        await self._call("snapshot")
        return self._last

    async def promise(self, due_in: float) -> Lease:
        """Promise a final poll due in ``due_in`` seconds; never waits."""
        lease_id, due_in = f"{self._owner}-l{next(self._ids)}", max(0.0, due_in)
        _, _, now = await self._call("promise", lease_id, _arg(due_in))
        lease = Lease(lease_id, now + due_in)  # as the store has it
        self._my_leases[lease.id] = lease.due
        return lease

    async def release(self, lease: Lease) -> None:
        """Give back a promised poll (twice is harmless)."""
        self._my_leases.pop(lease.id, None)
        if not self._closed:
            await self._call("release", lease.id)
        self._wake_fronts()

    async def renew(self) -> None:
        """Keep this process's leases alive (a no-op when a call did so lately)."""
        if self._now() - self._renewed_at >= self.renew_every / 2:
            await self._call("renew")

    async def aclose(self) -> None:
        """Give back this process's leases and waiting fronts; its requests in flight keep
        counting until their answers would have come."""
        if self._closed:
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            await self._call("close", retry=False)
        self._closed = True

    # -- admission -----------------------------------------------------------------------------

    async def _attempt(self, me: Contender, rivals: list[Contender]) -> Permit | float:
        if not self._synced:  # the first call: learn the server's clock before stamping times
            await self._call("snapshot")
            me = attrs.evolve(me, since=self._now())
        permit_id = self._permit_id()
        lease_id = f"{permit_id}-l"
        args: list[str] = [str(int(me.kind)), _arg(me.since), _arg(me.promise), permit_id]
        args += [lease_id, str(len(rivals))]
        for rival in rivals:
            args += [str(int(rival.kind)), _arg(rival.since), _arg(rival.promise)]
        outcome, detail, now = await self._call("attempt", *args)
        if outcome == "admitted":
            permit = Permit(permit_id, me.kind)
            self._mine[permit_id] = (now + self._flight_ttl + self._window, False)
            if me.promise is not None:
                permit.lease = Lease(lease_id, now + me.promise)
                self._my_leases[lease_id] = permit.lease.due
            return permit
        return _float(detail) + random.uniform(0.0, self._jitter)

    async def _leave(self, me: Contender) -> None:
        if not self._closed:
            await self._call("leave", str(int(me.kind)), _arg(me.since))

    async def _try_extra(self, kind: RequestKind) -> Permit | None:
        permit_id = self._permit_id()
        outcome, _, now = await self._call("extra", permit_id)
        if outcome != "admitted":
            return None
        self._mine[permit_id] = (now + self._flight_ttl + self._window, False)
        return Permit(permit_id, kind)

    async def _stamp(self, permit: Permit) -> None:
        if self._closed or permit.id not in self._mine:
            return
        refused = "1" if permit.was_rate_limited else "0"
        from .._budget import capped_retry_after

        retry_after = capped_retry_after(permit.retry_after, self._window)
        _, _, now = await self._call("stamp", permit.id, refused, _arg(retry_after))
        self._mine[permit.id] = (now + self._window, True)

    # -- the script ----------------------------------------------------------------------------

    async def _call(self, op: str, *args: str, retry: bool = True) -> tuple[str, str, float]:
        """Run the script once (again after a lost connection); its outcome, detail, now."""
        if self._closed:
            raise BudgetStoreError(f"the Redis budget {self._namespace} is closed")
        pause = 0.05
        while True:
            try:
                reply = await self._run(op, list(args))
            except _UNREACHABLE as exc:
                if not retry:
                    raise BudgetStoreError(f"budget store unreachable: {exc}") from None
                self._unreachable(exc)
                await anyio.sleep(pause * random.uniform(0.5, 1.0))
                pause = min(5.0, pause * 2)
                continue
            if self._unreachable_since is not None:
                self._unreachable_since = None
                logger.warning("the Redis budget store %s answers again", self._namespace)
                for listener in self._listeners:
                    listener(None)
            if _text(reply[4]) == "1":  # it lost its data: write back what this owner knows
                await self._restore()
                continue
            return self._read(reply)

    async def _run(self, op: str, args: list[str]) -> list[Any]:
        now = "" if self._server_clock is None else _arg(self._server_clock())
        head = [op, self._owner, now, str(self._rate_limit.requests), _arg(self._window)]
        head += [_arg(self._flight_ttl), _arg(self._lease_ttl), _arg(self._starve_after)]
        head += [_arg(self._front_ttl), self._epoch, _arg(PROMISE_SLIP)]
        try:
            reply: Any = await self._script(keys=self._keys, args=[*head, *args])
        except coredis.exceptions.ResponseError as exc:
            raise BudgetStoreError(f"the Redis budget store refused the script: {exc}") from None
        return list(reply)

    async def _restore(self) -> None:
        now = self._now()
        live = [(i, until, answered) for i, (until, answered) in self._mine.items() if until > now]
        logger.warning(
            "the Redis budget store %s lost its data (a restart?): writing back %d requests "
            "and %d leases of this process",
            self._namespace,
            len(live),
            len(self._my_leases),
        )
        args = [str(len(live))]
        for permit_id, until, answered in live:
            args += [permit_id, _arg(until), "1" if answered else "0"]
        args.append(str(len(self._my_leases)))
        for lease_id, due in sorted(self._my_leases.items()):
            args += [lease_id, _arg(due)]
        self._epoch = ""  # adopt the new epoch with this call
        reply = await self._run("restore", args)
        self._read(reply)

    def _read(self, reply: list[Any]) -> tuple[str, str, float]:
        now = _float(reply[2])
        self._offset = now - self._local()
        self._synced = True
        self._epoch = _text(reply[3])
        self._renewed_at = now
        for permit_id in [i for i, (until, _) in self._mine.items() if until <= now]:
            del self._mine[permit_id]
        limit, used, reserved = int(reply[5]), int(reply[6]), int(reply[7])
        blocked_until, free_at = _float(reply[8]), _float(reply[9])
        self._last = BudgetState(
            limit=limit,
            configured_limit=self._rate_limit.requests,
            window=self._window,
            used=used,
            reserved=reserved,
            waiting_polls=self._waiting[RequestKind.POLL] + int(reply[11]),
            waiting_generates=self._waiting[RequestKind.GENERATE] + int(reply[12]),
            next_free_in=max(0.0, free_at - now),
            rate_limited=int(reply[10]),
            blocked_for=max(0.0, blocked_until - now),
        )
        return _text(reply[0]), _text(reply[1]), now

    def _unreachable(self, exc: BaseException) -> None:
        if self._unreachable_since is None:
            self._unreachable_since = anyio.current_time()
            logger.warning(
                "budget store unreachable (%s): requests wait until Redis answers again "
                "(no budget of this process's own is used meanwhile)",
                type(exc).__name__,
            )
            for listener in self._listeners:
                listener(exc)


def _namespace_for(api_key: str | None, base_url: str | None) -> str:
    import os

    from .._client import API_KEY_ENV, BASE_URL_ENV, DEFAULT_BASE_URL
    from .._fingerprint import key_fingerprint

    key = api_key if api_key is not None else os.environ.get(API_KEY_ENV, "")
    if not key.strip():
        raise BudgetStoreError(
            f"a Redis budget is named after its key: pass api_key=... (or namespace=...), or "
            f"set {API_KEY_ENV}"
        )
    url = base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    return key_fingerprint(key, url)
