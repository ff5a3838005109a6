"""A hook run when a generate is admitted by the budget, right before it is sent.

A journal must record a request's intent durably before its generate can reach the server,
and not earlier: a process killed while the generate still waited for budget has sent
nothing, and should not leave an *uncertain* request behind for the user to sort out. The
budget's admission is the last stop before the HTTP layer, so the client hands its API caller
a thin wrapper of the limiter: once a ``GENERATE`` permit is granted, it awaits the hook that
the calling task installed with :func:`run_on_admission`. The limiter knows nothing of it, and the
path stays one-way: request → budget → hook → HTTP.

From the hook until the generate's answer, the request is shielded from cancellation: once
the intent is written the request goes out, and once it is out its answer (the task id) is
worth waiting for — a batch cancelled by Ctrl-C then records the task instead of leaving the
request uncertain. The HTTP layer's timeout bounds that wait; budget waits are never shielded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from contextvars import ContextVar

import anyio
import anyio.lowlevel

from ._budget import BudgetState, Limiter, Permit, RateLimit, RequestKind

__all__ = ["Hook", "HookedLimiter", "run_on_admission"]

Hook = Callable[[], Awaitable[None]]


class _Pending:
    """One installed hook; it runs once, at the first admission (retries do not repeat it)."""

    def __init__(self, hook: Hook) -> None:
        self.hook = hook
        self.fired = False


# Per task: asyncio and trio both give each task its own context, so the hook one batch item
# installs is invisible to every other request in flight.
_PENDING: ContextVar[_Pending | None] = ContextVar("sora2_before_send", default=None)


@contextmanager
def run_on_admission(hook: Hook | None) -> Iterator[None]:
    """Within this block, run ``hook`` when this task's next generate is admitted."""
    if hook is None:
        yield
        return
    token = _PENDING.set(_Pending(hook))
    try:
        yield
    finally:
        _PENDING.reset(token)


class HookedLimiter:
    """A :class:`Limiter` running the current task's :func:`run_on_admission` hook on admission."""

    def __init__(self, inner: Limiter) -> None:
        self._inner = inner

    def __repr__(self) -> str:
        return repr(self._inner)

    @property
    def rate_limit(self) -> RateLimit:
        """The wrapped limiter's allowance."""
        return self._inner.rate_limit

    @asynccontextmanager
    async def permit(
        self, kind: RequestKind, *, reserve: int = 0, horizon: float = 0.0
    ) -> AsyncIterator[Permit]:
        """The wrapped limiter's permit; a generate's hook runs once it is granted."""
        async with self._inner.permit(kind, reserve=reserve, horizon=horizon) as permit:
            pending = _PENDING.get()
            if kind is not RequestKind.GENERATE or pending is None or pending.fired:
                yield permit
                return
            pending.fired = True
            try:
                # An admission can come without a checkpoint: a batch already cancelled must
                # stop here, before the shield, and send nothing more.
                await anyio.lowlevel.checkpoint_if_cancelled()
                with anyio.CancelScope(shield=True):
                    await pending.hook()
            except BaseException:
                # The caller never learns it was admitted, so it cannot give back the polls
                # this admission promised: do it here. (The slot itself stays counted, as if
                # sent: the safe side.)
                self._inner.release(reserve)
                raise
            with anyio.CancelScope(shield=True):
                yield permit

    def try_permit(
        self, kind: RequestKind = RequestKind.EXTRA_POLL
    ) -> AbstractAsyncContextManager[Permit] | None:
        """The wrapped limiter's (extra polls only: no hook)."""
        return self._inner.try_permit(kind)

    def reserve(self, count: int) -> None:
        """Promise ``count`` polls in the wrapped limiter."""
        self._inner.reserve(count)

    def release(self, count: int) -> None:
        """Give back ``count`` promised polls to the wrapped limiter."""
        self._inner.release(count)

    def state(self) -> BudgetState:
        """The wrapped limiter's state."""
        return self._inner.state()
