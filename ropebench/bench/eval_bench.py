"""Evaluation cost per position encoding: tokens/s of ropebench's own evaluation path at several lengths.

A freshly initialised model (speed does not depend on the weights) scores random tokens through
``ropebench.eval.perplexity.score_windows`` -- the function ``ropebench eval`` runs -- with non-overlapping windows
and the same number of scored tokens at every length. Per length it reports:

* tokens/s through ``score_windows``;
* the share of that time spent outside the model's forward pass (the scored-target mask and the per-position
  buckets): ``1 - forward-only time / score_windows time``, where the forward-only loop builds the same batches
  and runs the same model call with nothing after it;
* how many times the encoding's dense ``bias(T)`` was built per forward (an SDPA bias encoding must build one
  (H, T, T) tensor per forward, shared by every layer; FlexAttention builds none);
* on CUDA, the peak memory of one ``score_windows`` call;
* past the training length, the cost of the cropped baseline (``ropebench.eval.crop``: the same tokens scored
  with their context cut to about the training length, with its default stride and sample) as a ratio to the
  plain evaluation at that length: the cropped windows, the pairing of their targets with the full pass's, and
  what keeping the full pass's targets adds to it.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from omegaconf import OmegaConf

from ropebench.bench.rope_bench import device_name, pick_device
from ropebench.bench.train_bench import PRESETS, pe_config, pick_preset
from ropebench.errors import UserError, choose
from ropebench.eval.crop import SAMPLE_EVERY, crop_gain, crop_stride, crop_windows
from ropebench.eval.perplexity import make_windows, score_windows
from ropebench.run.config import ModelConfig

DEFAULT_MULTIPLES = (1, 4, 16)


def _autocast(device: torch.device):
    # the same precision as score_windows: bf16 autocast on CUDA, fp32 elsewhere
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def forward_only(model, tokens: np.ndarray, windows, length: int, batch_size: int, device) -> None:
    """score_windows without its bookkeeping: the same batches and model call, results discarded."""
    for i in range(0, len(windows), batch_size):
        chunk = windows[i : i + batch_size]
        rows = torch.stack([torch.from_numpy(tokens[w.start : w.start + length + 1].astype("int64")) for w in chunk])
        rows = rows.to(device)
        with _autocast(device):
            model(rows[:, :-1], rows[:, 1:], reduction="none")


def _crop(model, tokens: np.ndarray, full, length: int, train_len: int, batch_tokens: int, device,
          buckets: int, windows) -> tuple[float, float]:
    """The cropped baseline as ``ropebench eval`` runs it (default stride and sample), given the full
    evaluation's kept targets: the cropped windows made and scored, the gain paired target by target."""
    cropped = crop_windows(windows, length, train_len, crop_stride(train_len), SAMPLE_EVERY)
    scored = score_windows(model, tokens, cropped, train_len, max(1, batch_tokens // train_len), device, buckets,
                           keep_targets=True)
    return crop_gain(full, scored)


def _seconds(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


class BiasCounter:
    """Counts calls of ``pe.bias`` while installed (an instance attribute shadowing the method)."""

    def __init__(self, pe):
        self.pe, self.calls, self.shapes = pe, 0, []

    def __enter__(self):
        method = self.pe.bias

        def counted(T, device):
            out = method(T, device)
            self.calls += 1
            self.shapes.append(tuple(out.shape) if out is not None else None)
            return out

        self.pe.bias = counted
        return self

    def __exit__(self, *exc):
        del self.pe.bias


def _warm_up(model, score: Callable[[], tuple], n_batches: int, device: torch.device) -> dict:
    """One untimed score_windows call: the scored-token count, the bias builds per forward, peak memory."""
    with BiasCounter(model.pe) as counter:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        count = score().count
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return {"status": "ok", "n_tokens": count, "bias_calls_per_forward": counter.calls / n_batches,
            "bias_shapes": sorted({s for s in counter.shapes if s}), "peak_memory_bytes": peak}


def time_length(models: dict, length: int, n_tokens: int, vocab: int, batch_tokens: int, buckets: int, reps: int,
                device: torch.device, train_len: int = 0) -> list[dict]:
    """Rows for every encoding at one length: score_windows vs forward-only (and, past ``train_len``, the cropped
    baseline), medians of ``reps`` rounds whose order alternates, so drift in the machine's speed hits every
    encoding alike."""
    n_windows = max(1, n_tokens // length)
    tokens = np.random.default_rng(0).integers(0, vocab, n_windows * length + 1).astype(np.uint16)
    windows = make_windows([(0, len(tokens))], length, "nonoverlapping", length)
    batch_size = max(1, batch_tokens // length)
    rows, runs = {}, {}
    for spec, model in models.items():
        score = functools.partial(score_windows, model, tokens, windows, length, batch_size, device,
                                  min(buckets, length))
        try:
            rows[spec] = _warm_up(model, score, -(-len(windows) // batch_size), device)
        except (RuntimeError, MemoryError) as exc:  # e.g. out of memory at one length: record it, go on
            if device.type == "cuda":
                torch.cuda.empty_cache()
            rows[spec] = {"status": f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
            continue
        timed = {"score": score, "forward": functools.partial(forward_only, model, tokens, windows, length,
                                                              batch_size, device)}
        if 0 < train_len < length:  # the crop also keeps the full pass's targets: that pass is timed too
            timed["kept"] = functools.partial(score, keep_targets=True)
            timed["crop"] = functools.partial(_crop, model, tokens, timed["kept"](), length, train_len, batch_tokens,
                                              device, min(buckets, train_len), windows)
        runs[spec] = (timed, {name: [] for name in timed})
    names = list(runs)
    for r in range(reps):
        for spec in names if r % 2 == 0 else names[::-1]:
            timed, seconds = runs[spec]
            for name, fn in timed.items():
                seconds[name].append(_seconds(fn, device))
    for spec, (_, seconds) in runs.items():
        med = {name: statistics.median(values) for name, values in seconds.items()}
        rows[spec].update(tokens_per_s=rows[spec]["n_tokens"] / med["score"], score_s=med["score"],
                          forward_only_s=med["forward"], bookkeeping_frac=1 - med["forward"] / med["score"])
        if "crop" in med:
            crop_s = med["crop"] + max(0.0, med["kept"] - med["score"])
            rows[spec].update(crop_s=crop_s, crop_ratio=crop_s / med["score"])
    return [{"encoding": spec, "eval_len": length, "n_windows": len(windows), "batch_size": batch_size, **row}
            for spec, row in rows.items()]


def _check(lengths: list[int], n_tokens: int, batch_tokens: int, reps: int) -> None:
    for name, value in (("--tokens", n_tokens), ("--batch-tokens", batch_tokens), ("--reps", reps),
                        *(("--lengths", v) for v in lengths)):
        if value <= 0:
            raise UserError(f"{name} must be positive, got {value}")


def bench_eval(encodings: list[str] | None = None, model: str = "auto", train_len: int = 0,
               lengths: list[int] | None = None, n_tokens: int = 0, batch_tokens: int = 8192, buckets: int = 32,
               reps: int = 3, attention: str = "auto", device: str = "auto",
               echo: Callable[[str], object] = print) -> dict:
    """Evaluation tokens/s per encoding and length (default: rope and alibi at 1x, 4x, 16x the training length)."""
    if train_len < 0:  # 0 is the preset's; a negative one would surface as a negative --lengths
        raise UserError(f"--train-len must be positive (or 0: the preset's), got {train_len}")
    dev = pick_device(device)
    preset = pick_preset(model, dev)
    choose("attention", attention, ("auto", "sdpa", "flex"))
    arch, _, default_len, vocab = PRESETS[preset]
    train_len = train_len or default_len
    lengths = sorted(set(lengths or [m * train_len for m in DEFAULT_MULTIPLES]))
    n_tokens = n_tokens or max(2 * lengths[-1], batch_tokens)
    _check(lengths, n_tokens, batch_tokens, reps)
    encodings = encodings or ["rope", "alibi"]
    specs = {spec: pe_config(spec) for spec in encodings}  # fail on a bad name before any timing
    model_cfg = OmegaConf.structured(ModelConfig(**arch, attention=attention))
    echo(f"model {preset} (fresh init): {model_cfg.n_layer} layers, {model_cfg.n_embd} wide, {model_cfg.n_head} "
         f"heads; training length {train_len}; {n_tokens} scored tokens per length, {batch_tokens} tokens per "
         f"batch; attention={attention}; median of {reps}")
    echo(f"  {'encoding':<12}{'length':>8}{'tokens/s':>12}{'bookkeeping':>13}{'bias/fwd':>10}{'peak MB':>9}"
         f"{'crop cost':>11}")
    from ropebench.core.model import GPT

    models = {}
    for spec, pe_cfg in specs.items():
        torch.manual_seed(0)
        models[spec] = GPT(model_cfg, pe_cfg, vocab_size=vocab, train_seq_len=train_len).to(dev).eval()
    rows = []
    for length in lengths:
        for row in time_length(models, length, n_tokens, vocab, batch_tokens, buckets, reps, dev, train_len):
            rows.append(row)
            echo(_format(row))
    models.clear()
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return {"bench": "eval", "device": str(dev), "device_name": device_name(dev), "model": preset,
            "train_len": train_len, "n_tokens": n_tokens, "batch_tokens": batch_tokens, "attention": attention,
            "reps": reps, "torch": torch.__version__, "rows": rows}


def _format(row: dict) -> str:
    if row["status"] != "ok":
        return f"  {row['encoding']:<12}{row['eval_len']:>8}  {row['status']}"
    peak = f"{row['peak_memory_bytes'] / 2**20:.0f}" if row["peak_memory_bytes"] is not None else "-"
    crop = f"{row['crop_ratio']:.2f}x" if "crop_ratio" in row else "-"
    return (f"  {row['encoding']:<12}{row['eval_len']:>8}{row['tokens_per_s']:>12.0f}{row['bookkeeping_frac']:>13.1%}"
            f"{row['bias_calls_per_forward']:>10.2g}{peak:>9}{crop:>11}")
