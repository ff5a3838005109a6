"""The :class:`Simulator`: configuration, clock, faults, and the order a request is handled in.

The books (``_books``) hold accounts and tasks; the front ends (``_transport``, ``_asgi``)
carry the :class:`~._reply.Reply` values this module produces. State changes happen under one
lock, so a server thread and a test thread can share a simulator.

A request goes: route (404/405) → fault dice → latency → authentication (401) → rate limit
(429; the request counts from here on) → injected 500 → body (400) → the endpoint's rules →
answer-level faults (drop, malformed, slow).
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import anyio
import attrs

from .._budget import RateLimit
from ._books import Books, usable_key
from ._config import Durations, Faults, RateLimitPolicy
from ._records import SimulatorStats, TaskRecord
from ._reply import JSON, Reply, error_reply, gateway_page, truncated
from ._validate import BadRequest, parse_check_status, parse_generate

if TYPE_CHECKING:  # the front ends import this module: name them for annotations only
    from .._client import Sora2Client
    from ._asgi import SimulatorApp
    from ._transport import SimulatorTransport

__all__ = ["DEFAULT_VIDEO_BASE_URL", "Simulator"]

#: Where video URLs point in-process: a host of its own, as the real video CDN is.
DEFAULT_VIDEO_BASE_URL = "https://video.simulator.invalid/sora"

GENERATE_PATH = "/api/sora-2/generate"
STATUS_PATH = "/api/sora-2/check-status"
_ENDPOINTS = {GENERATE_PATH: "generate", STATUS_PATH: "check_status"}
_FAULT_KINDS = ("server_error", "drop_connection", "malformed", "slow_body")


@attrs.frozen
class _Draw:
    latency: bool
    kind: str | None
    cut_json: bool


class Simulator:
    """A faithful fake of the nanophoto.ai Sora 2 API, in-process or over HTTP.

    Args:
        api_keys: the keys it accepts: names (each with ``credits``), or a mapping of key to
            credits. ``None`` (default) accepts any non-empty key, each with an account of
            its own made on first use.
        credits: each key's starting credits.
        rate_limit: the per-key limit: a :class:`RateLimitPolicy`, or the SDK's
            :class:`~sora2_async.RateLimit` (sliding, rejected requests count). Default:
            sliding 100 per 3600 s.
        durations: task durations per tier (simulated seconds).
        failure_rate: the chance that a task ends ``failed`` (its credits come back then).
        faults: network and server faults to inject.
        seed: seeds every random draw (task ids, durations, outcomes, faults); ``None`` for
            a fresh seed. One seed and one sequence of requests give one run.
        time_scale: simulated seconds per clock second: task durations and the rate-limit
            window shrink this many times (600 makes a 3-minute video take 0.3 s).
        clock: a callable giving the time in seconds; default ``anyio.current_time()``, so
            the simulator runs in virtual time under the test clocks. Served over HTTP, a
            simulator without one uses ``time.monotonic``.
        video_base_url: where video URLs point in-process (the transport serves it).

    ``failure_rate`` and ``faults`` are attributes: change them mid-test to flip behaviour.

    Raises:
        ValueError: for negative credits, a failure rate outside 0..1, a non-positive time
            scale, or an unusable key in ``api_keys``.
    """

    def __init__(
        self,
        *,
        api_keys: Iterable[str] | Mapping[str, int] | None = None,
        credits: int = 1_000_000,
        rate_limit: RateLimitPolicy | RateLimit | None = None,
        durations: Durations | None = None,
        failure_rate: float = 0.0,
        faults: Faults | None = None,
        seed: int | str | None = 0,
        time_scale: float = 1.0,
        clock: Callable[[], float] | None = None,
        video_base_url: str = DEFAULT_VIDEO_BASE_URL,
    ) -> None:
        if credits < 0:
            raise ValueError(f"credits must not be negative, not {credits!r}")
        if not (math.isfinite(time_scale) and time_scale > 0):
            raise ValueError(f"time_scale must be finite and positive, not {time_scale!r}")
        if isinstance(rate_limit, RateLimit):
            rate_limit = RateLimitPolicy.from_rate_limit(rate_limit)
        policy = rate_limit or RateLimitPolicy()
        self.failure_rate = failure_rate  # validated by the property's setter
        self.faults = faults or Faults()
        self._time_scale = float(time_scale)
        self._clock = clock
        self.video_base_url = video_base_url.rstrip("/")
        if seed is None:
            seed = random.SystemRandom().getrandbits(64)
        self._fault_rng = random.Random(f"{seed}/faults")
        self._lock = threading.RLock()
        self._last_now = 0.0
        self._books = Books(
            policy=policy,
            window=policy.per / self._time_scale,
            durations=durations or Durations(),
            time_scale=self._time_scale,
            credits=credits,
            open_door=api_keys is None,
            rng=random.Random(f"{seed}/tasks"),
        )
        if isinstance(api_keys, Mapping):
            for key, amount in api_keys.items():
                self.add_key(key, amount)
        elif api_keys is not None:
            for key in api_keys:
                self.add_key(key)

    def __repr__(self) -> str:
        policy = self._books.policy
        return (
            f"<Simulator {len(self._books.accounts)} keys, {len(self._books.tasks)} tasks, "
            f"{policy.requests}/{policy.per:g}s {policy.window.value}, "
            f"time_scale={self._time_scale:g}>"
        )

    # -- configuration ---------------------------------------------------------------------------

    @property
    def failure_rate(self) -> float:
        """The chance a new task fails (settable; applies to tasks created afterwards).

        Raises:
            ValueError: on setting a value outside 0..1.
        """
        return self._failure_rate

    @failure_rate.setter
    def failure_rate(self, value: float) -> None:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"failure_rate is a probability: 0 to 1, not {value!r}")
        self._failure_rate = float(value)

    @property
    def rate_limit(self) -> RateLimitPolicy:
        """The per-key rate-limit policy."""
        return self._books.policy

    @property
    def durations(self) -> Durations:
        """Task durations per tier, in simulated seconds."""
        return self._books.durations

    @property
    def time_scale(self) -> float:
        """Simulated seconds per clock second."""
        return self._time_scale

    @property
    def window(self) -> float:
        """The rate-limit window in clock seconds (``rate_limit.per / time_scale``)."""
        return self._books.window

    def now(self) -> float:
        """The simulator's clock now.

        Raises:
            RuntimeError: with the default clock, when called outside an event loop.
        """
        now = self._clock() if self._clock is not None else anyio.current_time()
        self._last_now = now
        return now

    def _safe_now(self) -> float:
        try:
            return self.now()
        except RuntimeError:  # no event loop here: the last time a request was seen
            return self._last_now

    def _use_real_clock(self, clock: Callable[[], float]) -> None:
        """Give a simulator that has no clock of its own ``clock`` (done by the HTTP server)."""
        if self._clock is None:
            self._clock = clock

    def add_key(self, key: str, credits: int | None = None) -> None:
        """Accept ``key`` from now on, with ``credits`` (default: the simulator's default).

        Adding a key that exists resets its account.

        Raises:
            ValueError: when the key is empty or has whitespace, or credits are negative.
        """
        if not usable_key(key):
            raise ValueError("an API key must be a non-empty string without whitespace")
        if credits is not None and credits < 0:
            raise ValueError(f"credits must not be negative, not {credits!r}")
        with self._lock:
            self._books.add_key(key, credits)

    def balance(self, key: str) -> int:
        """The credits ``key`` has now (failed tasks are refunded once they have failed).

        Raises:
            KeyError: when the simulator has no account for ``key``.
        """
        with self._lock:
            self._books.settle(self._safe_now())
            return self._books.accounts[key].credits

    # -- what it saw -----------------------------------------------------------------------------

    @property
    def tasks(self) -> Mapping[str, TaskRecord]:
        """Every task so far, by id, in creation order: a read-only snapshot."""
        with self._lock:
            return MappingProxyType(dict(self._books.task_records()))

    def stats(self) -> SimulatorStats:
        """A snapshot of the counters (see :class:`SimulatorStats`)."""
        with self._lock:
            now = self._safe_now()
            self._books.settle(now)
            return self._books.stats(now)

    # -- serving ---------------------------------------------------------------------------------

    def client(self, api_key: str = "test-key", **kwargs: Any) -> Sora2Client:
        """A :class:`~sora2_async.Sora2Client` of this simulator, in-process, at its time
        scale; it owns (and closes) its ``httpx.AsyncClient``. ``kwargs`` go to the client.

        With an explicit key list (``api_keys``), pass one of its keys.
        """
        from .._client import Sora2Client

        kwargs.setdefault("time_scale", self._time_scale)
        return Sora2Client(api_key, transport=self.transport(), **kwargs)

    def transport(self) -> SimulatorTransport:
        """An ``httpx.AsyncBaseTransport`` serving the API (any host) and the video host."""
        from ._transport import SimulatorTransport

        return SimulatorTransport(self)

    def asgi_app(self, *, video_base_url: str | None = None) -> SimulatorApp:
        """An ASGI application serving the API, the videos and the stats over HTTP
        (see :class:`~sora2_async.testing.SimulatorApp`)."""
        from ._asgi import SimulatorApp

        return SimulatorApp(self, video_base_url=video_base_url)

    def video_url(self, task_id: str) -> str:
        """Where the video of ``task_id`` is served in-process."""
        return f"{self.video_base_url}/{task_id}.mp4"

    async def handle_api(
        self,
        method: str,
        path: str,
        *,
        authorization: str | None,
        body: bytes,
        video_base_url: str | None = None,
    ) -> Reply:
        """Answer one API request, with whatever fault the dice call for.

        ``video_base_url`` is where the calling front end serves videos (for ``videoUrl``;
        default :attr:`video_base_url`). Never raises for anything in the request: every bad
        one gets a typed error answer.
        """
        endpoint = _ENDPOINTS.get(path)
        if endpoint is None:
            return error_reply(404, "NOT_FOUND", f"No API endpoint at {path[:80]}")
        if method != "POST":
            return error_reply(405, "METHOD_NOT_ALLOWED", f"{path} takes POST")
        with self._lock:
            draw = self._draw()
        if draw.latency:
            await anyio.sleep(self.faults.latency)
        with self._lock:
            self._books.endpoints[endpoint] += 1
            reply = self._answer(endpoint, authorization, body, draw, video_base_url)
            reply = self._damage(reply, draw)
            if not reply.drop:
                self._books.statuses[reply.status] += 1
            return reply

    def handle_video(self, name: str, *, authorization: str | None) -> Reply:
        """Serve the video file ``name`` (``<taskId>.mp4``) of a completed task, else 404."""
        with self._lock:
            return self._books.video(name, self._safe_now(), authorized=authorization is not None)

    # -- the order of things ---------------------------------------------------------------------

    def _draw(self) -> _Draw:
        # Always the same number of draws, so one seed gives one fault sequence whatever
        # the faults' settings and the requests' fates.
        rolls = [self._fault_rng.random() for _ in range(6)]
        f = self.faults
        chances = (f.server_error, f.drop_connection, f.malformed, f.slow_body)
        fired = [k for k, p, r in zip(_FAULT_KINDS, chances, rolls[1:5], strict=True) if r < p]
        latency = rolls[0] < f.latency_probability and f.latency > 0
        return _Draw(latency, fired[0] if fired else None, rolls[5] < 0.5)

    def _answer(
        self,
        endpoint: str,
        authorization: str | None,
        body: bytes,
        draw: _Draw,
        video_base_url: str | None,
    ) -> Reply:
        books = self._books
        account = books.account(authorization)
        if account is None:
            return error_reply(401, "LOGIN_REQUIRED", "Unauthorized: a valid API key is required")
        now = self.now()
        books.settle(now)
        account.requests[endpoint] += 1
        account.request_times.append(now)
        wait = account.window.admit(now)
        if wait is not None:
            return self._rate_limited(wait)
        if draw.kind == "server_error":
            books.faults["server_error"] += 1
            return error_reply(500, "INTERNAL_ERROR", "Internal server error")
        try:
            if endpoint == "generate":
                return books.generate(account, parse_generate(body), now, self._failure_rate)
            task_id = parse_check_status(body)
        except BadRequest as exc:
            return error_reply(400, exc.code, exc.message)
        return books.status(account, task_id, now, video_base_url or self.video_base_url)

    def _rate_limited(self, wait: float) -> Reply:
        policy = self._books.policy
        per = "hour" if policy.per == 3600 else f"{policy.per:g} seconds"
        headers = (("retry-after", str(math.ceil(wait))),) if policy.retry_after else ()
        return error_reply(
            429,
            "API_KEY_RATE_LIMIT_EXCEEDED",
            f"API key rate limit exceeded. Maximum {policy.requests} requests per {per}.",
            headers=headers,
        )

    def _damage(self, reply: Reply, draw: _Draw) -> Reply:
        """Apply the answer-level fault drawn for this request, if any."""
        if draw.kind is None or draw.kind == "server_error":
            return reply
        self._books.faults[draw.kind] += 1
        if draw.kind == "drop_connection":
            return attrs.evolve(reply, drop=True)
        if draw.kind == "malformed":
            cut = draw.cut_json and reply.content_type == JSON
            return truncated(reply) if cut else gateway_page()
        return attrs.evolve(reply, slow_seconds=self.faults.slow_body_seconds)
