"""Slack in the window for re-polls: promised polls the scheduler holds for no one video.

Each running video holds a lease on its own final poll. A final poll that finds its video
still running spends that slot and still needs another (its lease now stands for the
next one), and if the window is full by then, the re-poll waits for the window to free:
up to an hour. So the scheduler also holds a few leases of its own, as many as the planner
sizes from the share of final polls that found their video still running: they keep new
submissions and extra polls out of slots that overdue videos are likely to need, and
polls (which may use promised slots) find them free.
"""

from __future__ import annotations

import anyio

from ._limits import Lease, Limiter

__all__ = ["RepollSlack"]


class RepollSlack:
    """The scheduler's own leases, resized as the planner asks."""

    __slots__ = ("_leases", "_limiter", "_lock")

    def __init__(self, limiter: Limiter) -> None:
        self._limiter = limiter
        self._leases: list[Lease] = []
        self._lock = anyio.Lock()

    def __len__(self) -> int:
        return len(self._leases)

    async def resize(self, target: int, due_in: float) -> None:
        """Hold ``target`` leases (due in ``due_in`` seconds: the store may not care)."""
        if target == len(self._leases):
            return
        # Shielded: a lease made and then lost to cancellation would hold a slot back.
        with anyio.CancelScope(shield=True):
            async with self._lock:
                while len(self._leases) < target:
                    self._leases.append(await self._limiter.promise(due_in))
                while len(self._leases) > target:
                    await self._limiter.release(self._leases.pop())
