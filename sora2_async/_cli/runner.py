"""The batch engine behind ``sora2 batch`` and ``sora2 demo``: plan, confirm, run, save, report.

One run: open the journal in the output folder, sort the input by what the journal knows
(:mod:`.plan`), price what is to be sent and ask (or refuse above ``--max-credits``), then run
``client.batch(..., journal=...)`` and save each finished video (atomically, by the SDK's
``download``; a video finished in an earlier run is fetched only if its file is missing).
Ctrl-C (or SIGTERM) cancels the batch cleanly: every journal write is whole, and the
manifest is written on the way out, so the same command resumes.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import attrs

from .._client import Sora2Client
from .._errors import Sora2Error
from .._events import Event
from .._journal import Journal, JournalError
from .._models import BatchResult, VideoRequest
from .display import Reporter
from .errors import CLIError
from .estimate import estimate_seconds, format_duration
from .folder import remove_part_files
from .inputs import Line
from .journals import JOURNAL_NAME, open_journal
from .plan import MANIFEST, Plan, make_plan, video_filename, write_manifest
from .tracker import Outcome, Tracker, status_of

__all__ = ["JOURNAL_NAME", "BatchOptions", "CLIError", "run_batch"]

EXIT_INTERRUPTED = 130

Ask = Callable[[str], bool]


@attrs.frozen
class BatchOptions:
    """How to run a batch (the command line's options)."""

    out_dir: Path
    journal_path: Path | None = None  #: default: ``out_dir/.sora2-journal.sqlite``
    #: the journal in Redis there (``--redis``), unless ``journal_path`` says otherwise
    redis_url: str | None = None
    batch_name: str | None = None  #: its name there (default: recorded, else the input's)
    follower_ttl: float = 60.0  #: seconds a dead run's tasks wait before they are adopted
    max_in_flight: int | None = None
    max_credits: int | None = None
    yes: bool = False
    resubmit_uncertain: bool = False
    simulated: bool = False  #: no real credits at stake: do not ask
    #: the key's fingerprint (``key_fingerprint``): a journal made with another key is refused
    key_fingerprint: str | None = None


async def run_batch(
    client: Sora2Client,
    lines: Sequence[Line],
    options: BatchOptions,
    reporter: Reporter,
    ask: Ask,
) -> int:
    """Run the batch of ``lines``; return the exit status (0: every video is saved).

    Raises:
        CLIError: refused by ``--max-credits`` or not confirmed (nothing was sent then).
    """
    try:
        await anyio.Path(options.out_dir).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CLIError(
            f"cannot make the output folder {options.out_dir}: {exc.strerror or exc} "
            "(nothing was submitted)"
        ) from None
    requests = [line.request for line in lines]
    async with open_journal(options, requests) as opened:
        # A killed run's half-written downloads: their videos are fetched again, whole.
        if removed := remove_part_files(options.out_dir):
            reporter.note(f"removed {removed} part file(s) a stopped run left behind")
        journal = opened.journal
        plan = await make_plan(journal, lines, resubmit_uncertain=options.resubmit_uncertain)
        budget = await client.limiter.snapshot()  # the shared store's figures; sends nothing
        eta = estimate_seconds(
            to_send=[item.line.request.model_tier for item in plan.to_send],
            running=[item.line.request.model_tier for item in plan.running],
            limit=budget.limit,
            window=budget.window,
            free_now=budget.available,
            final_poll_after=client.planner.final_poll_after,
            max_in_flight=options.max_in_flight,
        )
        _confirm(plan, options, reporter, ask, eta)
        return await _Run(client, journal, opened.where, plan, options, reporter).run()


def _confirm(plan: Plan, options: BatchOptions, reporter: Reporter, ask: Ask, eta: float) -> None:
    if plan.uncertain:
        shown = ", ".join(f"line {i.line.number}" for i in plan.uncertain[:10])
        reporter.note(
            f"{len(plan.uncertain)} request(s) ({shown}) went out in an earlier run and their "
            "answer was lost: the tasks may exist and may have been charged, so they are not "
            "sent again (--resubmit-uncertain sends them anyway)"
        )
    resumed = [
        f"{len(plan.ended)} ended earlier" if plan.ended else "",
        f"{len(plan.running)} still running (followed, not re-sent)" if plan.running else "",
    ]
    extra = "; ".join(part for part in resumed if part)
    count = len(plan.to_send)
    price = f"{count} video(s) to submit, {plan.credits} credits" + (f" ({extra})" if extra else "")
    if count or plan.running:
        price += f", about {format_duration(eta)} at the key's rate limit"
    if options.simulated:
        price += " — simulated: no credits are spent"
    if count and options.max_credits is not None and plan.credits > options.max_credits:
        raise CLIError(
            f"this batch would cost {plan.credits} credits, more than --max-credits "
            f"{options.max_credits}: nothing was submitted"
        )
    if count == 0 or options.yes or options.simulated:
        reporter.note(price)
    elif not ask(f"{price}. Submit? [y/N] "):
        raise CLIError("not confirmed: nothing was submitted", code=1)


class _Run:
    def __init__(
        self,
        client: Sora2Client,
        journal: Journal,
        where: str,
        plan: Plan,
        options: BatchOptions,
        reporter: Reporter,
    ) -> None:
        self.client = client
        self.journal = journal
        self.where = where  # how messages name the journal (a file, or a name in Redis)
        self.plan = plan
        self.options = options
        self.reporter = reporter
        self.tracker = Tracker(total=len(plan.items))
        self.files: dict[str, Path] = {}  # task id -> saved video
        self.errors: dict[str, str] = {}  # task id -> what went wrong this run
        self.unsent: dict[VideoRequest, str] = {}  # why a request got no task this run
        self.interrupted = False
        self.local_errors: list[str] = []  # a video not saved, a journal not written
        self._downloads = anyio.CapacityLimiter(4)
        self._earlier = {i.entry.task_id for i in plan.ended if i.entry and i.entry.task_id}
        self._to_send = [item.line.request.model_tier for item in plan.to_send]
        self._lines = {id(item.line.request): item.line.number for item in plan.items}
        self._lines_by_value: dict[VideoRequest, int] = {}
        for item in plan.items:
            self._lines_by_value.setdefault(item.line.request, item.line.number)
        self.tracker.lines = self._lines

    async def run(self) -> int:
        self.tracker.eta = self._eta()
        self.reporter.start(self.plan, self.tracker)
        remove = self.client.on_event(self._on_event)
        try:
            async with anyio.create_task_group() as outer:
                with anyio.CancelScope() as work:
                    outer.start_soon(self._watch_signals, work)
                    outer.start_soon(self.reporter.tick)
                    outer.start_soon(self._sample_budget)
                    await self._batch()
                outer.cancel_scope.cancel()
        finally:
            remove()
            self.reporter.stop()
        return await self._finish()

    async def _watch_signals(self, work: anyio.CancelScope) -> None:
        try:
            receiver = anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM)
        except (NotImplementedError, ValueError, RuntimeError):  # not the main thread, say
            await anyio.sleep_forever()
        with receiver as signals:
            async for _ in signals:
                self.interrupted = True
                work.cancel()
                return

    async def _sample_budget(self) -> None:
        # Events stop while the budget binds: the display's countdown must go on anyway.
        while True:
            self.tracker.budget = self.client.budget()  # a snapshot; sends nothing
            self.tracker.eta = self._eta()
            await anyio.sleep(0.25)

    def _eta(self) -> float:
        t, b = self.tracker, self.client.budget()
        unsent = len(self._to_send) - t.submitted - t.not_submitted - t.uncertain
        running = [v.request.model_tier if v.request else None for v in t.in_flight.values()]
        return estimate_seconds(
            to_send=self._to_send[len(self._to_send) - max(0, unsent) :],
            running=running,
            limit=b.limit,
            window=b.window,
            free_now=b.limit - b.used,
            final_poll_after=self.client.planner.final_poll_after,
            max_in_flight=self.options.max_in_flight,
        )

    def _line_of(self, result: BatchResult) -> int | None:
        request = result._request
        if request is None:
            return None
        return self._lines.get(id(request), self._lines_by_value.get(request))

    def _on_event(self, event: Event) -> None:
        self.tracker.on_event(event)
        self.tracker.budget = self.client.budget()  # a snapshot; sends nothing
        self.reporter.event(event)

    async def _batch(self) -> None:
        requests = [item.line.request for item in self.plan.items]
        batch = self.client.batch(
            requests,
            journal=self.journal,
            max_in_flight=self.options.max_in_flight,
            resubmit_uncertain=self.options.resubmit_uncertain,
        )
        async with batch as results, anyio.create_task_group() as saving:
            async for result in results:
                saving.start_soon(self._save, result)

    async def _save(self, result: BatchResult) -> None:
        status = status_of(result)
        task_id = result.task.task_id if result.task else None
        earlier = task_id in self._earlier
        file: Path | None = None
        error = None if result.error is None else _short(result.error)
        if result._video is not None and result.has_request and task_id is not None:
            target = self.options.out_dir / video_filename(result.request, task_id)
            if earlier and await anyio.Path(target).exists():
                file = target
            else:
                try:
                    async with self._downloads:
                        file = await self.client.download(result._video, target)
                except Sora2Error as exc:
                    error = f"download failed: {_short(exc)}"
                except OSError as exc:  # a read-only folder, a full disk: ours, not the API's
                    error = f"could not save {target}: {_os_error(exc)}"
                    self.local_errors.append(error)
            if file is not None:
                self.files[task_id] = file
        if isinstance(result.error, JournalError):
            self.local_errors.append(_short(result.error))
        if error and task_id is not None:
            self.errors[task_id] = error
        elif error and result.has_request:
            self.unsent[result.request] = error
        outcome = Outcome(result, status, file, error, earlier, self._line_of(result))
        self.tracker.on_outcome(outcome)
        self.reporter.outcome(outcome)

    async def _finish(self) -> int:
        entries = {entry.key: entry for entry in await self.journal.entries()}
        for entry in entries.values():  # saved earlier, not looked at this run (interrupted)
            if entry.task_id and entry.video_url and entry.task_id not in self.files:
                target = self.options.out_dir / video_filename(entry.request, entry.task_id)
                if await anyio.Path(target).exists():
                    self.files[entry.task_id] = target
        try:
            manifest = write_manifest(
                self.options.out_dir, self.plan, entries, self.files, self.errors, self.unsent
            )
        except OSError as exc:
            raise CLIError(
                f"could not write {self.options.out_dir / MANIFEST}: {_os_error(exc)}; "
                f"the journal is intact ({self.where}): run the same command again",
                code=1,
            ) from None
        counts: dict[str, int] = {}
        for item in self.plan.items:
            row = entries.get(item.key)
            saved = row is not None and row.task_id in self.files
            word = _word(row.state.value if row else "not_submitted", saved)
            counts[word] = counts.get(word, 0) + 1
        t = self.tracker
        fresh = t.completed - sum(1 for tid in self._earlier if tid in self.files)
        summary: dict[str, Any] = {
            "requests": len(self.plan.items),
            **counts,
            "credits": t.credits,
            "api_requests": t.requests,
            "requests_per_video": round(t.requests / fresh, 2) if fresh > 0 else None,
            "rate_limited": t.rate_limited,
            "wall_time": f"{t.elapsed:.1f}s",
            "folder": str(self.options.out_dir),
            "manifest": str(manifest),
            "interrupted": True if self.interrupted else None,
        }
        self.reporter.summary(summary)
        if self.interrupted:
            raise CLIError(
                f"interrupted: the journal is intact ({self.where}); run the same "
                "command again to resume",
                code=EXIT_INTERRUPTED,
            )
        if self.local_errors:
            more = len(self.local_errors) - 1
            raise CLIError(
                f"{self.local_errors[0]}"
                + (f" (and {more} more)" if more else "")
                + f"; the journal is intact ({self.where}): what was paid for is "
                "followed, and saved, when the same command runs again",
                code=1,
            )
        if t.insufficient is not None:
            raise CLIError(f"insufficient credits: {_short(t.insufficient)}", code=1)
        return 0 if counts.get("completed", 0) == len(self.plan.items) else 1


def _word(state: str, saved: bool) -> str:
    # The summary's words match the manifest's.
    words = {"intent": "uncertain", "submitted": "in_flight"}
    word = words.get(state, state)
    return "completed_not_saved" if word == "completed" and not saved else word


def _os_error(exc: OSError) -> str:
    return f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")


def _short(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."
