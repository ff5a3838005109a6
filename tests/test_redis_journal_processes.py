"""A follower process killed with SIGKILL: another process adopts its tasks and delivers them.

A real child process runs a batch against the HTTP simulator (served by uvicorn in this
process) with a ``RedisJournal`` on the session's real ``redis-server``, and is killed with
SIGKILL once every generate was answered, while its videos are still running. This process
then adopts them with ``client.as_completed(journal.adopt())`` as their leases lapse. Time is
compressed (``time_scale``); every wait is bounded and the child is always stopped.
"""

from __future__ import annotations

import json
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from anyio.abc import ByteReceiveStream

from sora2_async import JournalState, Sora2Client
from sora2_async.redis import RedisJournal
from sora2_async.testing import Simulator, serve_in_thread

pytestmark = pytest.mark.anyio

KEY = "redis-journal-process-key"
SCALE = 40.0  # a sora2 video (1-3 min) takes 1.5-4.5 s
TTL = 1.5  # the follower's lease, in real seconds
PROMPTS = 6

_FOLLOWER = """
import json, sys, anyio
from sora2_async import EventKind, Sora2Client
from sora2_async.redis import RedisJournal

redis_url, base_url, name, key, ttl, scale, n, backend = sys.argv[1:]

def say(**what):
    print(json.dumps(what), flush=True)

async def main():
    journal = RedisJournal.from_url(redis_url, name=name, api_key=key, base_url=base_url,
                                    follower_ttl=float(ttl))
    async with journal, Sora2Client(key, base_url=base_url, time_scale=float(scale)) as client:
        client.on_event(
            lambda e: say(event="submitted", task=e.task_id) if e.kind is EventKind.SUBMITTED
            else None
        )
        prompts = [f"adopted after a kill {i}" for i in range(int(n))]
        async with client.batch(prompts, journal=journal) as results:
            async for result in results:
                say(event="result", prompt=result.request.prompt, ok=result.ok)
    say(event="done")

anyio.run(main, backend=backend)
"""


async def lines(stream: ByteReceiveStream) -> AsyncIterator[dict[str, Any]]:
    """The child's JSON lines, as they come."""
    buffer = b""
    async for chunk in stream:
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            yield json.loads(line)


async def recorded(redis_url: str, name: str, base_url: str) -> None:
    """Wait until every request of the child's batch has its task id in the journal."""
    async with RedisJournal.from_url(redis_url, name=name, api_key=KEY, base_url=base_url) as j:
        # Another process's writes: nothing announces them, so look now and then.
        while sum(e.task_id is not None for e in await j.entries()) < PROMPTS:  # noqa: ASYNC110
            await anyio.sleep(0.01)


@pytest.mark.parametrize(
    ("anyio_backend", "child_backend"),
    [("asyncio-real", "trio"), ("trio-real", "asyncio")],
    indirect=["anyio_backend"],
)
async def test_a_killed_followers_tasks_are_adopted_and_delivered_once(
    redis_server: Any, child_backend: str
) -> None:
    sim = Simulator(seed=f"kill-{child_backend}", time_scale=SCALE)
    name = f"killed-{uuid.uuid4().hex[:8]}"
    with serve_in_thread(sim) as base_url:
        argv = [sys.executable, "-c", textwrap.dedent(_FOLLOWER), redis_server.url, base_url]
        argv += [name, KEY, str(TTL), str(SCALE), str(PROMPTS), child_backend]
        delivered_by_child: list[str] = []
        async with await anyio.open_process(argv) as child:
            try:
                assert child.stdout is not None
                submitted = 0
                with anyio.fail_after(30):
                    async for event in lines(child.stdout):
                        if event["event"] == "result":
                            delivered_by_child.append(event["prompt"])
                        submitted += event["event"] == "submitted"
                        if submitted == PROMPTS:
                            break
                    # The child emits "submitted" just before it journals the task id: kill
                    # it once every id is in (a kill in between leaves an uncertain intent).
                    await recorded(redis_server.url, name, base_url)
                child.kill()  # SIGKILL: no lease released, nothing recorded any more
                await child.wait()
                killed_at = time.monotonic()
            finally:
                if child.returncode is None:
                    child.kill()
                    await child.wait()
        assert child.returncode == -9
        async with RedisJournal.from_url(
            redis_server.url, name=name, api_key=KEY, base_url=base_url, follower_ttl=TTL
        ) as journal:
            running = {
                e.request.prompt
                for e in await journal.entries()
                if e.state is JournalState.SUBMITTED
            }
            assert running, "the child finished everything before it was killed"
            adopted: dict[str, float] = {}
            client = Sora2Client(KEY, base_url=base_url, time_scale=SCALE)
            with anyio.fail_after(60):
                async with client, client.as_completed(journal.adopt()) as results:
                    async for result in results:
                        assert result.ok, result.error
                        assert result.request is not None
                        adopted[result.request.prompt] = time.monotonic() - killed_at
            entries = await journal.entries()
    assert set(adopted) == running
    assert min(adopted.values()) >= TTL - 0.5  # not before the dead follower's leases lapsed
    assert set(adopted) | set(delivered_by_child) == {
        f"adopted after a kill {i}" for i in range(PROMPTS)
    }
    assert {e.state for e in entries} == {JournalState.COMPLETED}
    stats = sim.stats()
    assert stats.tasks_created == PROMPTS
    assert all(count == 1 for count in stats.tasks_by_prompt.values())
    assert len(stats.tasks_by_prompt) == PROMPTS
