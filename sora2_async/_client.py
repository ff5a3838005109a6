"""``Sora2Client``: the one object users hold.

It owns (or borrows) an ``httpx.AsyncClient``, holds the key, and routes every API request
through one :class:`~sora2_async._api.APICaller`, where the shared budget admits it.
"""

from __future__ import annotations

import datetime
import logging
import math
import os
import time
from collections.abc import AsyncIterable, Callable, Iterable
from pathlib import Path
from types import TracebackType

import anyio
import attrs
import httpx

from ._api import APICaller, SendHooks
from ._batch import Batch
from ._budget import BudgetState, Limiter, RateLimit, RequestKind, SlidingWindowLimiter
from ._download import download_video
from ._errors import InvalidRequestError, Sora2Error, WaitTimeoutError, provably_not_created
from ._events import Event, EventHub, EventKind, EventStream
from ._http import HTTPLayer, check_base_url
from ._journal import Journal
from ._journaled import Adoption
from ._models import BatchResult, Task, TaskStatus, Video, VideoRequest, video_of
from ._planner import Planner, PollPlanner, PollPolicy
from ._retry import RetryPolicy
from ._scheduler import Scheduler
from ._telemetry import VideoTelemetry

__all__ = ["DEFAULT_BASE_URL", "Sora2Client"]

logger = logging.getLogger("sora2_async")

DEFAULT_BASE_URL = "https://nanophoto.ai"
API_KEY_ENV = "NANOPHOTO_API_KEY"
BASE_URL_ENV = "NANOPHOTO_BASE_URL"


