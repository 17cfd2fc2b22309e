"""The command line: Typer parses, Hydra composes, plain functions in the package do the work.

Every command turns a UserError into one line on stderr and exit code 2 -- never a traceback.

Starting is cheap: this module and everything it imports at module level (the option declarations in cli/*.py,
``ropebench.bench.cli``) import no torch, Hydra, transformers or matplotlib -- a command imports what it needs
inside its body, so `ropebench --help` and every command's --help answer at once (tests/test_cli_speed.py).
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
@user_errors
def _root(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print ropebench's version and exit."),
    progress: str = typer.Option(None, help="auto (bars on a terminal, a line every --progress-interval seconds in "
                                            "a log), always (those lines on a terminal too) or never. Default: "
                                            "$ROPEBENCH_PROGRESS, else auto."),
    progress_interval: float = typer.Option(None, help="Seconds between progress lines (default: "
                                                       "$ROPEBENCH_PROGRESS_INTERVAL, else 30)."),
) -> None:
    # Options of `ropebench` itself; the app's help text is the Typer(help=...) above. Progress settings travel as
    # environment variables, so that sweep jobs running in worker processes follow them too.
    import os

    from ropebench.errors import choose
    from ropebench.progress import MODES

    if progress is not None:
        os.environ["ROPEBENCH_PROGRESS"] = choose("--progress", progress, MODES)
    if progress_interval is not None:
        if not progress_interval >= 0:
            raise UserError(f"--progress-interval must be a number of seconds >= 0, got {progress_interval}")
        os.environ["ROPEBENCH_PROGRESS_INTERVAL"] = str(progress_interval)


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
            if status == "interrupted":
                _echo_continue(run_dir)
    return code


def _echo_continue(run_dir: Path) -> None:
    from ropebench.run.rundir import resume_command

    typer.echo(f"Continue with: {resume_command(run_dir)}", err=True)


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
    directory (`pe=rope,seed=0`) arrives quoted for Hydra (``hydra_app.quote_paths``): it is taken as typed."""
    from ropebench.cli.hydra_app import key_of, parse, value_of

    parsed = parse(overrides)
    resume_at = [o for o in parsed if key_of(o) == "resume"]
    if not resume_at:
        return None, None
    return Path(value_of(resume_at[-1])), [o for o in parsed if key_of(o) != "resume"]


def _resume(run_dir: Path, overrides) -> None:
    from ropebench.cli.hydra_app import key_of
    from ropebench.cli.jobs import evaluate_after_training
    from ropebench.run.lifecycle import resume as resume_run

    pairs = [(key_of(o), o.value()) for o in overrides]
    result = resume_run(run_dir, pairs, after_training=evaluate_after_training)
    typer.echo(str(run_dir))
    if result.get("status") == "interrupted":
        _echo_continue(run_dir)
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
    region_len: int = typer.Option(None, help="Tokens of each document scored at every length up to it, so those "
                                   "lengths score the same text (default: the run's eval.region_len, else 16x its "
                                   "training length)."),
    device: str = typer.Option(None, help="auto, cpu, cuda (default: the run's train.device)."),
    split: str = typer.Option(None, help="Held-out documents to score: test (reported results) or val (choosing "
                              "settings); default: the run's eval.split (test; val for runs without a test split)."),
    crop: bool = typer.Option(True, "--crop/--no-crop", help="Beside each length past the training length L, the "
                              "same tokens with their context cut to about L: ppl_crop and nll_gain."),
    crop_stride: int = typer.Option(None, help="Stride of the cropped windows: cropped contexts hold L - stride + 1 "
                                    "to L tokens (default: the run's eval.crop_stride; 0: L / 16)."),
    crop_sample: int = typer.Option(None, help="The crop scores one chunk of stride targets in this many past L, "
                                    "weighted by it (1: every target; default: the run's eval.crop_sample, 4)."),
    rope_scaling: dict | None = None,  # the --rope-scaling options (scaling_options), validated into one spec
    logit_scale: str | None = None,  # --logit-scale (scaling_options): a name, or the run's own
):
    """Perplexity at each evaluation length, merged into RUN_DIR/eval_length.csv of each finished run given or
    found in a sweep directory (one after another; one that fails does not stop the others); or of a Hugging
    Face model, into --out."""
    from ropebench.eval.lengths import parse_lengths
    from ropebench.eval.perplexity import check_options
    from ropebench.eval.perplexity import eval_length as run_eval
    from ropebench.run.rundir import EVAL_CSV
    from ropebench.run.tracking import log_results

    # No --lengths: eval_length takes each run's eval.multiples x its training length (one config read).
    wanted = parse_lengths(lengths, 1) if lengths else None
    check_options(wanted, protocol, stride, max_tokens, split, crop_stride, region_len, crop_sample)

    def evaluate(run_dir: Path) -> list[dict]:
        rows = run_eval(run_dir, wanted, protocol=protocol, stride=stride, rope_scaling=rope_scaling,
                        max_tokens=max_tokens, device=device, split=split, crop=crop, crop_stride=crop_stride,
                        region_len=region_len, logit_scale=logit_scale, crop_sample=crop_sample)
        log_results(run_dir, rows, "eval_length", warn=lambda line: typer.echo(line, err=True))  # the run's wandb
        typer.echo(str(Path(run_dir) / EVAL_CSV))
        return rows

    each_run(run_dirs, evaluate)




