"""wait / run / batch / as_completed against the simulator, on both backends, in virtual time."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator

import anyio
import httpx
import pytest

from sora2_async import (
    BatchResult,
    GenerationFailedError,
    InsufficientCreditsError,
    InvalidRequestError,
    RateLimit,
    Sora2Client,
    Task,
    TaskNotFoundError,
    VideoRequest,
    WaitTimeoutError,
)
from sora2_async._events import Event, EventKind
from sora2_async.testing import RuleTransport, Simulator

pytestmark = pytest.mark.anyio

KEY = "test-key-123"

Rule = Callable[[httpx.Request], "httpx.Response | None"]


def client_for(sim: Simulator, rule: Rule | None = None, **kwargs: object) -> Sora2Client:
    transport = sim.transport() if rule is None else RuleTransport(sim, rule)
    return Sora2Client(KEY, transport=transport, **kwargs)  # type: ignore[arg-type]


def requests_sent(sim: Simulator) -> int:
    return sim.stats().total_requests


def prompts(n: int, prefix: str = "video") -> list[VideoRequest]:
    return [VideoRequest(f"{prefix} {i}") for i in range(n)]


async def test_run_returns_the_video_soon_after_it_is_done() -> None:
    sim = Simulator(seed=1)
    async with client_for(sim) as client:
        video = await client.run(VideoRequest("a corgi surfing"))
    record = sim.tasks[video.task_id]
    assert video.url.endswith(".mp4")
    assert video.request == VideoRequest("a corgi surfing")
    # The budget is idle: it is spent on latency, within reason.
    assert 0 <= anyio.current_time() - record.completes_at <= 10
    assert requests_sent(sim) <= 15


async def test_a_tight_budget_costs_two_requests_a_video() -> None:
    sim = Simulator(seed=1)
    async with client_for(sim, rate_limit=RateLimit(2, per=3600)) as client:
        await client.run(VideoRequest("a corgi surfing"))
    assert requests_sent(sim) == 2  # generate, and one poll that finds it done


async def test_two_waits_on_one_task_share_one_poller() -> None:
    sim = Simulator(seed=2)
    async with client_for(sim) as client:
        task = await client.generate(VideoRequest("shared"))
        videos: list[str] = []

        async def wait() -> None:
            videos.append((await client.wait(task)).url)

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            tg.start_soon(wait)
        polls = sim.stats().requests_by_endpoint["check_status"]
        # One more wait on a finished task sends nothing.
        again = await client.wait(task.task_id)
    assert len(set(videos)) == 1
    assert again.url == videos[0]
    assert polls == sim.tasks[task.task_id].status_checks
    assert sim.stats().requests_by_endpoint["check_status"] == polls
    # The same poller as alone: two waiters cost what one costs.
    sim2 = Simulator(seed=2)
    async with client_for(sim2) as client:
        await client.wait(await client.generate(VideoRequest("shared")))
    assert sim2.stats().requests_by_endpoint["check_status"] == polls


async def test_wait_cancelled_by_the_caller_stops_polling_and_frees_its_promise() -> None:
    sim = Simulator(seed=3)
    async with client_for(sim) as client:
        task = await client.generate(VideoRequest("cancelled"))
        with anyio.move_on_after(20):
            await client.wait(task)
        sent = requests_sent(sim)
        assert client.budget().reserved == 0
        await anyio.sleep(3600)
        assert requests_sent(sim) == sent
        # A later wait takes over and finishes it.
        video = await client.wait(task)
    assert video.task_id == task.task_id


async def test_wait_timeout_raises_and_the_task_goes_on() -> None:
    sim = Simulator(seed=4)
    async with client_for(sim) as client:
        task = await client.generate(VideoRequest("slow"))
        with pytest.raises(WaitTimeoutError, match=task.task_id):
            await client.wait(task, timeout=30)
        assert isinstance(WaitTimeoutError("x"), TimeoutError)
        assert (await client.wait(task)).task_id == task.task_id


async def test_failed_generation_raises_with_its_status() -> None:
    sim = Simulator(seed=5, failure_rate=1.0)
    async with client_for(sim) as client:
        with pytest.raises(GenerationFailedError) as info:
            await client.run(VideoRequest("doomed"))
    assert info.value.status.error_code == "GENERATION_FAILED"
    assert sim.stats().credits_refunded == 4


async def test_unknown_task_raises_task_not_found() -> None:
    sim = Simulator(seed=6)
    async with client_for(sim) as client:
        with pytest.raises(TaskNotFoundError):
            await client.wait("task_that_never_was")
        assert client.budget().reserved == 0


async def test_as_completed_reattaches_tasks_submitted_elsewhere() -> None:
    sim = Simulator(seed=7)
    async with client_for(sim) as first:
        tasks = [await first.generate(r) for r in prompts(6)]
    await anyio.sleep(400)  # another process, later: all of them are done by now
    async with client_for(sim) as second, second.as_completed(t.task_id for t in tasks) as results:
        got = [r async for r in results]
    assert sorted(r.task.task_id for r in got if r.task) == sorted(t.task_id for t in tasks)
    assert all(r.ok for r in got)
    # Known only by id, each got one look: done already, so one request apiece.
    assert sim.stats().requests_by_endpoint["check_status"] == 6


async def test_batch_yields_each_result_once_as_it_is_found_done() -> None:
    sim = Simulator(seed=8)
    async with client_for(sim) as client, client.batch(prompts(12)) as results:
        got: list[tuple[float, BatchResult]] = []
        async for result in results:
            got.append((anyio.current_time(), result))
    assert len(got) == 12
    assert all(r.ok for _, r in got)
    # Handed out as they are found done: in order of delivery, each soon after its end.
    times = [t for t, _ in got]
    assert times == sorted(times)
    for at, result in got:
        assert result.task is not None
        assert 0 <= at - sim.tasks[result.task.task_id].completes_at <= 30
    assert sim.stats().duplicate_prompts == 0


async def test_leaving_a_batch_early_sends_nothing_more_and_leaves_no_task() -> None:
    sim = Simulator(seed=9)
    before = len(anyio.get_running_tasks())
    async with client_for(sim) as client:
        async with client.batch(prompts(40)) as results:
            seen = 0
            async for _ in results:
                seen += 1
                if seen == 3:
                    break
        sent = requests_sent(sim)
        assert len(anyio.get_running_tasks()) == before
        assert client.budget().reserved == 0
        await anyio.sleep(4 * 3600)
        assert requests_sent(sim) == sent


async def test_a_bug_in_one_poller_is_that_videos_error() -> None:
    sim = Simulator(seed=10)
    doomed: list[str] = []

    def rule(request: httpx.Request) -> httpx.Response | None:
        path, body = request.url.path, json.loads(request.content)
        if path.endswith("check-status") and body["taskId"] in doomed:
            raise RuntimeError("a bug somewhere below the poller")
        return None

    async with client_for(sim, rule) as client:
        tasks = [await client.generate(r) for r in prompts(4)]
        doomed.append(tasks[1].task_id)
        async with client.as_completed(tasks) as results:
            got = {r.task.task_id: r async for r in results if r.task}
    assert isinstance(got[tasks[1].task_id].error, RuntimeError)
    assert [got[t.task_id].ok for t in tasks] == [True, False, True, True]


async def test_an_api_rejection_is_that_requests_result() -> None:
    sim = Simulator(seed=11)

    def rule(request: httpx.Request) -> httpx.Response | None:
        if request.url.path.endswith("generate") and b"forbidden" in request.content:
            body = {"success": False, "error": "bad prompt", "errorCode": "INVALID_INPUT"}
            return httpx.Response(400, json=body)
        return None

    items: list[object] = [VideoRequest("fine 1"), "forbidden words", 42, "fine 2"]
    async with client_for(sim, rule) as client, client.batch(items) as results:  # type: ignore[arg-type]
        got = [r async for r in results]
    errors = [r for r in got if not r.ok]
    assert len(got) == 4
    assert len(errors) == 2
    assert all(isinstance(r.error, InvalidRequestError) for r in errors)
    assert sim.stats().tasks_created == 2


async def test_insufficient_credits_stops_new_submissions_only() -> None:
    sim = Simulator(seed=12, api_keys={KEY: 8})  # enough for two sora2 videos
    async with client_for(sim) as client, client.batch(prompts(5)) as results:
        got = [r async for r in results]
    ok = [r for r in got if r.ok]
    refused = [r for r in got if isinstance(r.error, InsufficientCreditsError)]
    assert (len(ok), len(refused)) == (2, 3)
    assert all(r.request is not None for r in refused)
    assert sim.stats().requests_by_endpoint["generate"] == 3  # stopped after the first 402


async def test_max_in_flight_bounds_running_videos() -> None:
    sim = Simulator(seed=13)
    running = peak = 0

    def watch(event: Event) -> None:
        nonlocal running, peak
        if event.kind is EventKind.SUBMITTED:
            running += 1
            peak = max(peak, running)
        elif event.kind in (EventKind.COMPLETED, EventKind.FAILED):
            running -= 1

    async with client_for(sim) as client:
        client.on_event(watch)
        async with client.batch(prompts(10), max_in_flight=2) as results:
            got = [r async for r in results]
    assert len(got) == 10
    assert peak == 2


async def test_batch_reads_a_slow_async_generator_lazily() -> None:
    sim = Simulator(seed=14)
    produced: list[float] = []

    async def trickle() -> AsyncIterator[VideoRequest]:
        for i in range(4):
            produced.append(anyio.current_time())
            yield VideoRequest(f"slow {i}")
            await anyio.sleep(600)

    async with client_for(sim) as client, client.batch(trickle()) as results:
        first_at = None
        count = 0
        async for _ in results:
            count += 1
            first_at = first_at or anyio.current_time()
    assert count == 4
    assert first_at is not None
    assert first_at < produced[-1]  # results flow before the input ends


async def test_batch_does_not_read_a_huge_input_ahead() -> None:
    sim = Simulator(seed=15)
    taken = 0

    def endless() -> Iterator[VideoRequest]:
        nonlocal taken
        for i in range(100_000):
            taken += 1
            yield VideoRequest(f"lazy {i}")

    async with client_for(sim) as client, client.batch(endless()) as results:
        async for _ in results:
            break
    # The budget carries about 50 videos per hour; the reader stops where the budget does.
    assert taken <= 60


async def test_events_tell_the_story_of_a_video() -> None:
    sim = Simulator(seed=16)
    async with client_for(sim) as client, client.events() as stream:
        await client.run(VideoRequest("observed"))
        kinds = []
        while True:
            try:
                kinds.append(stream.receive_nowait().kind)
            except anyio.WouldBlock:
                break
    assert kinds[0] is EventKind.SUBMITTED
    assert kinds[-1] is EventKind.COMPLETED
    assert EventKind.POLLED in kinds


async def test_events_report_waiting_for_budget() -> None:
    sim = Simulator(seed=17)
    kinds: list[EventKind] = []
    async with client_for(sim, rate_limit=RateLimit(4, per=3600)) as client:
        client.on_event(lambda e: kinds.append(e.kind))
        async with client.batch(prompts(3)) as results:
            async for _ in results:
                pass
    assert EventKind.WAITING_FOR_BUDGET in kinds
    assert sim.stats().responses_429 == 0


async def test_known_status_answers_without_a_request() -> None:
    sim = Simulator(seed=18)
    async with client_for(sim) as client:
        video = await client.run(VideoRequest("known"))
        sent = requests_sent(sim)
        status = client.known_status(video.task_id)
        assert client.known_status(Task("task_unheard_of")) is None
    assert status is not None
    assert status.video_url == video.url
    assert requests_sent(sim) == sent


async def test_an_exception_in_the_batch_block_comes_out_as_itself() -> None:
    sim = Simulator(seed=19)

    async def leave_with_an_error(client: Sora2Client) -> None:
        async with client.batch(prompts(5)) as results:
            async for _ in results:
                raise KeyError("mine")

    async with client_for(sim) as client:
        with pytest.raises(KeyError, match="mine"):
            await leave_with_an_error(client)
        assert client.budget().reserved == 0
