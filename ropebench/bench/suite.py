"""``ropebench bench all``: every GPU measurement of results/kernels/NOTES.md in one command.

Each step writes one JSON; a failing step is recorded and the others still run; ``tables.md`` and
``gpu_check.json`` (what ran, how long, what failed, software versions) are written at the end. ``smoke``
runs the same steps with tiny shapes on any device, so the plumbing is tested where no GPU is.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ropebench.bench.eval_bench import bench_eval
from ropebench.bench.report import write_tables
from ropebench.bench.rope_bench import bench_rope, device_name
from ropebench.bench.train_bench import bench_train
from ropebench.errors import UserError
from ropebench.run.trainer import PEAK_BF16

REPO = Path(__file__).resolve().parents[2]
CORRECTNESS_TESTS = ["tests/test_rope_backends.py", "tests/test_bench.py"]
NO_CUDA = ("no CUDA device: torch {torch} sees no GPU here; `ropebench bench all` / scripts/gpu_check.sh measure "
           "GPU kernels -- run it on a machine with an NVIDIA GPU (or add --smoke to check the plumbing on the CPU)")


@dataclass
class Step:
    name: str  # the JSON written is <name>_<gpu tag>.json
    fn: Callable[..., dict]
    kwargs: dict
    smoke: dict = field(default_factory=dict)  # overrides for the tiny CPU run


_ROPE_SMOKE = dict(device="cpu", shapes="none", extra_shape=(1, 16, 2, 8), names=["torch"], reps=1)
_TRAIN_SMOKE = dict(device="cpu", model="tiny", batch_size=2, seq_len=16, steps=1, warmup=1, compile_backend="eager",
                    encodings=["nope", "rope:torch", "alibi"])
STEPS = [
    # Triton (and every usable backend) against copy bandwidth: fwd and fwd+bwd at the three shapes of the H100
    # reference measurements (results/kernels/NOTES.md)
    Step("rope_qkv_half", bench_rope, dict(shapes="h100"), _ROPE_SMOKE),
    Step("rope_contiguous_half", bench_rope, dict(shapes="h100", layout="contiguous"), _ROPE_SMOKE),
    Step("rope_qkv_interleaved", bench_rope, dict(shapes="h100", pairing="interleaved"), _ROPE_SMOKE),
    Step("rope_long", bench_rope, dict(shapes="none", extra_shape=(1, 65536, 32, 128)), _ROPE_SMOKE),
    # RoPE (every usable backend, so the real liger-kernel when installed) / ALiBi / T5 step time vs NoPE at
    # the GPT-2 124M shape, eager and whole-model compiled, with MFU
    Step("train_gpt2", bench_train, dict(model="gpt2", compile_model=True), _TRAIN_SMOKE),
    # evaluation: tokens/s at 1x, 4x, 16x the training length, and peak memory of one 64k-token sequence
    Step("eval_speed", bench_eval, dict(model="gpt2", encodings=["rope", "alibi", "t5"]),
         dict(device="cpu", model="tiny", train_len=16, n_tokens=64, batch_tokens=64, reps=1)),
    Step("eval_memory_64k", bench_eval,
         dict(model="gpt2", encodings=["t5", "alibi"], lengths=[65536], n_tokens=65536, batch_tokens=65536,
              reps=1),
         dict(device="cpu", model="tiny", lengths=[256], n_tokens=256, batch_tokens=256)),
]


def gpu_tag(smoke: bool) -> str:
    if smoke:
        return "cpu_smoke"
    name = torch.cuda.get_device_name()
    return next((key.lower().replace(" ", "") for key in PEAK_BF16 if key in name), "gpu")


def versions() -> dict:
    found = {"torch": torch.__version__, "python": sys.version.split()[0]}
    for package in ("ropebench", "triton", "liger-kernel"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = None
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO)
    found["commit"] = commit.stdout.strip() or None
    return found


def run_tests(out: Path, echo) -> dict:
    """The CUDA correctness tests (real Triton, real Liger when installed), log kept beside the JSON."""
    tests = [t for t in CORRECTNESS_TESTS if (REPO / t).is_file()]
    if not tests:
        return {"status": "skipped: no tests/ directory (run from a source checkout)"}
    echo(f"\n== correctness: pytest {' '.join(tests)}")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", *tests], cwd=REPO, capture_output=True, text=True)
    (out / "pytest.log").write_text(proc.stdout + proc.stderr)
    last = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
    echo(f"   {last}")
    return {"status": "ok" if proc.returncode == 0 else f"failed: {last} (see pytest.log)"}


def run_step(step: Step, out: Path, tag: str, smoke: bool, echo) -> dict:
    kwargs = {**step.kwargs, **(step.smoke if smoke else {})}
    echo(f"\n== {step.name}")
    start = time.perf_counter()
    try:
        result = step.fn(**kwargs, echo=echo)
    except (UserError, RuntimeError, MemoryError) as exc:  # record it; the other steps still run
        (out / f"{step.name}_{tag}.error.txt").write_text(traceback.format_exc())
        return {"status": f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}",
                "seconds": time.perf_counter() - start}
    path = out / f"{step.name}_{tag}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return {"status": "ok", "json": path.name, "seconds": time.perf_counter() - start}


def run_all(out: Path, smoke: bool = False, tests: bool = True, only: list[str] | None = None,
            echo: Callable[[str], object] = print) -> dict:
    """Run every step (or those named in ``only``); returns the summary also written to gpu_check.json."""
    if not smoke and not torch.cuda.is_available():
        raise UserError(NO_CUDA.format(torch=torch.__version__))
    names = [s.name for s in STEPS]
    for name in only or []:
        if name not in names:
            raise UserError(f"unknown step '{name}' in --only; choose from: {', '.join(names)}")
    out.mkdir(parents=True, exist_ok=True)
    tag = gpu_tag(smoke)
    device = "cpu (smoke: tiny shapes, numbers mean nothing)" if smoke else device_name(torch.device("cuda"))
    summary = {"device": device, "versions": versions(), "steps": {}}
    if not summary["versions"]["liger-kernel"]:
        echo("liger-kernel is not installed: no liger rows (pip install liger-kernel to add them)")
    if tests and not smoke and not only:
        summary["steps"]["correctness_tests"] = run_tests(out, echo)
    for step in STEPS:
        if not only or step.name in only:
            summary["steps"][step.name] = run_step(step, out, tag, smoke, echo)
    (out / f"gpu_check_{tag}.json").write_text(json.dumps(summary, indent=2) + "\n")
    tables = write_tables(out)
    echo(f"\nwrote {tables} and {out / f'gpu_check_{tag}.json'}")
    for name, result in summary["steps"].items():
        echo(f"  {name:<24}{result['status']}")
    return summary
