"""The admission rule (``_admission``) on a window made up here, against a plain reading of it.

Every store's behaviour under the rule is in ``test_limiter_contract``; here, the arithmetic
alone, where a shortcut must agree with the rule as its docstring states it.
"""

from __future__ import annotations

import bisect

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from sora2_async._admission import PROMISE_SLIP, Contender, fits
from sora2_async._limits import RequestKind


@attrs.frozen
class FakeWindow:
    """A window at ``now``: answered entries leaving at ``expiries``, leases due at ``dues``."""

    now: float
    limit: int
    expiries: tuple[float, ...]  # ascending
    in_flight: int
    lease_dues: tuple[float, ...]  # ascending
    blocked_until: float = float("-inf")
    rises_at: float = float("inf")

    @property
    def used(self) -> int:
        return self.in_flight + self.later(self.now)

    @property
    def reserved(self) -> int:
        return len(self.lease_dues)

    def later(self, when: float) -> int:
        return self.in_flight + len(self.expiries) - bisect.bisect_right(self.expiries, when)

    def expiry(self, k: int) -> float | None:
        return self.expiries[k - 1] if k <= len(self.expiries) else None

    def first_expiry_after(self, when: float) -> float | None:
        i = bisect.bisect_right(self.expiries, when)
        return self.expiries[i] if i < len(self.expiries) else None


def fits_as_stated(window: FakeWindow, contender: Contender) -> bool:
    """``fits`` as its docstring says it: every lease due before the horizon, one by one."""
    if window.now < window.blocked_until or window.used + 1 > window.limit:
        return False
    if contender.kind is RequestKind.POLL:
        return True
    own = 0 if contender.promise is None else 1
    horizon = window.now + (contender.promise or 0.0)
    if window.later(horizon) + window.reserved + 1 + own > window.limit:
        return False
    for due_by, due in enumerate(window.lease_dues, start=1):
        if due >= horizon:
            break
        if window.later(max(window.now, due) + PROMISE_SLIP) + due_by + 1 > window.limit:
            return False
    return True


_TIMES = st.floats(0.0, 400.0)


@settings(max_examples=2_000, deadline=None)
@given(
    limit=st.integers(1, 60),
    expiries=st.lists(st.floats(100.0, 500.0), max_size=50),
    in_flight=st.integers(0, 3),
    dues=st.lists(st.sampled_from([95.0, 100.0, 130.0, 200.0]) | _TIMES, max_size=40),
    kind=st.sampled_from(list(RequestKind)),
    promise=st.none() | st.floats(0.0, 400.0),
)
def test_fits_agrees_with_the_rule_checked_lease_by_lease(
    limit: int,
    expiries: list[float],
    in_flight: int,
    dues: list[float],
    kind: RequestKind,
    promise: float | None,
) -> None:
    window = FakeWindow(100.0, limit, tuple(sorted(expiries)), in_flight, tuple(sorted(dues)))
    contender = Contender(kind, 90.0, promise)
    assert fits(window, contender) is fits_as_stated(window, contender)


def test_a_submission_with_many_leases_ahead_is_checked_wherever_one_could_fail() -> None:
    """Leases due every 10 s, entries leaving every 10 s then all at once: the lease that
    fails first moves with the limit, and the shortcut finds it at every limit."""
    expiries = tuple(105.0 + 10.0 * i for i in range(40)) + (700.0,) * 20
    dues = tuple(110.0 + 10.0 * i for i in range(60))
    generate = Contender(RequestKind.GENERATE, 90.0, 1_000.0)
    answers = []
    for limit in range(60, 130):
        window = FakeWindow(100.0, limit, expiries, 0, dues)
        answers.append(fits(window, generate))
        assert answers[-1] is fits_as_stated(window, generate), limit
    assert True in answers
    assert False in answers
