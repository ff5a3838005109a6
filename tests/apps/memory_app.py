"""An app whose service keeps its videos in memory: fine for one worker, wrong for several."""

from __future__ import annotations

from fastapi import FastAPI

from sora2_async.fastapi import sora2_lifespan

app = FastAPI(lifespan=sora2_lifespan())
