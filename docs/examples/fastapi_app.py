"""A FastAPI backend that makes videos with sora2_async.

    POST /videos               submit one video: 202 and its task id; it is polled in the background
    GET  /videos/{id}          what is known of it now (spends no budget)
    GET  /videos/{id}/events   its progress as server-sent events, until it is done
    POST /batches              submit many: 202 and a batch id
    GET  /batches/{id}         the batch's videos so far

However many HTTP clients watch a video, the key's budget pays for one poller.

Run it (the key and base URL come from NANOPHOTO_API_KEY and NANOPHOTO_BASE_URL):

    pip install 'sora2-async[fastapi,server]'
    NANOPHOTO_API_KEY=... uvicorn fastapi_app:app --app-dir docs/examples

Against the simulator, 60 times faster than the real API:

    python -m sora2_async.testing --port 8765 --time-scale 60 &
    NANOPHOTO_API_KEY=demo NANOPHOTO_BASE_URL=http://127.0.0.1:8765 SORA2_TIME_SCALE=60 \
        uvicorn fastapi_app:app --app-dir docs/examples
"""

from __future__ import annotations

import os
from typing import Literal

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from sora2_async import (
    APIConnectionError,
    InsufficientCreditsError,
    InvalidRequestError,
    RateLimit,
    RateLimitError,
    Sora2Client,
    Sora2Error,
    VideoRequest,
)
from sora2_async.fastapi import (
    BatchView,
    ShuttingDownError,
    Sora2,
    VideoView,
    drain_on_uvicorn_shutdown,
    sora2_lifespan,
)


def make_client() -> Sora2Client:
    """The app's one client. SORA2_TIME_SCALE matches a simulator run faster (tests, demos);
    SORA2_RATE_LIMIT is the key's requests per hour, if it is not the default 100."""
    return Sora2Client(
        time_scale=float(os.environ.get("SORA2_TIME_SCALE", "1")),
        rate_limit=RateLimit(int(os.environ.get("SORA2_RATE_LIMIT", "100"))),
    )


drain_on_uvicorn_shutdown()  # Ctrl-C ends open event streams at once instead of waiting
app = FastAPI(title="Videos", lifespan=sora2_lifespan(make_client))


class VideoIn(BaseModel):
    """A video to make."""

    prompt: str = Field(min_length=1)
    model_tier: Literal["sora2", "sora2-pro-standard", "sora2-pro-high"] = "sora2"
    aspect_ratio: Literal["portrait", "landscape"] = "portrait"
    duration: Literal[10, 15] = 10
    image_urls: list[str] = []

    def to_request(self) -> VideoRequest:
        return VideoRequest(
            self.prompt,
            model_tier=self.model_tier,
            aspect_ratio=self.aspect_ratio,
            duration=self.duration,
            image_urls=self.image_urls,
        )


class Accepted(BaseModel):
    task_id: str


class BatchIn(BaseModel):
    videos: list[VideoIn] = Field(min_length=1, max_length=1000)
    max_in_flight: int | None = Field(default=None, ge=1)


class BatchAccepted(BaseModel):
    batch_id: str
    total: int


# Every route is ``async def``: the SDK lives on the event loop, and FastAPI would run a
# plain ``def`` route in a worker thread.


@app.post("/videos", status_code=202)
async def create_video(video: VideoIn, sora2: Sora2) -> Accepted:
    task = await sora2.submit(video.to_request())  # one request; may wait for the budget
    return Accepted(task_id=task.task_id)


@app.get("/videos/{task_id}")
async def get_video(task_id: str, sora2: Sora2) -> VideoView:
    view = sora2.view(task_id)  # what the SDK already knows: no request
    if view is None:
        raise HTTPException(404, f"no video {task_id} here")
    return view


@app.get("/videos/{task_id}/events")
async def video_events(task_id: str, sora2: Sora2) -> StreamingResponse:
    if sora2.view(task_id) is None:
        raise HTTPException(404, f"no video {task_id} here")
    return StreamingResponse(
        sora2.sse(task_id),
        media_type="text/event-stream",
        # No caching, and no buffering in proxies (nginx): each event goes out as it happens.
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@app.post("/batches", status_code=202)
async def create_batch(batch: BatchIn, sora2: Sora2) -> BatchAccepted:
    requests = [video.to_request() for video in batch.videos]  # all valid, or a 422
    job = sora2.start_batch(requests, max_in_flight=batch.max_in_flight)
    return BatchAccepted(batch_id=job.batch_id, total=job.total)


@app.get("/batches/{batch_id}")
async def get_batch(batch_id: str, sora2: Sora2) -> BatchView:
    view = sora2.batch_view(batch_id)
    if view is None:
        raise HTTPException(404, f"no batch {batch_id} here")
    return view


@app.exception_handler(Sora2Error)
@app.exception_handler(ShuttingDownError)
async def sdk_error(request: Request, exc: Exception) -> JSONResponse:
    """The SDK's errors as HTTP answers: the caller's fault (4xx), or ours upstream (5xx)."""
    headers: dict[str, str] = {}
    if isinstance(exc, InvalidRequestError):
        status = 422
    elif isinstance(exc, InsufficientCreditsError):
        status = 402
    elif isinstance(exc, (ShuttingDownError, RateLimitError)):
        status, headers = 503, {"Retry-After": "30"}
    elif isinstance(exc, APIConnectionError):
        status = 504
    else:  # a bad key, a server error, an answer that breaks the contract
        status = 502
    return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)
