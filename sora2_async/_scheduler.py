"""The poll scheduler: one poller per running task, however many wait on it.

The first caller to wait on a task becomes its poller; everyone else waits on its result.
If the poller's caller is cancelled, the next waiter takes over, so a task is never polled
twice at once and never left unwatched while somebody waits. The poller asks the planner
*when* (``_planner``), the limiter *whether* (``_budget``), and the API *what* (``_api``);
none of those knows of the others.

Each tracked task holds one promised poll in the budget (its final one) from the moment it
is tracked until it ends or is given up; finished statuses are remembered (a bounded LRU),
so a finished task is never polled again.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

import anyio
import attrs

from ._api import APICaller
from ._budget import Limiter, RequestKind
from ._errors import APIConnectionError, RateLimitError, ResponseValidationError, ServerError
from ._events import EventHub, EventKind
from ._models import ModelTier, Task, TaskState, TaskStatus, video_of
from ._planner import DurationModel, PollPolicy, Tracked, extra_allowance, plan_next

__all__ = ["Scheduler"]

logger = logging.getLogger("sora2_async")

# Failed polls in a row (connection errors, 5xx, 429s, broken answers) before a wait gives
# up: spaced 5 s, 10 s, 20 s ... up to 5 minutes apart, about ten minutes of outage.
_MAX_FAILED_ROUNDS = 8
_LONGEST_PAUSE = 300.0


@attrs.define(eq=False)
class _Watch:
    """A tracked task and the people waiting on it."""

    task: Task
    plan: Tracked
    holds_promise: bool
    waiters: int = 0
    polling: bool = False
    changed: anyio.Event = attrs.Factory(anyio.Event)  # set when done or the poller leaves
    result: TaskStatus | None = None
    error: BaseException | None = None
    latest: TaskStatus | None = None

    def notify(self) -> None:
        old, self.changed = self.changed, anyio.Event()
        old.set()


class Scheduler:
    """Decides which task is polled when, and shares each poll among its waiters."""

    def __init__(
        self,
        api: APICaller,
        limiter: Limiter,
        policy: PollPolicy,
        events: EventHub,
        *,
        remember: int = 10_000,
    ) -> None:
        self._api = api
        self._limiter = limiter
        self._policy = policy
        self._events = events
        self._model = DurationModel(policy)
        self._watches: dict[str, _Watch] = {}
        self._finished: OrderedDict[str, TaskStatus] = OrderedDict()
        self._remember = remember

    def __repr__(self) -> str:
        return f"<Scheduler tracking={len(self._watches)} finished={len(self._finished)}>"

    @property
    def policy(self) -> PollPolicy:
        """The poll policy in force."""
        return self._policy

    def tracking(self) -> int:
        """How many tasks are being watched now."""
        return len(self._watches)

    def final_poll_after(self, tier: ModelTier | None) -> float:
        """Seconds from submission to the final poll of a video of ``tier``, as planned now."""
        return self._model.bounds(tier)[1] + self._policy.seconds(self._policy.final_margin)

    def known(self, task_id: str) -> TaskStatus | None:
        """The latest status seen of ``task_id`` without sending anything, or ``None``."""
        if task_id in self._finished:
            return self._finished[task_id]
        watch = self._watches.get(task_id)
        return watch.latest if watch is not None else None

    def adopt(self, task: Task, *, promised: bool) -> None:
        """Start tracking ``task``. ``promised``: its final poll is already reserved."""
        if task.task_id in self._watches or task.task_id in self._finished:
            if promised:
                self._limiter.release(1)
            return
        if not promised:
            self._limiter.reserve(1)
        now = anyio.current_time()
        age_known = task.submitted_at is not None
        plan = Tracked(
            tier=task.request.model_tier if task.request is not None else None,
            anchor=task.submitted_at if task.submitted_at is not None else now,
            age_known=age_known,
        )
        self._watches[task.task_id] = _Watch(task, plan, holds_promise=True)

    async def wait(self, task: Task) -> TaskStatus:
        """Wait for ``task`` to end; return its final status (completed or failed).

        Raises:
            TaskNotFoundError, AuthenticationError, ResponseValidationError: polling it failed
                for good (transient errors are retried for several rounds first).
        """
        if task.task_id in self._finished:
            self._finished.move_to_end(task.task_id)
            return self._finished[task.task_id]
        self.adopt(task, promised=False)
        watch = self._watches[task.task_id]
        watch.waiters += 1
        try:
            while watch.result is None and watch.error is None:
                if watch.polling:
                    await watch.changed.wait()
                    continue
                watch.polling = True
                try:
                    await self._poll_until_done(watch)
                finally:
                    watch.polling = False
                    watch.notify()
        finally:
            watch.waiters -= 1
            if watch.waiters == 0 and watch.result is None and watch.error is None:
                self._forget(watch)  # nobody waits any more: stop spending on it
        if watch.error is not None:
            raise watch.error
        assert watch.result is not None
        return watch.result

    def _forget(self, watch: _Watch) -> None:
        if self._watches.get(watch.task.task_id) is watch:
            del self._watches[watch.task.task_id]
        if watch.holds_promise:
            watch.holds_promise = False
            self._limiter.release(1)

    def _finish(
        self, watch: _Watch, status: TaskStatus | None, error: BaseException | None
    ) -> None:
        watch.result, watch.error = status, error
        self._forget(watch)
        task_id = watch.task.task_id
        if status is not None and status.state is TaskState.COMPLETED:
            video = video_of(watch.task, status)
            self._events.emit(EventKind.COMPLETED, task_id=task_id, status=status, video=video)
        else:
            self._events.emit(EventKind.FAILED, task_id=task_id, status=status, error=error)
        if status is not None:
            self._finished[watch.task.task_id] = status
            while len(self._finished) > self._remember:
                self._finished.popitem(last=False)

    async def _poll_until_done(self, watch: _Watch) -> None:
        plan = watch.plan
        failed_rounds = 0
        while True:
            now = anyio.current_time()
            lo, hi = self._model.bounds(plan.tier)
            if not plan.age_known:
                lo = 0.0  # it may have run for a while already
            state = self._limiter.state()
            allowance = extra_allowance(state, self._policy.budget_share)
            step = plan_next(plan, now, bounds=(lo, hi), policy=self._policy, allowance=allowance)
            if step.at > now:
                await anyio.sleep(step.at - now)
                if step.extra and not extra_allowance(
                    self._limiter.state(), self._policy.budget_share
                ):
                    continue  # the budget got busier while it slept: plan again
            try:
                status = await self._poll_once(watch, extra=step.extra)
            except (
                APIConnectionError,
                ServerError,
                RateLimitError,
                ResponseValidationError,
            ) as exc:
                failed_rounds += 1
                if failed_rounds >= _MAX_FAILED_ROUNDS:
                    self._finish(watch, None, exc)
                    return
                logger.debug("poll of %s failed (%s); will try again", watch.task.task_id, exc)
                pause = min(_LONGEST_PAUSE, self._policy.min_interval * 2 ** (failed_rounds - 1))
                await anyio.sleep(self._policy.seconds(pause))
                continue
            except Exception as exc:
                self._finish(watch, None, exc)
                raise
            failed_rounds = 0
            if status is None:  # an extra poll the budget could not spare right now
                plan.last_poll = anyio.current_time()
                continue
            watch.latest = status
            self._events.emit(EventKind.POLLED, task_id=status.task_id, status=status)
            if status.state is not TaskState.PROCESSING:
                self._learn(watch, status)
                self._finish(watch, status, None)
                return

    async def _poll_once(self, watch: _Watch, *, extra: bool) -> TaskStatus | None:
        plan = watch.plan
        kind = RequestKind.EXTRA_POLL if extra else RequestKind.POLL
        # One attempt: a failed one is a failed round here, retried on the poll plan.
        status = await self._api.check_status(watch.task.task_id, kind=kind, retry=False)
        if status is None:
            return None
        first_look = not plan.age_known and plan.polls == 0
        plan.polls += 1
        plan.last_poll = anyio.current_time()
        if not extra and not first_look and status.state is TaskState.PROCESSING:
            plan.overdue = True  # the poll that should have found it done did not
        return status

    def _learn(self, watch: _Watch, status: TaskStatus) -> None:
        plan = watch.plan
        if not plan.age_known or status.state is not TaskState.COMPLETED:
            return
        if status.generation_time is not None:
            # Server time, but never less than what we saw running (it may omit queueing).
            self._model.observe(plan.tier, status.generation_time)
