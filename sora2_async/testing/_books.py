"""The server's books: accounts (credits, rate-limit window), tasks, refunds and counters.

:class:`Books` applies the API's rules to a request that has been authenticated and read; it
knows nothing of faults, clocks or transports (the :class:`Simulator` brings those) and is
used under the simulator's lock.

Time is lazy: a task's duration and outcome are drawn when it is created, and its state at any
moment follows from the time, so nothing runs in the background.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Mapping

import attrs

from .._models import PRICE_TABLE, TaskState
from ._config import TIME_EPSILON, Durations, RateLimitPolicy
from ._mp4 import video_bytes
from ._ratelimit import KeyWindow, max_in_window
from ._records import SimulatorStats, TaskRecord
from ._reply import Reply, error_reply, json_reply
from ._validate import GenerateParams

__all__ = ["Account", "Books"]


@attrs.define(eq=False)
class _Task:
    record: TaskRecord
    status_checks: int = 0
    first_done_answer_at: float | None = None

    def snapshot(self) -> TaskRecord:
        return attrs.evolve(
            self.record,
            status_checks=self.status_checks,
            first_done_answer_at=self.first_done_answer_at,
        )


@attrs.define(eq=False)
class Account:
    """One key's account: credits, rate-limit window, and what it asked for."""

    key: str
    credits: int
    window: KeyWindow
    request_times: list[float] = attrs.Factory(list)  # every counted request, for the audit
    requests: Counter[str] = attrs.Factory(Counter)
    prompts: Counter[str] = attrs.Factory(Counter)


def usable_key(key: object) -> bool:
    """Whether ``key`` can be an API key: a non-empty string without whitespace."""
    return isinstance(key, str) and bool(key) and not any(c.isspace() for c in key)


