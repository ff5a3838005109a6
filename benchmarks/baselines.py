"""The plain clients the SDK is measured against, written the way a careful user would.

Both follow the provider's sample (submit, then sleep and check until done) over bare
``httpx``, with one addition the sample lacks: a shared sliding-window limiter, so that they
never send more than the key's limit and do not get 429s from their own traffic. Neither
knows anything the SDK knows (durations, priorities, reservations); that is the point.

* ``every-5s``: the provider's sample policy: first check 5 s after submitting, then every 5 s.
* ``fixed-120-20``: a user who read "about 1-3 minutes": first check at 120 s, then every 20 s.

A refused submission (429 from another consumer of the key) is re-sent after one interval,
so these clients never lose a video by design; a refused check just counts as "not yet".
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import anyio
import httpx

from .scenarios import KEY, Arrival, Deliver, Driver

__all__ = ["BASELINES", "PlainWindow", "VideoFailed", "plain_driver"]

API = "https://nanophoto.ai/api/sora-2"  # the in-process transport answers any host


class VideoFailed(Exception):
    """The server said the video failed (a plain client's result for it)."""


class PlainWindow:
    """No more than ``limit`` requests in any ``per`` seconds; callers queue when it is full.

    The 30-line limiter a user writes: a log of send times and a FIFO lock. ``margin`` seconds
    are added to the window because the server stamps a request a little after we send it.
    """

    def __init__(self, limit: int = 100, per: float = 3600.0, margin: float = 1.0) -> None:
        self.limit = limit
        self.window = per + margin
        self._sent: deque[float] = deque()
        self._line = anyio.Lock()  # FIFO: whoever asked first sends first

    async def acquire(self) -> None:
        """Wait until one more request fits in the window, and count it."""
        async with self._line:
            while True:
                now = anyio.current_time()
                while self._sent and self._sent[0] + self.window <= now:
                    self._sent.popleft()
                if len(self._sent) < self.limit:
                    self._sent.append(now)
                    return
                await anyio.sleep(self._sent[0] + self.window - now)


def plain_driver(*, first: float, every: float, limit: int = 100, base_url: str = API) -> Driver:
    """A scenario driver: check ``first`` s after submitting, then every ``every`` s."""

    async def drive(arrivals: Sequence[Arrival], http: httpx.AsyncClient, deliver: Deliver) -> None:
        window = PlainWindow(limit)
        headers = {"Authorization": f"Bearer {KEY}"}

        async def post(path: str, body: dict[str, object]) -> tuple[int, dict[str, object]]:
            await window.acquire()
            response = await http.post(f"{base_url}/{path}", json=body, headers=headers)
            return response.status_code, response.json()

        async def one(arrival: Arrival) -> None:
            while True:  # a 429 means the server did not take it: send it again later
                code, body = await post("generate", arrival.request.to_wire())
                if code != 429:
                    break
                await anyio.sleep(every)
            task_id = body.get("taskId")
            if code != 200 or not isinstance(task_id, str):
                deliver(arrival.request, None, VideoFailed(f"generate answered {code}: {body}"))
                return
            await anyio.sleep(first)
            while True:
                _, status = await post("check-status", {"taskId": task_id})
                if status.get("status") == "completed":
                    deliver(arrival.request, task_id, None)
                    return
                if status.get("status") == "failed":
                    deliver(arrival.request, task_id, VideoFailed(str(status.get("error"))))
                    return
                await anyio.sleep(every)  # processing, or a 429: look again later

        start = anyio.current_time()
        async with anyio.create_task_group() as tg:
            for arrival in arrivals:
                await anyio.sleep(max(0.0, start + arrival.at - anyio.current_time()))
                tg.start_soon(one, arrival)

    return drive


#: The plain clients by name: ``(first check, interval)`` in seconds.
BASELINES: dict[str, tuple[float, float]] = {
    "every-5s": (5.0, 5.0),
    "fixed-120-20": (120.0, 20.0),
}
