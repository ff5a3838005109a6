"""The lease rule of a service's records, once, as pure functions over :class:`VideoRecord`.

The memory and SQLite stores apply these inside their own atomic step; the Redis store's
script applies the same rule (its tests run the contract suite against every store).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from ._video_records import TERMINAL, UNCERTAIN, VideoRecord

__all__ = ["claimable", "claimed", "released", "renewed", "updated"]


def _changed(record: VideoRecord, now_wall: float, **changes: Any) -> VideoRecord:
    return attrs.evolve(record, version=record.version + 1, updated_at=now_wall, **changes)


def updated(
    record: VideoRecord,
    owner: str,
    changes: Mapping[str, Any],
    *,
    now: float,
    ttl: float,
    now_wall: float,
) -> VideoRecord | None:
    """``record`` with ``changes``, or ``None`` when ``owner`` may not make them.

    The holder may change an unfinished record. A task id may be written by anyone while the
    record has none (the generate that created it was ``owner``'s): the writer takes the
    lease, so that the task is followed. That holds even once another worker ended the
    record as uncertain (its sender's lease had lapsed while the generate was out): the
    answer came after all. Ending a record (a terminal state) ends the lease.
    """
    takes_task = changes.get("task_id") is not None and record.task_id is None
    revives = takes_task and record.state == "error" and record.error_code == UNCERTAIN
    if record.done and not revives:
        return None
    if record.owner != owner and not takes_task:
        return None
    if revives:
        changes = {"error": None, "error_code": None, **changes}
    lease: dict[str, Any] = {"owner": owner, "lease_until": now + ttl}
    if changes.get("state") in TERMINAL:
        lease = {"owner": None, "lease_until": 0.0}
    return _changed(record, now_wall, **{**changes, **lease})


def claimable(record: VideoRecord, now: float) -> bool:
    """Whether a worker may take ``record``: unfinished, and its lease lapsed (or none)."""
    return not record.done and record.lease_until <= now


def claimed(record: VideoRecord, owner: str, *, now: float, ttl: float) -> VideoRecord:
    """``record`` held by ``owner`` (the version does not move: nothing a reader sees changed)."""
    return attrs.evolve(record, owner=owner, lease_until=now + ttl)


def renewed(record: VideoRecord, owner: str, *, now: float, ttl: float) -> VideoRecord | None:
    """``record`` with ``owner``'s lease pushed ahead, or ``None`` when ``owner`` lost it."""
    if record.done or record.owner != owner:
        return None
    return attrs.evolve(record, lease_until=now + ttl)


def released(record: VideoRecord, owner: str) -> VideoRecord | None:
    """``record`` free to claim at once, or ``None`` when ``owner`` does not hold it."""
    if record.done or record.owner != owner:
        return None
    return attrs.evolve(record, lease_until=0.0)
