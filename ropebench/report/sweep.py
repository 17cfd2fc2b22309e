"""Sweeps: Hydra multirun over a config in conf/sweep/, then evaluate, tabulate and plot every run.

Relaunching a sweep into the same directory (``hydra.sweep.dir=DIR``) skips finished runs and resumes
unfinished ones from their checkpoints; a failed job never stops the others, and the summary at the end
lists what finished and what failed (non-zero exit if anything failed).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ropebench.errors import UserError
from ropebench.progress import console
from ropebench.run.rundir import EVAL_CSV, TASK_CSV, RunDir, job_dirs


@dataclass
class SweepReport:
    sweep_dir: Path
    finished: list[Path]
    failed: list[tuple[Path, str]]
    unfinished: list[Path]
    figure: list[Path]
    table: Path | None


def sweep_names() -> list[str]:
    from ropebench.run.config import conf_dir

    return sorted(p.stem for p in (conf_dir() / "sweep").glob("*.yaml"))


def default_sweep_dir(name: str) -> str:
    return f"sweeps/{name}/{time.strftime('%Y%m%d-%H%M%S')}"


def first_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "unknown error"


def collect(sweep_dir: Path) -> tuple[list[Path], list[tuple[Path, str]], list[Path]]:
    finished, failed, unfinished = [], [], []
    for run in job_dirs(sweep_dir):
        error = RunDir(run).read_error()
        if RunDir(run).is_finished():
            finished.append(run)
        elif error is not None:
            failed.append((run, first_line(error)))
        else:
            unfinished.append(run)
    return finished, failed, unfinished


def finish_sweep(sweep_dir: Path, name: str, log=console.print, refused=(), probes: bool = False) -> SweepReport:
    """Complete every run's evaluation (a job killed mid-evaluation is finished here: only the missing lengths
    are evaluated), then write the figure and the table into the sweep directory. ``probes``: the retrieval probes
    for every run, not only those whose config asks for them (eval.probes)."""
    from ropebench.eval.probes import wants_probes
    from ropebench.report.plot import plot_length
    from ropebench.report.table import write_table
    from ropebench.run.rundir import PASSKEY_CSV, PROBE_CSV

    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise UserError(f"sweep directory '{sweep_dir}' does not exist")
    finished, failed, unfinished = collect(sweep_dir)
    # Jobs refused without writing anything (their directory holds another experiment) are failures too -- each
    # counted once (Hydra names a job's path absolute, collect as found here), and not also as the finished run
    # that refused them.
    refused_at = {Path(run).resolve() for run, _ in refused}
    finished = [run for run in finished if run.resolve() not in refused_at]
    known = {f.resolve() for f, _ in failed}
    failed += [(Path(run), why) for run, why in refused if Path(run).resolve() not in known]
    configs = {r: RunDir(r).read_config() for r in finished}
    passkey_runs = [r for r in finished if configs[r].data.source == "passkey" or configs[r].eval.get("passkey")]
    task_runs = [r for r in finished if configs[r].data.source == "task"]
    failed += _complete_evaluations(finished, configs, passkey_runs, task_runs, probes, log)
    evaluated = [r for r in finished if (r / EVAL_CSV).is_file()]
    figure, table = [], None
    if any(configs[r].get("init_from") for r in finished):
        # An extension sweep: its table and figure are by method and steps (extend.md / extend.png); the
        # generic ones would label each run by every differing key and share the figure's name.
        from ropebench.report.extend import write_extend_report

        written = write_extend_report(sweep_dir)
        table, figure = (written[1], written[2:]) if written else (None, [])
    elif evaluated:
        figure = plot_length(evaluated, sweep_dir / f"{name}.png")
        table = write_table(evaluated, sweep_dir / "table.md", fmt="md")
    probed = [r for r in passkey_runs if (r / PASSKEY_CSV).is_file()]
    if probed:
        from ropebench.report.plot_passkey import plot_passkey

        figure += plot_passkey(probed, sweep_dir / f"{name}_passkey.png")
    probed = [r for r in finished if wants_probes(configs[r], probes) and (r / PROBE_CSV).is_file()]
    if probed:
        from ropebench.report.probes import plot_probes

        figure += plot_probes(probed, sweep_dir / f"{name}_probes.png")
    if any((r / TASK_CSV).is_file() for r in task_runs):
        table, figure = _task_report(sweep_dir, name, [r for r in task_runs if (r / TASK_CSV).is_file()], figure)
    return SweepReport(sweep_dir, finished, failed, unfinished, figure, table)


def _complete_evaluations(finished: list[Path], configs: dict, passkey_runs: list[Path], task_runs: list[Path],
                          probes: bool, log) -> list[tuple[Path, str]]:
    """Measure what each finished run's evaluations miss (task accuracy, perplexity, passkey, probes); returns the
    runs whose evaluation was refused, with why."""
    from ropebench.eval.passkey import passkey_accuracy, passkey_cells
    from ropebench.eval.perplexity import eval_length
    from ropebench.eval.probes import probe_accuracy, wants_probes

    failed = []
    for run in finished:
        try:
            if run in task_runs:
                from ropebench.eval.task import task_accuracy

                task_accuracy(run, log=log, only_missing=True)
            elif configs[run].data.source != "passkey":
                eval_length(run, log=log, only_missing=True)
            if run in passkey_runs:
                passkey_accuracy(run, log=log, only_missing=True, **passkey_cells(configs[run]))
            if wants_probes(configs[run], probes):
                probe_accuracy(run, log=log, only_missing=True)
        except UserError as exc:
            failed.append((run, f"evaluation: {exc}"))
    return failed


def _task_report(sweep_dir: Path, name: str, runs: list[Path], figure: list[Path]) -> tuple[Path, list[Path]]:
    """A task sweep's table (NAME.md: a table per task, the mean rank) and figure (NAME.png)."""
    from ropebench.report.tasks import plot_tasks, task_table
    from ropebench.run.rundir import atomic_write_text

    table = sweep_dir / f"{name}.md"
    atomic_write_text(table, task_table(runs, fmt="md"))
    return table, figure + plot_tasks(runs, sweep_dir / f"{name}.png")


def print_report(report: SweepReport, log=console.print) -> None:
    log(f"\n[bold]sweep:[/] {len(report.finished)} finished, {len(report.failed)} failed, "
        f"{len(report.unfinished)} unfinished in {report.sweep_dir}")
    for run, why in report.failed:
        log(f"  [red]failed[/] {run.name}: {why}")
    for run in report.unfinished:
        log(f"  [yellow]unfinished[/] {run.name} (relaunch the sweep with hydra.sweep.dir={report.sweep_dir})")
    if report.table is not None:
        log("\n" + report.table.read_text())
        log(f"table:  {report.table}")
    for path in report.figure:
        log(f"figure: {path}")
