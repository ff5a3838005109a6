"""What an output folder records of a journal kept in Redis, and the batch's name there.

With ``--redis`` the journal of ``sora2 batch`` is a :class:`~sora2_async.redis.RedisJournal`,
shared by every host that runs the same batch; the output folder keeps only a small record
of it, ``.sora2-journal.json``, so that a later ``sora2 batch`` or ``sora2 status DIR`` on the
folder finds that journal again:

* ``name``: the batch's name, its journal's identity in Redis;
* ``key_fingerprint``: the key's fingerprint (SHA-256 of key and base URL, never the key),
  which is also the journal's namespace in Redis;
* ``redis``: where the journal was, as a URL with its password removed (a hint for
  ``sora2 status DIR``; ``--redis`` or ``$NANOPHOTO_REDIS_URL`` always wins);
* ``journal_id``: a random id the journal holds too: a journal found under the name but
  with another id (or none: a Redis restarted without persistence, another server) is not
  this folder's, and a run that trusted it would pay again for what the folder has.

The batch's name defaults to a digest of the input's requests (:func:`default_name`): the
same input file on several hosts meets in one journal with no option given, while two
unrelated batches never do, which a default taken from the folder's name ("out",
"videos": the same word on every host) would not ensure. Once recorded, a folder keeps its
name, so an input edited between two runs (a line added) still resumes its own journal.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import attrs

from .._journal import RequestKeys
from .._models import VideoRequest
from .errors import CLIError

__all__ = [
    "RECORD",
    "FolderRecord",
    "JournalMismatchError",
    "check_name",
    "default_name",
    "read_record",
    "redact",
    "write_record",
]

RECORD = ".sora2-journal.json"
KIND = "redis"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+=-]{0,127}$")


class JournalMismatchError(CLIError):
    """The folder's journal is not the one this run would use (another kind, name, key or
    server): nothing was sent. Exit status 2."""


@attrs.frozen
class FolderRecord:
    """The folder's record of its journal in Redis (never a secret)."""

    name: str
    key_fingerprint: str
    redis: str  #: the server's URL, its password removed
    journal_id: str

    def to_json(self) -> dict[str, str]:
        """The file's content."""
        return {"journal": KIND, **attrs.asdict(self)}


def default_name(requests: Iterable[VideoRequest]) -> str:
    """``batch-`` and a digest of the requests' keys, sorted: the same requests make the
    same name whatever their order or the file's layout (comments, blank lines, JSONL or
    plain text)."""
    keys = RequestKeys()
    digest = hashlib.sha256("\n".join(sorted(keys.next(r) for r in requests)).encode())
    return f"batch-{digest.hexdigest()[:16]}"


def check_name(name: str) -> str:
    """``name`` if it can name a journal: 1 to 128 letters, digits and ``._:@+=-``.

    Raises:
        CLIError: saying what a name may hold (exit status 2).
    """
    if not _NAME.match(name):
        raise CLIError(
            f"--batch-name {name!r}: a batch's name is 1 to 128 letters, digits and . _ : @ + "
            "= - (starting with a letter or digit)"
        )
    return name


def redact(url: str) -> str:
    """``url`` without its password (the user name, host, port and database stay)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    netloc = f"{user}@" if user else ""
    netloc += host + (f":{parts.port}" if parts.port is not None else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def read_record(folder: Path) -> FolderRecord | None:
    """The folder's record, or ``None`` when it has none.

    Raises:
        CLIError: the record is there but unreadable (it is written atomically: a bad one
            was not written by ``sora2``).
    """
    path = folder / RECORD
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CLIError(f"cannot read {path}: {exc}") from None
    fields = attrs.fields_dict(FolderRecord)
    if (
        not isinstance(data, dict)
        or data.get("journal") != KIND
        or not all(isinstance(data.get(name), str) and data[name] for name in fields)
    ):
        raise CLIError(f"{path} is not a record of a Redis journal that sora2 wrote")
    return FolderRecord(**{name: data[name] for name in fields})


def write_record(folder: Path, record: FolderRecord) -> None:
    """Write the record atomically and durably (a crash leaves the old one or the new one).

    Raises:
        OSError: the folder is not writable.
    """
    path = folder / RECORD
    part = folder / f".{RECORD}.{os.getpid()}.tmp"
    with part.open("w", encoding="utf-8") as file:
        json.dump(record.to_json(), file, indent=2)
        file.write("\n")
        file.flush()
        os.fsync(file.fileno())
    os.replace(part, path)
