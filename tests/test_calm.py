"""The pause of an API caller's requests after 429s in a row (``sora2_async._calm``), in
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
        calm.refused()
        await calm.wait()
        pauses.append(anyio.current_time() - start)
    assert pauses == pytest.approx([5.0, 10.0, 20.0, 40.0, 80.0, 120.0, 120.0, 120.0])
    assert calm.refusals == 8


async def test_an_answer_ends_the_run_of_429s_and_the_next_pause_is_the_first_again() -> None:
    calm = Calm(60.0)  # a window of a minute (a time-scaled simulator): pauses scale with it
    calm.refused()
    calm.refused()
    await calm.wait()
    calm.answered()
    start = anyio.current_time()
    calm.refused()
    assert calm.pausing()
    await calm.wait()
    assert anyio.current_time() - start == pytest.approx(60.0 / 720, abs=1e-5)  # looptime: µs
    assert not calm.pausing()


async def test_without_a_429_nothing_waits_and_the_repr_shows_the_live_state() -> None:
    calm = Calm(3600.0)
    start = anyio.current_time()
    await calm.wait()
    assert anyio.current_time() == start
    assert not calm.pausing()
    calm.refused()
    assert repr(calm) == "<Calm for 5.0s pause=5s refusals=1>"
