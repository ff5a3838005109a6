"""``SQLiteLimiter``: one key's budget in a file, shared by every process on one host.

The rule is ``_admission``'s, applied inside one ``BEGIN IMMEDIATE`` transaction per
decision to everything the file holds: every process's requests (an entry each, by permit
id), their leases, the fronts of their waiting queues and the limit in force after 429s.
WAL mode lets readers go on while one process writes; a busy timeout makes a process wait
its turn instead of failing.

A request counts from its admission until a window after its answer. An entry is written
on admission as if its answer came at the latest possible moment (``flight_ttl`` later),
and its stamp brings that in: so a process killed mid-request leaves an entry that counts
as spent, and then leaves. A process's leases live while it renews itself (every
transaction does, and :meth:`~SQLiteLimiter.renew`); a killed one's lapse after
``lease_ttl``. Every process reads one clock, ``time.time()`` by default, injectable for
tests in virtual time; a clock that stepped back cannot pin the budget, for nothing may
count for longer than a request can.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Callable
from os import PathLike
from pathlib import Path
from typing import TypeVar

import anyio
import anyio.to_thread

from ._admission import Contender, decide, extra_fits
from ._budget import capped_retry_after
from ._ceiling import Ceiling
from ._errors import BudgetStoreError
from ._limits import BudgetState, Lease, Permit, RateLimit, RequestKind
from ._queue import QueuedLimiter
from ._sqlite_file import open_store
from ._window import EPSILON  # an entry this close to leaving counts as gone

__all__ = ["SQLiteLimiter"]

R = TypeVar("R")


class _View:
    """The file's contents as an ``_admission.Window`` at one instant (inside a transaction)."""

    def __init__(self, db: sqlite3.Connection, now: float, limiter: SQLiteLimiter) -> None:
        self._db = db
        self.now = now
        # ``ceiling_learnt`` came in a later version (a table, not new columns, so that a
        # file made before opens as it is and gets it from the schema's IF NOT EXISTS).
        row = db.execute(
            "SELECT lowered_to, lowered_at, blocked_until, rate_limited, failed, repeats, "
            "learnt_at FROM ceiling LEFT JOIN ceiling_learnt USING (id)"
        ).fetchone()
        lowered_to, lowered_at, self.blocked_until, self.rate_limited, failed, repeats = row[:6]
        if row[6] != lowered_at:  # lowered since by a version that keeps no learning
            failed, repeats = None, 0
        self.ceiling = Ceiling(
            limiter.rate_limit.requests,
            limiter._window,
            lowered_to=lowered_to,
            lowered_at=lowered_at,
            failed=failed,
            repeats=repeats,
        )
        self.limit = self.ceiling.at(now)
        self.rises_at = self.ceiling.next_rise(now)
        self.used = self.later(now)
        self.reserved = int(
            db.execute(
                "SELECT coalesce(sum(leases), 0) FROM owners WHERE alive_until > ?", (now,)
            ).fetchone()[0]
        )
        self._dues: list[float] | None = None

    @property
    def lease_dues(self) -> list[float]:
        """When the live leases of every owner fall due, ascending (asked only by a
        submission's admission, inside its transaction)."""
        if self._dues is None:
            rows = self._db.execute(
                "SELECT leases.due FROM leases JOIN owners ON owners.id = leases.owner"
                " WHERE owners.alive_until > ? ORDER BY leases.due",
                (self.now,),
            )
            self._dues = [float(row[0]) for row in rows]
        return self._dues

    def later(self, when: float) -> int:
        query = "SELECT count(*) FROM entries WHERE until > ?"
        return int(self._db.execute(query, (when + EPSILON,)).fetchone()[0])

    def expiry(self, k: int) -> float | None:
        row = self._db.execute(
            "SELECT until FROM entries WHERE until > ? ORDER BY until LIMIT 1 OFFSET ?",
            (self.now + EPSILON, k - 1),
        ).fetchone()
        return None if row is None else float(row[0])

    def first_expiry_after(self, when: float) -> float | None:
        query = "SELECT min(until) FROM entries WHERE until > ?"
        value = self._db.execute(query, (when + EPSILON,)).fetchone()[0]
        return None if value is None else float(value)


