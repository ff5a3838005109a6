"""Backoff arithmetic and Retry-After parsing (the rules of *what* is retried: test_api)."""

from __future__ import annotations

import email.utils
from collections.abc import Iterator

import pytest

from sora2_async import RetryPolicy
from sora2_async._retry import parse_retry_after, set_testing

DATE = "Wed, 21 Oct 2015 07:28:00 GMT"
DATE_TS = email.utils.parsedate_to_datetime(DATE).timestamp()


@pytest.fixture
def testing_mode() -> Iterator[None]:
    set_testing(True)
    try:
        yield
    finally:
        set_testing(False)


def test_defaults() -> None:
    policy = RetryPolicy()
    assert policy.max_retries == 3
    assert policy.max_rate_limit_retries >= 1
    assert 0 < policy.initial <= policy.maximum


@pytest.mark.parametrize(
    "kwargs",
    [{"max_retries": -1}, {"max_rate_limit_retries": -1}, {"initial": -0.1}, {"maximum": -1.0}],
)
def test_negative_knobs_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def nth_wait(policy: RetryPolicy, n: int, *, retry_after: float | None = None) -> float:
    """The wait before retry ``n`` (1-based) of one operation's backoff."""
    backoff = policy.for_errors(retries=n)
    for _ in range(n - 1):
        backoff.next()
    wait = backoff.next(retry_after=retry_after)
    assert wait is not None
    return wait


def test_a_backoff_says_when_its_retries_are_spent_and_starts_over_on_reset() -> None:
    backoff = RetryPolicy(max_retries=2, initial=1.0, jitter=0.0).for_errors()
    assert [backoff.next(), backoff.next(), backoff.next()] == [1.0, 2.0, None]
    backoff.reset()
    assert backoff.next() == 1.0


@pytest.mark.usefixtures("testing_mode")
def test_poll_pauses_keep_their_length_in_testing_mode() -> None:
    """Pollers never poll faster than the minimum interval, even in fast tests."""
    backoff = RetryPolicy(poll_rounds=4).for_polls(5.0)
    assert [backoff.next() for _ in range(4)] == [5.0, 10.0, 20.0, None]
    assert RetryPolicy(poll_max_pause=300.0).for_polls(5.0, time_scale=10.0).maximum == 30.0


def test_backoff_grows_exponentially_with_jitter_and_is_capped() -> None:
    policy = RetryPolicy(initial=1.0, maximum=10.0, jitter=0.5)
    for _ in range(200):
        waits = [nth_wait(policy, n) for n in range(1, 7)]
        assert 0.5 <= waits[0] <= 1.0
        assert 1.0 <= waits[1] <= 2.0
        assert 2.0 <= waits[2] <= 4.0
        assert 4.0 <= waits[3] <= 8.0
        assert all(5.0 <= w <= 10.0 for w in waits[4:])  # capped at maximum


def test_backoff_jitter_actually_varies() -> None:
    policy = RetryPolicy(initial=1.0, jitter=0.5)
    assert len({nth_wait(policy, 3) for _ in range(50)}) > 1


def test_backoff_without_jitter_is_exact() -> None:
    policy = RetryPolicy(initial=2.0, maximum=100.0, jitter=0.0)
    assert [nth_wait(policy, n) for n in (1, 2, 3, 4)] == [2.0, 4.0, 8.0, 16.0]


def test_backoff_never_shorter_than_retry_after() -> None:
    policy = RetryPolicy(initial=1.0, maximum=30.0)
    assert nth_wait(policy, 1, retry_after=45.0) == 45.0
    assert nth_wait(policy, 1, retry_after=0.0) <= 1.0
    assert nth_wait(policy, 1, retry_after=None) <= 1.0


def test_full_jitter_stays_non_negative() -> None:
    policy = RetryPolicy(initial=1.0, jitter=5.0)
    assert all(0.0 <= nth_wait(policy, 2) <= 2.0 for _ in range(100))


@pytest.mark.usefixtures("testing_mode")
def test_set_testing_makes_backoff_zero() -> None:
    assert nth_wait(RetryPolicy(initial=5.0), 3) == 0.0


def test_set_testing_can_be_undone() -> None:
    set_testing(True)
    set_testing(False)
    assert nth_wait(RetryPolicy(initial=5.0, jitter=0.0), 1) == 5.0


# -- Retry-After -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("30", 30.0), (" 5 ", 5.0), ("0", 0.0), ("1.5", 1.5)],
)
def test_retry_after_in_seconds(value: str, seconds: float) -> None:
    assert parse_retry_after({"retry-after": value}) == seconds


def test_retry_after_absent() -> None:
    assert parse_retry_after({}) is None


@pytest.mark.parametrize("value", ["soon", "", "Thursday", "inf", "nan", "-inf", "1e999"])
def test_retry_after_garbage_is_ignored(value: str) -> None:
    """Nothing that is not a finite number of seconds or a date may turn into a wait."""
    assert parse_retry_after({"retry-after": value}) is None


def test_retry_after_as_a_date_reads_against_the_response_date() -> None:
    later = email.utils.formatdate(DATE_TS + 45, usegmt=True)
    # The response's own Date wins over our clock (``now`` is an hour off here).
    headers = {"retry-after": later, "date": DATE}
    assert parse_retry_after(headers, now=DATE_TS + 3600) == pytest.approx(45.0)


def test_retry_after_as_a_date_reads_against_now_without_a_date_header() -> None:
    later = email.utils.formatdate(DATE_TS + 120, usegmt=True)
    assert parse_retry_after({"retry-after": later}, now=DATE_TS) == pytest.approx(120.0)


def test_retry_after_date_in_the_past_is_zero() -> None:
    earlier = email.utils.formatdate(DATE_TS - 60, usegmt=True)
    assert parse_retry_after({"retry-after": earlier, "date": DATE}) == 0.0


def test_retry_after_date_with_nothing_to_compare_with_is_ignored() -> None:
    assert parse_retry_after({"retry-after": DATE}) is None


def test_retry_after_with_a_broken_date_header_falls_back_to_now() -> None:
    later = email.utils.formatdate(DATE_TS + 10, usegmt=True)
    headers = {"retry-after": later, "date": "yesterday-ish"}
    assert parse_retry_after(headers, now=DATE_TS) == pytest.approx(10.0)
