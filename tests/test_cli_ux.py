"""What the ``sora2`` user sees (issue 15): the version, the time a batch will take, the
offline ``status DIR``, ``--json`` for one video, a prompt file that is not UTF-8 or holds
JSON, a journal resumed with another key, the budget line's width, line numbers.

End to end: the real ``sora2`` process against the simulator served over HTTP.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from sora2_async import ModelTier
from sora2_async._cli.display import RichReporter, budget_line
from sora2_async._cli.estimate import estimate_seconds, format_duration
from sora2_async._cli.inputs import InputError, read_requests
from sora2_async._cli.plan import Plan
from sora2_async._cli.tracker import Tracker
from sora2_async._limits import BudgetState
from sora2_async.testing import Simulator, serve_in_thread
from tests.cli_helpers import KEY, env, write_prompts

SCALE = 60.0


@pytest.fixture
def sim() -> Simulator:
    return Simulator(seed="cli-ux", time_scale=SCALE)


@pytest.fixture
def base_url(sim: Simulator) -> Iterator[str]:
    with serve_in_thread(sim) as url:
        yield url


def sora2(
    *args: str, cwd: Path, key: str | None = KEY, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sora2_async.cli", *args],
        cwd=cwd,
        env=env(key),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


# -- the estimate: a pure function ---------------------------------------------------------------


def flat(seconds: float) -> object:
    return lambda tier: seconds


def test_what_the_budget_carries_now_takes_one_duration() -> None:
    t = estimate_seconds(
        to_send=[ModelTier.SORA2] * 10, limit=100, window=3600, final_poll_after=flat(180)
    )
    assert t == 180


def test_150_videos_at_100_an_hour_take_about_two_windows_and_a_video() -> None:
    # 300 requests: 100 now, then two more windows; the last wave takes one duration.
    t = estimate_seconds(
        to_send=[ModelTier.SORA2] * 150, limit=100, window=3600, final_poll_after=flat(180)
    )
    assert t == 2 * 3600 + 180
    assert format_duration(t) == "2 h 03 min"


def test_used_budget_and_running_videos_count() -> None:
    common = {"limit": 100, "window": 3600.0, "final_poll_after": flat(100)}
    assert estimate_seconds(to_send=[None] * 40, free_now=100, **common) == 100  # type: ignore[arg-type]
    assert estimate_seconds(to_send=[None] * 40, free_now=10, **common) == 3700  # type: ignore[arg-type]
    # A running video needs its final poll only.
    assert estimate_seconds(to_send=[], running=[None] * 100, free_now=100, **common) == 100  # type: ignore[arg-type]
    assert estimate_seconds(to_send=[], **common) == 0  # type: ignore[arg-type]


def test_the_longest_tier_and_max_in_flight_bound_it() -> None:
    def tiers(tier: ModelTier | None) -> float:
        return 480.0 if tier is ModelTier.PRO_HIGH else 180.0

    mixed = [ModelTier.SORA2, ModelTier.PRO_HIGH]
    assert estimate_seconds(to_send=mixed, limit=100, window=3600, final_poll_after=tiers) == 480
    one_at_a_time = estimate_seconds(
        to_send=[ModelTier.SORA2] * 4,
        limit=100,
        window=3600,
        final_poll_after=tiers,
        max_in_flight=1,
    )
    assert one_at_a_time == 4 * 180
    with pytest.raises(ValueError, match="positive"):
        estimate_seconds(to_send=[None], limit=0, window=3600, final_poll_after=tiers)


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0, "0 s"),
        (44.2, "45 s"),
        (60, "1 min"),
        (61, "2 min"),
        (3600, "1 h 00 min"),
        (float("inf"), "unknown"),
    ],
)
def test_durations_read_as_a_person_would_say_them(seconds: float, shown: str) -> None:
    assert format_duration(seconds) == shown


# -- the display ---------------------------------------------------------------------------------


def state(limit: int, used: int, reserved: int, free_in: float, limited: int) -> BudgetState:
    return BudgetState(
        limit=limit,
        configured_limit=limit,
        window=3602.0,
        used=used,
        reserved=reserved,
        waiting_polls=3,
        waiting_generates=2,
        next_free_in=free_in,
        rate_limited=limited,
        blocked_for=0.0,
    )


@pytest.mark.parametrize(
    "budget",
    [
        state(100, 37, 12, 35.0, 0),
        state(100_000, 3, 99_999, 359_999.0, 99_999),
        state(100, 0, 0, 0, 0),
    ],
)
def test_the_budget_line_fits_80_columns(budget: BudgetState) -> None:
    tracker = Tracker(total=3)
    tracker.budget = budget
    line = budget_line(tracker)
    assert len(line) <= 80, line
    assert line.startswith("budget: ")
    assert len(budget_line(Tracker(total=3))) <= 80


def test_the_progress_shows_an_eta_and_line_numbers() -> None:
    from sora2_async import VideoRequest
    from sora2_async._cli.tracker import InFlight

    console = Console(width=120, force_terminal=True, color_system=None)
    reporter = RichReporter(console)
    tracker = Tracker(total=5, eta=3 * 60)
    request = VideoRequest("a template prompt, variant 7")
    tracker.in_flight["task_1"] = InFlight("task_1", request, 0.0, line=7)
    reporter.start(Plan([], resubmit_uncertain=False), tracker)
    try:
        with console.capture() as captured:
            console.print(reporter._view())
    finally:
        reporter.stop()
    text = captured.get()
    assert "ETA 3 min" in text
    assert "#7 a template prompt, variant 7" in text


# -- input files ---------------------------------------------------------------------------------


def test_a_latin_1_file_is_one_error_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_bytes("a corgi\nthe café at dawn\n".encode("latin-1"))
    with pytest.raises(InputError) as caught:
        read_requests(path)
    assert caught.value.problems[0][0] == 2
    assert str(caught.value).startswith(f"{path}:2: not UTF-8 (byte 0xe9 at column 8)")


def test_a_binary_file_is_said_to_be_binary(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    with pytest.raises(InputError, match=r"p\.txt:1: a binary file, not text"):
        read_requests(path)


def test_a_bom_is_not_part_of_the_first_prompt(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_bytes("\ufeffa corgi\n".encode())
    assert read_requests(path)[0].request.prompt == "a corgi"


def test_json_in_a_text_file_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "p.txt"
    path.write_text('a corgi\n{"prompt": "a cat", "duration": 15}\n{not json}\n', encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="sora2_async"):
        lines = read_requests(path)
    assert [line.request.prompt for line in lines][1] == '{"prompt": "a cat", "duration": 15}'
    (record,) = caplog.records
    assert "line(s) 2 look like JSON" in record.getMessage()
    assert ".jsonl" in record.getMessage()


def test_bad_input_is_refused_before_a_request(
    sim: Simulator, base_url: str, tmp_path: Path
) -> None:
    (tmp_path / "p.txt").write_bytes(b"ok prompt\n\xff\xfe bad\n")
    done = sora2("batch", "p.txt", "--out", "out", "--yes", "--base-url", base_url, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "sora2: error: p.txt:2: not UTF-8 (byte 0xff at column 1): save the file as UTF-8, "
        "one prompt a line or JSONL (nothing was submitted)"
    ]
    (tmp_path / "q.txt").write_text('a corgi\n{"prompt": "a cat"}\n', encoding="utf-8")
    asked = sora2("batch", "q.txt", "--out", "out", "--base-url", base_url, cwd=tmp_path)
    warning, refusal = asked.stderr.strip().splitlines()
    assert warning.startswith("sora2: warning: q.txt: line(s) 2 look like JSON")
    assert ".:" not in refusal
    assert "2 video(s) to submit, 8 credits, about " in refusal
    assert refusal.endswith(
        "at the key's rate limit: pass --yes to submit without a question (nothing was submitted)"
    )
    assert sim.stats().total_requests == 0


# -- the commands --------------------------------------------------------------------------------


def test_version(tmp_path: Path) -> None:
    import sora2_async

    done = sora2("--version", cwd=tmp_path, key=None)
    assert done.returncode == 0
    assert done.stdout.strip() == f"sora2 {sora2_async.__version__}"


def test_shell_completion_is_printed_by_shtab(tmp_path: Path) -> None:
    done = sora2("--print-completion", "bash", cwd=tmp_path, key=None)
    assert done.returncode == 0, done.stderr
    assert "_shtab_sora2" in done.stdout
    assert "batch" in done.stdout


def test_one_video_as_json(sim: Simulator, base_url: str, tmp_path: Path) -> None:
    common = ("--base-url", base_url, "--time-scale", f"{SCALE:g}", "--json")
    made = sora2("generate", "a corgi", *common, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    task = json.loads(made.stdout)
    assert (task["state"], task["credits"]) == ("submitted", 4)
    looked = json.loads(sora2("status", task["task_id"], *common, cwd=tmp_path).stdout)
    assert looked["task_id"] == task["task_id"]
    assert looked["state"] in ("processing", "completed")
    waited = sora2("wait", task["task_id"], "--out", "v.mp4", *common, cwd=tmp_path)
    video = json.loads(waited.stdout)
    assert video["state"] == "completed"
    assert video["file"] == "v.mp4"
    assert video["video_url"].startswith("http")
    both = sora2("generate", "a cat", "--wait", *common, cwd=tmp_path)
    assert json.loads(both.stdout)["state"] == "completed"


def batch(
    base_url: str, tmp_path: Path, *extra: str, key: str | None = KEY
) -> subprocess.CompletedProcess[str]:
    args = ["batch", "p.txt", "--out", "out", "--yes", "--base-url", base_url]
    return sora2(*args, "--time-scale", f"{SCALE:g}", *extra, cwd=tmp_path, key=key)


def test_status_dir_reads_the_folder_offline(sim: Simulator, base_url: str, tmp_path: Path) -> None:
    import anyio

    from sora2_async import SQLiteJournal, VideoRequest
    from sora2_async._journal import request_key

    write_prompts(tmp_path / "p.txt", 3)
    lost = VideoRequest("a video of thing 2")

    async def an_earlier_run_lost_an_answer() -> None:
        async with SQLiteJournal(tmp_path / "out" / ".sora2-journal.sqlite") as journal:
            await journal.record_intent(request_key(lost), lost)

    anyio.run(an_earlier_run_lost_an_answer)
    done = batch(base_url, tmp_path)
    assert done.returncode == 1  # one uncertain
    assert "#1 a video of thing 0" in done.stdout  # line numbers tell template prompts apart
    (tmp_path / "p.txt").write_text(
        "a video of thing 0\na video of thing 1\na video of thing 2\nnew\n"
    )
    before = sim.stats().total_requests
    shown = sora2("status", "out", cwd=tmp_path, key=None)
    assert shown.returncode == 0, shown.stderr
    assert "completed 2 · failed 0 · in flight 0 · uncertain 1" in shown.stdout
    assert "uncertain: line 3, 'a video of thing 2'" in shown.stdout
    assert "a resume would send 0 (0 credits)" in shown.stdout
    as_json = json.loads(
        sora2("status", "out", "--json", "--base-url", base_url, cwd=tmp_path).stdout
    )
    assert as_json["counts"]["completed"] == 2
    assert as_json["credits"] == 2 * 4 + 4  # the uncertain one may have been charged
    assert as_json["uncertain"] == [{"line": 3, "prompt": "a video of thing 2"}]
    assert as_json["key_recorded"] is True
    assert as_json["key_matches"] is True
    # The fingerprint is of the key and the base URL.
    assert json.loads(sora2("status", "out", "--json", cwd=tmp_path).stdout)["key_matches"] is False
    assert sim.stats().total_requests == before  # nothing was asked of the API
    missing = sora2("status", "nowhere/", cwd=tmp_path, key=None)
    assert missing.returncode == 2
    assert "no such batch folder" in missing.stderr


def test_a_journal_resumed_with_another_key_is_refused_before_a_request(
    sim: Simulator, base_url: str, tmp_path: Path
) -> None:
    write_prompts(tmp_path / "p.txt", 2)
    first = batch(base_url, tmp_path)
    assert first.returncode == 0, first.stderr
    (tmp_path / "p.txt").write_text("a video of thing 0\na video of thing 1\none more\n")
    before = sim.stats().total_requests
    other = batch(base_url, tmp_path, key="another-key-02")
    assert other.returncode == 2
    (line,) = other.stderr.strip().splitlines()
    assert "was made with another API key" in line
    assert "another-key-02" not in line + other.stdout
    assert KEY not in line + other.stdout
    assert sim.stats().total_requests == before
    again = batch(base_url, tmp_path)
    assert again.returncode == 0, again.stderr
    journal = (tmp_path / "out" / ".sora2-journal.sqlite").read_bytes()
    assert KEY.encode() not in journal
