"""The submitter's lease: two processes that run one batch at once never send one request twice.

On a real ``redis-server``, on asyncio and trio, in virtual time (``tests/journal_helpers.py``:
the journals read the test's clock). The real processes are in ``test_cli_redis_journal.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from sora2_async import BatchResult, JournalState, Sora2Client, VideoRequest
from sora2_async.testing import Simulator
from tests.journal_helpers import Journals, journals_of

pytestmark = pytest.mark.anyio

KEY = "redis-submitter-key"
TTL = 30.0


@pytest.fixture
async def journals(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Journals]:
    async with journals_of("redis", request, tmp_path) as made:
        yield made


async def test_one_owner_holds_a_requests_submission_until_its_task_id_is_recorded(
    journals: Journals,
) -> None:
    a = journals.make(follower_ttl=TTL)
    b = journals.other(a)
    request = VideoRequest("reserved")
    assert await a.reserve("k") is True
    assert await a.reserve("k") is True  # its own: renewed
    assert await b.reserve("k") is False
    await a.record_intent("k", request)
    await a.record_rejected("k", request, "not sent: 429")  # between two attempts
    await a.record_intent("k", request)
    assert await b.reserve("k") is False  # still a's: b must not send it meanwhile
    await a.record_task("k", request, "t-1")
    assert await b.reserve("k") is None  # submitted: look it up, follow it
    assert await b.claim("k") is False  # a follows it under the same lease
    await a.release("k")
    assert await b.claim("k") is True


async def test_a_dead_submitters_lease_lapses_and_its_intent_stays_uncertain(
    journals: Journals,
) -> None:
    a = journals.make(follower_ttl=TTL)
    b = journals.other(a)
    request = VideoRequest("cut off mid-send")
    assert await a.reserve("k") is True
    await a.record_intent("k", request)  # and then a died
    await anyio.sleep(TTL - 1)
    assert await b.reserve("k") is False
    await anyio.sleep(1.5)
    assert await b.reserve("k") is True  # lapsed: b may look, and sees an uncertain intent
    entry = await b.lookup("k")
    assert entry is not None
    assert entry.state is JournalState.INTENT
    assert await b.reserve("ended") is True
    await b.record_task("ended", request, "t-2")
    assert await a.reserve("ended") is None


async def test_the_journals_meta_keeps_the_first_value(journals: Journals) -> None:
    a = journals.make()
    b = journals.other(a)
    assert await a.meta("journal_id") is None
    assert await a.init_meta("journal_id", "first") == "first"
    assert await b.init_meta("journal_id", "second") == "first"
    assert await b.meta("journal_id") == "first"
    assert await journals.make().meta("journal_id") is None  # another journal's


async def test_two_batches_started_at_once_send_each_request_once(journals: Journals) -> None:
    sim = Simulator(seed="at-once")
    items = [VideoRequest(f"at once {i}") for i in range(8)]
    first = journals.make(follower_ttl=TTL)
    second = journals.other(first)
    outcomes: dict[str, list[BatchResult]] = {}

    async def run(name: str, journal: Any) -> None:
        client = Sora2Client(KEY, transport=sim.transport(), max_retries=0)
        async with client, client.batch(items, journal=journal) as results:
            outcomes[name] = [r async for r in results]

    with anyio.fail_after(3600):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run, "first", first)
            tg.start_soon(run, "second", second)
    assert sim.stats().tasks_created == len(items)
    assert sim.stats().duplicate_prompts == 0
    for results in outcomes.values():
        assert len(results) == len(items)
        assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    assert {r.task.task_id for r in outcomes["first"] if r.task} == {
        r.task.task_id for r in outcomes["second"] if r.task
    }
    assert {e.state for e in await first.entries()} == {JournalState.COMPLETED}
