"""The command line: Typer parses, Hydra composes, plain functions in the package do the work.

Every command turns a UserError into one line on stderr and exit code 2 -- never a traceback.
"""

from __future__ import annotations

from pathlib import Path

import typer

from ropebench.cli.hf_eval import PATHS_HELP, each_run, hf_options
from ropebench.cli.passkey import scaling_options
from ropebench.errors import UserError, user_errors

app = typer.Typer(
    name="ropebench", add_completion=True, pretty_exceptions_enable=False, no_args_is_help=True,
    help="Train small GPTs that differ only in position encoding at one length; measure perplexity far "
         "beyond it; plot the results. Offline, CPU or GPU.",
)
HYDRA_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True}


def _print_version(value: bool) -> None:
    if value:
        from ropebench import __version__

        typer.echo(f"ropebench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                        help="Print ropebench's version and exit.")) -> None:
    # Options of `ropebench` itself; the app's help text is the Typer(help=...) above.
    return None


def _echo_outcomes(outcomes) -> int:
    """Print each job's run directory (or its error); the exit code: 2 for a user error, 1 for a crash, 130 if
    interrupted."""
    code = 0
    for run_dir, status, message in outcomes:
        if status in ("failed", "refused"):
            code = max(code, 2 if status == "refused" else 1)
            typer.echo(f"error: {message}", err=True)
        else:
            code = code or (130 if status == "interrupted" else 0)
            typer.echo(str(run_dir))
    return code


@app.command(context_settings=HYDRA_ARGS)
@user_errors
def train(ctx: typer.Context):
    """Train one model. Arguments are Hydra overrides, e.g.

    ropebench train pe=alibi train.seq_len=128 train.steps=2000 model=small seed=1 hydra.run.dir=runs/a

    Groups: {groups}. `--cfg job` prints the composed config. `resume=RUN_DIR` is
    `ropebench resume RUN_DIR`. Prints the run directory at the end.
    """
    from ropebench.cli import jobs as runner
    from ropebench.cli.hydra_app import check_overrides, run_hydra, show_config, split_flags

    flags, overrides = split_flags(list(ctx.args))
    resume_at, rest = _resume_target(overrides)
    if resume_at is not None:
        _refuse_flags_on_resume(flags, resume_at)
        _resume(resume_at, rest)
        return
    if flags:
        check_overrides(overrides, allow_sweeps=False)
        show_config(flags, overrides)
        return
    from ropebench.run.distributed import require_run_dir
    from ropebench.run.stop import clear_stop_request

    require_run_dir(overrides)  # under torchrun every rank must agree on one run directory
    runner.outcomes.clear()
    clear_stop_request()  # a Ctrl-C that stopped an earlier command in this process must not skip this run
    run_hydra(runner.train_job, overrides)
    code = _echo_outcomes(runner.outcomes)
    if code:
        raise typer.Exit(code)


def _config_groups(*groups: str) -> str:
    """``model (gpt2|small|tiny), ...``: the choices of each config group, read from conf/ (no torch import)."""
    from ropebench.run.config import conf_dir

    return ", ".join(f"{g} ({'|'.join(sorted(p.stem for p in (conf_dir() / g).glob('*.yaml')))})" for g in groups)


train.__doc__ = train.__doc__.replace("{groups}", _config_groups("model", "pe", "data", "method"))


@app.command(context_settings=HYDRA_ARGS)
@user_errors
def resume(ctx: typer.Context, run_dir: Path = typer.Argument(..., help="The run directory to continue.")):
    """Continue an interrupted run with its own saved config.

    Only train.steps, the logging / evaluation / checkpoint cadence, the device and eval.* may change, e.g.
    `ropebench resume runs/rope-L64 train.steps=2000`; anything else is refused, naming each key.
    """
    from ropebench.cli.hydra_app import parse, split_flags

    flags, overrides = split_flags(list(ctx.args))
    _refuse_flags_on_resume(flags, run_dir)
    _resume(run_dir, parse(overrides))


def _refuse_flags_on_resume(flags: list[str], run_dir: Path) -> None:
    # A continued run is not composed by Hydra: `--cfg job` would be ignored and the run continued instead.
    if flags:
        from ropebench.run.rundir import CONFIG

        raise UserError(f"'{flags[0]}' does not apply to a continued run; its config is {Path(run_dir) / CONFIG}")


def _resume_target(overrides: list[str]):
    """(run directory, the other overrides parsed) for `train resume=RUN ...`, else (None, None). A sweep job's
    directory (`pe=rope,seed=0`) is not a value Hydra's grammar accepts unquoted: such a path is taken as typed."""
    from ropebench.cli.hydra_app import key_of, parse

    try:
        parsed = parse(overrides)
    except UserError:
        raw = [o for o in overrides if o.startswith("resume=")]
        if not raw:
            raise
        return Path(raw[-1][len("resume="):]), parse([o for o in overrides if o not in raw])
    resume_at = [o for o in parsed if key_of(o) == "resume"]
    if not resume_at:
        return None, None
    return Path(resume_at[-1].get_value_element_as_str()), [o for o in parsed if key_of(o) != "resume"]


def _resume(run_dir: Path, overrides) -> None:
    from ropebench.cli.hydra_app import key_of
    from ropebench.cli.jobs import evaluate_after_training
    from ropebench.run.lifecycle import resume as resume_run

    pairs = [(key_of(o), o.value()) for o in overrides]
    result = resume_run(run_dir, pairs, after_training=evaluate_after_training)
    typer.echo(str(run_dir))
    if result.get("status") == "interrupted":
        raise typer.Exit(130)


@app.command("eval-length")
@user_errors
@scaling_options
@hf_options("eval")
def eval_length(
    run_dirs: list[Path] = typer.Argument(..., metavar="PATH", help=PATHS_HELP, show_default=False),
    lengths: str = typer.Option(None, help="Comma-separated lengths; default 1x,1.25x,1.5x,2x,4x,8x,16x of training."),
    protocol: str = typer.Option("nonoverlapping", help="nonoverlapping (ALiBi paper) or sliding."),
    stride: int = typer.Option(None, help="Sliding-window stride (default: half the evaluation length)."),
    max_tokens: int = typer.Option(None, help="Tokens scored per length; 0 scores every token (default: the run's "
                                   "eval.max_tokens)."),
    device: str = typer.Option(None, help="auto, cpu, cuda (default: the run's train.device)."),
    rope_scaling: dict | None = None,  # the --rope-scaling options (scaling_options), validated into one spec
    logit_scale: str | None = None,  # --logit-scale (scaling_options): a name, or the run's own
):
    """Perplexity at each evaluation length, merged into RUN_DIR/eval_length.csv of each finished run given or
    found in a sweep directory (one after another; one that fails does not stop the others); or of a Hugging
    Face model, into --out."""
    from ropebench.eval.lengths import parse_lengths
    from ropebench.eval.perplexity import eval_length as run_eval
    from ropebench.run.rundir import EVAL_CSV

    # No --lengths: eval_length takes each run's eval.multiples x its training length (one config read).
    wanted = parse_lengths(lengths, 1) if lengths else None
    _check_eval_options(wanted, protocol, stride, max_tokens)

    def evaluate(run_dir: Path) -> list[dict]:
        rows = run_eval(run_dir, wanted, protocol=protocol, stride=stride, rope_scaling=rope_scaling,
                        max_tokens=max_tokens, device=device, logit_scale=logit_scale)
        typer.echo(str(Path(run_dir) / EVAL_CSV))
        return rows

    each_run(run_dirs, evaluate)


def _check_eval_options(lengths: list[int] | None, protocol: str, stride: int | None, max_tokens: int | None) -> None:
    """The options all runs share, checked once before the first run by the code that checks them for each run,
    so a typo is one error rather than one per run of a sweep. Without --lengths each run's own lengths bound
    --stride: that check stays with the run."""
    from omegaconf import OmegaConf

    from ropebench.eval.perplexity import checked_probe

    stand_in = OmegaConf.create({"eval": {"max_tokens": 0}})  # used only where --max-tokens is not given
    checked_probe(stand_in, lengths or [stride or 1], protocol, stride, max_tokens, batch_tokens=1, buckets=1)


@app.command()
@user_errors
def plot(
    paths: list[Path] = typer.Argument(..., help="Run and/or sweep directories; or `decay [RUN_DIR]`."),
    out: Path = typer.Option(Path("ropebench.png"), help="Output file: .png (a .pdf is written beside it), .pdf "
                             "or .svg; a directory gets a default file name."),
    protocol: str = typer.Option("nonoverlapping", help="Which protocol's rows to draw."),
    by_position: bool = typer.Option(False, "--by-position", help="Loss against token position instead."),
    passkey: bool = typer.Option(False, "--passkey", help="Passkey accuracy heatmaps (length x depth)."),
    band: str = typer.Option("minmax", help="Across seeds: minmax or std."),
    figsize: str = typer.Option(None, help="Figure size W,H in inches, e.g. 7,4.2."),
    title: str = typer.Option(None, help='Figure title instead of the default one; "" for none.'),
    style: str = typer.Option(None, help="A matplotlib style name, e.g. seaborn-v0_8-paper."),
    length: int = typer.Option(None, help="--by-position: the evaluation length to draw (default: each "
                               "label's longest)."),
    smooth: int = typer.Option(1, help="--by-position: moving average over this many position buckets (1: none)."),
    head_dim: int = typer.Option(None, help="decay: RoPE head dimension (default: the run's, else 128)."),
    base: float = typer.Option(None, help="decay: RoPE base (default: the run's, else 10000)."),
    max_distance: int = typer.Option(None, help="decay: largest relative distance (default 16x train length)."),
):
    """Perplexity against evaluation length, one line per encoding (mean and band across seeds).

    `ropebench plot decay [RUN_DIR]` draws RoFormer's long-term-decay bound instead, and with a RoPE run the
    measured mean attention score against relative distance.
    """
    from ropebench.errors import choose
    from ropebench.report.plot import (
        FigureOptions,
        check_style,
        output_paths,
        parse_figsize,
        plot_length,
        plot_positions,
    )

    choose("band", band, ("minmax", "std"))
    # Every option is checked before any result is read or model loaded: a typo costs nothing.
    opts = FigureOptions(parse_figsize(figsize) if figsize is not None else None, title,
                         check_style(style) if style is not None else None)
    if not by_position and (length is not None or smooth != 1):
        raise UserError("--length and --smooth apply to --by-position only")
    output_paths(out, "ropebench")
    if paths and str(paths[0]) == "decay":
        from ropebench.report.decay import plot_run_decay

        written = plot_run_decay(paths[1:], out, head_dim, base, max_distance, opts)
    elif passkey:
        from ropebench.report.plot_passkey import plot_passkey

        written = plot_passkey(paths, out, opts)
    elif by_position:
        written = plot_positions(paths, out, protocol=protocol, length=length, smooth=smooth, opts=opts)
    else:
        written = plot_length(paths, out, protocol=protocol, band=band, opts=opts)
    for path in written:
        typer.echo(str(path))


@app.command()
@user_errors
def table(
    paths: list[Path] = typer.Argument(..., help="Run directories and/or sweep directories."),
    lengths: str = typer.Option(None, help="Comma-separated lengths (default: all evaluated)."),
    format: str = typer.Option("md", "--format", help="md, csv or latex."),
    protocol: str = typer.Option("nonoverlapping", help="Which protocol's rows to tabulate."),
):
    """The perplexity table: encodings by evaluation length, mean ± std across seeds."""
    from ropebench.errors import choose
    from ropebench.report.table import perplexity_table

    choose("format", format, ("md", "csv", "latex"))
    wanted = None
    if lengths:
        from ropebench.eval.lengths import parse_lengths

        wanted = parse_lengths(lengths, 1)
    typer.echo(perplexity_table(paths, lengths=wanted, fmt=format, protocol=protocol))


@app.command(context_settings=HYDRA_ARGS)
@user_errors
def sweep(ctx: typer.Context, name: str = typer.Argument(..., help="A sweep config in conf/sweep/.")):
    """Run a sweep (Hydra multirun), then evaluate, tabulate and plot every run. `compare` is the main job.

    Extra arguments are Hydra overrides, sweeps included: `ropebench sweep compare seed=0,1 train.steps=500`.
    `hydra.sweep.dir=DIR` chooses where it lives; relaunching into the same DIR skips finished runs.
    """
    from ropebench.cli.hydra_app import check_output_dir, key_of, parse, split_flags
    from ropebench.cli.sweep_base import build_base_runs
    from ropebench.errors import choose
    from ropebench.report.sweep import default_sweep_dir, sweep_names
    from ropebench.run.stop import clear_stop_request, stop_requested

    choose("sweep", name, sweep_names())
    flags, overrides = split_flags([a for a in ctx.args if a not in ("-m", "--multirun")])
    if flags:
        raise UserError(f"'{flags[0]}' prints one job's config: use `ropebench train {' '.join(flags)} ...` "
                        "with one value of each swept key")
    parsed = parse(overrides)
    sweep_dir = next((o.get_value_element_as_str() for o in parsed if key_of(o) == "hydra.sweep.dir"), None)
    if sweep_dir is None:
        sweep_dir = default_sweep_dir(name)
        overrides.append(f"hydra.sweep.dir={sweep_dir}")
    check_output_dir("hydra.sweep.dir", sweep_dir)
    if any(key_of(o) == "hydra/launcher" for o in parsed) and not any(key_of(o) == "launcher" for o in parsed):
        overrides.append("launcher=sequential")  # Hydra's own launcher choice, without launcher=auto's joblib keys
    # Name each job's directory by what it sweeps only (pe=alibi,seed=1), not by the settings all jobs share.
    swept = {key_of(o) for o in parsed if o.is_sweep_override()}
    shared = [key_of(o) for o in parsed if key_of(o) not in swept and not key_of(o).startswith("hydra")]
    if shared:
        keys = dict.fromkeys(["sweep", "launcher", *shared])  # in order, once each
        overrides.append(f"hydra.job.config.override_dirname.exclude_keys=[{','.join(keys)}]")
    clear_stop_request()
    build_base_runs(name, overrides, sweep_dir, _run_sweep)
    report = None if stop_requested() else _run_sweep(name, overrides)
    if report is None:
        import shlex

        again = " ".join(shlex.quote(a) for a in ["ropebench", "sweep", name, *ctx.args] if "hydra.sweep.dir=" not in a)
        typer.echo(f"stopped; finished jobs are kept. Continue with: {again} "
                   f"{shlex.quote('hydra.sweep.dir=' + sweep_dir)}", err=True)
        raise typer.Exit(130)
    if report.failed or report.unfinished:
        raise typer.Exit(1)


def _run_sweep(name: str, overrides: list[str]):
    """One Hydra multirun of conf/sweep/NAME.yaml, then its evaluation, table and figure; None when stopped."""
    from ropebench.cli import jobs as runner
    from ropebench.cli.hydra_app import key_of, parse, run_hydra
    from ropebench.report.sweep import finish_sweep, print_report
    from ropebench.run.stop import StopFlag, stop_requested

    runner.outcomes.clear()
    # One Ctrl-C asks every job to stop at its next step (jobs in worker processes get it too) and lets the
    # launcher wait for their checkpoints; jobs not yet started are skipped. A second press gives up at once.
    with StopFlag():
        run_hydra(runner.train_job, [f"sweep={name}", *overrides], multirun=True)
    if stop_requested():
        return None
    sweep_dir = next(o.get_value_element_as_str() for o in parse(overrides) if key_of(o) == "hydra.sweep.dir")
    refused = [(run, why) for run, status, why in runner.outcomes if status in ("failed", "refused")]
    report = finish_sweep(Path(sweep_dir), name, refused=refused)
    print_report(report)
    return report


def _register_data_report() -> None:
    from ropebench.cli.data_report import data_report

    app.command("data-report")(user_errors(data_report))


_register_data_report()


def _register_passkey() -> None:
    from ropebench.cli.passkey import passkey  # imports only typer and ropebench.errors

    app.command("passkey")(user_errors(passkey))


_register_passkey()


def _register_export_hf() -> None:
    from ropebench.cli.export_hf import export_hf  # imports only typer

    app.command("export-hf")(user_errors(export_hf))


_register_export_hf()


def _mount_optional() -> None:
    try:
        from ropebench.bench.cli import bench_app
    except ImportError:
        return
    app.add_typer(bench_app, name="bench", help="Benchmarks: RoPE kernels and training steps.")


_mount_optional()


def main(args: list[str] | None = None) -> None:
    """The `ropebench` program (``args``: the command line, default sys.argv); see cli.usage.run."""
    from ropebench.cli.usage import run

    run(app, args)


if __name__ == "__main__":
    main()
