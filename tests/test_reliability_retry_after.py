"""``Retry-After`` has a ceiling: one absurd header must not freeze a key's clients for days."""

from __future__ import annotations

import email.utils
import logging

import anyio
import httpx
import pytest

from sora2_async import Sora2Client
from sora2_async._retry import ABSURD_RETRY_AFTER, MAX_RETRY_AFTER, parse_retry_after
from sora2_async.testing import Simulator

RATE_LIMITED = {
    "success": False,
    "error": "API key rate limit exceeded.",
    "errorCode": "API_KEY_RATE_LIMIT_EXCEEDED",
}


@pytest.mark.parametrize(
    "value", ["999999999", "86401", "-5", "-0.5", "inf", "-inf", "nan", "1e400", "soon", ""]
)
def test_absurd_negative_or_unreadable_values_count_as_absent(
    value: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="sora2_async")
    assert parse_retry_after({"retry-after": value}) is None
    (record,) = caplog.records
    assert "Retry-After" in record.getMessage()


@pytest.mark.parametrize("value", ["3601", "7200", str(int(ABSURD_RETRY_AFTER))])
def test_long_values_are_capped_to_the_window(value: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="sora2_async")
    assert parse_retry_after({"retry-after": value}) == MAX_RETRY_AFTER == 3600.0
    assert "capping" in caplog.text


def test_a_caller_with_a_shorter_window_caps_further(caplog: pytest.LogCaptureFixture) -> None:
    assert parse_retry_after({"retry-after": "120"}, maximum=60.0) == 60.0
    assert parse_retry_after({"retry-after": "30"}, maximum=60.0) == 30.0


def test_a_date_a_year_ahead_is_absurd_and_one_in_the_past_means_now() -> None:
    now = 1_700_000_000.0
    ahead = email.utils.formatdate(now + 365 * 86400, usegmt=True)
    assert parse_retry_after({"retry-after": ahead}, now=now) is None
    behind = email.utils.formatdate(now - 60, usegmt=True)
    assert parse_retry_after({"retry-after": behind}, now=now) == 0.0
    soon = email.utils.formatdate(now + 90, usegmt=True)
    assert parse_retry_after({"retry-after": soon}, now=now) == 90.0


def test_plain_values_pass_unchanged_and_quietly(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="sora2_async")
    for value, seconds in (("0", 0.0), ("20", 20.0), ("3600", 3600.0)):
        assert parse_retry_after({"retry-after": value}) == seconds
    assert not caplog.records


class OneAbsurd429(httpx.AsyncBaseTransport):
    """The first API request gets a 429 with an absurd ``Retry-After``; the rest reach the
    simulator."""

    def __init__(self, sim: Simulator, retry_after: str) -> None:
        self.inner = sim.transport()
        self.retry_after = retry_after
        self.sent = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent += 1
        if self.sent == 1:
            return httpx.Response(429, json=RATE_LIMITED, headers={"Retry-After": self.retry_after})
        return await self.inner.handle_async_request(request)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("retry_after", "bound"),
    [
        # Ignored: the limiter waits for its window to free, as after a bare 429 (its own
        # rule, which may take up to two windows).
        ("999999999", 2 * 3600 + 600),
        ("-30", 2 * 3600 + 600),
        ("7200", MAX_RETRY_AFTER + 600),  # capped to the window
    ],
)
async def test_one_absurd_429_does_not_freeze_the_shared_limiter(
    retry_after: str, bound: float
) -> None:
    sim = Simulator(seed="retry-after")
    transport = OneAbsurd429(sim, retry_after)
    async with (
        Sora2Client("ra-key", http_client=httpx.AsyncClient(transport=transport)) as first,
        Sora2Client(
            "ra-key",
            http_client=httpx.AsyncClient(transport=sim.transport()),
            rate_limit=first.limiter,
        ) as second,
    ):
        started = anyio.current_time()
        # Without a ceiling the shared limiter would hold both for 31 virtual years.
        with anyio.fail_after(bound + 1):
            async with anyio.create_task_group() as tg:
                tg.start_soon(first.run, "a corgi surfing")
                tg.start_soon(second.run, "a fox in the snow")
        took = anyio.current_time() - started
    assert took <= bound
    assert sim.stats().tasks_created == 2
