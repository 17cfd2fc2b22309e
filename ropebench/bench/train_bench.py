"""Training-step cost of each position encoding, relative to NoPE measured in the same run.

The model is ropebench's own GPT with only the encoding changed; tokens are random (speed does not depend
on them). On CUDA: bf16 autocast and fused AdamW, as the H100 reference numbers in results/kernels/NOTES.md were taken.
MFU uses nanoGPT's estimate: 6N + 12*L*H*Q*T FLOPs per token (N parameters doing compute, Q the head dim).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
import statistics
import time
from collections.abc import Callable

import torch
from omegaconf import OmegaConf

from ropebench.bench.rope_bench import device_name, pick_device
from ropebench.core.rope import backends
from ropebench.errors import UserError, choose
from ropebench.run.config import ModelConfig
from ropebench.run.trainer import peak_flops as known_peak_flops

# name: (model config, batch size, sequence length, vocabulary)
PRESETS = {
    "gpt2": (dict(name="gpt2", n_layer=12, n_head=12, n_embd=768), 16, 1024, 50257),
    "tiny": (dict(name="tiny", n_layer=4, n_head=4, n_embd=128), 8, 64, 256),
}


def pick_preset(model: str, device: torch.device) -> str:
    """A PRESETS name; "auto" is the GPT-2 shape on CUDA and the tiny model elsewhere."""
    preset = choose("model preset", model, ("auto", *PRESETS))
    return ("gpt2" if device.type == "cuda" else "tiny") if preset == "auto" else preset


def default_encodings(device: torch.device) -> list[str]:
    rope = [
        f"rope:{name}"
        for name in backends.available(device)
        # interpreted Triton on the CPU is an emulator: correct, but seconds per call
        if not (device.type == "cpu" and name == "triton" and os.environ.get("TRITON_INTERPRET") == "1")
    ]
    return ["nope", "learned", *rope, "alibi", "t5"]


def pe_config(spec: str):
    """'rope:triton' -> the rope config with backend=triton; 'alibi' -> alibi's default config."""
    from ropebench.core.pe import registry

    name, _, backend = spec.partition(":")
    entry = registry().get(name)
    if entry is None:
        raise UserError(
            f"unknown encoding '{name}' in --encodings; choose from: {', '.join(sorted(registry()))} "
            "(rope may name a backend, e.g. rope:triton)"
        )
    if backend and name != "rope":
        raise UserError(f"only rope takes a backend (rope:<backend>), got '{spec}'")
    return OmegaConf.structured(entry.config_cls(backend=backend) if backend else entry.config_cls())


def _free(device: torch.device, compiled: bool) -> None:
    # The default sweep of encodings runs in one process: drop the last model's graphs and memory first.
    if compiled:
        torch._dynamo.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def time_steps(
    spec: str,
    model_cfg,
    batch_size: int,
    seq_len: int,
    vocab: int,
    steps: int,
    warmup: int,
    compile_model: bool,
    device: torch.device,
    compile_backend: str = "inductor",
) -> tuple[float, float]:
    """Median ms per training step and FLOPs per token for one encoding."""
    from ropebench.core.model import GPT

    torch.manual_seed(0)
    model = GPT(model_cfg, pe_config(spec), vocab_size=vocab, train_seq_len=seq_len).to(device)
    fpt = model.flops_per_token(seq_len)
    cuda = device.type == "cuda"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=cuda)
    step_model = torch.compile(model, backend=compile_backend) if compile_model else model
    tokens = torch.randint(0, vocab, (batch_size, seq_len + 1), device=device)
    x, y = tokens[:, :-1], tokens[:, 1:]
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()

    def step():
        with autocast:
            _, loss = step_model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    times = []
    for i in range(warmup + steps):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), fpt


def _sizes(dev: torch.device, preset: str, batch_size: int, seq_len: int, steps: int, warmup: int) -> tuple:
    """Batch size, sequence length, steps and warm-up steps: the preset's or the device's default for 0 (-1)."""
    if warmup < -1:  # only -1 means "the default"; another negative count is a mistake, not the default
        raise UserError(f"--warmup must be 0 or more (-1: 10 on CUDA, 2 on CPU), got {warmup}")
    _, default_batch, default_len, _ = PRESETS[preset]
    batch_size, seq_len = batch_size or default_batch, seq_len or default_len
    steps = steps or (20 if dev.type == "cuda" else 5)
    warmup = warmup if warmup >= 0 else (10 if dev.type == "cuda" else 2)
    for name, value in (("--batch-size", batch_size), ("--seq-len", seq_len), ("--steps", steps)):
        if value <= 0:
            raise UserError(f"{name} must be positive, got {value}")
    return batch_size, seq_len, steps, warmup