class Books:
    """Accounts, tasks and counters, and the rules that change them."""

    def __init__(
        self,
        *,
        policy: RateLimitPolicy,
        window: float,
        durations: Durations,
        time_scale: float,
        credits: int,
        open_door: bool,
        rng: random.Random,
    ) -> None:
        self.policy = policy
        self.window = window
        self.durations = durations
        self.time_scale = time_scale
        self.default_credits = credits
        self.open_door = open_door  # any non-empty key gets an account on first use
        self.rng = rng
        self.accounts: dict[str, Account] = {}
        self.tasks: dict[str, _Task] = {}
        self.refunds: list[tuple[float, int, str]] = []  # heap: failed tasks not yet refunded
        self.counts: Counter[str] = Counter()
        self.endpoints: Counter[str] = Counter({"generate": 0, "check_status": 0})
        self.statuses: Counter[int] = Counter()
        self.faults: Counter[str] = Counter()
        self.prompts: Counter[str] = Counter()

    def add_key(self, key: str, credits: int | None = None) -> Account:
        """Open (or reopen, with fresh credits) the account of ``key``."""
        amount = self.default_credits if credits is None else credits
        account = Account(key, amount, KeyWindow(self.policy, self.window))
        self.accounts[key] = account
        return account

    def account(self, authorization: str | None) -> Account | None:
        """The account an ``Authorization`` header names, or ``None`` (answer 401)."""
        scheme, _, key = (authorization or "").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not usable_key(key):
            return None
        account = self.accounts.get(key)
        if account is None and self.open_door:
            account = self.add_key(key)
        return account

    def generate(
        self, account: Account, params: GenerateParams, now: float, failure_rate: float
    ) -> Reply:
        """Accept a video (charging for it) or refuse it for want of credits."""
        price = PRICE_TABLE[params.model_tier][params.video_duration]
        if account.credits < price:
            # The provider documents this body without "success": keep it so.
            return error_reply(
                402,
                "INSUFFICIENT_CREDITS",
                "Insufficient credits",
                success_field=False,
                requiredCredits=price,
            )
        task_id = f"task_{self.rng.getrandbits(48):012x}"
        while task_id in self.tasks:  # 48 random bits: a clash is rare, not impossible
            task_id = f"task_{self.rng.getrandbits(48):012x}"
        low, high = self.durations.for_tier(params.model_tier)
        seconds = self.rng.uniform(low, high)
        failed = self.rng.random() < failure_rate
        record = TaskRecord(
            task_id=task_id,
            api_key=account.key,
            prompt=params.prompt,
            mode=params.mode,
            model_tier=params.model_tier,
            aspect_ratio=params.aspect_ratio,
            video_duration=params.video_duration,
            image_urls=params.image_urls,
            credits=price,
            created_at=now,
            completes_at=now + seconds / self.time_scale,
            generation_time=seconds,
            outcome=TaskState.FAILED if failed else TaskState.COMPLETED,
        )
        self.tasks[task_id] = _Task(record)
        account.credits -= price
        self.counts["credits_charged"] += price
        if failed:
            heapq.heappush(self.refunds, (record.completes_at, len(self.tasks), task_id))
        if account.prompts[params.prompt]:
            self.counts["duplicate_prompts"] += 1
        account.prompts[params.prompt] += 1
        self.prompts[params.prompt] += 1
        body = {
            "success": True,
            "status": "processing",
            "taskId": task_id,
            "message": "Video generation in progress",
        }
        return json_reply(200, body)

    def status(self, account: Account, task_id: str, now: float, video_base_url: str) -> Reply:
        """The answer of check-status for ``task_id`` at ``now``."""
        task = self.tasks.get(task_id)
        if task is None or task.record.api_key != account.key:
            return error_reply(404, "TASK_NOT_FOUND", "Task not found")
        task.status_checks += 1
        record = task.record
        state = record.state_at(now)
        if state is TaskState.PROCESSING:
            progress = _progress(record, now)
            body: dict[str, object] = {
                "success": True,
                "status": "processing",
                "progress": progress,
                "message": f"Video generation {progress}",
                "taskId": task_id,
            }
            return json_reply(200, body)
        if task.first_done_answer_at is None:
            task.first_done_answer_at = now
        if state is TaskState.FAILED:
            body = {
                "success": False,
                "status": "failed",
                "error": "Video generation failed",
                "errorCode": "GENERATION_FAILED",
                "taskId": task_id,
            }
            return json_reply(500, body)
        body = {
            "success": True,
            "status": "completed",
            "videoUrl": f"{video_base_url}/{task_id}.mp4",
            "taskId": task_id,
            "generationTime": round(record.generation_time),
            "creditsUsed": record.credits,
        }
        return json_reply(200, body)

    def video(self, name: str, now: float, *, authorized: bool) -> Reply:
        """The file ``<taskId>.mp4`` of a task completed by ``now``, else 404."""
        self.counts["video_requests"] += 1
        if authorized:
            self.counts["video_requests_with_auth"] += 1
        task = self.tasks.get(name.removesuffix(".mp4")) if name.endswith(".mp4") else None
        if task is None or task.record.state_at(now) is not TaskState.COMPLETED:
            return Reply(404, b"Not Found", "text/plain")
        return Reply(200, video_bytes(task.record.video_duration), "video/mp4")

    def settle(self, now: float) -> None:
        """Refund every failed task whose failure has happened by ``now``."""
        while self.refunds and self.refunds[0][0] <= now + TIME_EPSILON:
            _, _, task_id = heapq.heappop(self.refunds)
            record = self.tasks[task_id].record
            self.accounts[record.api_key].credits += record.credits
            self.counts["credits_refunded"] += record.credits

    def task_records(self) -> Mapping[str, TaskRecord]:
        """A snapshot of every task, in creation order."""
        return {task_id: task.snapshot() for task_id, task in self.tasks.items()}

    def stats(self, now: float) -> SimulatorStats:
        """A snapshot of the counters at ``now``."""
        ended = Counter(
            t.record.outcome for t in self.tasks.values() if t.record.completes_at <= now
        )
        by_key = {
            key: max_in_window(account.request_times, self.window)
            for key, account in self.accounts.items()
            if account.request_times
        }
        return SimulatorStats(
            requests_by_endpoint=dict(self.endpoints),
            requests_by_key={k: dict(a.requests) for k, a in self.accounts.items() if a.requests},
            responses_by_status=dict(sorted(self.statuses.items())),
            responses_429=self.statuses[429],
            unauthorized=self.statuses[401],
            tasks_created=len(self.tasks),
            tasks_by_prompt=dict(self.prompts),
            duplicate_prompts=self.counts["duplicate_prompts"],
            tasks_completed=ended[TaskState.COMPLETED],
            tasks_failed=ended[TaskState.FAILED],
            credits_charged=self.counts["credits_charged"],
            credits_refunded=self.counts["credits_refunded"],
            max_requests_in_window=max(by_key.values(), default=0),
            max_requests_in_window_by_key=by_key,
            faults=dict(self.faults),
            video_requests=self.counts["video_requests"],
            video_requests_with_authorization=self.counts["video_requests_with_auth"],
        )


def _progress(record: TaskRecord, now: float) -> str:
    """A stage word by elapsed fraction, like the API's free-form ``progress``."""
    span = record.completes_at - record.created_at
    fraction = (now - record.created_at) / span if span > 0 else 1.0
    if fraction < 0.1:
        return "queued"
    return "generating" if fraction < 0.9 else "finalizing"
