"""`ropebench eval-task PATH...`: exact match and per-token accuracy of data=task runs by instance length.

Registered in ropebench/cli/app.py; kept in its own module so the task's code lives in one place. Torch-free at
import: `--help` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import typer

from ropebench.cli.hf_eval import each_run, runs_of
from ropebench.errors import UserError


def eval_task(
    run_dirs: list[str] = typer.Argument(..., metavar="PATH", show_default=False,
                                         help="Finished data=task run directories and/or sweep directories (every "
                                              "finished run inside is evaluated)."),
    lengths: str = typer.Option(None, help="Comma-separated buckets of instance lengths (items, not tokens): N or "
                                "LO-HI, e.g. 1-6,7-12,13-24. Default: every length 1 .. 4x the training range."),
    trials: int = typer.Option(100, help="Test instances per bucket."),
    device: str = typer.Option(None, help="auto, cpu, cuda (default: the run's train.device)."),
):
    """Greedy-decoded task accuracy per bucket of instance lengths -- exact match (every answer token right) and
    per-token accuracy -- merged into RUN_DIR/eval_task.csv of each finished data=task run given or found in a
    sweep directory. Test instances are never in the training stream."""
    from ropebench.eval import task as tk

    # Every argument is checked before any model is loaded: a typo costs nothing and writes nothing.
    buckets = tk.parse_buckets(lengths)
    if trials <= 0:
        raise UserError(f"--trials must be a positive integer, got {trials}")
    if device is not None:
        from ropebench.run.artifacts import resolve_device

        resolve_device(device)

    for raw in run_dirs:
        if not Path(raw).expanduser().is_dir():
            what = "is a file" if Path(raw).expanduser().exists() else "does not exist"
            raise UserError(f"'{raw}' {what}; expected a run directory or a sweep directory")

    def evaluate(run_dir: Path) -> list[dict]:
        rows = tk.task_accuracy(run_dir, buckets, trials, device=device)
        typer.echo(str(Path(run_dir) / tk.TASK_TABLE.name))
        return rows

    each_run(runs_of(run_dirs), evaluate)
