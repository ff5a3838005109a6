"""What a service's shared store holds: one record per video, one per batch, and the protocol.

A :class:`Sora2Service` with a store answers ``POST /videos`` before anything is sent: it
writes a *queued* record under a fresh service id, and some worker (the one that took the
POST, or any other once that one's lease lapsed) submits it under the key's budget, follows
its task and writes down how it ends. Every worker reads every record, so any worker answers
for any video.

A record moves ``queued`` → ``submitting`` (its generate is about to go out: written before
the bytes leave) → ``processing`` (the task id is known) → ``completed`` / ``failed`` /
``error``. The worker working on a record holds its *lease* (owner and expiry, renewed while
it lives); a record whose lease lapsed is claimed by another worker. A claimed ``queued``
record is submitted, a ``processing`` one followed by its task id, and a ``submitting`` one
(its generate went out and nobody heard the answer) ends ``error`` with
:data:`UNCERTAIN`: the task may exist and be paid for, so it is never sent twice.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

import anyio
import attrs

from ._errors import Sora2Error
from ._journal_codec import request_from_text, request_text
from ._models import VideoRequest

__all__ = [
    "FIELDS",
    "TERMINAL",
    "UNCERTAIN",
    "BatchRecord",
    "Created",
    "IdempotencyConflictError",
    "RecordState",
    "VideoRecord",
    "VideoStore",
    "VideoStoreError",
    "digest_of",
    "poll_for_change",
    "record_from_fields",
    "record_fields",
]

#: ``queued`` until some worker sends its generate (``submitting``), ``processing`` once the
#: task id is known, then ``completed``, ``failed`` (the task failed) or ``error`` (it was
#: refused, its submission is uncertain, or following it failed).
RecordState = Literal["queued", "submitting", "processing", "completed", "failed", "error"]
TERMINAL: frozenset[str] = frozenset({"completed", "failed", "error"})

#: The ``error_code`` of a record whose generate went out and whose answer was lost (its
#: worker died): the task may exist, so it is not sent again.
UNCERTAIN = "SUBMISSION_UNCERTAIN"


class VideoStoreError(Sora2Error):
    """The service's store could not be read or written (unreachable, damaged, full).

    Raised when a route asks the store and it cannot answer: answer 503. Nothing that was
    already recorded is lost.
    """


class IdempotencyConflictError(Sora2Error, ValueError):
    """An ``Idempotency-Key`` came again with a different body: answer 409.

    ``existing_id`` is what the key named the first time; nothing new was recorded.
    """

    def __init__(self, key: str, existing_id: str) -> None:
        self.key = key
        self.existing_id = existing_id
        super().__init__(
            "this Idempotency-Key was used before with a different body; "
            "use a new key for a different request"
        )


@attrs.frozen
class VideoRecord:
    """One video of a service, as every worker sees it."""

    id: str
    request: VideoRequest
    state: RecordState = "queued"
    task_id: str | None = None
    progress: str | None = None
    video_url: str | None = None
    generation_time: float | None = None
    credits_used: int | None = None
    error: str | None = None
    error_code: str | None = None
    batch_id: str | None = None
    owner: str | None = None  #: the worker holding its lease (``None`` once it ended)
    lease_until: float = 0.0  #: on the store's clock
    version: int = 0  #: grows by one on every change (event streams watch it)
    created_at: float = 0.0  #: wall-clock time
    updated_at: float = 0.0
    submitted_at: float = 0.0  #: wall-clock time its task id was recorded

    @property
    def done(self) -> bool:
        """Whether it ended (nothing will change it again)."""
        return self.state in TERMINAL


@attrs.frozen
class BatchRecord:
    """A batch of a service: its id and its videos' ids, in the order they were given."""

    id: str
    video_ids: tuple[str, ...]
    created_at: float = 0.0


@attrs.frozen
class Created:
    """What :meth:`VideoStore.create` did: ``id`` names the video or batch (the one an
    idempotency key named before, when ``created`` is false)."""

    id: str
    created: bool


#: The fields of a record as stores write them (SQLite columns, a Redis hash).
FIELDS = tuple(attrs.fields_dict(VideoRecord))
_FLOATS = {"generation_time", "lease_until", "created_at", "updated_at", "submitted_at"}
_INTS = {"credits_used", "version"}


