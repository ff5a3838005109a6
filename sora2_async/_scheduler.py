"""The poll scheduler: one poller per running task, however many wait on it.

The first caller to wait on a task becomes its poller; everyone else waits on its result.
If the poller's caller is cancelled, the next waiter takes over, so a task is never polled
twice at once and never left unwatched while somebody waits. The poller asks the planner
*when* (``_planner``), the limiter *whether* (``_budget`` and the other stores), and the API
*what* (``_api``); none of those knows of the others.

Each tracked task holds a lease on its final poll in the budget from the moment it is
tracked until it ends or is given up; finished statuses are remembered (a bounded LRU),
so a finished task is never polled again. The scheduler counts its own demand (videos
submitted, extra polls spent, within the last window): the limiter only admits.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict, deque

import anyio
import attrs

from ._api import APICaller, is_transient
from ._errors import Sora2Error
from ._events import EventHub, EventKind
from ._limits import Lease, Limiter, RequestKind
from ._models import ModelTier, Task, TaskState, TaskStatus, video_of
from ._planner import Demand, Planner, PollPolicy, Tracked
from ._slack import RepollSlack
from ._turns import PollTurns
from ._window import EPSILON

__all__ = ["Scheduler"]

logger = logging.getLogger("sora2_async")

# Submissions, and the seconds between the first and the last, that say what pace a
# stream of them keeps (see _DemandLog).
_PACE_SAMPLES = 3
_PACE_SPAN = 60.0


class _DemandLog:
    """When this process submitted videos and spent extra polls, over the last window."""

    __slots__ = ("_extras", "_submissions", "queued")

    def __init__(self) -> None:
        self._submissions: deque[float] = deque()
        self._extras: deque[float] = deque()
        self.queued = 0  # submissions batches hold that have not asked the budget yet

    def note(self, *, extra: bool) -> None:
        (self._extras if extra else self._submissions).append(anyio.current_time())

    def now(self, window: float) -> Demand:
        horizon = anyio.current_time() - window
        for times in (self._submissions, self._extras):
            while times and times[0] <= horizon:
                times.popleft()
        return Demand(
            len(self._submissions),
            len(self._extras),
            max(0, self.queued),
            expected_submissions=self._pace(window),
        )

    def _pace(self, window: float) -> float:
        # A window's worth at the pace between the first and the last submission of the
        # window (not from a batch's single instant: it says nothing of a pace), once a few
        # have come a minute or more apart.
        times = self._submissions
        if len(times) < _PACE_SAMPLES or times[-1] - times[0] < _PACE_SPAN:
            return 0.0
        return (len(times) - 1) * window / (times[-1] - times[0])


@attrs.define(eq=False)
class _Watch:
    """A tracked task and the people waiting on it."""

    task: Task
    plan: Tracked
    lease: Lease | None
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
        planner: Planner,
        events: EventHub,
        *,
        min_interval: float = PollPolicy().min_interval,
        time_scale: float = 1.0,
        remember: int = 10_000,
    ) -> None:
        self._api = api
        self._limiter = limiter
        self._planner = planner
        self._events = events
        self._min_interval = min_interval / time_scale
        self._time_scale = time_scale
        self._demand = _DemandLog()
        self._slack = RepollSlack(limiter)
        self._turns = PollTurns(limiter)
        self._replan = anyio.Event()  # set (and replaced) when what a tier takes moved
        self._watches: dict[str, _Watch] = {}
        self._finished: OrderedDict[str, TaskStatus] = OrderedDict()
        self._remember = remember

    def __repr__(self) -> str:
        return f"<Scheduler tracking={len(self._watches)} finished={len(self._finished)}>"

    @property
    def planner(self) -> Planner:
        """The planner in force."""
        return self._planner

    def tracking(self) -> int:
        """How many tasks are being watched now."""
        return len(self._watches)

    def final_poll_after(self, tier: ModelTier | None) -> float:
        """Seconds from submission to the final poll of a video of ``tier``, as planned now."""
        return self._planner.final_poll_after(tier)

    def submitted(self) -> None:
        """Count a submission of this process (the planner's view of demand)."""
        self._demand.note(extra=False)

    def queued(self, change: int) -> None:
        """Submissions a batch holds that have not asked the budget yet went up or down by
        ``change`` (they are demand: no extra poll is spent while they need the budget)."""
        self._demand.queued += change

    async def _resize_slack(self) -> None:
        sizer = getattr(self._planner, "repoll_slack", None)
        if sizer is None:
            return
        demand = self._demand.now(self._limiter.rate_limit.per)
        target = sizer(self._limiter.last_state, len(self._watches), demand)
        await self._slack.resize(target, self._planner.final_poll_after(None))

    def _tell(self, hook: str, *args: object, **kwargs: object) -> None:
        """Call the planner's optional learning ``hook`` if it has one."""
        method = getattr(self._planner, hook, None)
        if method is not None:
            method(*args, **kwargs)

    def known(self, task_id: str) -> TaskStatus | None:
        """The latest status seen of ``task_id`` without sending anything, or ``None``."""
        if task_id in self._finished:
            return self._finished[task_id]
        watch = self._watches.get(task_id)
        return watch.latest if watch is not None else None

    async def adopt(self, task: Task, lease: Lease | None = None) -> None:
        """Start tracking ``task``; ``lease``: its final poll, promised already (else it is
        promised here, without waiting: the video runs already)."""
        if task.task_id in self._watches or task.task_id in self._finished:
            if lease is not None:
                await self._release(lease)
            return
        if lease is None:
            tier = task.request.model_tier if task.request is not None else None
            lease = await self._limiter.promise(self._planner.final_poll_after(tier))
            if task.task_id in self._watches:  # adopted meanwhile by another waiter
                await self._release(lease)
                return
        now = anyio.current_time()
        age_known = task.submitted_at is not None
        plan = Tracked(
            tier=task.request.model_tier if task.request is not None else None,
            anchor=task.submitted_at if task.submitted_at is not None else now,
            age_known=age_known,
        )
        self._watches[task.task_id] = _Watch(task, plan, lease)
        await self._resize_slack()

    async def wait(self, task: Task) -> TaskStatus:
        """Wait for ``task`` to end; return its final status (completed or failed).

        Raises:
            TaskNotFoundError, AuthenticationError, ResponseValidationError: polling it failed
                for good (transient errors are retried for several rounds first).
        """
        if task.task_id in self._finished:
            self._finished.move_to_end(task.task_id)
            return self._finished[task.task_id]
        await self.adopt(task)
        if task.task_id in self._finished:  # it ended while its lease was being made
            return self._finished[task.task_id]
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
                await self._forget(watch)  # nobody waits any more: stop spending on it
        if watch.error is not None:
            raise watch.error
        assert watch.result is not None
        return watch.result

    async def _release(self, lease: Lease) -> None:
        with anyio.CancelScope(shield=True):  # a lease left behind holds a slot back
            await self._limiter.release(lease)

    async def _forget(self, watch: _Watch) -> None:
        if self._watches.get(watch.task.task_id) is watch:
            del self._watches[watch.task.task_id]
            self._tell("forget", watch.plan.tier, watch.task.task_id)
        lease, watch.lease = watch.lease, None
        if lease is not None:
            await self._release(lease)
        await self._resize_slack()

    async def _finish(
        self, watch: _Watch, status: TaskStatus | None, error: BaseException | None
    ) -> None:
        watch.result, watch.error = status, error
        await self._forget(watch)
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
        window = self._limiter.rate_limit.per
        failures = self._api.retry.for_polls(self._min_interval)
        while True:
            now = anyio.current_time()
            budget = self._limiter.last_state
            step = self._planner.next_poll(plan, now, budget, self._demand.now(window))
            if step.at > now:
                if not await self._sleep_until(step.at, wake=self._replan):
                    continue  # what is known of its tier changed: plan again
                if step.extra and not self._planner.extra_still_worth(
                    self._limiter.last_state, self._demand.now(window)
                ):
                    continue  # the budget got busier while it slept: plan again
            try:
                status = await self._poll_once(watch, extra=step.extra)
            except Sora2Error as exc:
                pause = failures.next() if is_transient(exc) else None
                if pause is None:  # refused for good, or failing for too long
                    await self._finish(watch, None, exc)
                    return
                logger.debug("poll of %s failed (%s); will try again", watch.task.task_id, exc)
                await self._sleep_until(anyio.current_time() + pause)
                continue
            except Exception as exc:
                await self._finish(watch, None, exc)
                raise
            failures.reset()
            if status is None:  # nothing sent: no idle budget for an extra, or a 429 came first
                plan.last_poll = anyio.current_time()
                continue
            watch.latest = status
            self._events.emit(EventKind.POLLED, task_id=status.task_id, status=status)
            if status.state is not TaskState.PROCESSING:
                self._learn(watch, status)
                await self._finish(watch, status, None)
                return

    async def _sleep_until(self, deadline: float, *, wake: anyio.Event | None = None) -> bool:
        """Sleep until ``deadline``, waking to keep this owner's leases alive meanwhile;
        ``False`` if ``wake`` was set first."""
        every = self._limiter.renew_every
        while True:
            now = anyio.current_time()
            # A clock that keeps whole microseconds (looptime's) never reaches a deadline a
            # hair past its last tick (1024.9861740000001 after 1024.986174): close enough.
            if now >= deadline - EPSILON:
                return True
            nap = deadline - now if math.isinf(every) else min(deadline - now, every)
            if wake is None:
                await anyio.sleep(nap)
            else:
                with anyio.move_on_after(nap):
                    await wake.wait()
                if wake.is_set():
                    return False
            if not math.isinf(every):
                await self._limiter.renew()

    def _learned(self, tier: ModelTier | None, before: tuple[float, float] | None) -> None:
        """Wake every sleeping poller to plan again if ``tier``'s bounds moved: a faster
        tier polls early, and an overrun moves the final polls of its siblings."""
        after = self._bounds(tier)
        if (
            before is not None
            and after is not None
            and (after[0] < before[0] or after[1] > before[1])
        ):
            old, self._replan = self._replan, anyio.Event()
            old.set()

    def _bounds(self, tier: ModelTier | None) -> tuple[float, float] | None:
        bounds = getattr(self._planner, "bounds", None)
        return None if bounds is None else tuple(bounds(tier))

    async def _poll_once(self, watch: _Watch, *, extra: bool) -> TaskStatus | None:
        plan = watch.plan
        kind = RequestKind.EXTRA_POLL if extra else RequestKind.POLL
        # One attempt: a failed one is a failed round here, retried on the poll plan.
        async with self._turns.taken():
            status = await self._api.check_status(watch.task.task_id, kind=kind, retry=False)
        if status is None:
            return None
        if extra:
            self._demand.note(extra=True)
        first_look = not plan.age_known and plan.polls == 0
        plan.polls += 1
        now = plan.last_poll = anyio.current_time()
        running = status.state is TaskState.PROCESSING
        if running and plan.age_known:
            # Censored data: this one takes longer than its age (siblings plan from it).
            before = self._bounds(plan.tier)
            self._tell("observe_running", plan.tier, watch.task.task_id, now - plan.anchor)
            self._learned(plan.tier, before)
        if not extra and not first_look and not plan.overdue:
            self._tell("observe_final", still_running=running)
        if not extra and not first_look and running:
            plan.overdue = True  # the poll that should have found it done did not
            await self._resize_slack()
        return status

    def _learn(self, watch: _Watch, status: TaskStatus) -> None:
        plan = watch.plan
        if not plan.age_known or status.state is not TaskState.COMPLETED:
            return
        if status.generation_time is not None:
            # Server time, but never less than what we saw running (it may omit queueing).
            # (Its entry among the running ones goes when it is forgotten, just after.)
            before = self._bounds(plan.tier)
            self._planner.observe(plan.tier, status.generation_time)
            self._learned(plan.tier, before)
