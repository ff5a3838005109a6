"""The simulator's transport with a rule of the test's own that may answer first."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from ._simulator import Simulator

__all__ = ["Rule", "RuleTransport"]

#: Looks at a request and returns the answer to give instead of the simulator's, or ``None``.
Rule = Callable[[httpx.Request], "httpx.Response | None"]


class RuleTransport(httpx.AsyncBaseTransport):
    """The simulator's in-process transport, with a ``rule`` that may answer first.

    Use it when a test needs one particular answer that the simulator's seeded
    :class:`Faults` cannot aim at: a 429 for the first generate of one prompt, a 400 for one
    body, an error on the check-status of one task. For faults by probability (latency, 5xx,
    dropped connections, broken bodies), configure the :class:`Simulator` instead.

    ``rule(request)`` sees every request first. When it returns an ``httpx.Response``, that is
    the answer and the simulator never sees the request (it counts nothing, creates nothing);
    when it returns ``None``, the simulator answers as usual. An exception the rule raises
    reaches the caller as the transport's (raise ``httpx.ReadError(..., request=request)``
    to play a connection lost after sending)::

        def refuse_generates(request: httpx.Request) -> httpx.Response | None:
            if request.url.path.endswith("/generate"):
                body = {"success": False, "error": "busy",
                        "errorCode": "API_KEY_RATE_LIMIT_EXCEEDED"}
                return httpx.Response(429, json=body, headers={"Retry-After": "60"})
            return None

        sim = Simulator(seed=1)
        async with Sora2Client("key", transport=RuleTransport(sim, refuse_generates)) as client:
            ...
    """

    def __init__(self, simulator: Simulator, rule: Rule) -> None:
        self._inner = simulator.transport()
        self._rule = rule

    def __repr__(self) -> str:
        return f"<RuleTransport {self._rule!r} then {self._inner!r}>"

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """The rule's answer to ``request``, or else the simulator's."""
        answer = self._rule(request)
        if answer is not None:
            return answer
        return await self._inner.handle_async_request(request)