class Sora2Client:
    """An async client of the nanophoto.ai Sora 2 API, on asyncio or trio.

    Args:
        api_key: the API key; defaults to ``$NANOPHOTO_API_KEY``.
        base_url: defaults to ``$NANOPHOTO_BASE_URL``, then ``https://nanophoto.ai``.
        rate_limit: a :class:`RateLimit` (a budget of its own is made, in memory), or a
            limiter shared with other clients of the same key: a
            :class:`SlidingWindowLimiter` in this process, a :class:`SQLiteLimiter` for every
            process of one host. A limiter passed in is the caller's to close.
        http_client: an ``httpx.AsyncClient`` to use (and leave open); by default the client
            makes one and closes it in :meth:`aclose`. Its transport, pool, proxies, event
            hooks, default headers, cookies and query parameters apply; its ``auth``,
            ``base_url``, ``timeout`` and ``follow_redirects`` do not (the key, the API's
            URL, ``timeout`` below, and never a redirect).
        transport: an httpx transport for the ``httpx.AsyncClient`` this client makes and
            closes (a simulator's, an ``httpx.MockTransport``); not with ``http_client``.
        timeout: seconds, or an ``httpx.Timeout`` (default: 10 s to connect, 60 s in all).
        max_retries: retries of one call after connection errors, timeouts and 5xx.
        retry: every retry knob at once (overrides ``max_retries``).
        poll_policy: the default planner's knobs (minimum poll interval, target delay, priors).
        planner: a :class:`Planner` of your own instead of the default :class:`PollPlanner`
            (it is not rescaled by ``time_scale``).
        time_scale: run this many times faster than the real API: duration priors, the
            minimum poll interval and the budget's window all shrink by it. Only for a
            simulator started with the same ``--time-scale`` (demos, cross-process tests).
        max_concurrent_requests: API requests on the wire at once; more wait in line, in
            front of httpx. Default: half the HTTP pool's connection limit (50 for httpx's
            default of 100): with every connection busy, httpcore's pool rescans its queue
            on each event, and at 1,000 videos in flight a gate of half the pool gave
            37-40 % more checks a second than a gate the pool's size.
        allow_insecure_http: permit a plain ``http://`` base URL to a non-loopback host.

    Raises:
        Sora2Error: when no key is given or found in ``$NANOPHOTO_API_KEY``, or the base URL
            is refused. Nothing has been sent then.
        ValueError: for both ``planner`` and ``poll_policy``, both ``http_client`` and
            ``transport``, or a non-positive ``time_scale``.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        rate_limit: RateLimit | Limiter | None = None,
        http_client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: httpx.Timeout | float | None = None,
        max_retries: int = 3,
        retry: RetryPolicy | None = None,
        poll_policy: PollPolicy | None = None,
        planner: Planner | None = None,
        time_scale: float = 1.0,
        max_concurrent_requests: int | None = None,
        allow_insecure_http: bool = False,
    ) -> None:
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        if not key or not key.strip():
            raise Sora2Error(
                f"no API key: pass api_key=... or set the {API_KEY_ENV} environment variable "
                "(make one at nanophoto.ai -> Settings -> API Keys)"
            )
        url = base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
        self._base_url = check_base_url(url, allow_insecure=allow_insecure_http)
        if not time_scale > 0:
            raise ValueError(f"time_scale must be positive, not {time_scale!r}")
        if http_client is not None and transport is not None:
            raise ValueError("pass an http_client or a transport (for the one made here), not both")
        if planner is not None and poll_policy is not None:
            raise ValueError("pass a planner or a poll_policy (the default planner's), not both")
        if rate_limit is None or isinstance(rate_limit, RateLimit):
            rate_limit = rate_limit or RateLimit()
            scaled = attrs.evolve(rate_limit, per=rate_limit.per / time_scale)
            self._limiter: Limiter = SlidingWindowLimiter(scaled, margin=2.0 / time_scale)
        else:
            self._limiter = rate_limit
        self._retry = retry or RetryPolicy(max_retries=max_retries)
        self._http = HTTPLayer(
            api_key=key.strip(),
            base_url=self._base_url,
            http_client=http_client,
            transport=transport,
            timeout=timeout,
            max_concurrent=max_concurrent_requests,
        )
        self._events = EventHub()
        self._telemetry = VideoTelemetry()
        self._api = APICaller(self._http, self._limiter, self._retry, self._events)
        policy = _scaled(poll_policy or PollPolicy(), time_scale)
        self._scheduler = Scheduler(
            self._api,
            self._limiter,
            planner or PollPlanner(policy),
            self._events,
            min_interval=policy.min_interval,
            time_scale=time_scale,
        )
        self._orphans: dict[str, Task] = {}

    def __repr__(self) -> str:
        return f"<Sora2Client {self._base_url} budget={self._limiter!r}>"

    async def __aenter__(self) -> Sora2Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client if this client made it."""
        await self._http.aclose()

    @property
    def base_url(self) -> str:
        """The API's base URL, without a trailing slash."""
        return self._base_url

    @property
    def limiter(self) -> Limiter:
        """The budget this client spends (share it with other clients of the same key)."""
        return self._limiter

    @property
    def planner(self) -> Planner:
        """The planner that decides when each video is polled."""
        return self._scheduler.planner

    @property
    def orphaned_tasks(self) -> list[Task]:
        """Tasks this client submitted and stopped following before they ended (a cancelled
        :meth:`run`): they exist and are paid for; follow them with :meth:`wait` or
        :meth:`as_completed`. Each was also logged as a WARNING."""
        return list(self._orphans.values())

    def budget(self) -> BudgetState:
        """The latest snapshot of the shared budget (no round trip to a shared store):
        used, reserved, waiting, next free slot, 429s. ``await client.limiter.snapshot()``
        asks the store."""
        return self._limiter.last_state

    async def generate(self, request: VideoRequest | str) -> Task:
        """Submit one video. Spends one request (more only after 429s or refused connects).

        A prompt string stands for ``VideoRequest(prompt)``, as in :meth:`batch`.

        Raises:
            TypeError: ``request`` is neither a :class:`VideoRequest` nor a string.
            InvalidRequestError, AuthenticationError, InsufficientCreditsError: the API said no.
            ServerError, APIConnectionError: the request may have reached the server; the
                message says so, and nothing was re-sent.
        """
        return await self._submit(_as_request(request), promise=False)

    async def check_status(self, task: Task | str) -> TaskStatus:
        """The task's status now: exactly one request when nothing goes wrong.

        Raises:
            TaskNotFoundError: unknown task, or another key's.
            APIError, APIConnectionError: after retries are exhausted.
            ResponseValidationError: an answer that breaks the contract.
        """
        status = await self._api.check_status(_task_id(task), kind=RequestKind.POLL)
        assert status is not None  # only extra polls are ever skipped
        return status

    async def wait(self, task: Task | str, *, timeout: float | None = None) -> Video:  # noqa: ASYNC109 (the design's signature)
        """Wait until ``task`` is done and return its video, polling under the shared budget.

        Several waits on one task share one poller. A task known only by its id (submitted
        elsewhere) is looked at once right away, then polled like the others.

        Raises:
            TypeError: ``task`` is neither a :class:`Task` nor a task id string.
            GenerationFailedError: the task ended failed (``.status`` says why).
            WaitTimeoutError: ``timeout`` seconds passed first; the task itself goes on.
            TaskNotFoundError: the task does not exist, or belongs to another key.
            APIError, APIConnectionError: polling kept failing for several rounds.
        """
        task = task if isinstance(task, Task) else Task(_task_id(task))
        status: TaskStatus | None = None
        with anyio.move_on_after(timeout) as scope:
            status = await self._scheduler.wait(task)
        if status is None or scope.cancelled_caught:
            raise WaitTimeoutError(
                f"task {task.task_id} not done after {timeout:g}s; it goes on on the server"
            )
        return video_of(task, status)

    async def run(self, request: VideoRequest | str, *, timeout: float | None = None) -> Video:  # noqa: ASYNC109
        """Generate a video and wait for it: :meth:`generate` then :meth:`wait`.

        The submission waits until the budget can carry the poll that will fetch it. A prompt
        string stands for ``VideoRequest(prompt)``.

        Raises:
            TypeError: ``request`` is neither a :class:`VideoRequest` nor a string.
            The errors of :meth:`generate` and of :meth:`wait`.
        """
        task = await self._submit(_as_request(request))
        try:
            video = await self.wait(task, timeout=timeout)
        except anyio.get_cancelled_exc_class():
            self._orphan(task)
            raise
        except Sora2Error as exc:
            self._telemetry.ended(task, BatchResult(task.request, task, error=exc))
            raise
        self._telemetry.ended(task, BatchResult(task.request, task, video=video))
        return video

    def _orphan(self, task: Task) -> None:
        if task.task_id in self._orphans or self._scheduler.known(task.task_id) is not None:
            return
        self._orphans[task.task_id] = task
        prompt = task.request.prompt if task.request is not None else ""
        logger.warning(
            "run() was cancelled while task %s (prompt %r) was running: it exists and is paid "
            "for; follow it with wait(%r) (client.orphaned_tasks lists it)",
            task.task_id,
            _shorten(prompt),
            task.task_id,
        )

    def batch(
        self,
        requests: Iterable[VideoRequest | str] | AsyncIterable[VideoRequest | str],
        *,
        max_in_flight: int | None = None,
        journal: Journal | None = None,
        resubmit_uncertain: bool = False,
    ) -> Batch[VideoRequest | str]:
        """Generate many videos; yield a :class:`BatchResult` for each as it finishes.

        ``requests`` is read lazily (sync or async iterable; prompt strings are accepted).
        At most ``max_in_flight`` videos run at once (default: as many as the budget
        carries). Use as ``async with client.batch(requests) as results: async for r in
        results``. A failed video is its result's ``error``; after an insufficient-credits
        or authentication error nothing more is submitted, and the rest yield that error.
        Leaving the block early cancels every poller: nothing is sent afterwards.

        With a ``journal`` (a :class:`SQLiteJournal`, say), the batch can be run again after
        a crash and resumes: ended requests come back as recorded, running tasks are followed
        by id, and only never-sent requests are submitted. A request whose generate went out
        in an earlier run without an answer yields :class:`UncertainSubmissionError`, unless
        ``resubmit_uncertain``.
        """
        return Batch(
            requests,
            submit=self._submit,
            follow=self._follow,
            max_in_flight=max_in_flight,
            on_error=self._report_failure,
            journal=journal,
            resubmit_uncertain=resubmit_uncertain,
            on_queued=self._scheduler.queued,
        )

    def as_completed(
        self,
        tasks: Iterable[Task | str] | AsyncIterable[Task | str],
        *,
        max_in_flight: int | None = None,
        journal: Journal | None = None,
    ) -> Batch[Task | str]:
        """Like :meth:`batch`, for tasks already submitted (here, or by another process).

        With a ``journal`` that has follower leases (``RedisJournal``), each task it knows is
        followed under its lease, and how it ended is recorded there; a task that another
        live process follows comes back when that process records its end.
        ``as_completed(journal.adopt())`` takes the journal from the adoption: it delivers
        the tasks whose follower died.
        """
        if journal is None and isinstance(tasks, Adoption):
            journal = tasks.journal
        return Batch(
            tasks,
            submit=None,
            follow=self._follow,
            max_in_flight=max_in_flight,
            on_error=self._report_failure,
            journal=journal,
        )

    def known_status(self, task: Task | str) -> TaskStatus | None:
        """The latest status this client has seen of ``task``, without sending anything."""
        return self._scheduler.known(_task_id(task))

    def on_event(self, listener: Callable[[Event], None]) -> Callable[[], None]:
        """Call ``listener`` with every progress :class:`Event`; returns a remover."""
        return self._events.add(listener)

    def events(self, *, task_id: str | None = None, max_buffer: float = math.inf) -> EventStream:
        """``async with client.events() as stream: async for event in stream`` (see Event)."""
        return self._events.stream(task_id=task_id, max_buffer=max_buffer)

    async def _submit(
        self, request: VideoRequest, *, promise: bool = True, hooks: SendHooks | None = None
    ) -> Task:
        # With ``promise`` (run, batch), the final poll is promised in the same admission
        # that lets the generate out, and the task is watched from then on. A bare generate
        # promises nothing: nobody may ever wait for it.
        due_in = self._scheduler.final_poll_after(request.model_tier) if promise else None
        started_ns = time.time_ns()
        try:
            task_id, lease = await self._api.generate(request, promise=due_in, hooks=hooks)
        except Sora2Error as exc:
            if not provably_not_created(exc):
                logger.warning(
                    "the generate of %r at %s got no usable answer: the task may exist and be "
                    "paid for; look for it in the nanophoto.ai dashboard before sending it again",
                    _shorten(request.prompt),
                    datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                )
            raise
        task = Task(task_id, request, anyio.current_time())
        with anyio.CancelScope(shield=True):  # the task exists: it must be tracked
            self._scheduler.submitted()
            if promise:
                await self._scheduler.adopt(task, lease)
        self._events.emit(EventKind.SUBMITTED, task_id=task_id, task=task, request=request)
        if promise:  # followed: its span lasts until its result
            self._telemetry.submitted(task, started_ns)
        return task

    async def _follow(self, task: Task) -> BatchResult:
        try:
            status = await self._scheduler.wait(task)
            result = BatchResult(task.request, task, video=video_of(task, status))
        except Sora2Error as exc:
            result = BatchResult(task.request, task, error=exc)
        self._telemetry.ended(task, result)
        return result

    def _report_failure(self, result: BatchResult) -> None:
        self._events.emit(
            EventKind.FAILED,
            request=result._request,
            error=result.error,
            task_id=result.task.task_id if result.task else None,
        )

    async def download(self, video: Video | TaskStatus | str, path: str | os.PathLike[str]) -> Path:
        """Fetch a finished video to ``path`` (a file, or a folder to put it in).

        Spends no API budget and sends no API key. A failed download leaves no partial file.

        Raises:
            APIError: the video host answered with an error status.
            APIConnectionError: the video host could not be reached.
        """
        return await download_video(self._http.client, video, path, retry=self._retry)


def _shorten(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _scaled(policy: PollPolicy, time_scale: float) -> PollPolicy:
    return policy if time_scale == 1.0 else attrs.evolve(policy, time_scale=time_scale)


def _as_request(request: object) -> VideoRequest:
    """A request from what a caller passed: a :class:`VideoRequest`, or a prompt string."""
    if isinstance(request, VideoRequest):
        return request
    if isinstance(request, str):
        return VideoRequest(request)  # an empty one raises InvalidRequestError
    raise TypeError(f"expected a VideoRequest or a prompt string, not {type(request).__name__}")


def _task_id(task: Task | str) -> str:
    task_id = task.task_id if isinstance(task, Task) else task
    if not isinstance(task_id, str):
        raise TypeError(f"expected a Task or a task id string, not {type(task).__name__}")
    if not task_id.strip():
        raise InvalidRequestError(
            "a task id must be a non-empty string", error_code="TASK_ID_REQUIRED"
        )
    return task_id
