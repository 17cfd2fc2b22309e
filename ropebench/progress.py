"""Progress bars with rate and ETA (rich), quiet when output is not a terminal unless asked."""

from __future__ import annotations

import os
import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

# soft_wrap: a printed path or command is never broken across lines, so pasting it works. Off a terminal (a log,
# CI) rich would assume 80 columns and cut the bar's rate, ETA and loss short; a log has room for them.
console = Console(stderr=True, soft_wrap=True,
                  width=None if sys.stderr.isatty() or os.environ.get("COLUMNS") else 160)


class _Progress(Progress):
    def stop(self) -> None:
        """As rich's, but the newline that ends the final render off a terminal is printed only when a task was
        rendered: a bar whose tasks were all removed renders nothing, and its newline would be a blank line (one
        before every evaluation's results, or before an error line raised inside the bar)."""
        if self.disable:
            return
        self.live.stop()
        if self.tasks and not self.console.is_interactive and not self.console.is_jupyter:
            self.console.print()


def progress_bar(transient: bool = False) -> Progress:
    return _Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"), console=console, transient=transient,
    )
