"""Training-step cost of each position encoding, relative to NoPE and to RoPE measured in the same run.

An entry is an encoding (``rope``, ``rope:triton`` for a backend) or a method of ``conf/method/`` (``irope``,
``ssmax``, ``fox``: its encoding, layer pattern and temperature, as ``ropebench train method=NAME`` builds it).

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


def method_names() -> list[str]:
    from ropebench.run.config import conf_dir

    return sorted(p.stem for p in (conf_dir() / "method").glob("*.yaml"))


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


def bench_configs(spec: str, model_cfg):
    """(model config, encoding config) of one entry of `bench train`: an encoding (``pe_config``) in
    ``model_cfg``, or a method of conf/method/ with its layers and temperature over ``model_cfg``."""
    from ropebench.core.pe import registry

    if spec not in registry() and spec in method_names():
        return _method_configs(spec, model_cfg)
    if spec.partition(":")[0] not in registry():
        raise UserError(f"unknown encoding or method '{spec}' in --encodings; choose an encoding: "
                        f"{', '.join(sorted(registry()))} (rope may name a backend, e.g. rope:triton), or a method: "
                        f"{', '.join(method_names())}")
    return model_cfg, pe_config(spec)


def _method_configs(name: str, model_cfg):
    """conf/method/NAME.yaml composed as `ropebench train method=NAME`; its layer and temperature keys over
    ``model_cfg`` (the benchmark's shape). DroPE times as RoPE: its steps before the drop are RoPE's."""
    cfg = _composed_method(name)
    model = OmegaConf.merge(model_cfg, {k: cfg.model[k] for k in ("layers", "windows", "logit_scale")})
    return model, cfg.pe


@functools.cache
def _composed_method(name: str):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from ropebench.run.config import conf_dir, register_schemas

    register_schemas()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose("config", overrides=[f"method={name}"])
    GlobalHydra.instance().clear()
    return cfg


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
    clock=time.perf_counter,
) -> tuple[float, float]:
    """Median ms per training step (by ``clock``) and FLOPs per token for one encoding."""
    from ropebench.core.model import GPT

    torch.manual_seed(0)
    model_cfg, pe_cfg = bench_configs(spec, model_cfg)
    model = GPT(model_cfg, pe_cfg, vocab_size=vocab, train_seq_len=seq_len).to(device)
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
        t0 = clock()
        step()
        if cuda:
            torch.cuda.synchronize()
        if i >= warmup:
            times.append((clock() - t0) * 1e3)
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
        bench_configs(spec, OmegaConf.structured(ModelConfig()))  # fail on a bad name before minutes of timing
        _, _, backend = spec.partition(":")
        if backend:
            backends.resolve(backend, dev)


def _time_mode(mode: str, encodings: list[str], time_one: Callable, tokens_per_step: int, peak: float,
               dev: torch.device, rounds: int = 1) -> list[dict]:
    """Rows of every encoding in one mode (eager or compiled), with the ratios to NoPE and to RoPE when they are
    among them. With ``rounds`` > 1 every encoding is timed once per round, in turn: ms/step is the median over
    rounds and each ratio the median of the rounds' ratios, so a machine whose load changes over the minutes of
    a run (a shared CPU) skews no encoding against the others."""
    timed = {spec: [] for spec in encodings}
    for _ in range(rounds):
        for spec in encodings:
            timed[spec].append(time_one(spec, compile_model=mode == "compiled"))
            _free(dev, mode == "compiled")
    rows = []
    for spec, results in timed.items():
        ms, fpt = statistics.median(r[0] for r in results), results[0][1]
        tokens_per_s = tokens_per_step / (ms * 1e-3)
        rows.append({"encoding": spec, "mode": mode, "ms_per_step": ms, "tokens_per_s": tokens_per_s,
                     "ratio_to_nope": None, "ratio_to_rope": None, "mfu": fpt * tokens_per_s / peak if peak else None})
    for baseline in ("nope", "rope"):
        if baseline in timed:
            for r in rows:
                per_round = [a[0] / b[0] for a, b in zip(timed[r["encoding"]], timed[baseline])]
                r[f"ratio_to_{baseline}"] = statistics.median(per_round)
    return rows


def _format(row: dict) -> str:
    nope, rope = (f"{row[k]:.3f}" if row.get(k) is not None else "-" for k in ("ratio_to_nope", "ratio_to_rope"))
    mfu = f"{row['mfu']:.1%}" if row["mfu"] is not None else "-"
    return f"  {row['encoding']:<16}{row['ms_per_step']:>9.2f}{row['tokens_per_s']:>12.0f}{nope:>8}{rope:>8}{mfu:>7}"


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
    rounds: int = 1,
    cpu_time: bool = False,
) -> dict:
    """Time training steps per encoding, eager (and compiled with ``compile_model``); returns the rows.

    ``peak_flops`` 0 means the GPU's dense bf16 peak when ropebench knows it (no MFU otherwise);
    ``compile_backend`` other than inductor (e.g. eager) only checks the compiled plumbing quickly."""
    dev = pick_device(device)
    preset = pick_preset(model, dev)
    arch, _, _, vocab = PRESETS[preset]
    batch_size, seq_len, steps, warmup = _sizes(dev, preset, batch_size, seq_len, steps, warmup)
    if rounds <= 0:
        raise UserError(f"--rounds must be a positive integer, got {rounds}")
    if cpu_time and dev.type != "cpu":
        raise UserError("--cpu-time times CPU runs (the process's CPU time); this run is on " + dev.type)
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
        f"median of {steps} steps after {warmup} warm-up" + (f", {rounds} rounds in turn" if rounds > 1 else "")
        + (f", process CPU time on {torch.get_num_threads()} threads" if cpu_time else "")
    )
    time_one = functools.partial(time_steps, model_cfg=model_cfg, batch_size=batch_size, seq_len=seq_len,
                                 vocab=vocab, steps=steps, warmup=warmup, device=dev, compile_backend=compile_backend,
                                 clock=time.process_time if cpu_time else time.perf_counter)
    rows = []
    for mode in ["eager", "compiled"] if compile_model else ["eager"]:
        echo(f"\n{mode}:\n  {'encoding':<16}{'ms/step':>9}{'tokens/s':>12}{'x NoPE':>8}{'x RoPE':>8}{'MFU':>7}")
        mode_rows = _time_mode(mode, encodings, time_one, batch_size * seq_len, peak, dev, rounds)
        for r in mode_rows:
            echo(_format(r))
        rows += mode_rows
    return {"bench": "train", "device": str(dev), "device_name": device_name(dev),
            "compile_backend": compile_backend if compile_model else None, "model": preset, "batch_size": batch_size,
            "seq_len": seq_len, "steps": steps, "warmup": warmup, "rounds": rounds, "cpu_time": cpu_time,
            "threads": torch.get_num_threads(), "peak_flops": peak,
            "torch": torch.__version__,
            "rows": rows}
