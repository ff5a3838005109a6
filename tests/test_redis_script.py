"""The Redis store's Lua script against the Python rule, on generated sequences.

The Python side is the SQLite store: the rule of ``_admission`` and the arithmetic of
``_ceiling`` over rows, the model every store follows. Both stores get the same operations
at the same instants (a hand-moved clock, so Redis's ``TIME`` is replaced by the test's):
admissions of polls and submissions (with and without a promised poll, with rivals waiting),
extra polls, answers (429s with and without ``Retry-After``), promises and releases, and time
passing (seconds, or whole windows: the ceiling's climb back and its probes). After every
step the two must agree on the decision (admitted, or when to look again) and on the
snapshot. A real ``redis-server`` runs the script.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sora2_async import Lease, Permit, RateLimit, RequestKind, SQLiteLimiter
from sora2_async._admission import Contender

pytestmark = pytest.mark.anyio

POLL, GENERATE = RequestKind.POLL, RequestKind.GENERATE

kinds = st.sampled_from([POLL, GENERATE])
# Up to beyond a window and PROMISE_SLIP: a lease due before a submission's own poll is then
# checked at its own time (the window fuller then), as the rule says.
promises = st.one_of(st.none(), st.floats(0.0, 120.0))
operation = st.one_of(
    st.tuples(
        st.just("attempt"), kinds, promises, st.lists(st.tuples(kinds, st.floats(0, 50)))
    ).filter(lambda op: op[1] is GENERATE or op[2] is None),
    st.tuples(st.just("extra")),
    st.tuples(st.just("stamp"), st.booleans(), st.one_of(st.none(), st.floats(0.0, 40.0))),
    st.tuples(st.just("promise"), st.floats(0.0, 120.0)),
    st.tuples(st.just("release")),
    st.tuples(st.just("wait"), st.floats(0.0, 25.0)),
    # whole windows pass: the ceiling climbs back, probes where the 429s came, learns
    st.tuples(st.just("windows"), st.integers(1, 12)),
    # many answered polls in a moment, the last maybe refused: a full window, then a 429
    st.tuples(st.just("burst"), st.integers(1, 14), st.booleans()),
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def redis_client(redis_server: Any) -> AsyncIterator[Any]:
    import coredis

    async with coredis.Redis.from_url(redis_server.url, decode_responses=False) as client:
        yield client


def script_limiter(redis_client: Any, namespace: str, clock: Clock, rate_limit: RateLimit) -> Any:
    """A Redis store on ``clock`` (the script's ``TIME`` replaced), without margin or jitter
    and with leases that never lapse."""
    from sora2_async.redis import RedisLimiter

    return RedisLimiter(
        redis_client,
        namespace=namespace,
        rate_limit=rate_limit,
        margin=0.0,
        lease_ttl=1e6,
        jitter=0.0,
        server_clock=clock,
    )


def outcome(got: Permit | float | None) -> object:
    if isinstance(got, Permit):
        return ("admitted", got.lease is not None)
    if got is None:
        return "refused"
    return ("wait", round(got, 6))


def state_of(lim: Any) -> tuple[object, ...]:
    s = lim.last_state
    return (
        s.limit,
        s.used,
        s.reserved,
        s.rate_limited,
        round(s.blocked_for, 6),
        round(s.next_free_in, 6) if s.next_free_in < 1e9 else "far",
    )


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# A poll promised for 5 s finds the two polls of the burst, and the submission that would fit
# at its own horizon (100 s) would take its slot: it waits (2 + 1 + 1 > 3).
@example(
    limit=3,
    per=60.0,
    starve_after=40.0,
    ops=[("burst", 2, False), ("promise", 5.0), ("attempt", GENERATE, 100.0, [])],
)
# Refused with 5 of ours in the window: the climb stops at 4, probes 5 a window later, and
# refused there again it waits 8 windows for the next probe (a script that kept only the
# lowered limit climbed on to 8).
@example(
    limit=10,
    per=30.0,
    starve_after=40.0,
    ops=[("burst", 5, True), ("windows", 2), ("burst", 5, True), ("windows", 1), ("windows", 8)],
)
# Refused at the probe's level after it held a window (ended, ours == failed): a repeat.
@example(
    limit=10,
    per=30.0,
    starve_after=40.0,
    ops=[("burst", 5, True), ("windows", 3), ("burst", 5, True), ("windows", 2)],
)
# Refused with a short Retry-After, then again 0.4 s later (between per / 120 and per / 60)
# under the lowered limit: a repeat, so the probe waits 8 windows, not one.
@example(
    limit=10,
    per=30.0,
    starve_after=40.0,
    ops=[
        ("burst", 4, False),
        ("attempt", POLL, None, []),
        ("stamp", True, 0.1),
        ("wait", 0.4),
        ("attempt", POLL, None, []),
        ("stamp", True, None),
        ("windows", 2),
    ],
)
# A 429 long after the last (more than 64 windows), below where it came: learnt afresh.
@example(
    limit=10,
    per=30.0,
    starve_after=40.0,
    ops=[
        ("burst", 5, True),
        ("windows", 2),
        ("burst", 5, True),
        *[("windows", 12)] * 6,
        ("burst", 3, True),
        ("windows", 1),
        ("windows", 1),
    ],
)
@given(
    limit=st.integers(1, 14),
    per=st.floats(5.0, 60.0),
    starve_after=st.floats(1.0, 40.0),
    ops=st.lists(operation, min_size=1, max_size=40),
)
async def test_the_script_decides_as_the_python_rule(
    redis_client: Any,
    tmp_path_factory: pytest.TempPathFactory,
    limit: int,
    per: float,
    starve_after: float,
    ops: list[tuple[Any, ...]],
) -> None:
    from sora2_async.redis import RedisLimiter

    clock = Clock()
    knobs: dict[str, Any] = {
        "rate_limit": RateLimit(limit, per=per),
        "margin": 0.0,
        "starve_after": starve_after,
        "flight_ttl": 50.0,
        "lease_ttl": 1e6,
        "recheck": 1e9,
    }
    folder: Path = tmp_path_factory.mktemp("model")
    model = SQLiteLimiter(folder / "budget.sqlite", clock=clock, in_thread=False, **knobs)
    import uuid

    script = RedisLimiter(
        redis_client,
        namespace=f"model-{uuid.uuid4().hex}",
        jitter=0.0,
        server_clock=clock,
        **knobs,
    )
    stores = (model, script)
    permits: list[tuple[Permit, Permit]] = []
    leases: list[tuple[Lease, Lease]] = []
    try:
        for step, op in enumerate(ops):
            name = op[0]
            if name in ("wait", "windows"):
                clock.now += op[1] * per if name == "windows" else op[1]
                got = [None, None]  # the states are compared below
            elif name == "burst":
                for i in range(op[1]):
                    me = Contender(POLL, clock.now)
                    burst = [await s._attempt(me, []) for s in stores]
                    assert outcome(burst[0]) == outcome(burst[1]), (step, op)
                    for permit, s in zip(burst, stores, strict=True):
                        if isinstance(permit, Permit):
                            if op[2] and i == op[1] - 1:
                                permit.rate_limited(None)
                            await s._stamp(permit)
                        else:
                            await s._leave(me)
                got = [None, None]
            elif name == "attempt":
                _, kind, promise, rivals = op
                me = Contender(kind, clock.now, promise)
                others = [Contender(k, clock.now - ago) for k, ago in rivals]
                got = [await s._attempt(me, others) for s in stores]
                if all(isinstance(g, Permit) for g in got):
                    permits.append((got[0], got[1]))
                    if got[0].lease is not None and got[1].lease is not None:
                        leases.append((got[0].lease, got[1].lease))
                    for s in stores:
                        await s._leave(me)
            elif name == "extra":
                got = [await s._try_extra(RequestKind.EXTRA_POLL) for s in stores]
                if all(isinstance(g, Permit) for g in got):
                    permits.append((got[0], got[1]))  # type: ignore[arg-type]
            elif name == "stamp":
                if not permits:
                    continue
                _, refused, retry_after = op
                pair = permits.pop(0)
                for permit, s in zip(pair, stores, strict=True):
                    if refused:
                        permit.rate_limited(retry_after)
                    await s._stamp(permit)
                got = [None, None]
            elif name == "promise":
                made = [await s.promise(op[1]) for s in stores]
                leases.append((made[0], made[1]))
                got = [None, None]
            else:  # release
                if not leases:
                    continue
                pair_l = leases.pop(0)
                for lease, s in zip(pair_l, stores, strict=True):
                    await s.release(lease)
                got = [None, None]
            assert outcome(got[0]) == outcome(got[1]), (step, op)
            await model.snapshot()
            await script.snapshot()
            assert state_of(model) == state_of(script), (step, op)
    finally:
        await model.aclose()
        await script.aclose()


async def test_leases_written_by_the_script_that_kept_no_dues_count_as_due_at_the_horizon(
    redis_client: Any,
) -> None:
    """A namespace of the previous script (leases without a due time) works on: such a lease
    is checked at the submission's own horizon only, as it was."""
    import uuid

    clock = Clock()
    namespace = f"old-{uuid.uuid4().hex}"

    def key(name: str) -> str:
        return f"{{sora2:{namespace}}}:{name}"

    # What the previous script left: a living owner with one lease, and no dues.
    await redis_client.hset(key("owners"), {"old": repr(clock.now + 1e6)})
    await redis_client.hset(key("counts"), {"old": "1"})
    await redis_client.hset(key("leases"), {"old-l1": "old"})
    # A due whose lease that script ended (it removed only the hash's field).
    await redis_client.zadd(key("dues"), {"ended-l1": clock.now + 1.0})
    lim = script_limiter(redis_client, namespace, clock, RateLimit(3, per=60.0))
    try:
        for _ in range(2):  # two polls answered now: they leave at 60
            permit = await lim._attempt(Contender(POLL, clock.now), [])
            assert isinstance(permit, Permit)
            await lim._stamp(permit)
        # Due at 100 or later, the old lease leaves this submission its slot: 0 + 1 + 1 + 1.
        got = await lim._attempt(Contender(GENERATE, clock.now, 100.0), [])
        assert isinstance(got, Permit)
        assert got.lease is not None
        assert (await lim.snapshot()).reserved == 2
        assert list(await redis_client.zrange(key("dues"), 0, -1)) == [got.lease.id.encode()]
        await lim.release(got.lease)
        assert await redis_client.zcard(key("dues")) == 0
        await lim.promise(5.0)
    finally:
        await lim.aclose()
    assert await redis_client.zcard(key("dues")) == 0  # closing ended its leases in both
    assert list(await redis_client.hkeys(key("leases"))) == [b"old-l1"]


async def test_a_429_written_by_a_script_that_keeps_no_learning_is_learnt_afresh(
    redis_client: Any,
) -> None:
    """An older script on the same namespace lowers the limit but leaves ``failed`` and
    ``repeats`` as they were: they belong to an earlier 429 and are not paired with this
    one (the same rule as the SQLite store's ``learnt_at``)."""
    import uuid

    clock = Clock()
    namespace = f"mixed-{uuid.uuid4().hex}"
    lim = script_limiter(redis_client, namespace, clock, RateLimit(10, per=100.0))
    start = clock.now
    try:
        for i in range(5):  # 5 of ours in the window, the last refused: learnt, down to 2
            permit = await lim._attempt(Contender(POLL, clock.now), [])
            assert isinstance(permit, Permit)
            if i == 4:
                permit.rate_limited(None)
            await lim._stamp(permit)
            clock.now += 1.0
        clock.now = start + 50.0  # the older script's own 429: only the limit and when
        await redis_client.hset(
            f"{{sora2:{namespace}}}:ceiling",
            {"lowered_to": "2", "lowered_at": repr(clock.now)},
        )
        for at, limit in [(151.0, 4), (251.0, 8)]:  # climbing as that script does, past 5
            clock.now = start + at
            assert (await lim.snapshot()).limit == limit, at
    finally:
        await lim.aclose()
