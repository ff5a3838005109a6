"""What the Redis journal and video store share: their keys, and a call that outlasts a blip."""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
import coredis.exceptions

from ._limiter import _UNREACHABLE

__all__ = ["retrying", "tagged_keys"]

logger = logging.getLogger("sora2_async")


def tagged_keys(kind: str, namespace: str, name: str, parts: Sequence[str]) -> list[str]:
    """``{sora2:<namespace>:<kind>:<name>}:<part>`` for each part: one hash tag, so that a
    cluster keeps them in one slot (a script may touch them all).

    Raises:
        ValueError: an empty ``name`` or ``namespace``, or one with braces.
    """
    for what, value in (("name", name), ("namespace", namespace)):
        if not value or any(c in value for c in "{}"):
            raise ValueError(f"{what} must be a non-empty name without braces: {value!r}")
    tag = f"{{sora2:{namespace}:{kind}:{name}}}"
    return [f"{tag}:{part}" for part in parts]


async def retrying(
    send: Callable[[], Awaitable[Any]],
    *,
    unreachable_for: float,
    error: Callable[[str], Exception],
    what: str,
) -> Any:
    """``send()`` awaited, again (with jittered backoff) while Redis is unreachable, for at
    most ``unreachable_for`` seconds.

    Raises:
        error: Redis refused the command, or stayed unreachable (the message names ``what``).
    """
    pause, waited = 0.05, 0.0
    while True:
        try:
            return await send()
        except coredis.exceptions.ResponseError as exc:
            raise error(f"{what} refused: {exc}") from None
        except _UNREACHABLE as exc:
            if waited >= unreachable_for:
                raise error(f"{what} is unreachable: {exc}") from None
            if waited == 0.0:
                logger.warning(
                    "%s is unreachable (%s): retrying for %g s",
                    what,
                    type(exc).__name__,
                    unreachable_for,
                )
            delay = pause * random.uniform(0.5, 1.0)
            await anyio.sleep(delay)
            waited += delay
            pause = min(2.0, pause * 2)
