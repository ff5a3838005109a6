"""``sora2_async.fastapi``: the SDK in a FastAPI backend (``pip install 'sora2-async[fastapi]'``).

One client and one :class:`Sora2Service` live as long as the app (:func:`sora2_lifespan`);
routes get the service as a dependency (:data:`Sora2`). A submission answers at once and
its video is followed in the background; routes answer from what the SDK already knows, so
any number of HTTP clients can watch a video for the price of one poller::

    from fastapi import FastAPI
    from sora2_async import VideoRequest
    from sora2_async.fastapi import Sora2, VideoView, sora2_lifespan

    app = FastAPI(lifespan=sora2_lifespan())

    @app.post("/videos", status_code=202)
    async def create_video(prompt: str, sora2: Sora2) -> dict[str, str]:
        task = await sora2.submit(VideoRequest(prompt))  # one request; polled in background
        return {"task_id": task.task_id}

    @app.get("/videos/{task_id}")
    async def get_video(task_id: str, sora2: Sora2) -> VideoView | None:
        return sora2.view(task_id)  # no request

A complete app, with server-sent events and batches, is ``docs/examples/fastapi_app.py``.
"""

try:
    import fastapi as _fastapi  # noqa: F401
except ImportError as _missing:  # the 'fastapi' extra: say which, not a bare ModuleNotFoundError
    raise ModuleNotFoundError(
        "sora2_async.fastapi needs FastAPI: pip install 'sora2-async[fastapi]'",
        name=_missing.name,
    ) from None

from .._video_records import (
    UNCERTAIN,
    BatchRecord,
    Created,
    IdempotencyConflictError,
    VideoRecord,
    VideoStore,
    VideoStoreError,
)
from ._app import (
    STATE_KEY,
    Sora2,
    Sora2ClientDep,
    drain_on_uvicorn_shutdown,
    get_client,
    get_sora2,
    sora2_lifespan,
)
from ._memory_store import MemoryVideoStore
from ._service import ShuttingDownError, Sora2Service
from ._shared import SharedStores, open_shared_stores
from ._sqlite_store import SQLiteVideoStore
from ._views import BatchJob, BatchView, VideoState, VideoView

__all__ = [
    "STATE_KEY",
    "UNCERTAIN",
    "BatchJob",
    "BatchRecord",
    "BatchView",
    "Created",
    "IdempotencyConflictError",
    "MemoryVideoStore",
    "SQLiteVideoStore",
    "SharedStores",
    "ShuttingDownError",
    "Sora2",
    "Sora2ClientDep",
    "Sora2Service",
    "VideoRecord",
    "VideoState",
    "VideoStore",
    "VideoStoreError",
    "VideoView",
    "drain_on_uvicorn_shutdown",
    "get_client",
    "get_sora2",
    "open_shared_stores",
    "sora2_lifespan",
]
