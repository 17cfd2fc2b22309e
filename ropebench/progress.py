"""Progress: live bars on a terminal, a plain line every few seconds in a log, and the name of the run on every
line a sweep job prints.

``ROPEBENCH_PROGRESS`` (``ropebench --progress``) chooses: ``auto`` -- bars (rich) on a terminal, a line every
``ROPEBENCH_PROGRESS_INTERVAL`` seconds (``--progress-interval``, default 30) when the output is a file or a pipe,
so a log says how far training or evaluation is, how fast and when it will end; ``always`` -- those lines on a
terminal too; ``never`` -- neither (results and the start and end of each run are still printed). Environment
variables, so that sweep jobs in worker processes follow the command's choice.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import os
import sys
import time

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

MODES = ("auto", "always", "never")
DEFAULT_INTERVAL = 30.0
_JOB = contextvars.ContextVar("ropebench_job", default=None)


class _Console(Console):
    def print(self, *objects, **kwargs) -> None:
        """As rich's, with the running sweep job's name first (jobs side by side interleave their lines)."""
        name = _JOB.get()
        if name and objects:
            objects = (escape(f"[{name}]"), *objects)
        super().print(*objects, **kwargs)


# soft_wrap: a printed path or command is never broken across lines, so pasting it works. Off a terminal (a log,
# CI) rich would assume 80 columns and cut the bar's rate, ETA and loss short; a log has room for them.
console = _Console(stderr=True, soft_wrap=True,
                   width=None if sys.stderr.isatty() or os.environ.get("COLUMNS") else 160)


@contextlib.contextmanager
def job(name: str | None):
    """Within it, every line printed through ``console`` and every progress line starts with ``[name]``."""
    token = _JOB.set(name)
    try:
        yield
    finally:
        _JOB.reset(token)


def mode() -> str:
    chosen = os.environ.get("ROPEBENCH_PROGRESS", "auto").strip() or "auto"
    return chosen if chosen in MODES else "auto"  # the CLI refuses a bad value; a stray one is not worth a crash


def interval() -> float:
    try:
        return max(0.0, float(os.environ.get("ROPEBENCH_PROGRESS_INTERVAL", DEFAULT_INTERVAL)))
    except ValueError:
        return DEFAULT_INTERVAL


class _Progress(Progress):
    def add_task(self, description: str, *args, **kwargs):
        name = _JOB.get()
        return super().add_task(escape(f"[{name}] ") + description if name else description, *args, **kwargs)

    def stop(self) -> None:
        """As rich's, but the newline that ends the final render off a terminal is printed only when a task was
        rendered: a bar whose tasks were all removed renders nothing, and its newline would be a blank line (one
        before every evaluation's results, or before an error line raised inside the bar)."""
        if self.disable:
            return
        self.live.stop()
        if self.tasks and not self.console.is_interactive and not self.console.is_jupyter:
            self.console.print()


class _Task:
    def __init__(self, description: str, total, completed: float, fields: dict):
        self.description, self.total, self.completed, self.fields = description, total, completed, fields
        self.started, self.start_completed = time.monotonic(), completed
        self.last_line: float | None = None


def per_second(value: float, unit: str) -> str:
    """``64 tok/s``, ``1.2k tok/s``, ``3.4M tok/s``: a rate a reader takes in at a glance, at any speed."""
    for scale, prefix in ((1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.1f}{prefix} {unit}/s"
    return f"{value:.0f} {unit}/s" if value >= 10 else f"{value:.2g} {unit}/s"


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class ProgressLines:
    """The bars' interface (add_task, update, advance, remove_task) writing a plain line per task every
    ``every`` seconds -- done, total, rate, elapsed time, ETA and the task's own text (the loss) -- and the last
    state of each task still open when it stops, as the bars' final render does."""

    def __init__(self, every: float, out: Console = None):
        self.every, self.out, self.disable = every, out or console, False
        self._tasks: dict[int, _Task] = {}
        self._ids = itertools.count()

    def __enter__(self) -> ProgressLines:
        return self

    def __exit__(self, *exc) -> None:
        if not self.disable:
            for task in self._tasks.values():
                self._line(task)
        self._tasks.clear()

    def add_task(self, description: str, total=None, completed: float = 0, **fields) -> int:
        key = next(self._ids)
        self._tasks[key] = _Task(description, total, completed, fields)
        return key

    def update(self, key: int, total=None, completed=None, advance=None, **fields) -> None:
        task = self._tasks[key]
        if total is not None:
            task.total = total
        if completed is not None:
            task.completed = completed
        if advance:
            task.completed += advance
        task.fields.update(fields)
        now = time.monotonic()
        if not self.disable and now - (task.last_line or task.started) >= self.every:
            self._line(task, now)

    def advance(self, key: int, n: float = 1) -> None:
        self.update(key, advance=n)

    def remove_task(self, key: int) -> None:
        self._tasks.pop(key, None)

    def _line(self, task: _Task, now: float | None = None) -> None:
        now = now or time.monotonic()
        task.last_line = now
        elapsed, done = now - task.started, task.completed - task.start_completed
        parts = [f"{task.description}:", f"{task.completed:g}" + (f"/{task.total:g}" if task.total else "")]
        if task.total:
            parts.append(f"({100 * task.completed / task.total:.0f}%)")
        parts.append(task.fields.get("rate") or (f"{done / elapsed:.3g}/s" if elapsed > 0 and done else ""))
        parts.append(f"elapsed {_clock(elapsed)}")
        if task.total and done > 0:
            parts.append(f"ETA {_clock(elapsed * (task.total - task.completed) / done)}")
        parts.append(str(task.fields.get("info") or ""))
        self.out.print(escape(" ".join(p for p in parts if p)), highlight=False)


def progress_bar(transient: bool = False):
    """A progress display for the current output and ``mode()``: rich bars, ``ProgressLines`` or nothing."""
    chosen = mode()
    if chosen == "always" or (chosen == "auto" and not console.is_terminal):
        return ProgressLines(interval())
    bar = _Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"), console=console, transient=transient,
    )
    bar.disable = chosen == "never"
    return bar
