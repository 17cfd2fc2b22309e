"""`ropebench probe PATH...`: retrieval probes (RULER's needle tasks, variable tracking, the passkey) by task, length
and depth, scored by likelihood against K candidates and by greedy decoding.

Registered in ropebench/cli/app.py; every option is checked before any model is loaded, so a typo writes nothing.
"""

from __future__ import annotations

from pathlib import Path

import typer

from ropebench.cli.hf_eval import PATHS_HELP, each_run, hf_options
from ropebench.cli.passkey import scaling_options
from ropebench.errors import UserError, choose

# ropebench.data.probes' TASKS and ropebench.eval.probes' defaults, written out: importing them imports torch, and
# every command's --help must start in well under a second. tests/test_cli_speed.py keeps them equal.
TASKS = ("niah_single", "niah_multikey", "niah_multivalue", "niah_multiquery", "vt", "passkey")
DEFAULT_TASKS = ("niah_single", "niah_multikey", "niah_multivalue", "niah_multiquery", "vt")
DEFAULT_TRIALS = 6
DEFAULT_CANDIDATES = 6


@scaling_options
@hf_options("probe")
def probe(
    run_dirs: list[Path] = typer.Argument(..., metavar="PATH", help=PATHS_HELP, show_default=False),
    task: str = typer.Option(",".join(DEFAULT_TASKS), "--task", help=f"Comma-separated tasks: {', '.join(TASKS)}."),
    lengths: str = typer.Option(None, help="Comma-separated lengths; default 1x,1.5x,2x,4x,8x,16x of training (a "
                                "run's eval.lengths when it sets them)."),
    depths: str = typer.Option("0,0.25,0.5,0.75,1", help="Comma-separated needle depths in [0, 1] (0: first)."),
    trials: int = typer.Option(DEFAULT_TRIALS, help="Trials (random keys and values) per task, length and depth."),
    candidates: int = typer.Option(DEFAULT_CANDIDATES, help="K: the answer and K - 1 distractors ranked by "
                                   "likelihood (chance = 1/K)."),
    only_missing: bool = typer.Option(False, "--only-missing", help="Measure only the cells probe.csv does not "
                                      "hold yet (an error row counts as missing)."),
    device: str = typer.Option(None, help="auto, cpu, cuda (default: the run's train.device)."),
    rope_scaling: dict | None = None,
):
    """Retrieval probes by task, length and needle depth, merged into RUN_DIR/probe.csv of each finished run given
    or found in a sweep directory (OUT/probe.csv for a Hugging Face model, in its own tokens).

    accuracy: the true answer's total NLL is the lowest of K candidates (chance 1/K); exact_accuracy: greedy
    decoding reproduces it token for token.
    """
    from ropebench.eval import probes

    options = probes.probe_options(task, lengths, depths, trials, candidates)

    def evaluate(run_dir: Path) -> list[dict]:
        rows = probes.probe_accuracy(run_dir, rope_scaling=rope_scaling, device=device, only_missing=only_missing,
                                     **options)
        typer.echo(str(Path(run_dir) / probes.PROBE_CSV))
        return rows

    each_run(run_dirs, evaluate)


def plot_heatmaps(paths: list[Path], out: Path, opts, passkey: bool, probe: bool, task: str | None) -> list[Path]:
    """`plot --passkey` or `plot --probe [--task T]`: the heatmaps, after their options are checked."""
    if task is not None and not probe:
        raise UserError("--probe-task applies to --probe only")
    if probe and passkey:
        raise UserError("--probe and --passkey are two figures; ask for one")
    if passkey:
        from ropebench.report.plot_passkey import plot_passkey

        return plot_passkey(paths, out, opts)
    from ropebench.report.probes import plot_probes

    return plot_probes(paths, out, None if task is None else choose("probe task", task, TASKS), opts)