def record_fields(record: VideoRecord) -> dict[str, Any]:
    """``record`` as a flat mapping of plain values (the request as its wire JSON)."""
    fields = attrs.asdict(record, recurse=False)
    fields["request"] = request_text(record.request)
    return fields


def record_from_fields(fields: Mapping[str, Any]) -> VideoRecord:
    """The record :func:`record_fields` wrote (from strings too, as Redis answers).

    Raises:
        VideoStoreError: fields no store of this SDK writes.
    """
    try:
        values: dict[str, Any] = {}
        for name in FIELDS:
            value = fields.get(name)
            if isinstance(value, bytes):
                value = value.decode("utf-8")
            if value is None or value == "":  # Redis keeps no None: an absent field
                continue
            if name in _FLOATS:
                value = float(value)
            elif name in _INTS:
                value = int(value)
            values[name] = value
        values["request"] = request_from_text(str(values["request"]))
        return VideoRecord(**values)
    except (KeyError, ValueError, TypeError) as exc:
        raise VideoStoreError(f"the store holds a video record it cannot read ({exc!r})") from None


def digest_of(requests: Sequence[VideoRequest]) -> str:
    """The digest an idempotency key is checked against: the requests' wire bodies."""
    body = json.dumps([json.loads(request_text(r)) for r in requests], sort_keys=True)
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


async def poll_for_change(
    read: Callable[[str], Awaitable[VideoRecord | None]],
    video_id: str,
    version: int,
    within: float,
    every: float,
) -> None:
    """Read the record every ``every`` seconds until its version moved (or it is gone), for
    at most ``within`` seconds: how a store without notifications waits for a change."""
    with anyio.move_on_after(within):
        while True:
            record = await read(video_id)
            if record is None or record.version != version:
                return
            await anyio.sleep(every)


@runtime_checkable
class VideoStore(Protocol):
    """Where a service's videos live, shared by every worker that uses it.

    Every write is atomic and durable when it returns (as durable as the store: a SQLite
    file in WAL mode, a Redis server's persistence). Leases are on the store's clock.

    Raises (every method):
        VideoStoreError: the store could not be read or written.
    """

    @property
    def lease_ttl(self) -> float:
        """Seconds a lease lasts unless renewed."""

    async def create(
        self,
        videos: Sequence[VideoRecord],
        *,
        batch: BatchRecord | None = None,
        idempotency_key: str | None = None,
        digest: str = "",
    ) -> Created:
        """Record new ``videos`` (queued, leased to their ``owner``), and ``batch`` if given.

        With an ``idempotency_key`` seen before, nothing is written and the earlier id comes
        back (``created`` false).

        Raises:
            IdempotencyConflictError: the key was seen with another ``digest``.
        """

    async def video(self, video_id: str) -> VideoRecord | None:
        """The record of ``video_id``, or ``None``."""

    async def batch(self, batch_id: str) -> tuple[BatchRecord, list[VideoRecord]] | None:
        """A batch and its videos' records (in its order), or ``None``."""

    async def update(
        self, video_id: str, owner: str, changes: Mapping[str, Any]
    ) -> VideoRecord | None:
        """Apply ``changes`` if ``owner`` holds the record; the new record, else ``None``.

        A change to a terminal state ends the lease. A ``task_id`` in ``changes`` is written
        even if another owner took the record meanwhile, as long as the record has none:
        an accepted task is never lost (the writer holds the lease from then on).
        """

    async def claim(self, owner: str, limit: int) -> list[VideoRecord]:
        """Take up to ``limit`` unfinished records whose lease lapsed, oldest first."""

    async def renew(self, owner: str, video_ids: Sequence[str]) -> set[str]:
        """Push the leases ``owner`` still holds among ``video_ids``; those ids."""

    async def release(self, owner: str, video_ids: Sequence[str]) -> None:
        """End ``owner``'s leases on ``video_ids`` now (another worker may claim them)."""

    async def wait_change(self, video_id: str, version: int, within: float) -> None:
        """Return once ``video_id`` may have moved past ``version``, or after ``within`` seconds."""

    async def aclose(self) -> None:
        """Close the store (its connections, its file)."""
