"""`ropebench passkey PATH...`: passkey retrieval accuracy by length and depth, and the effective context.

Registered in ropebench/cli/app.py; kept in its own module so the task's code lives in one place. The RoPE-scaling
options are declared here once (``scaling_options``) and shared with `eval-length`.
"""

from __future__ import annotations

import functools
import inspect
from pathlib import Path

import typer

from ropebench.cli.hf_eval import PATHS_HELP, each_run, echo_effective_context, hf_options
from ropebench.errors import UserError

# The scaling types of ropebench.core.rope.freqs (SCALING_NAMES), written out: importing the registry imports torch,
# and every command's --help must start in well under a second. tests/test_cli_speed.py keeps the two equal.
SCALING_TYPES = ("none", "linear", "ntk", "dynamic", "yarn", "llama3", "longrope")
_TYPES = ", ".join(SCALING_TYPES)
# ropebench.core.temperature.AT_EVALUATION (the --logit-scale values), written out for the same reason.
LOGIT_SCALES = ("none", "logn")
# name: (type, option). Every default is None ("not given"): the defaults named in the help are applied by
# ropebench.core.rope.freqs, the one place that knows them.
_SCALING_OPTIONS = {
    "rope_scaling": (str, typer.Option(None, help=f"RoPE runs: {_TYPES} (Hugging Face's rope_type names; ntk "
                                                  "is ropebench's static NTK-aware base change b*s^(d/(d-2)), "
                                                  "not an HF type). Default: as the run was trained (its "
                                                  "pe.scaling, none for most runs); none: the raw model.")),
    "factor": (float, typer.Option(None, help="Scaling factor s >= 1 (default: eval_len / train_len at each length; "
                                              "dynamic: 1, since it grows with the length by itself).")),
    "attention_factor": (float, typer.Option(None, help="yarn, longrope: factor on cos and sin (default: yarn "
                                                        "0.1 ln(s) + 1, longrope sqrt(1 + ln(s) / ln(train_len))).")),
    "beta_fast": (float, typer.Option(None, help="yarn: rotations within the training length where the ramp "
                                                 "starts (default 32).")),
    "beta_slow": (float, typer.Option(None, help="yarn: rotations where it ends (default 1).")),
    "original_len": (int, typer.Option(None, help="The length the model learned positions at, which the scaling "
                                                  "stretches from (HF's original_max_position_embeddings; default: "
                                                  "the run's init_from source length, else its training length).")),
    "mscale": (float, typer.Option(None, help="yarn, with --mscale-all-dim: attention factor = "
                                              "(0.1 mscale ln s + 1) / (0.1 mscale_all_dim ln s + 1).")),
    "mscale_all_dim": (float, typer.Option(None, help="yarn: see --mscale.")),
    "low_freq_factor": (float, typer.Option(None, help="llama3: pairs turning fewer times than this within the "
                                                       "training length are divided by s (default 1).")),
    "high_freq_factor": (float, typer.Option(None, help="llama3: pairs turning more times than this are kept "
                                                        "(default 4).")),
    "short_factor": (str, typer.Option(None, help="longrope: comma-separated divisor per rotary pair, up to the "
                                                  "training length.")),
    "long_factor": (str, typer.Option(None, help="longrope: comma-separated divisor per rotary pair, beyond it.")),
}


_LOGIT_SCALE = typer.Option(None, "--logit-scale", help=f"Attention temperature at evaluation, any run: "
                            f"{', '.join(LOGIT_SCALES)} (logn: Qwen's queries x max(1, log_L i)). Default: as the "
                            "run was trained (DroPE runs: their fitted 1 + c ln(s); none for the others).")


