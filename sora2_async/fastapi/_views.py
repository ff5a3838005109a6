"""What a backend tells its own clients about a video or a batch: JSON-ready pydantic models.

They are built only from what the SDK already knows (``known_status``, the outcome of a
background wait), so answering with them never spends budget.
"""

from __future__ import annotations

from typing import Literal

import attrs
from pydantic import BaseModel

from .._errors import APIError
from .._models import BatchResult, Task, TaskStatus
from .._video_records import VideoRecord

__all__ = [
    "BatchJob",
    "BatchView",
    "VideoState",
    "VideoView",
    "view_of_error",
    "view_of_record",
    "view_of_status",
]

#: ``queued`` until its generate is sent (a service's store-backed videos only), then
#: ``processing`` until the video ends ``completed`` or ``failed``; ``error`` when the SDK
#: stopped following it (the generate was refused, its answer was lost, the task was not
#: found, or polling kept failing): the video may still finish on the server.
VideoState = Literal["queued", "processing", "completed", "failed", "error"]


class VideoView(BaseModel):
    """One video as a backend reports it; :attr:`done` once ``state`` can no longer change.

    ``id`` is the service's id of a video accepted with :meth:`Sora2Service.accept` (it
    exists before the task does); ``task_id`` is the API's, once its generate was accepted.
    """

    task_id: str | None
    state: VideoState
    id: str | None = None
    progress: str | None = None  #: the server's stage word, not a percentage
    video_url: str | None = None
    generation_time: float | None = None
    credits_used: int | None = None
    error: str | None = None
    error_code: str | None = None

    @property
    def done(self) -> bool:
        """Whether the video has ended (completed, failed, or no longer followed)."""
        return self.state not in ("queued", "processing")


def view_of_status(status: TaskStatus) -> VideoView:
    """The view of a status the SDK has seen."""
    return VideoView(
        task_id=status.task_id,
        state=status.state.value,
        progress=status.progress,
        video_url=status.video_url,
        generation_time=status.generation_time,
        credits_used=status.credits_used,
        error=status.error,
        error_code=status.error_code,
    )


def view_of_record(record: VideoRecord) -> VideoView:
    """The view of a record of a service's store (``submitting`` shows as ``queued``)."""
    return VideoView(
        id=record.id,
        task_id=record.task_id,
        state="queued" if record.state == "submitting" else record.state,
        progress=record.progress,
        video_url=record.video_url,
        generation_time=record.generation_time,
        credits_used=record.credits_used,
        error=record.error,
        error_code=record.error_code,
    )


def view_of_error(task_id: str, error: BaseException) -> VideoView:
    """The view of a task the SDK stopped following because of ``error``."""
    code = error.error_code if isinstance(error, APIError) else None
    return VideoView(task_id=task_id, state="error", error=str(error), error_code=code)


class BatchView(BaseModel):
    """A batch as a backend reports it.

    ``videos`` are the accepted ones, in the order they were submitted; ``rejected`` holds
    the error of each request the API never accepted. ``done`` once every request has ended.
    """

    batch_id: str
    total: int
    done: bool
    videos: list[VideoView]
    rejected: list[str]


@attrs.define(eq=False)
class BatchJob:
    """A batch running in a service's background: what was submitted and what has ended."""

    batch_id: str
    total: int
    tasks: list[Task] = attrs.Factory(list)  #: accepted, in submission order
    results: list[BatchResult] = attrs.Factory(list)  #: ended, in order of completion
    done: bool = False

    @property
    def rejected(self) -> list[BatchResult]:
        """Results of requests the API never accepted (no task)."""
        return [result for result in self.results if result.task is None]
