"""What the limiter tests share: a scripted run, sweeps of the window, and the stores.

A test sends "requests" through a limiter and looks only at what a caller can see: when each
one was admitted and answered (``anyio.current_time()``), the permits and leases it got, and
the limiter's snapshots. Nothing inside a store is patched or read.

:class:`Stores` makes limiters of one kind (``memory`` or ``sqlite``) for the contract suite;
the SQLite ones read the event loop's clock and run each transaction on the loop's thread
(``in_thread=False``), so virtual time stays exact, and every one is closed at the end.
They never look again by themselves (``recheck=inf``): with one owner in a file nobody
else changes it, so every wake-up must come from the limiter's own bookkeeping, exactly as
in memory (a missing one shows as a late admission, not hidden by a timer). The tests of
several owners in one file use the default ``recheck``.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import itertools
import math
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from anyio.abc import TaskGroup
from hypothesis import HealthCheck, Phase, settings

from sora2_async._budget import Lease, Permit, RateLimit, RequestKind, SlidingWindowLimiter
from sora2_async._queue import QueuedLimiter
from sora2_async._sqlite_limiter import SQLiteLimiter

POLL, GENERATE, EXTRA = RequestKind.POLL, RequestKind.GENERATE, RequestKind.EXTRA_POLL

# An entry may leave its window up to 1 µs early (the stores' allowance for clocks that
# round), and looptime keeps microseconds: times are compared to this precision.
EPS = 1e-5

# No shrinking: a failing example of a SQLite store shrinks for minutes; it is shown as found.
HYPOTHESIS = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)

STORE_KINDS = ["memory", "sqlite"]


def near(value: float) -> Any:
    return pytest.approx(value, abs=EPS)


@contextlib.contextmanager
def real_time_limit(seconds: float) -> Iterator[None]:
    """Fail (instead of hanging) if virtual time stops moving and a loop spins for real."""

    def alarm(signum: int, frame: object) -> None:
        raise TimeoutError(f"still running after {seconds} real seconds")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Stores:
    """Makes limiters of one kind; :meth:`aclose` closes every one it made."""

    def __init__(self, kind: str, directory: Path, redis: Any = None) -> None:
        self.kind = kind
        self.directory = directory
        self.redis = redis  # an entered coredis client, for the redis kind
        self.opened: list[QueuedLimiter] = []
        self._names = itertools.count()
        self._made_with: dict[int, dict[str, Any]] = {}

    def __repr__(self) -> str:
        return f"<Stores {self.kind}>"

    def make(
        self,
        limit: int = 3,
        per: float = 100.0,
        *,
        margin: float = 0.0,
        starve_after: float | None = None,
        lease_ttl: float | None = None,
    ) -> Any:  # SlidingWindowLimiter | SQLiteLimiter (Any: tests use both alike)
        """A fresh, empty limiter (in a file of its own for SQLite)."""
        rate_limit = RateLimit(limit, per=per)
        lim: QueuedLimiter
        if self.kind == "memory":
            lim = SlidingWindowLimiter(
                rate_limit,
                margin=margin,
                starve_after=starve_after,
                lease_ttl=math.inf if lease_ttl is None else lease_ttl,
            )
        elif self.kind == "redis":
            lim = self._redis_limiter(
                f"contract-{uuid.uuid4().hex}",
                rate_limit=rate_limit,
                margin=margin,
                starve_after=starve_after,
                lease_ttl=lease_ttl,
            )
        else:
            n = next(self._names)
            path = self.directory / ("budget.sqlite" if n == 0 else f"budget-{n}.sqlite")
            lim = SQLiteLimiter(
                path,
                rate_limit=rate_limit,
                margin=margin,
                starve_after=starve_after,
                lease_ttl=60.0 if lease_ttl is None else lease_ttl,
                recheck=math.inf,
                clock=anyio.current_time,
                in_thread=False,
            )
        self.opened.append(lim)
        self._made_with[id(lim)] = {
            "rate_limit": rate_limit,
            "margin": margin,
            "starve_after": starve_after,
            "lease_ttl": lease_ttl,
        }
        return lim

    def other_owner(self, lim: Any) -> Any:
        """Another owner of ``lim``'s store, to look at it from outside: in memory the store
        is the object itself; for SQLite, a second limiter on the same file."""
        if self.kind == "memory":
            return lim
        made_with = dict(self._made_with[id(lim)])
        lease_ttl = made_with.pop("lease_ttl")
        if self.kind == "redis":
            other = self._redis_limiter(lim.namespace, **made_with, lease_ttl=lease_ttl)
            self.opened.append(other)
            return other
        other = SQLiteLimiter(
            lim.path,
            **made_with,
            lease_ttl=60.0 if lease_ttl is None else lease_ttl,
            clock=anyio.current_time,
            in_thread=False,
        )
        self.opened.append(other)
        return other

    def _redis_limiter(
        self, namespace: str, *, lease_ttl: float | None, **kwargs: Any
    ) -> QueuedLimiter:
        return held_clock_redis_limiter()(
            self.redis,
            namespace=namespace,
            lease_ttl=60.0 if lease_ttl is None else lease_ttl,
            recheck=math.inf,
            jitter=0.0,
            server_clock=anyio.current_time,
            **kwargs,
        )

    @contextlib.asynccontextmanager
    async def open(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        """:meth:`make`, closed on the way out (one per hypothesis example)."""
        lim = self.make(*args, **kwargs)
        try:
            yield lim
        finally:
            with anyio.CancelScope(shield=True):
                await lim.aclose()

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            for lim in self.opened:
                await lim.aclose()


def held_clock(cls: type[Any]) -> Any:
    """``cls`` (a Redis store whose round trips all go through ``_run``), keeping a virtual
    clock from jumping while Redis answers.

    A mock clock jumps as soon as every task waits, and a task waiting for Redis's answer
    waits; the answer would then come "later" than any sleeper's deadline. While a call is on
    its way, a second task yields in a loop, so the loop is never idle and the clock stays:
    the store's decisions are taken at the instant the test means, as in memory.
    """

    class HeldClock(cls):  # type: ignore[misc, valid-type]
        async def _run(self, *args: Any) -> Any:
            answered = anyio.Event()

            async def hold() -> None:
                while not answered.is_set():
                    await anyio.lowlevel.checkpoint()

            async with anyio.create_task_group() as tg:
                tg.start_soon(hold)
                try:
                    return await super()._run(*args)
                finally:
                    answered.set()

    HeldClock.__name__ = HeldClock.__qualname__ = f"HeldClock{cls.__name__}"
    return HeldClock


def held_clock_redis_limiter() -> Any:
    """``RedisLimiter`` that keeps a virtual clock from jumping while Redis answers."""
    from sora2_async.redis import RedisLimiter

    return held_clock(RedisLimiter)


class Run:
    """A scripted run against one limiter: who was admitted when, in virtual seconds from t0."""

    def __init__(self, lim: Any) -> None:
        self.lim = lim
        self.t0 = anyio.current_time()
        self.admitted: dict[object, float] = {}
        self.answered: dict[object, float] = {}
        self.order: list[object] = []
        self.permits: dict[object, Permit] = {}
        self.leases: dict[object, Lease] = {}

    def now(self) -> float:
        return anyio.current_time() - self.t0

    async def until(self, t: float) -> None:
        await anyio.sleep(max(0.0, t - self.now()))

    async def request(
        self,
        name: object,
        kind: RequestKind = POLL,
        *,
        at: float | None = None,
        took: float = 0.0,
        promise: float | None = None,
        refused: bool = False,
        retry_after: float | None = None,
    ) -> float:
        """One request through the limiter; returns when it was admitted."""
        if at is not None:
            await self.until(at)
        async with self.lim.permit(kind, promise=promise) as permit:
            assert isinstance(permit, Permit)
            assert permit.kind is kind
            self.admitted[name] = self.now()
            self.order.append(name)
            self.permits[name] = permit
            if promise is None:
                assert permit.lease is None
            else:
                assert isinstance(permit.lease, Lease)
                self.leases[name] = permit.lease
            if took:
                await anyio.sleep(took)
            if refused:
                permit.rate_limited(retry_after)
        self.answered[name] = self.now()
        return self.admitted[name]

    async def promises(self, count: int, due_in: float = 0.0) -> list[Lease]:
        """``count`` final polls promised to running videos (taken over from elsewhere)."""
        return [await self.lim.promise(due_in) for _ in range(count)]

    async def release(self, leases: list[Lease], count: int | None = None) -> None:
        """Give back the first ``count`` of ``leases`` (all by default), removing them."""
        count = len(leases) if count is None else count
        for _ in range(count):
            await self.lim.release(leases.pop(0))

    def start(self, tg: TaskGroup, name: object, *args: Any, **kwargs: Any) -> None:
        tg.start_soon(functools.partial(self.request, name, *args, **kwargs))

    def start_cancellable(
        self, tg: TaskGroup, name: object, *args: Any, **kwargs: Any
    ) -> anyio.CancelScope:
        """Like :meth:`start`, in a cancel scope of its own (returned)."""
        scope = anyio.CancelScope()

        async def request() -> None:
            with scope:
                await self.request(name, *args, **kwargs)

        tg.start_soon(request)
        return scope


async def refused_after(run: Run, at: float, answered: int) -> None:
    """``answered`` requests a second apart from ``at``, then one refused: a neighbour holds
    the rest of the server's window (with 4 answered, 5 of ours are in it)."""
    for i in range(answered):
        await run.request(("answered", at, i), at=at + i)
    await run.request(("refused", at), at=at + answered, refused=True)


async def extra(lim: Any) -> bool:
    """An extra poll answered at once, if the limiter lets one go now."""
    admitted = await lim.try_permit()
    if admitted is None:
        return False
    async with admitted as permit:
        assert permit.kind is EXTRA
    return True


def max_occupancy(spans: list[tuple[float, float]], window: float) -> int:
    """Most requests holding a slot at once: each holds one from admission until a window
    after its answer (less the boundary allowance). A sweep over those intervals."""
    events = sorted(
        [(admitted, 1) for admitted, _ in spans]
        + [(answered + window - EPS, -1) for _, answered in spans]
    )  # at one instant, leaving (-1) sorts before arriving (+1)
    most = held = 0
    for _, change in events:
        held += change
        most = max(most, held)
    return most


def max_in_any_window(stamps: list[float], window: float) -> int:
    """Most answers in any rolling window: the server's view of the same requests."""
    stamps = sorted(stamps)
    return max(bisect.bisect_left(stamps, s + window - EPS) - i for i, s in enumerate(stamps))