def scaling_options(command):
    """Give a Typer command the RoPE-scaling options, and ``--logit-scale`` when it takes a ``logit_scale``
    parameter. The command takes a ``rope_scaling`` parameter and receives the validated spec (None:
    `--rope-scaling none`) that ``freqs.scaling_from_options`` builds from them, or ``AS_TRAINED`` when no scaling
    option was given (the run's own trained scaling); ``logit_scale`` receives the --logit-scale name, or
    ``AS_TRAINED``."""
    signature = inspect.signature(command)
    options = {**_SCALING_OPTIONS, **({"logit_scale": (str, _LOGIT_SCALE)} if "logit_scale" in signature.parameters
                                      else {})}
    kept = [p for name, p in signature.parameters.items() if name not in ("rope_scaling", "logit_scale")]
    added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind)
             for name, (kind, option) in options.items()]

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from ropebench.core.rope.freqs import scaling_from_options
        from ropebench.eval.runner import AS_TRAINED

        if "logit_scale" in options:
            kwargs["logit_scale"] = _logit_scale(kwargs.pop("logit_scale"), AS_TRAINED)
        scaling = {name: kwargs.pop(name) for name in _SCALING_OPTIONS}
        rope_type = scaling.pop("rope_scaling")
        scaling["original_max_position_embeddings"] = scaling.pop("original_len")
        if rope_type is None and scaling["original_max_position_embeddings"] is not None:
            raise UserError("--original-len needs --rope-scaling (one of: " + ", ".join(SCALING_TYPES[1:]) + ")")
        if rope_type is None and all(value is None for value in scaling.values()):
            kwargs["rope_scaling"] = AS_TRAINED
        else:
            kwargs["rope_scaling"] = scaling_from_options(rope_type or "none", **scaling)
        return command(*args, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=[*kept, *added])
    wrapper.__annotations__ = {**{k: v for k, v in command.__annotations__.items()
                                  if k not in ("rope_scaling", "logit_scale")},
                               **{name: kind for name, (kind, _) in options.items()}}
    return wrapper


def _logit_scale(name: str | None, as_trained: str) -> str:
    """The --logit-scale name checked (a typo is refused before any run is read), or ``as_trained`` when not given."""
    from ropebench.core.temperature import evaluation_scale

    evaluation_scale(name, None)
    return as_trained if name is None else name


@scaling_options
@hf_options("passkey")
def passkey(
    run_dirs: list[Path] = typer.Argument(..., metavar="PATH", help=PATHS_HELP, show_default=False),
    lengths: str = typer.Option(None, help="Comma-separated lengths; default 1x,2x,4x,8x of training."),
    depths: str = typer.Option("0,0.25,0.5,0.75,1", help="Comma-separated key depths in [0, 1] (0: first)."),
    trials: int = typer.Option(32, help="Sequences (random keys) per length and depth."),
    device: str = typer.Option(None, help="auto, cpu, cuda (default: the run's train.device)."),
    rope_scaling: dict | None = None,
    logit_scale: str | None = None,  # --logit-scale (scaling_options): a name, or the run's own
):
    """Passkey retrieval accuracy by length and key depth, merged into RUN_DIR/passkey.csv of each finished run
    given or found in a sweep directory (OUT/passkey.csv for a Hugging Face model), and the effective context.

    A run: ropebench's byte-level task; a trial succeeds when its 5 greedily decoded bytes are exactly the key's
    digits. A Hugging Face model: the standard prompt in the model's own tokens; a trial succeeds when the key's
    5 digits appear in the text of its 10 greedily decoded tokens.
    """
    from ropebench.eval import passkey as pk
    from ropebench.eval.lengths import parse_lengths
    from ropebench.run.tracking import log_results

    # Every argument is checked before any model is loaded (passkey_accuracy checks the lengths against the
    # task), so a typo costs nothing and writes nothing. No lengths: the default multiples of each run's length.
    wanted = parse_lengths(lengths, 1) if lengths else None
    wanted_depths = pk.parse_depths(depths)
    if trials <= 0:
        raise UserError(f"--trials must be a positive integer, got {trials}")

    def evaluate(run_dir: Path) -> list[dict]:
        rows = pk.passkey_accuracy(run_dir, wanted, wanted_depths, trials, rope_scaling=rope_scaling, device=device,
                                   logit_scale=logit_scale)
        log_results(run_dir, rows, "passkey", warn=lambda line: typer.echo(line, err=True))  # the run's wandb
        echo_effective_context(rows)
        typer.echo(str(Path(run_dir) / pk.CSV_NAME))
        return rows

    each_run(run_dirs, evaluate)
