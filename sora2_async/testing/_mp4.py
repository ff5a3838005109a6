"""A small, valid MP4 (ISO base media) file, built in code: what the video host serves.

It has the three boxes a reader looks for first: ``ftyp`` (brands), ``moov`` (with a movie
header, ``mvhd``, giving the duration) and ``mdat`` (the media data, here a short filler).
It is a well-formed ISO BMFF file, not a playable clip: enough for a download to be checked
for what it is, small enough to serve thousands of times.
"""

from __future__ import annotations

import functools
import struct

__all__ = ["boxes", "video_bytes"]


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def _full_box(kind: bytes, version: int, flags: int, payload: bytes) -> bytes:
    return _box(kind, struct.pack(">I", (version << 24) | flags) + payload)


def _mvhd(timescale: int, duration: int) -> bytes:
    identity = (0x00010000, 0, 0, 0, 0x00010000, 0, 0, 0, 0x40000000)
    payload = struct.pack(
        ">IIIIIH10x9I24xI",
        0,  # creation time
        0,  # modification time
        timescale,
        duration,
        0x00010000,  # rate 1.0
        0x0100,  # volume 1.0
        *identity,  # the unity matrix
        1,  # next track id
    )
    return _full_box(b"mvhd", 0, 0, payload)


@functools.cache
def video_bytes(seconds: int = 10) -> bytes:
    """The bytes of a ``seconds`` long MP4 file (built once per length, then reused)."""
    ftyp = _box(b"ftyp", b"isom" + struct.pack(">I", 0x200) + b"isomiso2mp41")
    moov = _box(b"moov", _mvhd(1000, seconds * 1000))
    mdat = _box(b"mdat", b"sora2-async simulator video\n" * 4)
    return ftyp + moov + mdat


def boxes(data: bytes) -> list[tuple[str, int]]:
    """The top-level boxes of an ISO BMFF file as ``(type, size)`` pairs.

    Raises:
        ValueError: when the boxes do not tile the data exactly (a truncated or foreign file).
    """
    found: list[tuple[str, int]] = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < 8:
            raise ValueError(f"truncated box header at offset {offset}")
        size, kind = struct.unpack_from(">I4s", data, offset)
        if size < 8 or offset + size > len(data):
            raise ValueError(f"box {kind!r} at offset {offset} has a bad size {size}")
        found.append((kind.decode("latin-1"), size))
        offset += size
    return found
