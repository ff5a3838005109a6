"""SlidingLog: the expiries of the requests a rolling window still holds.

Checked against a plain list that knows nothing clever (no moving head, no bisection, no
compaction), including stamps that arrive out of order and the 1 µs boundary allowance.
"""

from __future__ import annotations

import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sora2_async._window import SlidingLog

# The allowance at the boundary (documented in _window.py): an entry this close to leaving
# counts as gone, so a sleeper woken a hair early by a rounding clock sees it go.
BOUNDARY = 1e-6


class Model:
    """The oracle: every expiry in a list, every question answered by looking at all of them."""

    def __init__(self, window: float) -> None:
        self.window = window
        self.expiries: list[float] = []

    def add(self, stamp: float) -> None:
        self.expiries.append(stamp + self.window)

    def prune(self, now: float) -> None:
        self.expiries = [e for e in self.expiries if e > now + BOUNDARY]

    def count_after(self, when: float) -> int:
        return sum(1 for e in self.expiries if e > when)

    def next_expiry(self) -> float | None:
        return min(self.expiries, default=None)


def test_an_empty_log() -> None:
    log = SlidingLog(10.0)
    assert len(log) == 0
    assert log.next_expiry() is None
    assert log.count_after(-1e9) == 0
    log.prune(1e9)  # nothing to forget
    assert len(log) == 0
    assert repr(log) == "<SlidingLog 0 in 10s>"


def test_entries_leave_a_window_after_their_stamp() -> None:
    log = SlidingLog(10.0)
    for stamp in (0.0, 1.0, 2.5):
        log.add(stamp)
    assert len(log) == 3
    assert log.next_expiry() == 10.0
    assert repr(log) == "<SlidingLog 3 in 10s>"

    log.prune(9.999)
    assert len(log) == 3
    log.prune(10.0)  # stamped at 0: gone at exactly 0 + window
    assert len(log) == 2
    assert log.next_expiry() == 11.0
    log.prune(12.4)
    assert len(log) == 1
    assert log.next_expiry() == 12.5
    log.prune(100.0)
    assert len(log) == 0
    assert log.next_expiry() is None


def test_the_boundary_is_exact_up_to_one_microsecond() -> None:
    log = SlidingLog(3602.0)
    log.add(0.1)  # leaves at 3602.1, which a float cannot hold exactly
    leaves = 0.1 + 3602.0
    log.prune(leaves - 3 * BOUNDARY)
    assert len(log) == 1, "an entry must not leave more than a microsecond early"
    log.prune(leaves - BOUNDARY / 2)
    assert len(log) == 0, "a clock that wakes a hair early must still see the entry go"


def test_count_after_counts_what_still_counts_then() -> None:
    log = SlidingLog(10.0)
    for stamp in (0.0, 1.0, 2.0):
        log.add(stamp)  # leave at 10, 11, 12
    assert log.count_after(5.0) == 3
    assert log.count_after(9.99) == 3
    assert log.count_after(10.0) == 2  # the one leaving at 10 no longer counts at 10
    assert log.count_after(11.5) == 1
    assert log.count_after(12.0) == 0
    assert len(log) == 3  # asking changes nothing


def test_out_of_order_stamps_are_kept_in_order() -> None:
    log = SlidingLog(10.0)
    for stamp in (5.0, 3.0, 4.0, 1.0, 6.0):
        log.add(stamp)
    assert log.next_expiry() == 11.0
    assert log.count_after(13.5) == 3  # 14, 15, 16
    log.prune(13.0)
    assert len(log) == 3
    assert log.next_expiry() == 14.0


def test_a_late_answer_slots_in_among_the_live_entries_after_pruning() -> None:
    log = SlidingLog(10.0)
    for stamp in range(100):
        log.add(float(stamp))
    log.prune(60.0)  # 0..50 gone; 51..99 left (expiries 61..109)
    assert len(log) == 49
    log.add(55.5)  # an answer that came back late
    assert len(log) == 50
    assert log.count_after(65.0) == 45  # 66..109 (44) and 65.5
    log.prune(65.2)
    assert log.next_expiry() == 65.5
    log.prune(65.6)
    assert log.next_expiry() == 66.0


def test_compaction_keeps_the_answers_right() -> None:
    """Long runs of prunes compact the log now and then: nothing is lost or kept by it."""
    log, model = SlidingLog(7.0), Model(7.0)
    for step in range(1000):
        now = step * 0.25
        log.add(now)
        model.add(now)
        if step % 3 == 0:
            log.prune(now)
            model.prune(now)
        assert len(log) == len(model.expiries)
        assert log.next_expiry() == model.next_expiry()
        assert log.count_after(now + 3.0) == model.count_after(now + 3.0)


def test_a_long_running_log_does_not_keep_what_it_forgot() -> None:
    log = SlidingLog(10.0)
    for i in range(200):
        log.add(float(i))
        log.prune(float(i))
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for i in range(200, 20_200):
            log.add(float(i))
            log.prune(float(i))
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(log) == 10
    # 20,000 stamps kept would take about 640 kB; a compacted log holds at most a few hundred.
    assert after - before < 50_000


operation = st.tuples(
    st.floats(0.0, 3.0),  # time passes
    st.floats(0.0, 2.0),  # the answer's stamp lags the clock by this much (out of order)
    st.booleans(),  # prune now
    st.floats(-1.0, 12.0),  # ask count_after(now + this)
)


@settings(max_examples=80, deadline=None)
@given(window=st.floats(0.5, 10.0), operations=st.lists(operation, max_size=300))
def test_the_log_agrees_with_a_plain_list(
    window: float, operations: list[tuple[float, float, bool, float]]
) -> None:
    log, model = SlidingLog(window), Model(window)
    now = 0.0
    for elapse, lag, prune, ahead in operations:
        now += elapse
        log.add(now - lag)
        model.add(now - lag)
        if prune:
            log.prune(now)
            model.prune(now)
        assert len(log) == len(model.expiries)
        assert log.next_expiry() == model.next_expiry()
        assert log.count_after(now + ahead) == model.count_after(now + ahead)


@pytest.mark.parametrize("window", [1e-3, 1.0, 3602.0])
def test_stamps_at_one_instant_leave_together(window: float) -> None:
    log = SlidingLog(window)
    for _ in range(5):
        log.add(1.0)
    assert log.count_after(1.0 + window - 1e-5) == 5
    log.prune(1.0 + window)
    assert len(log) == 0