class SQLiteLimiter(QueuedLimiter):
    """The budget of one key in a SQLite file that every process on this host shares.

    Args:
        path: the store file; made if missing. A file that is not a budget store is refused.
        rate_limit: the key's allowance (every process of one key should pass the same).
        margin: seconds added to the window (clock drift between us and the server).
        starve_after: how long a submission can be held back by polls (default: a quarter
            of the window).
        lease_ttl: seconds a process's leases outlive its last sign of life.
        flight_ttl: the longest a request can be in flight (its entry counts from admission
            until a window after that, unless its answer is stamped sooner).
        recheck: the longest a waiting request sleeps before it looks at the file again
            (other processes' changes are not announced); default: 1 s, shorter for short
            windows.
        clock: seconds, read by every process alike (default ``time.time``).
        busy_timeout: seconds to wait for another process's transaction.
        in_thread: run each transaction in a worker thread (the default), or on the event
            loop's own thread (sub-millisecond in WAL mode, and exact in virtual time).

    Raises:
        BudgetStoreError: the file is not a budget store, or cannot be opened.
    """

    def __init__(
        self,
        path: str | PathLike[str],
        *,
        rate_limit: RateLimit | None = None,
        margin: float = 2.0,
        starve_after: float | None = None,
        lease_ttl: float = 60.0,
        flight_ttl: float = 120.0,
        recheck: float | None = None,
        clock: Callable[[], float] = time.time,
        busy_timeout: float = 30.0,
        in_thread: bool = True,
    ) -> None:
        super().__init__(rate_limit, margin=margin, starve_after=starve_after)
        for name, value in (("lease_ttl", lease_ttl), ("flight_ttl", flight_ttl)):
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be positive and finite, not {value!r}")
        self._path = Path(path)
        self._lease_ttl = lease_ttl
        self._flight_ttl = flight_ttl
        self._recheck = recheck if recheck is not None else min(1.0, max(0.02, self._window / 3600))
        self._front_ttl = max(10 * self._recheck, 1.0)
        self._clock = clock
        self._in_thread = in_thread
        if in_thread:
            self._serial = anyio.Lock()
        self._thread_limiter = anyio.CapacityLimiter(1)
        self._db = open_store(self._path, busy_timeout)
        self._renewed_at = -math.inf
        self._closed = False
        self._last: BudgetState
        self._run_inline(self._clock(), lambda db, view: None)

    def __repr__(self) -> str:
        return super().__repr__().replace(" ", f" {self._path.name} ", 1)

    @property
    def path(self) -> Path:
        """The store file."""
        return self._path

    # -- the protocol --------------------------------------------------------------------------

    def _now(self) -> float:
        return self._clock()

    async def snapshot(self) -> BudgetState:
        """A fresh snapshot of the file (it refreshes :attr:`last_state`)."""
        await self._transact(lambda db, view: None)
        return self._last

    async def promise(self, due_in: float) -> Lease:
        """Promise a final poll due in ``due_in`` seconds; never waits."""
        lease_id = f"{self._owner}-l{next(self._ids)}"

        def work(db: sqlite3.Connection, view: _View) -> Lease:
            return self._add_lease(db, lease_id, view.now + max(0.0, due_in))

        return await self._transact(work)

    async def release(self, lease: Lease) -> None:
        """Give back a promised poll (twice is harmless)."""

        def work(db: sqlite3.Connection, view: _View) -> None:
            row = db.execute("DELETE FROM leases WHERE id = ? RETURNING owner", (lease.id,))
            for (owner,) in row.fetchall():
                db.execute("UPDATE owners SET leases = max(0, leases - 1) WHERE id = ?", (owner,))

        if not self._closed:
            await self._transact(work)
        self._wake_fronts()

    async def renew(self) -> None:
        """Keep this process's leases alive (a no-op when a transaction did so lately)."""
        if self._clock() - self._renewed_at >= self.renew_every / 2:
            await self._transact(lambda db, view: None)

    async def aclose(self) -> None:
        """Give back this process's leases and waiting fronts, and close the file.

        Its requests in flight keep counting until their answers would have come.
        """
        if self._closed:
            return

        def work(db: sqlite3.Connection, view: _View) -> None:
            for table in ("leases", "fronts"):
                db.execute(f"DELETE FROM {table} WHERE owner = ?", (self._owner,))
            db.execute("DELETE FROM owners WHERE id = ?", (self._owner,))

        with anyio.CancelScope(shield=True):
            await self._transact(work)
        self._closed = True
        self._db.close()

    # -- admission -----------------------------------------------------------------------------

    async def _attempt(self, me: Contender, rivals: list[Contender]) -> Permit | float:
        def work(db: sqlite3.Connection, view: _View) -> Permit | float:
            others = rivals + self._other_fronts(db, view.now)
            later = decide(view, me, others, starve_after=self._starve_after)
            if later is None:
                self._forget_front(db, me)
                return self._admit(db, view, me.kind, me.promise)
            db.execute(
                "INSERT OR REPLACE INTO fronts VALUES (?, ?, ?, ?, ?)",
                (self._owner, int(me.kind), me.since, me.promise, view.now + self._front_ttl),
            )
            return later

        return await self._transact(work)

    async def _leave(self, me: Contender) -> None:
        if not self._closed:
            await self._transact(lambda db, view: self._forget_front(db, me))

    async def _try_extra(self, kind: RequestKind) -> Permit | None:
        def work(db: sqlite3.Connection, view: _View) -> Permit | None:
            if not extra_fits(view, self._other_fronts(db, view.now)):
                return None
            return self._admit(db, view, kind, None)

        return await self._transact(work)

    async def _stamp(self, permit: Permit) -> None:
        def work(db: sqlite3.Connection, view: _View) -> None:
            now = view.now
            # ``answered``: 0 in flight, 1 answered, 2 answered with a 429.
            done = db.execute(
                "UPDATE entries SET until = ?, answered = ? WHERE id = ? AND answered = 0",
                (now + self._window, 2 if permit.was_rate_limited else 1, permit.id),
            ).rowcount
            if not done or not permit.was_rate_limited:
                return
            (oldest,) = db.execute(
                "SELECT min(until) FROM entries WHERE answered > 0 AND until > ?", (now,)
            ).fetchone()
            seen_for = now - (oldest - self._window) if oldest is not None else 0.0
            retry_after = capped_retry_after(permit.retry_after, self._window)
            (refused,) = db.execute(
                "SELECT count(*) FROM entries WHERE answered = 2 AND until > ?",
                (now + EPSILON,),  # as ``later`` counts
            ).fetchone()
            # What the server counts of ours: our earlier 429s out (see Ceiling.lower).
            ours = view.later(now) - int(refused) + 1
            ceiling = view.ceiling
            ceiling.lower(now, ours=ours, seen_for=seen_for, retry_after=retry_after)
            lowered_to, lowered_at, failed, repeats = ceiling.state
            blocked = view.blocked_until
            if retry_after is not None:
                blocked = max(blocked, now + retry_after)
            db.execute(
                "UPDATE ceiling SET lowered_to = ?, lowered_at = ?, blocked_until = ?, "
                "rate_limited = rate_limited + 1",
                (lowered_to, lowered_at, blocked),
            )
            db.execute(
                "UPDATE ceiling_learnt SET failed = ?, repeats = ?, learnt_at = ?",
                (failed, repeats, lowered_at),
            )

        if not self._closed:
            await self._transact(work)

    # -- inside a transaction ------------------------------------------------------------------

    def _admit(
        self, db: sqlite3.Connection, view: _View, kind: RequestKind, promise: float | None
    ) -> Permit:
        permit = Permit(self._permit_id(), kind)
        db.execute(
            "INSERT INTO entries (id, owner, kind, until) VALUES (?, ?, ?, ?)",
            (permit.id, self._owner, int(kind), view.now + self._flight_ttl + self._window),
        )
        if promise is not None:
            permit.lease = self._add_lease(db, f"{permit.id}-l", view.now + promise)
        return permit

    def _add_lease(self, db: sqlite3.Connection, lease_id: str, due: float) -> Lease:
        db.execute("INSERT INTO leases VALUES (?, ?, ?)", (lease_id, self._owner, due))
        db.execute("UPDATE owners SET leases = leases + 1 WHERE id = ?", (self._owner,))
        return Lease(lease_id, due)

    def _forget_front(self, db: sqlite3.Connection, me: Contender) -> None:
        db.execute(
            "DELETE FROM fronts WHERE owner = ? AND kind = ? AND since = ?",
            (self._owner, int(me.kind), me.since),
        )

    def _other_fronts(self, db: sqlite3.Connection, now: float) -> list[Contender]:
        rows = db.execute(
            "SELECT kind, since, promise, owner FROM fronts WHERE owner != ? AND alive_until > ?",
            (self._owner, now),
        )
        return [
            Contender(RequestKind(k), since, promise, owner) for k, since, promise, owner in rows
        ]

    def _prepare(self, db: sqlite3.Connection, now: float) -> None:
        """Forget what has left, cap what a stepped-back clock left too far ahead, and say
        that this owner lives."""
        cap = now + self._flight_ttl + self._window
        db.execute("DELETE FROM entries WHERE until <= ?", (now + EPSILON,))
        db.execute("UPDATE entries SET until = ? WHERE until > ?", (cap, cap))
        db.execute("DELETE FROM fronts WHERE alive_until <= ?", (now,))
        db.execute(
            "UPDATE ceiling SET blocked_until = min(blocked_until, ?)", (now + self._window,)
        )
        gone = now - self._window - self._lease_ttl  # long dead: their leases are no more
        db.execute(
            "DELETE FROM leases WHERE owner IN (SELECT id FROM owners WHERE alive_until < ?)",
            (gone,),
        )
        db.execute("DELETE FROM owners WHERE alive_until < ?", (gone,))
        db.execute(
            "INSERT INTO owners (id, alive_until) VALUES (?, ?) "
            "ON CONFLICT (id) DO UPDATE SET alive_until = excluded.alive_until",
            (self._owner, now + self._lease_ttl),
        )

    def _state(self, db: sqlite3.Connection, now: float) -> BudgetState:
        view = _View(db, now, self)
        polls = generates = 0
        for (kind,) in db.execute(
            "SELECT kind FROM fronts WHERE owner != ? AND alive_until > ?", (self._owner, now)
        ):
            if kind == RequestKind.POLL:
                polls += 1
            else:
                generates += 1
        return self._snapshot(
            view,
            rate_limited=int(view.rate_limited),
            polls_elsewhere=polls,
            generates_elsewhere=generates,
        )

    def _run_inline(self, now: float, work: Callable[[sqlite3.Connection, _View], R]) -> R:
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                self._prepare(db, now)
                result = work(db, _View(db, now, self))
                self._last = self._state(db, now)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise BudgetStoreError(f"budget store {self._path}: {exc}") from None
        self._renewed_at = now
        return result

    async def _transact(self, work: Callable[[sqlite3.Connection, _View], R]) -> R:
        if self._closed:
            raise BudgetStoreError(f"budget store {self._path} is closed")
        now = self._clock()  # read here: a virtual clock can only be read on the loop
        if not self._in_thread:
            return self._run_inline(now, work)
        return await anyio.to_thread.run_sync(
            self._run_inline, now, work, limiter=self._thread_limiter
        )
