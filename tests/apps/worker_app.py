"""The FastAPI example, with each answer saying which worker process gave it (``X-Worker``).

The multi-worker tests serve this, so that they can tell their requests reached every worker.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from starlette.types import ASGIApp, Message, Receive, Scope, Send

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "docs" / "examples"))

from fastapi_app import app as example


class WorkerHeader:
    """ASGI middleware: an ``X-Worker: <pid>`` header on every HTTP answer."""

    def __init__(self, inner: ASGIApp) -> None:
        self.inner = inner
        self.pid = str(os.getpid()).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def tagged(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-worker", self.pid)]
            await send(message)

        await self.inner(scope, receive, tagged if scope["type"] == "http" else send)


app = WorkerHeader(example)
