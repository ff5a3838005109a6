"""How a batch run shows itself: a rich live display, or JSON lines (``--json``).

Both are :class:`Reporter`\\ s fed by the batch runner; both read the :class:`Tracker`.
The rich one redraws from the event loop (``auto_refresh=False`` and a ticker task), so it
never reads the tracker from another thread. On a terminal it shows an overall bar, a line
per video in flight and the budget; anywhere, it prints a line per finished video and a
summary table.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO

import anyio
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from .._events import Event
from .estimate import format_duration
from .plan import Plan
from .tracker import Outcome, Tracker

__all__ = ["JsonReporter", "Reporter", "RichReporter", "Summary", "budget_line"]

_MAX_ROWS = 12  # videos shown in flight; the rest are counted

Summary = dict[str, Any]


class Reporter:
    """The display interface (every method a no-op here)."""

    def start(self, plan: Plan, tracker: Tracker) -> None:
        """The run is about to start (after the plan was accepted)."""

    def note(self, text: str) -> None:
        """A remark for the user (uncertain requests, say)."""

    def event(self, event: Event) -> None:
        """A client progress event (the tracker has seen it already)."""

    def outcome(self, outcome: Outcome) -> None:
        """One request has its outcome (and its file, if any)."""

    def summary(self, summary: Summary) -> None:
        """The run is over."""

    async def tick(self) -> None:
        """Redraw now and then until cancelled."""
        await anyio.sleep_forever()

    def stop(self) -> None:
        """Leave the terminal as it was (the run is over, or aborted)."""


def _ago(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}:{seconds % 60:02d}"


class RichReporter(Reporter):
    """The terminal display."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(highlight=False, soft_wrap=True)
        self._tracker: Tracker | None = None
        self._live: Live | None = None

    def start(self, plan: Plan, tracker: Tracker) -> None:
        self._tracker = tracker
        if self.console.is_terminal:  # elsewhere the per-video lines say it all
            self._live = Live(
                console=self.console, auto_refresh=False, transient=True, get_renderable=self._view
            )
            self._live.start()

    def note(self, text: str) -> None:
        self.console.print(text)

    def outcome(self, outcome: Outcome) -> None:
        result = outcome.result
        prompt = result.request.prompt if result.has_request else "?"
        mark = {"completed": "[green]done[/]", "failed": "[red]failed[/]"}.get(
            outcome.status, f"[yellow]{outcome.status.replace('_', ' ')}[/]"
        )
        where = f" → {escape(str(outcome.file))}" if outcome.file else ""
        why = f" ({escape(outcome.error)})" if outcome.error else ""
        earlier = " [dim](earlier run)[/]" if outcome.earlier else ""
        line = f"[dim]#{outcome.line}[/] " if outcome.line is not None else ""
        self.console.print(f"{mark} {line}{escape(prompt[:60])}{where}{earlier}{why}")
        self._refresh()

    def event(self, event: Event) -> None:
        self._refresh()

    async def tick(self) -> None:
        while True:
            await anyio.sleep(0.2)
            self._refresh()

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.refresh()

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def _view(self) -> RenderableType:
        t = self._tracker
        assert t is not None
        bar = Table.grid(padding=(0, 1))
        bar.add_row(
            ProgressBar(total=max(1, t.total), completed=t.finished, width=40),
            f"{t.finished}/{t.total} · {t.completed} done · {t.failed} failed · "
            f"{len(t.in_flight)} in flight · {_ago(t.elapsed)}"
            + (
                f" · ETA {format_duration(t.eta)}"
                if t.eta is not None and t.finished < t.total
                else ""
            ),
        )
        videos = Table.grid(padding=(0, 2))
        now = time.monotonic()
        rows = sorted(t.in_flight.values(), key=lambda v: v.since)
        for video in rows[:_MAX_ROWS]:
            prompt = video.request.prompt[:48] if video.request else "(from an earlier run)"
            if video.line is not None:
                prompt = f"#{video.line} {prompt}"
            stage = video.state + (f" ({video.progress})" if video.progress else "")
            videos.add_row(
                Text(video.task_id[:14], style="dim"), stage, _ago(now - video.since), Text(prompt)
            )
        if len(rows) > _MAX_ROWS:
            videos.add_row("", f"... and {len(rows) - _MAX_ROWS} more", "", "")
        return Group(bar, videos, Text(budget_line(t), style="cyan"))

    def summary(self, summary: Summary) -> None:
        self.stop()
        table = Table(title="sora2 batch", show_header=False, title_justify="left")
        table.add_column(style="bold")
        table.add_column()
        for name, value in summary.items():
            if value is not None and name != "event":
                table.add_row(name.replace("_", " "), str(value))
        self.console.print(table)


def budget_line(t: Tracker) -> str:
    """The budget in one line of at most 80 columns."""
    b = t.budget
    if b is None:
        return f"budget: waiting for the first answer · 429s {t.rate_limited}"
    window = "/h" if abs(b.window - 3600) < 60 else f"/{_short_time(b.window)}"
    free = "now" if b.next_free_in <= 0 else f"in {_short_time(b.next_free_in)}"
    waiting = " · queued" if b.waiting_generates else ""  # a submission waits for budget
    line = (
        f"budget: {max(0, b.limit - b.used)}/{b.limit}{window} free · {b.reserved} promised"
        f" · next {free} · 429s {b.rate_limited}{waiting}"
    )
    return line if len(line) <= 80 else line[:79] + "…"


def _short_time(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    seconds = max(0, round(seconds))
    if seconds < 120:
        return f"{seconds}s"
    return f"{seconds // 60}m" if seconds < 7200 else f"{seconds // 3600}h"


class JsonReporter(Reporter):
    """One JSON object per line on ``stream``: ``{"event": ..., ...}``."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._out = stream or sys.stdout

    def _emit(self, **fields: Any) -> None:
        self._out.write(json.dumps(fields, default=str) + "\n")
        self._out.flush()

    def start(self, plan: Plan, tracker: Tracker) -> None:
        self._emit(
            event="plan",
            requests=len(plan.items),
            estimate_seconds=None if tracker.eta is None else round(tracker.eta, 1),
            to_send=len(plan.to_send),
            running=len(plan.running),
            ended=len(plan.ended),
            uncertain=len(plan.uncertain),
            credits=plan.credits,
        )

    def note(self, text: str) -> None:
        self._emit(event="note", text=text)

    def event(self, event: Event) -> None:
        fields: dict[str, Any] = {"event": event.kind.value, "task_id": event.task_id}
        request = event.request or (event.task.request if event.task else None)
        if request is not None:
            fields["prompt"] = request.prompt
        if event.status is not None:
            fields.update(state=event.status.state.value, progress=event.status.progress)
        if event.video is not None:
            fields["video_url"] = event.video.url
        if event.error is not None:
            fields["error"] = str(event.error)
        if event.budget is not None:
            b = event.budget
            fields["budget"] = {
                "limit": b.limit,
                "used": b.used,
                "reserved": b.reserved,
                "next_free_in": round(b.next_free_in, 3),
                "rate_limited": b.rate_limited,
            }
        self._emit(**fields)

    def outcome(self, outcome: Outcome) -> None:
        result = outcome.result
        self._emit(
            event="result",
            status=outcome.status,
            task_id=result.task.task_id if result.task else None,
            prompt=result.request.prompt if result.has_request else None,
            file=str(outcome.file) if outcome.file else None,
            earlier=outcome.earlier,
            line=outcome.line,
            error=outcome.error,
        )

    def summary(self, summary: Summary) -> None:
        self._emit(**{"event": "summary", **summary})
