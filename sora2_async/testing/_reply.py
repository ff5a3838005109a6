"""What the simulator answers, independent of how it is carried (httpx transport or ASGI).

A :class:`Reply` is status, bytes and headers, plus two instructions for the carrier: drop
the connection instead of answering, or dribble the body out over some seconds.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import attrs

__all__ = ["JSON", "Reply", "error_reply", "gateway_page", "json_reply", "truncated"]

JSON = "application/json"


@attrs.frozen
class Reply:
    """One answer of the simulator.

    Attributes:
        status: the HTTP status.
        body: the body's bytes.
        content_type: the ``Content-Type``.
        headers: extra headers (``Retry-After``).
        drop: close the connection without answering (``status`` and ``body`` unused).
        slow_seconds: spread the body over this many seconds (0: send it at once).
    """

    status: int
    body: bytes
    content_type: str = JSON
    headers: tuple[tuple[str, str], ...] = ()
    drop: bool = False
    slow_seconds: float = 0.0

    def header_list(self) -> list[tuple[str, str]]:
        """All headers to send, ``Content-Type`` and ``Content-Length`` included."""
        return [
            ("content-type", self.content_type),
            ("content-length", str(len(self.body))),
            *self.headers,
        ]

    def chunks(self, pieces: int = 4) -> list[bytes]:
        """The body cut into up to ``pieces`` parts (for a slow body)."""
        size = max(1, -(-len(self.body) // pieces))
        return [self.body[i : i + size] for i in range(0, len(self.body), size)] or [b""]


def json_reply(
    status: int, body: Mapping[str, Any], headers: tuple[tuple[str, str], ...] = ()
) -> Reply:
    """A JSON answer."""
    data = json.dumps(dict(body), ensure_ascii=False, separators=(", ", ": ")).encode()
    return Reply(status, data, JSON, headers)


def error_reply(
    status: int,
    code: str,
    message: str,
    /,
    *,
    headers: tuple[tuple[str, str], ...] = (),
    success_field: bool = True,
    **extra: Any,
) -> Reply:
    """An error answer as the API sends them: ``{"success": false, "error", "errorCode"}``.

    ``success_field=False`` leaves ``success`` out, as the provider's documented
    ``INSUFFICIENT_CREDITS`` body does.
    """
    body: dict[str, Any] = {"success": False} if success_field else {}
    body.update(error=message, errorCode=code, **extra)
    return json_reply(status, body, headers)


_GATEWAY_PAGE = b"""<!DOCTYPE html>
<html>
<head><title>502 Bad Gateway</title></head>
<body>
<center><h1>502 Bad Gateway</h1></center>
<hr><center>nginx</center>
</body>
</html>
"""


def gateway_page() -> Reply:
    """The HTML page a reverse proxy sends when the service behind it is down."""
    return Reply(502, _GATEWAY_PAGE, "text/html")


def truncated(reply: Reply) -> Reply:
    """``reply`` with its body cut in half, answered 200: JSON that does not parse."""
    return attrs.evolve(reply, status=200, body=reply.body[: max(1, len(reply.body) // 2)])
