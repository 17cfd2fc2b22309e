"""Time every usable RoPE backend against the memory-bandwidth floor measured in the same run.

A separate RoPE pass must at least read q and k and write them back: 4 * B*S*H*D * bytes per element (the
backward is one more such pass). Achieved GB/s is reported against a large device-to-device copy timed in
the same process, so the fraction is comparable across machines. On the CPU only the plumbing is exercised:
the numbers say nothing about a GPU.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ropebench.core.rope import backends
from ropebench.core.rope.freqs import rope_inv_freq, rope_tables
from ropebench.core.rope.reference import PAIRINGS
from ropebench.errors import UserError, choose

# (B, S, H, D): the three shapes of the H100 reference measurements (results/kernels/NOTES.md), and CPU-sized ones.
H100_SHAPES = [(8, 4096, 32, 128), (32, 1024, 12, 64), (4, 16384, 8, 64)]
SMALL_SHAPES = [(2, 128, 4, 32), (1, 256, 4, 64)]
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
CPU_NOTE = (
    "CPU run: these numbers only check that the benchmark works; absolute timings mean something on a GPU."
)


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device '{name}' requested but CUDA is not available here; use --device cpu")
    return device


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model and core count (what a reader needs to weigh an absolute time)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), model)
    except OSError:
        pass
    return f"CPU: {model}, {os.cpu_count()} cores"


def parse_shape(text: str) -> tuple[int, int, int, int]:
    """'B,S,H,D' -> a tuple of four positive ints."""
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if len(shape) != 4 or min(shape) <= 0:
        raise UserError(f"--shape must be four positive integers B,S,H,D (e.g. 8,4096,32,128), got '{text}'")
    return shape


def time_ms(fn: Callable[[], object], device: torch.device, reps: int = 20, warmup: int = 3) -> float:
    """Median wall time of fn in milliseconds (do_bench / CUDA events on GPU, perf_counter on CPU)."""
    if device.type == "cuda":
        try:
            from triton.testing import do_bench

            return float(do_bench(fn, warmup=25, rep=100, return_mode="median"))
        except ImportError:
            pass
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        return statistics.median(times)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def copy_bandwidth(device: torch.device, nbytes: int | None = None) -> float:
    """Bytes/s of a large same-device copy, counting bytes read plus bytes written."""
    nbytes = nbytes or (1 << 30 if device.type == "cuda" else 1 << 26)
    src = torch.empty(nbytes, dtype=torch.uint8, device=device).fill_(1)
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), device, reps=10)
    return 2 * nbytes / (ms * 1e-3)


def default_backends(device: torch.device) -> list[str]:
    names = backends.available(device)
    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1":
        # The interpreter emulates the kernel one program at a time: seconds per call, nothing to learn.
        names = [n for n in names if n != "triton"]
    return names


def _inputs(shape, dtype, device, layout, requires_grad):
    B, S, H, D = shape
    if layout == "qkv":
        q, k, _ = (
            torch.randn(B, S, 3 * H * D, device=device, dtype=dtype)
            .view(B, S, 3, H, D)
            .permute(2, 0, 3, 1, 4)
        )
    else:
        q, k = torch.randn(2, B, H, S, D, device=device, dtype=dtype)
    return q.detach().requires_grad_(requires_grad), k.detach().requires_grad_(requires_grad)


def _shape_list(shapes: str, extra_shape: tuple[int, int, int, int] | None, dev: torch.device) -> list[tuple]:
    shape_set = choose("shape set", shapes, ("auto", "h100", "small", "none"))
    if shape_set == "auto":
        shape_set = "h100" if dev.type == "cuda" else "small"
    todo = {"h100": H100_SHAPES, "small": SMALL_SHAPES, "none": []}[shape_set] + (
        [extra_shape] if extra_shape else []
    )
    if not todo:
        raise UserError("no shapes to time: --shapes none needs --shape B,S,H,D")
    return todo


def _backend_names(names: list[str] | None, dev: torch.device) -> list[str]:
    usable = backends.available(dev)
    names = names or default_backends(dev)
    for name in names:
        if name not in usable:
            backends.resolve(name, dev)  # raises the UserError that says why and how to get it
    return names


def _timed_call(apply, q, k, cos, sin, pairing: str, backward: bool) -> Callable[[], object]:
    """The forward pass, or the forward pass and the gradients of q and k for fixed random output gradients."""
    if not backward:
        return lambda: apply(q, k, cos, sin, pairing)
    grads = (torch.randn_like(q), torch.randn_like(k))
    return lambda: torch.autograd.grad(apply(q, k, cos, sin, pairing), (q, k), grads)


def _format(row: dict) -> str:
    return (f"  {row['backend']:<10}{row['pass']:<9}{row['us']:>10.1f}{row['gb_per_s']:>9.1f}"
            f"{row['frac_of_copy']:>9.2f}")


def _time_shape(shape: tuple, names: list[str], torch_dtype: torch.dtype, dev: torch.device, layout: str,
                pairing: str, bandwidth: float, reps: int, echo: Callable[[str], object]) -> list[dict]:
    """Rows of every backend at one shape, forward then forward+backward, each echoed once measured."""
    B, S, H, D = shape
    inv_freq, _ = rope_inv_freq(D, 10000.0)
    cos, sin = rope_tables(inv_freq, torch.arange(S, device=dev))
    pass_bytes = 4 * B * S * H * D * torch_dtype.itemsize
    floor_us = pass_bytes / bandwidth * 1e6
    echo(f"\nB={B} S={S} H={H} D={D}: floor {floor_us:.0f} us fwd, {2 * floor_us:.0f} us fwd+bwd")
    echo(f"  {'backend':<10}{'pass':<9}{'us':>10}{'GB/s':>9}{'of copy':>9}")
    rows = []
    for name in names:
        if name == "liger" and pairing != "half":
            continue
        apply = backends.backends()[name].apply
        for kind, passes in (("fwd", 1), ("fwd+bwd", 2)):  # the backward is one more pass over q and k
            q, k = _inputs(shape, torch_dtype, dev, layout, requires_grad=kind != "fwd")
            ms = time_ms(_timed_call(apply, q, k, cos, sin, pairing, backward=kind != "fwd"), dev, reps=reps)
            rate = passes * pass_bytes / (ms * 1e-3)
            rows.append({"B": B, "S": S, "H": H, "D": D, "backend": name, "pass": kind, "us": ms * 1e3,
                         "floor_us": floor_us * passes, "gb_per_s": rate / 1e9, "frac_of_copy": rate / bandwidth})
            echo(_format(rows[-1]))
            del q, k  # free this pass's inputs before the next ones are allocated
    return rows


def bench_rope(
    shapes: str = "auto",
    extra_shape: tuple[int, int, int, int] | None = None,
    names: list[str] | None = None,
    dtype: str = "bf16",
    pairing: str = "half",
    layout: str = "qkv",
    device: str = "auto",
    reps: int = 20,
    echo: Callable[[str], object] = print,
) -> dict:
    """Time forward and forward+backward of each backend per shape; returns the rows and copy bandwidth."""
    if reps <= 0:  # a median of no timings
        raise UserError(f"--reps must be positive, got {reps}")
    dev = pick_device(device)
    choose("rope pairing", pairing, PAIRINGS)
    choose("layout", layout, ("qkv", "contiguous"))
    torch_dtype = DTYPES[choose("dtype", dtype, DTYPES)]
    todo = _shape_list(shapes, extra_shape, dev)
    names = _backend_names(names, dev)
    if dev.type == "cpu":
        echo(CPU_NOTE)
    bandwidth = copy_bandwidth(dev)
    echo(
        f"device: {device_name(dev)}; copy bandwidth "
        f"{bandwidth / 1e9:.0f} GB/s (read + write); dtype {dtype}, pairing {pairing}, layout {layout}"
    )
    rows = []
    for shape in todo:
        rows += _time_shape(shape, names, torch_dtype, dev, layout, pairing, bandwidth, reps, echo)
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return {
        "bench": "rope",
        "device": str(dev),
        "device_name": device_name(dev),
        "copy_bandwidth_bytes_per_s": bandwidth,
        "dtype": dtype,
        "pairing": pairing,
        "layout": layout,
        "torch": torch.__version__,
        "rows": rows,
    }
