"""What the simulator saw, as frozen snapshots: one :class:`TaskRecord` per task, and
:class:`SimulatorStats` for the whole run.

Both are plain values taken under the simulator's lock, so a test or benchmark can keep them
while the simulator goes on serving.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from .._models import AspectRatio, Mode, ModelTier, TaskState
from ._config import TIME_EPSILON

__all__ = ["SimulatorStats", "TaskRecord"]


@attrs.frozen
class TaskRecord:
    """One task as the server knows it.

    Times (``created_at``, ``completes_at``, ``first_done_answer_at``) are on the
    simulator's clock: ``anyio.current_time()`` by default, so in-process they are directly
    comparable with the SDK's own timestamps (``Task.submitted_at``, say). ``generation_time``
    is in simulated seconds (what ``generationTime`` reports); with ``time_scale`` 1 it equals
    ``completes_at - created_at``.

    Attributes:
        task_id: the ``taskId`` handed out.
        api_key: the key that created it (only that key can see it).
        prompt, mode, model_tier, aspect_ratio, video_duration, image_urls: what was asked.
        credits: what it cost (refunded if ``outcome`` is failed, once it has failed).
        created_at: when the server accepted it.
        completes_at: when it stops processing (``created_at`` + its drawn duration).
        generation_time: its drawn duration, in simulated seconds.
        outcome: its final state, ``COMPLETED`` or ``FAILED`` (drawn at creation).
        status_checks: check-status requests answered about it so far.
        first_done_answer_at: when a check-status first reported it finished (``None``
            until then): ``first_done_answer_at - completes_at`` is how late a poller saw it.
    """

    task_id: str
    api_key: str = attrs.field(repr=False)
    prompt: str
    mode: Mode
    model_tier: ModelTier
    aspect_ratio: AspectRatio
    video_duration: int
    image_urls: tuple[str, ...]
    credits: int
    created_at: float
    completes_at: float
    generation_time: float
    outcome: TaskState
    status_checks: int = 0
    first_done_answer_at: float | None = None

    def state_at(self, now: float) -> TaskState:
        """The task's state at ``now`` (a time on the simulator's clock; within
        :data:`TIME_EPSILON` of ``completes_at`` counts as done)."""
        return self.outcome if self.completes_at <= now + TIME_EPSILON else TaskState.PROCESSING


@attrs.frozen
class SimulatorStats:
    """A snapshot of what the simulator saw. :meth:`as_json` gives it as plain JSON.

    Attributes:
        requests_by_endpoint: API requests received per endpoint (``generate``,
            ``check_status``), whatever their answer (401s included).
        requests_by_key: requests per authenticated key and endpoint.
        responses_by_status: answers sent, by HTTP status (dropped connections excluded).
        responses_429: rate-limit rejections sent.
        unauthorized: requests answered 401.
        tasks_created: tasks accepted (and charged).
        tasks_by_prompt: tasks created per prompt text, all keys together.
        duplicate_prompts: tasks whose key had already created a task with the same prompt:
            re-submissions, deliberate or not.
        tasks_completed, tasks_failed: tasks that have ended so far, by outcome.
        credits_charged: credits taken on acceptance, in all.
        credits_refunded: credits given back for failed tasks, in all.
        max_requests_in_window: the most requests one key made in any rolling window of the
            policy's length, counting every request the server counted as that key's (rejected
            ones too): above the limit only if a client kept knocking after a 429.
        max_requests_in_window_by_key: the same, per key.
        faults: injected faults, by kind.
        video_requests: GET requests for video files.
        video_requests_with_authorization: of those, how many carried an ``Authorization``
            header (the API key must never go to the video host: this should stay 0).
    """

    requests_by_endpoint: Mapping[str, int]
    requests_by_key: Mapping[str, Mapping[str, int]]
    responses_by_status: Mapping[int, int]
    responses_429: int
    unauthorized: int
    tasks_created: int
    tasks_by_prompt: Mapping[str, int]
    duplicate_prompts: int
    tasks_completed: int
    tasks_failed: int
    credits_charged: int
    credits_refunded: int
    max_requests_in_window: int
    max_requests_in_window_by_key: Mapping[str, int]
    faults: Mapping[str, int]
    video_requests: int
    video_requests_with_authorization: int

    @property
    def total_requests(self) -> int:
        """API requests received, all endpoints together."""
        return sum(self.requests_by_endpoint.values())

    def as_json(self) -> dict[str, Any]:
        """The snapshot as a JSON-ready dict (status codes become string keys)."""
        return {
            "requests_by_endpoint": dict(self.requests_by_endpoint),
            "requests_by_key": {k: dict(v) for k, v in self.requests_by_key.items()},
            "responses_by_status": {str(k): v for k, v in self.responses_by_status.items()},
            "responses_429": self.responses_429,
            "unauthorized": self.unauthorized,
            "tasks_created": self.tasks_created,
            "tasks_by_prompt": dict(self.tasks_by_prompt),
            "duplicate_prompts": self.duplicate_prompts,
            "tasks_completed": self.tasks_completed,
            "tasks_failed": self.tasks_failed,
            "credits_charged": self.credits_charged,
            "credits_refunded": self.credits_refunded,
            "max_requests_in_window": self.max_requests_in_window,
            "max_requests_in_window_by_key": dict(self.max_requests_in_window_by_key),
            "faults": dict(self.faults),
            "video_requests": self.video_requests,
            "video_requests_with_authorization": self.video_requests_with_authorization,
        }
