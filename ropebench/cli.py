"""The command line: Typer parses, Hydra composes, plain functions in the package do the work.

Every command turns a UserError into one line on stderr and exit code 2 -- never a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from ropebench.errors import UserError, user_errors

app = typer.Typer(
    name="ropebench", add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
    help="Train small GPTs that differ only in position encoding at one length; measure perplexity far "
         "beyond it; plot the results. Offline, CPU or GPU.",
)
HYDRA_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True}


def _echo_outcomes(outcomes) -> int:
    failed = 0
    for run_dir, status, message in outcomes:
        if status == "failed":
            failed += 1
            typer.echo(f"error: {message}", err=True)
        else:
            typer.echo(str(run_dir))
    return failed


@app.command(context_settings=HYDRA_ARGS)
@user_errors
def train(ctx: typer.Context):
    """Train one model. Arguments are Hydra overrides, e.g.

    ropebench train pe=alibi train.seq_len=128 train.steps=2000 model=small seed=1 hydra.run.dir=runs/a

    Groups: model (tiny|small|gpt2), pe (rope|sinusoidal|learned|t5|alibi|nope|xpos|kerple|fire), data (stdlib|
    text_files|wikitext103|passkey), launcher (sequential|joblib|slurm|submitit_local). `resume=RUN_DIR`
    continues an interrupted run. Prints the run directory at the end.
    """
    from ropebench import runner
    from ropebench.hydra_app import run_hydra

    overrides = list(ctx.args)
    for item in overrides:
        if item.startswith("resume="):
            target = Path(item.split("=", 1)[1])
            if not (target / ".hydra" / "config.yaml").is_file():
                raise UserError(f"cannot resume '{target}': not a ropebench run directory")
            overrides = [o for o in overrides if not o.startswith("hydra.run.dir=")]
            overrides.append(f"hydra.run.dir={target}")
    from ropebench.distributed import require_run_dir

    require_run_dir(overrides)  # under torchrun every rank must agree on one run directory
    runner.outcomes.clear()
    run_hydra(runner.train_job, overrides)
    if _echo_outcomes(runner.outcomes):
        raise typer.Exit(1)


@app.command("eval-length")
@user_errors
def eval_length(
    run_dir: Path = typer.Argument(..., help="A finished run directory."),
    lengths: str = typer.Option(None, help="Comma-separated lengths; default 1x,1.25x,1.5x,2x,4x,8x,16x of training."),
    protocol: str = typer.Option("nonoverlapping", help="nonoverlapping (ALiBi paper) or sliding."),
    stride: int = typer.Option(None, help="Sliding-window stride (default: half the evaluation length)."),
    rope_scaling: str = typer.Option("none", help="RoPE runs: none, linear, ntk, dynamic or yarn."),
    factor: float = typer.Option(None, help="Scaling factor (default: eval_len / train_len at each length)."),
    attention_factor: float = typer.Option(None, help="YaRN attention factor (default 0.1 ln(factor) + 1)."),
    beta_fast: float = typer.Option(32.0, help="YaRN: rotations in the training length where the ramp starts."),
    beta_slow: float = typer.Option(1.0, help="YaRN: rotations where it ends."),
    max_tokens: int = typer.Option(None, help="Tokens scored per length (default from the run's eval.max_tokens)."),
    device: str = typer.Option(None, help="auto, cpu, cuda (default: the run's train.device)."),
):
    """Perplexity of a finished run at each evaluation length, merged into RUN_DIR/eval_length.csv."""
    from ropebench.evaluate import eval_length as run_eval
    from ropebench.evaluate import parse_lengths
    from ropebench.rope.freqs import normalize_scaling
    from ropebench.rundir import load_config

    cfg = load_config(run_dir)
    spec = None
    if rope_scaling not in ("none", "default"):
        spec = {"rope_type": rope_scaling, "factor": factor, "beta_fast": beta_fast, "beta_slow": beta_slow,
                "attention_factor": attention_factor}
        normalize_scaling({**spec, "factor": factor or 1.0})  # validate before any work
    elif factor is not None:
        raise UserError("--factor needs --rope-scaling linear|ntk|dynamic|yarn")
    if max_tokens is not None and max_tokens < 0:
        raise UserError(f"--max-tokens must be >= 0, got {max_tokens}")
    rows = run_eval(run_dir, parse_lengths(lengths, cfg.train.seq_len), protocol=protocol, stride=stride,
                    rope_scaling=spec, max_tokens=max_tokens, device=device)
    typer.echo(str(Path(run_dir) / "eval_length.csv"))
    if any(r["status"].startswith("error") for r in rows):
        raise typer.Exit(1)


@app.command()
@user_errors
def plot(
    paths: list[Path] = typer.Argument(..., help="Run and/or sweep directories; or `decay [RUN_DIR]`."),
    out: Path = typer.Option(Path("ropebench.png"), help="Output file (PNG; a PDF is written beside it)."),
    protocol: str = typer.Option("nonoverlapping", help="Which protocol's rows to draw."),
    by_position: bool = typer.Option(False, "--by-position", help="Loss against token position instead."),
    passkey: bool = typer.Option(False, "--passkey", help="Passkey accuracy heatmaps (length x depth)."),
    band: str = typer.Option("minmax", help="Across seeds: minmax or std."),
    head_dim: int = typer.Option(None, help="decay: RoPE head dimension (default: the run's, else 128)."),
    base: float = typer.Option(None, help="decay: RoPE base (default: the run's, else 10000)."),
    max_distance: int = typer.Option(None, help="decay: largest relative distance (default 16x train length)."),
):
    """Perplexity against evaluation length, one line per encoding (mean and band across seeds).

    `ropebench plot decay [RUN_DIR]` draws RoFormer's long-term-decay bound instead, and with a RoPE run the
    measured mean attention score against relative distance.
    """
    from ropebench.errors import choose
    from ropebench.plot import plot_length, plot_positions

    choose("band", band, ("minmax", "std"))
    if paths and str(paths[0]) == "decay":
        written = _plot_decay(paths[1:], out, head_dim, base, max_distance)
    elif passkey:
        from ropebench.plot_passkey import plot_passkey

        written = plot_passkey(paths, out)
    elif by_position:
        written = plot_positions(paths, out)
    else:
        written = plot_length(paths, out, protocol=protocol, band=band)
    for path in written:
        typer.echo(str(path))


def _plot_decay(run_dirs: list[Path], out: Path, head_dim, base, max_distance):
    from ropebench.decay import measured_attention_by_distance, plot_decay

    if len(run_dirs) > 1:
        raise UserError(f"plot decay takes at most one run directory, got {len(run_dirs)}")
    measured = None
    if run_dirs:
        import torch

        from ropebench.data import load_corpus
        from ropebench.rundir import load_model

        model, cfg = load_model(run_dirs[0])
        if cfg.pe.name not in ("rope", "xpos"):
            raise UserError(f"plot decay needs a RoPE-family run; {run_dirs[0]} uses pe={cfg.pe.name}")
        head_dim = head_dim or model.pe.rotary_dim
        base = base or float(cfg.pe.base)
        max_distance = max_distance or 16 * int(cfg.train.seq_len)
        val = load_corpus(cfg.data).val
        spans = val.documents(min_len=max_distance + 1)[:8]
        if not spans:
            raise UserError(f"no validation document has {max_distance + 1} tokens; lower --max-distance")
        tokens = torch.stack([torch.from_numpy(val.tokens[s : s + max_distance + 1].astype("int64"))
                              for s, _ in spans])
        measured = measured_attention_by_distance(model, tokens)
    return plot_decay(head_dim or 128, base or 10000.0, max_distance or 256, out, measured=measured)


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
    from ropebench.table import perplexity_table

    choose("format", format, ("md", "csv", "latex"))
    wanted = None
    if lengths:
        from ropebench.evaluate import parse_lengths

        wanted = parse_lengths(lengths, 1)
    typer.echo(perplexity_table(paths, lengths=wanted, fmt=format, protocol=protocol))


@app.command(context_settings=HYDRA_ARGS)
@user_errors
def sweep(ctx: typer.Context, name: str = typer.Argument(..., help="A sweep config in conf/sweep/.")):
    """Run a sweep (Hydra multirun), then evaluate, tabulate and plot every run. `compare` is the main job.

    Extra arguments are Hydra overrides, sweeps included: `ropebench sweep compare seed=0,1 train.steps=500`.
    `hydra.sweep.dir=DIR` chooses where it lives; relaunching into the same DIR skips finished runs.
    """
    from ropebench import runner
    from ropebench.errors import choose
    from ropebench.hydra_app import run_hydra
    from ropebench.sweep import default_sweep_dir, finish_sweep, print_report, sweep_names

    choose("sweep", name, sweep_names())
    overrides = list(ctx.args)
    sweep_dir = next((o.split("=", 1)[1] for o in overrides if o.startswith("hydra.sweep.dir=")), None)
    if sweep_dir is None:
        sweep_dir = default_sweep_dir(name)
        overrides.append(f"hydra.sweep.dir={sweep_dir}")
    # Name each job's directory by what it sweeps only (pe=alibi,seed=1), not by the settings all jobs share.
    def key(o):
        return o.split("=", 1)[0].lstrip("+~")

    swept = {key(o) for o in overrides if "=" in o and "," in o.split("=", 1)[1]}
    shared = [key(o) for o in overrides if "=" in o and not o.startswith("hydra") and key(o) not in swept]
    if shared:
        overrides.append(f"hydra.job.config.override_dirname.exclude_keys=[{','.join(['sweep', *shared])}]")
    runner.outcomes.clear()
    run_hydra(runner.train_job, [f"sweep={name}", *overrides], multirun=True)
    report = finish_sweep(Path(sweep_dir), name)
    print_report(report)
    if report.failed or report.unfinished:
        raise typer.Exit(1)


def _register_passkey() -> None:
    from ropebench.passkey_cli import passkey  # imports only typer and ropebench.errors

    app.command("passkey")(user_errors(passkey))


_register_passkey()


def _mount_optional() -> None:
    try:
        from ropebench.bench.cli import bench_app
    except ImportError:
        return
    app.add_typer(bench_app, name="bench", help="Benchmarks: RoPE kernels and training steps.")


_mount_optional()


def main() -> None:
    app(prog_name="ropebench")


if __name__ == "__main__":
    sys.exit(main())
