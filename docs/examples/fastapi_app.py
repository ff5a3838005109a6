"""A FastAPI backend that makes videos with sora2_async, on any number of workers.

    POST /videos               take one video: 202 and its id at once; made in the background
    GET  /videos/{id}          what is known of it now (spends no budget)
    GET  /videos/{id}/events   its progress as server-sent events, until it is done
    POST /batches              take many: 202 and a batch id
    GET  /batches/{id}         the batch's videos so far

Every worker shares one budget and one record of the videos: SQLite files in the user's
state folder when the workers run on one host, Redis (NANOPHOTO_REDIS_URL) across hosts. Any
worker answers for any video; a POST with an Idempotency-Key header that comes again returns
the same video and pays nothing twice; a worker that dies has its videos taken over.

Run it (the key and base URL come from NANOPHOTO_API_KEY and NANOPHOTO_BASE_URL):

    pip install 'sora2-async[fastapi,server]'
    NANOPHOTO_API_KEY=... uvicorn fastapi_app:app --app-dir docs/examples --workers 4

Across hosts, with the 'redis' extra too:

    NANOPHOTO_REDIS_URL=redis://redis.internal:6379/0 NANOPHOTO_API_KEY=... \
        uvicorn fastapi_app:app --app-dir docs/examples --workers 4

Against the simulator, 60 times faster than the real API:

    python -m sora2_async.testing --port 8765 --time-scale 60 &
    NANOPHOTO_API_KEY=demo NANOPHOTO_BASE_URL=http://127.0.0.1:8765 SORA2_TIME_SCALE=60 \
        uvicorn fastapi_app:app --app-dir docs/examples --workers 4
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from sora2_async import (
    APIConnectionError,
    BudgetStoreError,
    InsufficientCreditsError,
    InvalidRequestError,
    RateLimit,
    RateLimitError,
    Sora2Client,
    Sora2Error,
    VideoRequest,
)
from sora2_async.fastapi import (
    STATE_KEY,
    BatchView,
    IdempotencyConflictError,
    ShuttingDownError,
    Sora2,
    Sora2Service,
    VideoStoreError,
    VideoView,
    drain_on_uvicorn_shutdown,
    open_shared_stores,
)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    """One budget and one video store shared by every worker, one client and one service per
    worker. SORA2_TIME_SCALE matches a simulator run faster (tests, demos); SORA2_RATE_LIMIT
    is the key's requests per hour, if it is not the default 100."""
    scale = float(os.environ.get("SORA2_TIME_SCALE", "1"))
    rate_limit = RateLimit(int(os.environ.get("SORA2_RATE_LIMIT", "100")))
    async with (
        open_shared_stores(rate_limit=rate_limit, time_scale=scale) as stores,
        Sora2Client(rate_limit=stores.budget, time_scale=scale) as client,
        Sora2Service(client, store=stores.videos) as service,
    ):
        setattr(app.state, STATE_KEY, service)  # for code that holds the app (tests)
        yield {STATE_KEY: service}


drain_on_uvicorn_shutdown()  # Ctrl-C ends open event streams at once instead of waiting
app = FastAPI(title="Videos", lifespan=lifespan)


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


class Problem(BaseModel):
    """An error's answer."""

    detail: str


class BatchIn(BaseModel):
    """Videos to make together."""

    videos: list[VideoIn] = Field(min_length=1, max_length=1000)


# Every route is ``async def``: the SDK lives on the event loop, and FastAPI would run a
# plain ``def`` route in a worker thread.

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=200,
        description="the same key again returns the same video; with another body, a 409",
    ),
]
UNAVAILABLE = {503: {"model": Problem, "description": "shutting down, or the shared store is away"}}
NOT_FOUND = {404: {"model": Problem, "description": "no such video or batch"}, **UNAVAILABLE}
REFUSED = {
    409: {"model": Problem, "description": "the Idempotency-Key came with another body"},
    **UNAVAILABLE,
}
EVENT_STREAM = {
    200: {
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
        "description": "server-sent events: one per state change, each a VideoView as JSON",
    }
}


@app.post("/videos", status_code=202, responses=REFUSED)
async def create_video(
    video: VideoIn, sora2: Sora2, idempotency_key: IdempotencyKey = None
) -> VideoView:
    # Recorded and answered at once; submitted in the background under the shared budget.
    return await sora2.accept(video.to_request(), idempotency_key=idempotency_key)


@app.get("/videos/{video_id}", responses=NOT_FOUND)
async def get_video(video_id: str, sora2: Sora2) -> VideoView:
    view = await sora2.video(video_id)  # from the shared store: no request
    if view is None:
        raise HTTPException(404, f"no video {video_id}")
    return view


@app.get(
    "/videos/{video_id}/events",
    response_class=StreamingResponse,
    responses={**EVENT_STREAM, **NOT_FOUND},
)
async def video_events(video_id: str, sora2: Sora2) -> StreamingResponse:
    if await sora2.video(video_id) is None:
        raise HTTPException(404, f"no video {video_id}")
    return StreamingResponse(
        sora2.video_sse(video_id),
        media_type="text/event-stream",
        # No caching, and no buffering in proxies (nginx): each event goes out as it happens.
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@app.post("/batches", status_code=202, responses=REFUSED)
async def create_batch(
    batch: BatchIn, sora2: Sora2, idempotency_key: IdempotencyKey = None
) -> BatchView:
    requests = [video.to_request() for video in batch.videos]  # all valid, or a 422
    return await sora2.accept_batch(requests, idempotency_key=idempotency_key)


@app.get("/batches/{batch_id}", responses=NOT_FOUND)
async def get_batch(batch_id: str, sora2: Sora2) -> BatchView:
    view = await sora2.batch(batch_id)
    if view is None:
        raise HTTPException(404, f"no batch {batch_id}")
    return view


@app.exception_handler(Sora2Error)
@app.exception_handler(ShuttingDownError)
@app.exception_handler(IdempotencyConflictError)
async def sdk_error(request: Request, exc: Exception) -> JSONResponse:
    """The SDK's errors as HTTP answers: the caller's fault (4xx), or ours upstream (5xx)."""
    headers: dict[str, str] = {}
    if isinstance(exc, IdempotencyConflictError):
        status = 409
    elif isinstance(exc, InvalidRequestError):
        status = 422
    elif isinstance(exc, InsufficientCreditsError):
        status = 402
    elif isinstance(exc, (ShuttingDownError, RateLimitError, VideoStoreError, BudgetStoreError)):
        status, headers = 503, {"Retry-After": "30"}
    elif isinstance(exc, APIConnectionError):
        status = 504
    else:  # a bad key, a server error, an answer that breaks the contract
        status = 502
    return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)
