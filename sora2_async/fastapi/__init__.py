"""``sora2_async.fastapi``: the SDK in a FastAPI backend (``pip install 'sora2-async[fastapi]'``).

One client and one :class:`Sora2Service` live as long as the app (:func:`sora2_lifespan`);
routes get the service as a dependency (:data:`Sora2`). A submission is recorded and
answered at once; the video is submitted under the budget and followed in the background,
and routes answer from the service's store, so any number of HTTP clients can watch a
video for the price of one poller::

    from fastapi import FastAPI, Header
    from sora2_async import VideoRequest
    from sora2_async.fastapi import Sora2, VideoView, sora2_lifespan

    app = FastAPI(lifespan=sora2_lifespan())

    @app.post("/videos", status_code=202)
    async def create_video(prompt: str, sora2: Sora2, idempotency_key: str | None = Header(None)):
        return await sora2.accept(VideoRequest(prompt), idempotency_key=idempotency_key)

    @app.get("/videos/{video_id}")
    async def get_video(video_id: str, sora2: Sora2) -> VideoView | None:
        return await sora2.video(video_id)  # no request

With several workers, give every worker the same budget and store
(:func:`open_shared_stores`: SQLite files on one host, Redis across hosts). A complete app,
with server-sent events, batches and the shared stores, is ``docs/examples/fastapi_app.py``.
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
