"""The pause of an API client's requests after 429s in a row (``sora2_async._calm``), in
virtual time on both backends."""

from __future__ import annotations

import anyio
import pytest

from sora2_async._calm import Calm

pytestmark = pytest.mark.anyio


async def test_the_pause_doubles_with_each_429_in_a_row_up_to_two_minutes_of_an_hour() -> None:
    calm = Calm(3600.0)
    pauses = []
    for _ in range(8):
        start = anyio.current_time()
        calm.refused(sent_at=start)  # each sent after the last pause
        await calm.wait()
        pauses.append(anyio.current_time() - start)
    assert pauses == pytest.approx([5.0, 10.0, 20.0, 40.0, 80.0, 120.0, 120.0, 120.0])
    assert calm.refusals == 8


async def test_429s_of_requests_on_their_way_together_count_as_one_in_the_run() -> None:
    """Four polls refused by the same full window pause 5 s, not 5 + 10 + 20 + 40."""
    calm = Calm(3600.0)
    sent = anyio.current_time()
    await anyio.sleep(0.1)  # all four on their way; the answers come back one by one
    for _ in range(4):
        calm.refused(sent_at=sent)
    start = anyio.current_time()
    await calm.wait()
    assert anyio.current_time() - start == pytest.approx(5.0, abs=1e-5)
    assert calm.refusals == 4


async def test_only_an_answer_to_a_request_sent_after_the_pause_began_ends_the_run() -> None:
    calm = Calm(60.0)  # a window of a minute (a time-scaled simulator): pauses scale with it
    before = anyio.current_time()
    await anyio.sleep(1.0)
    calm.refused(sent_at=anyio.current_time())
    calm.answered(sent_at=before)  # on its way before the 429: says nothing of the window now
    await calm.wait()
    calm.refused(sent_at=anyio.current_time())  # the run goes on: doubled
    assert calm.until - anyio.current_time() == pytest.approx(2 * 60.0 / 720, abs=1e-5)
    await calm.wait()
    calm.answered(sent_at=anyio.current_time())  # sent after it: the run is over
    start = anyio.current_time()
    calm.refused(sent_at=start)
    assert calm.pausing()
    await calm.wait()
    assert anyio.current_time() - start == pytest.approx(60.0 / 720, abs=1e-5)  # looptime: µs
    assert not calm.pausing()


async def test_a_429_during_the_wait_lengthens_it_for_those_waiting_already() -> None:
    calm = Calm(3600.0)
    start = anyio.current_time()
    calm.refused(sent_at=start)
    woke: list[float] = []
    async with anyio.create_task_group() as group:

        async def waiter() -> None:
            await calm.wait()
            woke.append(anyio.current_time() - start)

        group.start_soon(waiter)
        await anyio.sleep(3.0)
        calm.refused(sent_at=anyio.current_time())  # 10 s from now
    assert woke == [pytest.approx(13.0, abs=1e-5)]


async def test_without_a_429_nothing_waits_and_the_repr_shows_the_live_state() -> None:
    calm = Calm(3600.0)
    start = anyio.current_time()
    await calm.wait()
    assert anyio.current_time() == start
    assert not calm.pausing()
    calm.refused(sent_at=start)
    assert repr(calm) == "<Calm for 5.0s pause=5s refusals=1>"
