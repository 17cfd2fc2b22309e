"""``ropebench bench``: the Typer commands ``rope``, ``train``, ``eval``, ``all`` and ``report`` (``bench_app``, mounted
by the main CLI)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import typer

from ropebench.errors import user_errors

bench_app = typer.Typer(
    help="Benchmarks: RoPE kernels vs the bandwidth floor; training-step and evaluation cost per encoding.",
    no_args_is_help=True,
    add_completion=False,
)


def _split(text: str) -> list[str] | None:
    items = [t.strip() for t in text.split(",") if t.strip()]
    return items or None


# Options every benchmark command takes alike.
_DEVICE = typer.Option("auto", help="auto, cuda or cpu.")
_JSON = typer.Option(None, "--json", help="Also write the results to this JSON file.")
_MODEL = typer.Option("auto", help="auto (gpt2 on CUDA, tiny on CPU), gpt2 (124M shape) or tiny.")


def _run(bench: Callable[..., dict], json_path: Path | None, **kwargs) -> None:
    """Run one benchmark with its lines echoed; write its result to ``json_path`` when one is given."""
    result = bench(echo=typer.echo, **kwargs)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2) + "\n")
        typer.echo(f"\nwrote {json_path}")


@bench_app.command("rope")
@user_errors
def rope(
    shapes: str = typer.Option("auto", help="auto (h100 on CUDA, small on CPU), h100, small or none."),
    shape: str = typer.Option("", help="An extra shape B,S,H,D to time, e.g. 8,4096,32,128."),
    backends: str = typer.Option("", help="Comma-separated backends (default: every one usable here)."),
    dtype: str = typer.Option("bf16", help="bf16, fp16 or fp32."),
    pairing: str = typer.Option("half", help="half or interleaved."),
    layout: str = typer.Option(
        "qkv", help="qkv (views of a fused projection, as in the model) or contiguous."
    ),
    device: str = _DEVICE,
    reps: int = typer.Option(20, help="Timed repetitions on the CPU (CUDA uses triton's do_bench)."),
    json_path: Path = _JSON,
) -> None:
    """Time each RoPE backend, forward and forward+backward, against a device-to-device copy."""
    from ropebench.bench.rope_bench import bench_rope, parse_shape

    _run(bench_rope, json_path, shapes=shapes, extra_shape=parse_shape(shape) if shape else None,
         names=_split(backends), dtype=dtype, pairing=pairing, layout=layout, device=device, reps=reps)


@bench_app.command("train")
@user_errors
def train(
    encodings: str = typer.Option(
        "",
        help="Comma-separated encodings, e.g. nope,learned,rope:triton,alibi,t5 (default: those plus rope on every "
        "usable backend), and methods of conf/method/, e.g. irope,rnope_swa,ssmax,fox,cope.",
    ),
    model: str = _MODEL,
    batch_size: int = typer.Option(0, help="Sequences per step (0: the preset's)."),
    seq_len: int = typer.Option(0, help="Tokens per sequence (0: the preset's)."),
    steps: int = typer.Option(0, help="Timed steps (0: 20 on CUDA, 5 on CPU)."),
    warmup: int = typer.Option(-1, help="Untimed warm-up steps (-1: 10 on CUDA, 2 on CPU)."),
    rounds: int = typer.Option(1, help="Time every encoding this many times in turn (medians; for a shared CPU)."),
    cpu_time: bool = typer.Option(False, "--cpu-time", help="CPU only: time by the process's CPU time, not the "
                                  "wall clock, so other processes on a shared machine do not count (use one "
                                  "thread, OMP_NUM_THREADS=1)."),
    compile: bool = typer.Option(False, "--compile/--no-compile", help="Also time the whole model compiled."),
    peak_tflops: float = typer.Option(
        0.0, help="Peak FLOP/s for MFU, in TFLOP/s (0: the GPU's dense bf16 peak when known, e.g. H100 989)."
    ),
    device: str = _DEVICE,
    json_path: Path = _JSON,
) -> None:
    """Time training steps per position encoding or method: ms/step, tokens/s, ratios to NoPE and RoPE, MFU."""
    from ropebench.bench.train_bench import bench_train

    _run(bench_train, json_path, encodings=_split(encodings), model=model, batch_size=batch_size, seq_len=seq_len,
         steps=steps, warmup=warmup, compile_model=compile, peak_flops=peak_tflops * 1e12, device=device,
         rounds=rounds, cpu_time=cpu_time)


@bench_app.command("eval")
@user_errors
def eval_cost(
    encodings: str = typer.Option("rope,alibi", help="Comma-separated encodings, e.g. rope,alibi,t5."),
    model: str = _MODEL,
    train_len: int = typer.Option(0, help="Training length the multiples refer to (0: the preset's)."),
    lengths: str = typer.Option("", help="Comma-separated evaluation lengths (default: 1x, 4x, 16x training)."),
    tokens: int = typer.Option(0, help="Scored tokens per length (0: 2x the longest length, at least one batch)."),
    batch_tokens: int = typer.Option(8192, help="Tokens per evaluation batch (ropebench eval uses 8192)."),
    reps: int = typer.Option(3, help="Timed repetitions (medians)."),
    attention: str = typer.Option("auto", help="model.attention: auto, sdpa or flex."),
    device: str = _DEVICE,
    json_path: Path = _JSON,
) -> None:
    """Evaluation tokens/s per encoding and length through ropebench's evaluation path; peak memory on CUDA."""
    from ropebench.bench.eval_bench import bench_eval
    from ropebench.eval.lengths import parse_lengths

    _run(bench_eval, json_path, encodings=_split(encodings), model=model, train_len=train_len,
         lengths=parse_lengths(lengths, 1) if lengths else None, n_tokens=tokens, batch_tokens=batch_tokens, reps=reps,
         attention=attention, device=device)


@bench_app.command("all")
@user_errors
def run_everything(
    out: Path = typer.Option(Path("results/kernels"), help="Directory for the JSON files and tables.md."),
    smoke: bool = typer.Option(False, "--smoke", help="Tiny shapes on the CPU: checks the plumbing only."),
    tests: bool = typer.Option(True, "--tests/--no-tests", help="Run the CUDA correctness tests first."),
    only: str = typer.Option("", help="Comma-separated step names to run (default: all)."),
) -> None:
    """Every GPU measurement of results/kernels/NOTES.md: JSON per step, tables.md, gpu_check_<gpu>.json."""
    from ropebench.bench.suite import run_all

    summary = run_all(out, smoke=smoke, tests=tests, only=_split(only), echo=typer.echo)
    if any(not s["status"].startswith(("ok", "skipped")) for s in summary["steps"].values()):
        raise typer.Exit(1)


@bench_app.command("report")
@user_errors
def report(directory: Path = typer.Argument(Path("results/kernels"), help="Directory of benchmark JSONs.")) -> None:
    """(Re)write DIRECTORY/tables.md from the benchmark JSON files in it."""
    from ropebench.bench.report import write_tables
    from ropebench.errors import UserError

    if not directory.is_dir():
        raise UserError(f"'{directory}' is not a directory of benchmark JSON files")
    typer.echo(f"wrote {write_tables(directory)}")


def run_rope(argv: list[str] | None = None) -> None:
    """Entry point of scripts/bench_rope.py."""
    bench_app(["rope", *(sys.argv[1:] if argv is None else argv)], prog_name="bench_rope.py")


def run_train(argv: list[str] | None = None) -> None:
    """Entry point of scripts/bench_train.py."""
    bench_app(["train", *(sys.argv[1:] if argv is None else argv)], prog_name="bench_train.py")
