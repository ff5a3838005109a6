"""The order in which due polls go on the wire (``_turns``)."""

from __future__ import annotations

import anyio
import pytest

from sora2_async._limits import BudgetState
from sora2_async._models import ModelTier
from sora2_async._turns import NEAR_AT_ONCE, PollTurns

pytestmark = pytest.mark.anyio

TIER = ModelTier.SORA2


def state(used: int, limit: int = 100, configured: int = 100) -> BudgetState:
    return BudgetState(
        limit=limit,
        configured_limit=configured,
        window=3600.0,
        used=used,
        reserved=0,
        waiting_polls=0,
        waiting_generates=0,
        next_free_in=0.0,
        rate_limited=0,
        blocked_for=0.0,
    )


async def test_the_window_lets_polls_go_together_then_a_few_then_one() -> None:
    turns = PollTurns()
    open_, near, edge = (turns.window(state(u)) for u in (10, 60, 80))
    assert open_ is turns.window(state(0))
    assert len({id(open_), id(near), id(edge)}) == 3
    assert turns.window(state(10, limit=90)) is edge  # tightened after 429s: one at a time
    assert isinstance(near, anyio.Semaphore)
    assert near.value == NEAR_AT_ONCE
    assert isinstance(edge, anyio.Lock)


async def test_the_first_final_of_a_tier_goes_alone_and_each_done_one_doubles_the_next() -> None:
    turns = PollTurns()

    def go(n: int) -> int:  # finals that may go now, sending each that may
        sent = 0
        while sent < n and turns.final_wait(TIER) is None:
            turns.final_out(TIER)
            sent += 1
        return sent

    assert go(10) == 1
    waiting = turns.final_wait(TIER)
    assert waiting is not None
    assert not waiting.is_set()
    turns.final_answered(TIER, ended=True)
    assert waiting.is_set()  # the ones held back are woken by the answer
    assert go(10) == 2
    turns.final_answered(TIER, ended=True)
    turns.final_answered(TIER, ended=True)
    assert go(10) == 8  # four at once, none out
    for _ in range(8):
        turns.final_answered(TIER, ended=False)  # each found running: halved, down to one
    assert go(10) == 1
    turns.final_answered(TIER, ended=None)  # failed: nothing learnt, the turn is free
    assert go(10) == 1
    turns.final_answered(TIER, ended=None)
    assert turns.final_wait(ModelTier.PRO_HIGH) is None  # tiers do not hold each other


async def test_after_ten_done_in_a_row_finals_go_as_the_window_allows() -> None:
    turns = PollTurns()
    for _ in range(10):
        turns.final_out(TIER)
        turns.final_answered(TIER, ended=True)
    for _ in range(2**10):
        assert turns.final_wait(TIER) is None
        turns.final_out(TIER)
    assert turns.final_wait(TIER) is not None  # 2 ** 10 at once


async def test_finals_held_back_plan_again_only_when_most_are_found_running() -> None:
    turns = PollTurns()
    assert not turns.mostly_running(TIER)
    turns.final_out(TIER)
    turns.final_answered(TIER, ended=False)
    assert turns.mostly_running(TIER)  # one of one
    for ended in (True, False, False):
        turns.final_out(TIER)
        turns.final_answered(TIER, ended=ended)
    assert turns.mostly_running(TIER)  # three of four
    turns.final_out(TIER)
    turns.final_answered(TIER, ended=True)
    assert not turns.mostly_running(TIER)  # three of five: half end, send them
    for _ in range(200):  # recent answers count most: a tier that now ends is seen to
        turns.final_out(TIER)
        turns.final_answered(TIER, ended=True)
    for _ in range(3):
        turns.final_out(TIER)
        turns.final_answered(TIER, ended=False)
    assert not turns.mostly_running(TIER)
    assert "PollTurns" in repr(turns)
