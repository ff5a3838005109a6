"""What a batch run has done so far: counts, the videos in flight, the budget.

The :class:`Tracker` listens to the client's events and to the batch's results; the progress
displays (rich or JSON) read it. It holds no display code and sends nothing.
"""

from __future__ import annotations

import time
from pathlib import Path

import attrs

from .._budget import BudgetState
from .._errors import InsufficientCreditsError
from .._events import Event, EventKind
from .._journal import UncertainSubmissionError
from .._models import BatchResult, VideoRequest

__all__ = ["InFlight", "Outcome", "Tracker"]


@attrs.define
class InFlight:
    """A video being generated, as last seen."""

    task_id: str
    request: VideoRequest | None
    since: float  #: ``time.monotonic()`` when this run first saw it
    state: str = "submitted"
    progress: str | None = None
    line: int | None = None  #: its line in the input (prompts from one template differ there)


@attrs.frozen
class Outcome:
    """One finished request of this run, for the log line and the JSON output."""

    result: BatchResult
    status: str  #: ``completed``, ``failed``, ``uncertain`` or ``not_submitted``
    file: Path | None = None
    error: str | None = None
    earlier: bool = False  #: it had ended in an earlier run (nothing was spent on it now)
    line: int | None = None  #: its line in the input


@attrs.define
class Tracker:
    """Counts and live state of one batch run."""

    total: int
    started: float = attrs.field(factory=time.monotonic)
    completed: int = 0
    failed: int = 0
    uncertain: int = 0
    not_submitted: int = 0
    earlier: int = 0  #: outcomes that came from the journal
    submitted: int = 0  #: generates accepted this run
    polls: int = 0  #: statuses received this run
    rate_limited: int = 0  #: 429 answers this run
    credits: int = 0  #: credits of the videos completed (this run and before)
    in_flight: dict[str, InFlight] = attrs.field(factory=dict)
    budget: BudgetState | None = None
    insufficient: InsufficientCreditsError | None = None
    #: the input's line of each request, by ``id(request)`` (for the display)
    lines: dict[int, int] = attrs.field(factory=dict)
    eta: float | None = None  #: seconds until the last video is done, as estimated now

    @property
    def finished(self) -> int:
        """Requests with an outcome so far."""
        return self.completed + self.failed + self.uncertain + self.not_submitted

    @property
    def requests(self) -> int:
        """API requests this run that got an answer (generates, polls, 429s)."""
        return self.submitted + self.polls + self.rate_limited

    @property
    def elapsed(self) -> float:
        """Wall-clock seconds since the run started."""
        return time.monotonic() - self.started

    def on_event(self, event: Event) -> None:
        """Follow the client's progress events (a listener for ``client.on_event``)."""
        if event.budget is not None:
            self.budget = event.budget
        if event.kind is EventKind.SUBMITTED and event.task_id is not None:
            self.submitted += 1
            line = self.lines.get(id(event.request)) if event.request is not None else None
            self.in_flight[event.task_id] = InFlight(
                event.task_id, event.request, time.monotonic(), line=line
            )
        elif event.kind is EventKind.POLLED and event.status is not None:
            self.polls += 1
            status = event.status
            video = self.in_flight.get(status.task_id)
            if video is None:  # re-attached from an earlier run: first seen now
                video = InFlight(status.task_id, None, time.monotonic())
                self.in_flight[status.task_id] = video
            video.state, video.progress = status.state.value, status.progress
        elif event.kind in (EventKind.COMPLETED, EventKind.FAILED) and event.task_id is not None:
            self.in_flight.pop(event.task_id, None)
        elif event.kind is EventKind.RATE_LIMITED:
            self.rate_limited += 1

    def on_outcome(self, outcome: Outcome) -> None:
        """Count one request's outcome."""
        result = outcome.result
        if result.task is not None:
            self.in_flight.pop(result.task.task_id, None)
        self.earlier += outcome.earlier
        if outcome.status == "completed":
            self.completed += 1
            video = result._video
            if video is not None:
                request = video.request or result._request
                fallback = request.credits if request is not None else 0
                self.credits += video.credits_used if video.credits_used else fallback
        elif outcome.status == "uncertain":
            self.uncertain += 1
        elif outcome.status == "not_submitted":
            self.not_submitted += 1
            if isinstance(result.error, InsufficientCreditsError):
                self.insufficient = self.insufficient or result.error
        else:
            self.failed += 1


def status_of(result: BatchResult) -> str:
    """The manifest word for a batch result of this run."""
    if result.ok:
        return "completed"
    if isinstance(result.error, UncertainSubmissionError):
        return "uncertain"
    if result.task is None:
        return "not_submitted"
    return "failed"
