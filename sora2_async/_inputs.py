"""Checks of what a user asks for, before anything is sent: prompts, image URLs, their sizes.

:class:`~sora2_async.VideoRequest` calls these at construction. Each failure is an
:class:`InvalidRequestError` (a ``ValueError``) that says what was wrong, so a request the
API would refuse (or could not even read) never spends a request or a credit.

The size limits are the SDK's, not the provider's (who documents none): far above any real
prompt or image list, far below what a server or proxy refuses with a 413.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
import urllib.parse
from typing import Any

from ._errors import InvalidRequestError

__all__ = [
    "MAX_IMAGE_URLS",
    "MAX_IMAGE_URL_LENGTH",
    "MAX_PROMPT_LENGTH",
    "check_image_url",
    "check_prompt",
    "parse_ipv4",
]

#: The longest prompt accepted, in characters.
MAX_PROMPT_LENGTH = 10_000
#: The most image URLs one request may carry.
MAX_IMAGE_URLS = 10
#: The longest image URL accepted, in characters (signed storage URLs fit with room to spare).
MAX_IMAGE_URL_LENGTH = 4096

# Unicode categories that show nothing: controls, format characters (zero-width space, BOM,
# bidi marks), surrogates, private use, unassigned, separators, and combining marks that
# have nothing to combine with.
_INVISIBLE = ("C", "Z", "M")


def check_prompt(value: Any) -> None:
    """Refuse a prompt that is not a string, shows nothing, holds a NUL, or is too long.

    Raises:
        InvalidRequestError: ``PROMPT_REQUIRED`` for a missing or invisible prompt,
            ``INVALID_INPUT`` for a NUL character or one over :data:`MAX_PROMPT_LENGTH`.
    """
    if not isinstance(value, str):
        raise InvalidRequestError(
            f"prompt must be a non-empty string, not {type(value).__name__}",
            error_code="PROMPT_REQUIRED",
        )
    if not any(unicodedata.category(c)[0] not in _INVISIBLE for c in value):
        raise InvalidRequestError(
            "prompt must be a non-empty string with something visible in it "
            "(it is empty, blank, or only invisible characters)",
            error_code="PROMPT_REQUIRED",
        )
    if "\x00" in value:
        # Some servers cut a string at a NUL: the video would be of another prompt.
        raise InvalidRequestError(
            "prompt contains a NUL character (\\x00)", error_code="INVALID_INPUT"
        )
    if len(value) > MAX_PROMPT_LENGTH:
        raise InvalidRequestError(
            f"prompt is {len(value)} characters long; the most accepted is {MAX_PROMPT_LENGTH}",
            error_code="INVALID_INPUT",
        )


def check_image_urls(urls: tuple[Any, ...]) -> None:
    """Refuse more than :data:`MAX_IMAGE_URLS` URLs, or any URL :func:`check_image_url` refuses."""
    if len(urls) > MAX_IMAGE_URLS:
        raise InvalidRequestError(
            f"{len(urls)} image URLs given; the most accepted is {MAX_IMAGE_URLS}",
            error_code="INVALID_INPUT",
        )
    for url in urls:
        check_image_url(url)


def check_image_url(url: Any) -> None:
    """Refuse an image URL that is not a public http(s) URL the API's servers can fetch.

    Private, loopback, link-local and reserved addresses are refused in every spelling a
    URL parser may read them in (``0x7f000001``, ``0177.0.0.1``, ``127.1``, a bare number,
    IPv4-mapped IPv6), as are ``localhost`` and ``*.localhost`` (with or without a trailing
    dot) and hosts that are no host names at all (spaces, percent signs, controls).

    Raises:
        InvalidRequestError: ``IMAGE_URLS_REQUIRED``, saying why.
    """
    if not isinstance(url, str) or not url.strip():
        raise InvalidRequestError(
            f"image URL must be a non-empty string, not {url!r}", error_code="IMAGE_URLS_REQUIRED"
        )
    shown = url if len(url) <= 60 else url[:57] + "..."
    if len(url) > MAX_IMAGE_URL_LENGTH:
        raise InvalidRequestError(
            f"image URL {shown!r} is {len(url)} characters long; the most accepted is "
            f"{MAX_IMAGE_URL_LENGTH}",
            error_code="IMAGE_URLS_REQUIRED",
        )
    if _CONTROLS.search(url.strip()):
        # urlsplit silently drops tabs and newlines: the host checked would not be the
        # host of the string sent.
        raise InvalidRequestError(
            f"image URL {shown!r} contains a control character (a tab, newline or NUL)",
            error_code="IMAGE_URLS_REQUIRED",
        )
    try:
        parsed = urllib.parse.urlsplit(url.strip())
        hostname = parsed.hostname
    except ValueError:  # a bad IPv6 literal, say
        hostname = None
        parsed = urllib.parse.SplitResult("", "", "", "", "")
    if parsed.scheme.lower() not in ("http", "https") or not hostname:
        raise InvalidRequestError(
            f"image URL {shown!r} is not a public http(s) URL; the API takes no data:, file: "
            "or base64 images: upload the image and pass its URL",
            error_code="IMAGE_URLS_REQUIRED",
        )
    reason = _host_problem(hostname)
    if reason:
        raise InvalidRequestError(f"image URL {shown!r} {reason}", error_code="IMAGE_URLS_REQUIRED")


_CONTROLS = re.compile(r"[\x00-\x1f\x7f]")
_BAD_HOST_CHARS = re.compile(r"[\s%\\\"<>^`{|}\x00-\x1f\x7f]")
_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})
_PRIVATE = "points at a private or loopback host the API cannot reach"


def _host_problem(hostname: str) -> str | None:
    """Why ``hostname`` (as ``urlsplit`` gives it, lower case) is refused, or ``None``."""
    if _BAD_HOST_CHARS.search(hostname):
        # A browser-grade parser would percent-decode or reject these; either way the host
        # the API's fetcher sees is not the one that was checked.
        return "has a host that is not a valid host name"
    # As IDNA maps them before any lookup: full-width digits and ideographic dots are ASCII
    # digits and dots to the API's fetcher, so "１２７。０。０。１" is 127.0.0.1.
    host = unicodedata.normalize("NFKC", hostname).translate(_DOTS).lower()
    host = host.rstrip(".")  # "localhost." is localhost: DNS names may end in a dot
    if not host:
        return "has a host that is not a valid host name"
    if host == "localhost" or host.endswith(".localhost"):
        return _PRIVATE
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(host)
    except ValueError:
        v4 = parse_ipv4(host)
        if v4 is None:
            if _ends_in_a_number(host):
                return "has a host that looks like an IPv4 address but is not one"
            return None  # a name: resolved by the API's side, not ours to judge
        address = v4
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return None if address.is_global else _PRIVATE


def parse_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """``host`` read as ``inet_aton`` (and every URL parser after it) reads IPv4: one to four
    parts, each decimal, octal (leading ``0``) or hex (``0x``), the last filling the rest.

    ``None`` when it is not such an address.
    """
    parts = host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    numbers = []
    for part in parts:
        number = _ipv4_part(part)
        if number is None:
            return None
        numbers.append(number)
    *leading, last = numbers
    if any(n > 255 for n in leading) or last >= 256 ** (5 - len(numbers)):
        return None
    value = last
    for i, n in enumerate(leading):
        value += n << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


def _ipv4_part(part: str) -> int | None:
    try:
        if part[:2].lower() == "0x":
            # "0x" alone is no number to inet_aton (WHATWG reads it as 0: either way it is
            # refused, as a host that ends in a number).
            return int(part[2:], 16) if re.fullmatch(r"[0-9a-fA-F]+", part[2:]) else None
        if re.fullmatch(r"[0-9]+", part) is None:
            return None
        if len(part) > 1 and part.startswith("0"):
            return int(part, 8) if re.fullmatch(r"[0-7]+", part) else None
        return int(part)
    except ValueError:  # pragma: no cover - the patterns above leave no bad digit
        return None


def _ends_in_a_number(host: str) -> bool:
    # WHATWG's rule: a host whose last label is numeric must be an IPv4 address (or it is
    # refused), so "1.2.3.4.5" or "0x1.example.999999999999" never reaches DNS as a name.
    last = host.rsplit(".", 1)[-1]
    return bool(re.fullmatch(r"[0-9]+|0[xX][0-9a-fA-F]*", last))
