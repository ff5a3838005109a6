"""The batch's name in Redis and the output folder's record of its journal (no Redis needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sora2_async import VideoRequest
from sora2_async._cli.errors import CLIError
from sora2_async._cli.folder_record import (
    RECORD,
    FolderRecord,
    JournalMismatchError,
    check_name,
    default_name,
    read_record,
    redact,
    write_record,
)
from sora2_async._cli.inputs import read_requests


def names_of(tmp_path: Path, text: str, file: str = "prompts.txt") -> str:
    path = tmp_path / file
    path.write_text(text, encoding="utf-8")
    return default_name(line.request for line in read_requests(str(path)))


def test_the_default_name_is_the_inputs_requests_whatever_their_order_or_layout(
    tmp_path: Path,
) -> None:
    plain = names_of(tmp_path, "a corgi\na cat\n")
    assert plain.startswith("batch-")
    assert len(plain) == len("batch-") + 16
    assert names_of(tmp_path, "a cat\n\na corgi\n") == plain  # order, blank lines
    jsonl = '{"prompt": "a corgi"}\n{"prompt": "a cat"}\n'
    assert names_of(tmp_path, jsonl, "prompts.jsonl") == plain  # another format, same requests
    assert names_of(tmp_path, "a corgi\na dog\n") != plain  # other requests: another batch
    assert names_of(tmp_path, "a corgi\na cat\na cat\n") != plain  # a copy more: another
    check_name(plain)


def test_the_name_tells_requests_apart_by_every_field() -> None:
    base = [VideoRequest("x")]
    assert default_name(base) != default_name([VideoRequest("x", duration=15)])
    assert default_name(base) != default_name([VideoRequest("x", aspect_ratio="landscape")])
    assert default_name([]) == default_name([])


@pytest.mark.parametrize(
    "name", ["nightly", "team-a.2026-12-01", "a:b@c+d=e_f", "x" * 128, "0start"]
)
def test_names_that_name_a_journal(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "{tag}", "has space", "-dash-first", "x" * 129, "é"])
def test_names_that_do_not(name: str) -> None:
    with pytest.raises(CLIError, match="--batch-name"):
        check_name(name)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("redis://:secret@h:1/2", "redis://h:1/2"),
        ("rediss://user:secret@h/0", "rediss://user@h/0"),
        ("redis://u:p%40ss@[::1]:6379/0?x=1", "redis://u@[::1]:6379/0?x=1"),
        ("unix:///tmp/redis.sock", "unix:///tmp/redis.sock"),
    ],
)
def test_redact_drops_the_password_only(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_the_record_round_trips_and_holds_no_secret(tmp_path: Path) -> None:
    assert read_record(tmp_path) is None
    record = FolderRecord("nightly", "f" * 24, redact("redis://u:pw@h:1/0"), "id-1")
    write_record(tmp_path, record)
    assert read_record(tmp_path) == record
    text = (tmp_path / RECORD).read_text(encoding="utf-8")
    assert "pw" not in text
    assert json.loads(text)["journal"] == "redis"
    assert [p.name for p in tmp_path.iterdir()] == [RECORD]  # no temporary file left


@pytest.mark.parametrize(
    "text",
    ["", "not json", "[]", '{"journal": "sqlite"}', '{"journal": "redis", "name": "x"}'],
)
def test_a_record_sora2_did_not_write_is_refused(tmp_path: Path, text: str) -> None:
    (tmp_path / RECORD).write_text(text, encoding="utf-8")
    with pytest.raises(CLIError, match=RECORD):
        read_record(tmp_path)


def test_a_mismatch_is_a_typed_usage_error() -> None:
    error = JournalMismatchError("another kind")
    assert isinstance(error, CLIError)
    assert error.code == 2


# -- the choice of journal, refused before Redis is even asked ----------------------------------

NOWHERE = "redis://127.0.0.1:9/0"  # nothing listens there: a refusal must come before


async def opened(out: Path, **options: object) -> str:
    from sora2_async._cli.journals import open_journal
    from sora2_async._cli.runner import BatchOptions

    settings = BatchOptions(out_dir=out, key_fingerprint="f" * 24, **options)  # type: ignore[arg-type]
    async with open_journal(settings, [VideoRequest("x")]) as journal:
        return journal.where


@pytest.mark.anyio
async def test_the_choice_of_journal_is_refused_before_any_connection(tmp_path: Path) -> None:
    sqlite_folder = tmp_path / "sqlite"
    sqlite_folder.mkdir()
    assert await opened(sqlite_folder) == str(sqlite_folder / ".sora2-journal.sqlite")
    with pytest.raises(JournalMismatchError, match="--journal"):
        await opened(sqlite_folder, redis_url=NOWHERE)
    with pytest.raises(CLIError, match="needs --redis"):
        await opened(sqlite_folder, batch_name="nightly")
    with pytest.raises(CLIError, match="cannot go with --journal"):
        await opened(sqlite_folder, redis_url=NOWHERE, batch_name="n", journal_path=Path("j"))

    redis_folder = tmp_path / "redis"
    redis_folder.mkdir()
    write_record(redis_folder, FolderRecord("nightly", "f" * 24, NOWHERE, "id-1"))
    with pytest.raises(JournalMismatchError, match="pass --redis URL"):
        await opened(redis_folder)
    with pytest.raises(JournalMismatchError, match="drop --journal"):
        await opened(redis_folder, redis_url=NOWHERE, journal_path=redis_folder / "j.sqlite")
    with pytest.raises(JournalMismatchError, match="not --batch-name 'other'"):
        await opened(redis_folder, redis_url=NOWHERE, batch_name="other")
    with pytest.raises(CLIError, match="--batch-name"):
        await opened(redis_folder, redis_url=NOWHERE, batch_name="{bad}")
    record = FolderRecord("nightly", "e" * 24, NOWHERE, "id-1")
    write_record(redis_folder, record)
    with pytest.raises(JournalMismatchError, match="another API key"):
        await opened(redis_folder, redis_url=NOWHERE)
    assert not (redis_folder / ".sora2-journal.sqlite").exists()  # no second journal made


@pytest.mark.anyio
async def test_a_manifest_without_any_journal_is_refused_with_redis(tmp_path: Path) -> None:
    (tmp_path / "manifest.jsonl").write_text('{"task_id": "t-1", "key": "k"}\n', "utf-8")
    with pytest.raises(JournalMismatchError, match="has no journal"):
        await opened(tmp_path, redis_url=NOWHERE)