def _check_encodings(encodings: list[str], dev: torch.device) -> None:
    for spec in encodings:
        pe_config(spec)  # fail on a bad name before minutes of timing
        _, _, backend = spec.partition(":")
        if backend:
            backends.resolve(backend, dev)


def _time_mode(mode: str, encodings: list[str], time_one: Callable, tokens_per_step: int, peak: float,
               dev: torch.device) -> list[dict]:
    """Rows of every encoding in one mode (eager or compiled), with the ratio to NoPE when NoPE is among them."""
    rows = []
    for spec in encodings:
        ms, fpt = time_one(spec, compile_model=mode == "compiled")
        _free(dev, mode == "compiled")
        tokens_per_s = tokens_per_step / (ms * 1e-3)
        rows.append({"encoding": spec, "mode": mode, "ms_per_step": ms, "tokens_per_s": tokens_per_s,
                     "ratio_to_nope": None, "mfu": fpt * tokens_per_s / peak if peak else None})
    nope = [r["ms_per_step"] for r in rows if r["encoding"] == "nope"]
    for r in rows:
        r["ratio_to_nope"] = r["ms_per_step"] / nope[0] if nope else None
    return rows


def _format(row: dict) -> str:
    ratio = f"{row['ratio_to_nope']:.3f}" if row["ratio_to_nope"] is not None else "-"
    mfu = f"{row['mfu']:.1%}" if row["mfu"] is not None else "-"
    return f"  {row['encoding']:<16}{row['ms_per_step']:>9.2f}{row['tokens_per_s']:>12.0f}{ratio:>8}{mfu:>7}"


def bench_train(
    encodings: list[str] | None = None,
    model: str = "auto",
    batch_size: int = 0,
    seq_len: int = 0,
    steps: int = 0,
    warmup: int = -1,
    compile_model: bool = False,
    peak_flops: float = 0.0,
    device: str = "auto",
    echo: Callable[[str], object] = print,
    compile_backend: str = "inductor",
) -> dict:
    """Time training steps per encoding, eager (and compiled with ``compile_model``); returns the rows.

    ``peak_flops`` 0 means the GPU's dense bf16 peak when ropebench knows it (no MFU otherwise);
    ``compile_backend`` other than inductor (e.g. eager) only checks the compiled plumbing quickly."""
    dev = pick_device(device)
    preset = pick_preset(model, dev)
    arch, _, _, vocab = PRESETS[preset]
    batch_size, seq_len, steps, warmup = _sizes(dev, preset, batch_size, seq_len, steps, warmup)
    if peak_flops < 0:
        raise UserError(f"--peak-tflops must be positive (or 0: the GPU's known peak), got {peak_flops / 1e12}")
    peak = known_peak_flops(dev, peak_flops / 1e12)
    model_cfg = OmegaConf.structured(ModelConfig(**arch))
    precision = "bf16 autocast, fused AdamW" if dev.type == "cuda" else "fp32"
    encodings = encodings or default_encodings(dev)
    _check_encodings(encodings, dev)
    if dev.type == "cpu":
        echo("CPU run: these numbers only check that the benchmark works; MFU and ratios need a GPU")
    echo(
        f"model {preset}: {model_cfg.n_layer} layers, {model_cfg.n_embd} wide, {model_cfg.n_head} heads; "
        f"batch {batch_size} x {seq_len} tokens; {precision}; "
        f"median of {steps} steps after {warmup} warm-up"
    )
    time_one = functools.partial(time_steps, model_cfg=model_cfg, batch_size=batch_size, seq_len=seq_len,
                                 vocab=vocab, steps=steps, warmup=warmup, device=dev, compile_backend=compile_backend)
    rows = []
    for mode in ["eager", "compiled"] if compile_model else ["eager"]:
        echo(f"\n{mode}:\n  {'encoding':<16}{'ms/step':>9}{'tokens/s':>12}{'x NoPE':>8}{'MFU':>7}")
        mode_rows = _time_mode(mode, encodings, time_one, batch_size * seq_len, peak, dev)
        for r in mode_rows:
            echo(_format(r))
        rows += mode_rows
    return {"bench": "train", "device": str(dev), "device_name": device_name(dev),
            "compile_backend": compile_backend if compile_model else None, "model": preset, "batch_size": batch_size,
            "seq_len": seq_len, "steps": steps, "warmup": warmup, "peak_flops": peak, "torch": torch.__version__,
            "rows": rows}
