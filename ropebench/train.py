"""Training: one model, one position encoding, one training length. A plain function of a config and a
run directory; the CLI and Hydra only decide which config and which directory.

Resumable: a checkpoint (weights, optimizer, step, data RNG, torch RNG) is written atomically every
``train.ckpt_interval`` steps and on SIGINT; a run directory holding one continues from it and reaches the
same metrics as an uninterrupted run (on the CPU, where kernels are deterministic).
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from ropebench import distributed, rundir
from ropebench.data import VOCAB_SIZE, Corpus, load_corpus
from ropebench.errors import UserError
from ropebench.model import GPT
from ropebench.progress import console, progress_bar
from ropebench.tracking import RunLogger

# Dense bf16 peaks (FLOP/s) of GPUs ropebench is run on, for the MFU column; others get none.
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "H800": 989e12, "A100": 312e12, "A800": 312e12, "L40S": 362e12,
             "RTX 4090": 165e12}


def peak_flops(device: torch.device, configured_tflops: float) -> float | None:
    if configured_tflops > 0:
        return configured_tflops * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16.items() if key in name), None)


# Keys whose change makes an existing checkpoint meaningless (anything else -- steps, logging -- may change).
RESUME_KEYS = ("model", "pe", "data.name", "data.source", "data.paths", "train.seq_len", "train.batch_size",
               "train.lr", "train.min_lr", "train.warmup_steps", "train.weight_decay", "train.beta1",
               "train.beta2", "seed")


def software_versions() -> dict:
    """What produced a run, recorded in final.json so every committed number names its torch version."""
    import platform

    from ropebench import __version__

    return {"ropebench": __version__, "torch": torch.__version__, "python": platform.python_version()}


def validate(cfg: DictConfig) -> None:
    t = cfg.train
    for key in ("seq_len", "steps", "batch_size"):
        if t[key] <= 0:
            raise UserError(f"train.{key} must be a positive integer, got {t[key]}")
    if not t.lr > 0:
        raise UserError(f"train.lr must be positive, got {t.lr}")
    if t.dtype not in ("auto", "float32", "bfloat16", "float16"):
        raise UserError(f"unknown train.dtype '{t.dtype}'; choose one of: auto, bfloat16, float16, float32")


def lr_at(step: int, t) -> float:
    """Linear warmup, then cosine decay to min_lr at the last step."""
    if step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    progress = (step - t.warmup_steps) / max(1, t.steps - t.warmup_steps)
    return t.min_lr + 0.5 * (t.lr - t.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model: torch.nn.Module, t, device: torch.device) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=t.lr, betas=(t.beta1, t.beta2), fused=device.type == "cuda")


def autocast_for(device: torch.device, dtype_name: str):
    if dtype_name == "auto":
        dtype_name = "bfloat16" if device.type == "cuda" else "float32"
    if dtype_name == "float32":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=getattr(torch, dtype_name))


@torch.no_grad()
def estimate_val_loss(model, corpus: Corpus, cfg, device, amp, dist=distributed.Dist()) -> float:
    """Mean loss on a fixed set of validation windows (same windows at every evaluation and every run).

    Under DDP each rank scores its slice of every window batch and the mean is taken over ranks: the same
    windows, and the same number, as a single process."""
    model.eval()
    generator = torch.Generator().manual_seed(1234)
    losses = []
    for _ in range(cfg.train.eval_batches):
        x, y = dist.shard(*corpus.val.batch(cfg.train.batch_size, cfg.train.seq_len, generator))
        with amp:
            losses.append(model(x.to(device), y.to(device))[1].item())
    model.train()
    return distributed.all_reduce_mean(sum(losses) / len(losses))


def _diff_keys(saved: dict, current: DictConfig) -> list[str]:
    saved, now = OmegaConf.create(saved), OmegaConf.create(OmegaConf.to_container(current, resolve=True))
    changed = []
    for key in RESUME_KEYS:
        a, b = OmegaConf.select(saved, key), OmegaConf.select(now, key)
        if OmegaConf.is_config(a):
            a, b = OmegaConf.to_container(a), OmegaConf.to_container(b)
        if a != b:
            changed.append(key)
    return changed


class _StopFlag:
    """SIGINT or SIGTERM sets a flag; the loop saves a checkpoint at the next step boundary and stops cleanly."""

    def __init__(self):
        self.stop = False

    def __enter__(self):
        try:
            # SIGTERM too: SLURM and other schedulers send it before killing a job.
            self._previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        except ValueError:  # not the main thread: leave signals alone
            self._previous = None
        return self

    def _handle(self, signum, frame):
        if self.stop:  # a second Ctrl-C: give up at once
            raise KeyboardInterrupt
        self.stop = True

    def __exit__(self, *exc):
        for sig, handler in (self._previous or {}).items():
            signal.signal(sig, handler)


def _save_checkpoint(run_dir, model, optimizer, step, generator, cfg) -> None:
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
             "data_rng": generator.get_state(), "torch_rng": torch.get_rng_state(),
             "config": OmegaConf.to_container(cfg, resolve=True)}
    rundir.atomic_write(Path(run_dir) / rundir.CHECKPOINT, lambda f: torch.save(state, f))


def train(cfg: DictConfig, run_dir: Path, log=console.print) -> dict:
    """Train (or continue) the run in ``run_dir``; returns the final metrics. Skips a finished run."""
    from safetensors.torch import save_model

    run_dir = Path(run_dir)
    validate(cfg)
    if rundir.is_finished(run_dir):
        log(f"[green]already finished[/]: {run_dir}")
        return rundir.read_final(run_dir)
    device = rundir.resolve_device(cfg.train.device)
    # torchrun: join the process group (a no-op for one process); only rank 0 writes or prints.
    dist, device = distributed.setup(cfg.train.batch_size, device)
    distributed.check_same_run_dir(run_dir, dist)
    if not dist.is_rank0:
        log = distributed.quiet
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(cfg.seed)
    # The model first: a bad model or encoding setting fails before any data is tokenized.
    model = GPT(cfg.model, cfg.pe, vocab_size=VOCAB_SIZE, train_seq_len=cfg.train.seq_len).to(device)
    with distributed.rank0_first(dist):  # rank 0 builds the token cache, the others then read it
        corpus = load_corpus(cfg.data, log=log)
    optimizer = make_optimizer(model, cfg.train, device)
    generator = torch.Generator().manual_seed(cfg.seed)
    start = 0
    ckpt_path = run_dir / rundir.CHECKPOINT
    if ckpt_path.is_file():
        state = rundir.load_checkpoint(ckpt_path)
        changed = _diff_keys(state["config"], cfg)
        if changed:
            raise UserError(f"cannot resume {run_dir}: its checkpoint was trained with different "
                            f"{', '.join(changed)}; start a new run directory instead")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["data_rng"])
        torch.set_rng_state(state["torch_rng"])
        start = state["step"]
        log(f"resuming {run_dir} from step {start}")
    if dist.is_rank0:
        rundir.save_config(run_dir, cfg)
    ddp_model = distributed.wrap(model, dist, device)  # forward/backward through DDP; save `model` itself
    step_fn = torch.compile(ddp_model) if cfg.train.compile else ddp_model
    amp = autocast_for(device, cfg.train.dtype)
    logger = RunLogger(run_dir, cfg, resume_step=start, warn=log) if dist.is_rank0 else distributed.NullLogger()
    tokens_per_step = cfg.train.batch_size * cfg.train.seq_len
    peak = peak_flops(device, cfg.train.peak_tflops)
    if peak:
        peak *= dist.world_size  # tokens_per_s counts the global batch, so the peak is all devices'
    flops_per_token = model.flops_per_token(cfg.train.seq_len)
    t = cfg.train
    record: dict = {}
    train_loss = float("nan")
    log(f"training pe={cfg.pe.name} ({model.num_params() / 1e6:.2f}M non-embedding parameters) on {device}: "
        f"{t.steps} steps x {tokens_per_step} tokens, seq_len {t.seq_len} -> {run_dir}")
    started = time.perf_counter()
    window_start, window_tokens = time.perf_counter(), 0
    pin = device.type == "cuda"
    bar_cm = progress_bar()
    bar_cm.disable = not dist.is_rank0  # one bar, not one per rank
    with _StopFlag() as flag, bar_cm as bar:
        task = bar.add_task(f"train {cfg.pe.name}", total=t.steps, completed=start, rate="", info="")
        step = start
        while step < t.steps and not flag.stop:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, t)
            # Every rank draws the global batch from the same generator and keeps its rows of it.
            x, y = dist.shard(*corpus.train.batch(t.batch_size, t.seq_len, generator))
            if pin:
                x, y = x.pin_memory(), y.pin_memory()
            x, y = x.to(device, non_blocking=pin), y.to(device, non_blocking=pin)
            with amp:
                _, loss = step_fn(x, y)
            loss.backward()
            if t.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            window_tokens += tokens_per_step
            if step % t.log_interval == 0 or step == t.steps:
                train_loss = distributed.all_reduce_mean(loss)  # syncs the device only at logging steps
                elapsed = time.perf_counter() - window_start
                record = {"step": step, "train_loss": train_loss, "lr": lr_at(step - 1, t),
                          "tokens_per_s": window_tokens / max(elapsed, 1e-9), "tokens": step * tokens_per_step}
                if peak:
                    record["mfu"] = flops_per_token * record["tokens_per_s"] / peak
                if not math.isfinite(train_loss):
                    raise UserError(f"training diverged at step {step} (loss {train_loss}); lower train.lr")
                if step % t.eval_interval == 0 or step == t.steps:
                    record["val_loss"] = estimate_val_loss(model, corpus, cfg, device, amp, dist)
                logger.log(record)
                bar.update(task, rate=f"{record['tokens_per_s'] / 1e3:.1f}k tok/s",
                           info=f"loss {train_loss:.3f}" + (f" val {record['val_loss']:.3f}"
                                                            if "val_loss" in record else ""))
                window_start, window_tokens = time.perf_counter(), 0
            bar.update(task, completed=step)
            if dist.enabled:
                flag.stop = distributed.any_rank(flag.stop)  # all ranks stop at the same step
            if dist.is_rank0 and (step % t.ckpt_interval == 0 or flag.stop or step == t.steps):
                _save_checkpoint(run_dir, model, optimizer, step, generator, cfg)
    if not dist.is_rank0:
        distributed.shutdown()
        return {"status": "interrupted" if flag.stop and step < t.steps else "finished", "step": step,
                "train_loss": train_loss, "rank": dist.rank}
    if flag.stop and step < t.steps:
        distributed.shutdown()
        logger.close()
        log(f"[yellow]interrupted[/] at step {step}; checkpoint saved. Continue with: "
            f"ropebench train resume={run_dir}")
        return {"status": "interrupted", "step": step}
    tmp = run_dir / f".{rundir.WEIGHTS}.tmp"
    save_model(model, str(tmp))  # safetensors writes to a path: write beside, then move into place
    os.replace(tmp, run_dir / rundir.WEIGHTS)
    final = {"status": "finished", "steps": step, "train_loss": train_loss,
             "val_loss": record.get("val_loss"), "wall_s": time.perf_counter() - started,
             "params": model.num_params(), "device": str(device), "world_size": dist.world_size,
             "versions": software_versions()}
    rundir.atomic_write_text(run_dir / rundir.FINAL, json.dumps(final, indent=2))
    if cfg.eval.after_train and cfg.data.source == "passkey":
        from ropebench.eval.passkey import passkey_accuracy

        passkey_accuracy(run_dir, log=log)
    elif cfg.eval.after_train:
        from ropebench.eval.perplexity import eval_length

        rows = eval_length(run_dir, model=model, log=log)
        logger.log_eval_curve(rows)
    logger.close()
    distributed.shutdown()
    return final