@app.command(context_settings=HYDRA_ARGS)
@user_errors
def sweep(ctx: typer.Context, name: str = typer.Argument(..., help="A sweep config in conf/sweep/.")):
    """Run a sweep (Hydra multirun), then evaluate, tabulate and plot every run. `compare` is the main job.

    Extra arguments are Hydra overrides, sweeps included: `ropebench sweep compare seed=0,1 train.steps=500`.
    `hydra.sweep.dir=DIR` chooses where it lives; relaunching into the same DIR skips finished runs.
    """
    from ropebench.cli.hydra_app import check_output_dir, check_overrides, key_of, parse, split_flags, value_of
    from ropebench.cli.sweep_base import BASE_SWEEPS, build_base_runs
    from ropebench.errors import choose
    from ropebench.report.sweep import default_sweep_dir, sweep_names
    from ropebench.run.stop import clear_stop_request, stop_requested

    choose("sweep", name, sweep_names())
    flags, overrides = split_flags([a for a in ctx.args if a not in ("-m", "--multirun")])
    if flags:
        raise UserError(f"'{flags[0]}' prints one job's config: use `ropebench train {' '.join(flags)} ...` "
                        "with one value of each swept key")
    parsed = parse(overrides)
    sweep_dir = next((value_of(o) for o in parsed if key_of(o) == "hydra.sweep.dir"), None)
    if sweep_dir is None:
        sweep_dir = default_sweep_dir(name)
        overrides.append(f"hydra.sweep.dir={sweep_dir}")
    check_output_dir("hydra.sweep.dir", sweep_dir)
    # Every value checked before anything runs -- the base runs an extension sweep builds first included.
    check_overrides([f"sweep={name}", *overrides])
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
    if stop_requested():
        report = None
    elif name in BASE_SWEEPS:  # an extension sweep: `ropebench extend` on the base runs
        from ropebench.cli.extend import run_extension
        from ropebench.cli.sweep_base import extension_recipe

        report = run_extension(extension_recipe(name, overrides, sweep_dir))
    else:
        report = _run_sweep(name, overrides)
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
    from ropebench.cli.hydra_app import key_of, parse, run_hydra, value_of
    from ropebench.report.sweep import finish_sweep, print_report
    from ropebench.run.stop import StopFlag, stop_requested

    runner.outcomes.clear()
    # One Ctrl-C asks every job to stop at its next step (jobs in worker processes get it too) and lets the
    # launcher wait for their checkpoints; jobs not yet started are skipped. A second press gives up at once.
    try:
        with StopFlag(forward=True):  # jobs in worker processes are asked too, however the signal came
            composed = run_hydra(runner.train_job, [f"sweep={name}", *overrides], multirun=True)
    except BaseException:
        # Stopped while a worker was booting, or a second press: joblib raises what the worker saw. What the
        # jobs finished is on disk, and the continue line (the caller's, on None) resumes the rest.
        if not stop_requested():
            raise
    if stop_requested():
        return None
    sweep_dir = next(value_of(o) for o in parse(overrides) if key_of(o) == "hydra.sweep.dir")
    refused = [(run, why) for run, status, why in runner.outcomes if status in ("failed", "refused")]
    report = finish_sweep(Path(sweep_dir), name, refused=refused, probes=any(c.eval.get("probes") for c in composed))
    print_report(report)
    return report


def _register_results() -> None:
    from ropebench.cli.results import plot, table  # imports only typer and ropebench.errors

    app.command()(user_errors(plot))
    app.command()(user_errors(table))


_register_results()


def _register_extend() -> None:
    from ropebench.cli.extend import extend  # imports only typer and ropebench.errors

    app.command("extend", context_settings=HYDRA_ARGS)(user_errors(extend))


_register_extend()


def _register_data_report() -> None:
    from ropebench.cli.data_report import data_report_command

    app.command("data-report")(user_errors(data_report_command))


_register_data_report()


def _register_passkey() -> None:
    from ropebench.cli.passkey import passkey  # imports only typer and ropebench.errors
    from ropebench.cli.probe import probe

    app.command("passkey")(user_errors(passkey))
    app.command("probe")(user_errors(probe))


_register_passkey()


def _register_eval_task() -> None:
    from ropebench.cli.task import eval_task  # imports only typer and the CLI helpers

    app.command("eval-task")(user_errors(eval_task))


_register_eval_task()


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
