"""`ropebench passkey RUN_DIR`: passkey retrieval accuracy by length and depth, and the effective context.

Registered in ropebench/cli.py; kept in its own module so the task's code lives in one place.
"""

from __future__ import annotations

from pathlib import Path

import typer

from ropebench.errors import UserError


def passkey(
    run_dir: Path = typer.Argument(..., help="A finished run directory."),
    lengths: str = typer.Option(None, help="Comma-separated lengths; default 1x,2x,4x,8x of training."),
    depths: str = typer.Option("0,0.25,0.5,0.75,1", help="Comma-separated key depths in [0, 1] (0: first)."),
    trials: int = typer.Option(32, help="Sequences (random keys) per length and depth."),
    rope_scaling: str = typer.Option("none", help="RoPE runs: none, linear, ntk, dynamic or yarn."),
    factor: float = typer.Option(None, help="Scaling factor (default: eval_len / train_len at each length)."),
    device: str = typer.Option(None, help="auto, cpu, cuda (default: the run's train.device)."),
):
    """Passkey retrieval: exact-match accuracy of the 5 greedy digits, merged into RUN_DIR/passkey.csv."""
    from ropebench import passkey as pk
    from ropebench.evaluate import parse_lengths
    from ropebench.rope.freqs import normalize_scaling
    from ropebench.rundir import load_config

    cfg = load_config(run_dir)
    train_len = int(cfg.train.seq_len)
    # Validate every argument before loading the model, so a typo costs nothing and writes nothing.
    wanted = parse_lengths(lengths, train_len) if lengths else [m * train_len for m in pk.DEFAULT_MULTIPLES]
    for length in wanted:
        pk.check_length(length)
    wanted_depths = pk.parse_depths(depths)
    if trials <= 0:
        raise UserError(f"--trials must be a positive integer, got {trials}")
    spec = None
    if rope_scaling not in ("none", "default"):
        spec = {"rope_type": rope_scaling, "factor": factor}
        normalize_scaling({**spec, "factor": factor or 1.0})
    elif factor is not None:
        raise UserError("--factor needs --rope-scaling linear|ntk|dynamic|yarn")
    rows = pk.passkey_accuracy(run_dir, wanted, wanted_depths, trials, rope_scaling=spec, device=device)
    for label, found in pk.effective_contexts(rows).items():
        text = ", ".join(f"{name.upper()} (>= {pk.THRESHOLDS[name]:.0%}): {found[name] or 'none'}" for name in found)
        typer.echo(f"effective context [{label}] {text}", err=True)
    typer.echo(str(Path(run_dir) / pk.CSV_NAME))
    if any(r["status"].startswith("error") for r in rows):
        raise typer.Exit(1)
