"""Training one model: build, resume, step, finalize -- a plain function of a config and a run directory.

The CLI and Hydra only decide which config and which directory. Resumable: a checkpoint is written every
``train.ckpt_interval`` steps and on SIGINT/SIGTERM, and a run directory holding one continues from it to the
same metrics as an uninterrupted run (on the CPU, where kernels are deterministic). Whatever happens, the
trainer closes what it opened: the metrics file, the wandb run, the process group.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from ropebench.core.model import GPT
from ropebench.data import Corpus, TokenSplit, load_corpus, vocab_size_for
from ropebench.data.fingerprint import corpus_fingerprint
from ropebench.data.pose import pose_batch
from ropebench.data.positions import random_position_ids
from ropebench.errors import UserError
from ropebench.progress import console, per_second, progress_bar
from ropebench.run import checkpoint, distributed, drope
from ropebench.run.artifacts import resolve_device
from ropebench.run.config import encoding_length
from ropebench.run.optim import lr_at, make_optimizer, warmup_warning
from ropebench.run.rundir import CHECKPOINT, WEIGHTS, RunDir, atomic_write_file
from ropebench.run.stop import StopFlag
from ropebench.run.tracking import RunLogger
from ropebench.run.validate import validate_config

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


def software_versions() -> dict:
    """What produced a run, recorded in final.json so every committed number names its torch version."""
    import platform

    from ropebench import __version__

    return {"ropebench": __version__, "torch": torch.__version__, "python": platform.python_version()}


def finite_or_none(value) -> float | None:
    """A loss as JSON can hold it: NaN and infinities are not JSON, so a non-finite (or absent) loss is null."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


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


def check_splits(corpus: Corpus, seq_len: int) -> None:
    """Both splits must hold a window of seq_len + 1 tokens -- checked before the first step, not found at the
    first validation (after steps were spent) nor blamed on the other split."""
    for split, name in ((corpus.train, "training"), (corpus.val, "validation")):
        if isinstance(split, TokenSplit) and split.n_tokens <= seq_len + 1:
            more = "raise data.val_fraction" if name == "validation" else "give more data"
            raise UserError(f"train.seq_len={seq_len} is longer than the {name} data ({split.n_tokens} tokens); "
                            f"lower train.seq_len or {more}")


def check_position_ids(model, cfg, key: str) -> None:
    """``train.<key>`` (PoSE's target length, randomized positions' N) trains on position ids up to its value
    - 1: the model's encodings must take position ids (a NoPE layer beside them passes) and reach that far."""
    n = cfg.train.get(key)
    if not n:
        return
    layers = list(cfg.model.get("layers") or [])
    named = f"model.layers=[{','.join(layers)}]" if layers else f"pe={cfg.pe.name}"
    if not model.takes_position_ids():
        from ropebench.core.pe import registry

        able = ", ".join(sorted(name for name, entry in registry().items() if entry.cls.supports_position_ids))
        raise UserError(f"train.{key} needs an encoding that takes position ids ({able}; nope beside one of them in "
                        f"model.layers); {named} does not")
    if model.max_len() is not None and model.max_len() < n:
        raise UserError(f"train.{key}={n} trains on positions up to {n - 1}; {named} stops at "
                        f"max_len={model.max_len()}; raise pe.max_len or leave it 0")


class Trainer:
    """One training run in clear steps: ``build`` -> ``resume`` -> ``loop`` -> ``finalize``; ``close`` always."""

    def __init__(self, cfg: DictConfig, run_dir: Path, log=console.print):
        self.cfg, self.run = cfg, RunDir(run_dir)
        self.log = log
        self.logger = None
        self.step = 0
        self.train_loss: float | None = None  # the last logged one; None until a step is logged
        self.record: dict = {}
        self.source: dict | None = None  # the run whose weights this one started from (init_from)

    # -- build ----------------------------------------------------------------------------------------------
    def build(self) -> None:
        cfg, t = self.cfg, self.cfg.train
        device = resolve_device(t.device)
        # torchrun: join the process group (a no-op for one process); only rank 0 writes or prints.
        self.dist, self.device = distributed.setup(t.batch_size, device)
        distributed.check_same_run_dir(self.run.path, self.dist)
        if not self.dist.is_rank0:
            self.log = distributed.quiet
        if t.threads > 0:
            torch.set_num_threads(t.threads)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        torch.manual_seed(cfg.seed)
        # The model first: a bad model or encoding setting fails before any data is tokenized.
        vocab = vocab_size_for(cfg.data)  # 257 for bytes, else the tokenizer's
        self.model = GPT(cfg.model, cfg.pe, vocab_size=vocab, train_seq_len=encoding_length(t)).to(self.device)
        for key in ("pose_target_len", "random_positions"):
            check_position_ids(self.model, cfg, key)
        with distributed.rank0_first(self.dist):  # rank 0 builds the token cache, the others then read it
            self.corpus = load_corpus(cfg.data, log=self.log)
        self.corpus_fingerprint = corpus_fingerprint(self.corpus)  # recorded in each checkpoint, checked on resume
        check_splits(self.corpus, t.seq_len)
        if t.get("pose_target_len") and not isinstance(self.corpus.train, TokenSplit):
            raise UserError(f"train.pose_target_len needs a text corpus; data={cfg.data.name} is generated")
        self.optimizer = make_optimizer(self.model, t, self.device)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.amp = autocast_for(self.device, t.dtype)

    def resume(self) -> None:
        state = checkpoint.load(self.run.path)
        if state is None:
            if self.cfg.get("init_from"):  # a new run continuing another's training: its weights, nothing else
                from ropebench.run.init_from import load_source_weights

                self.source = load_source_weights(self.model, self.cfg, self.log)
            return
        changes = checkpoint.config_changes(state["config"], self.cfg)
        if changes:
            raise UserError(f"cannot resume {self.run}: its checkpoint was trained with other settings "
                            f"({'; '.join(changes)}); start a new run directory instead")
        if state.get("corpus", self.corpus_fingerprint) != self.corpus_fingerprint:  # checkpoints before: unchecked
            raise UserError(f"cannot resume {self.run}: its text changed since it started (data={self.cfg.data.name}"
                            f" tokenizes to other tokens now); continuing would train on other text than the run "
                            "records -- restore the text, or start a new run directory")
        self._check_steps_reach(state["step"])
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["data_rng"])
        torch.set_rng_state(state["torch_rng"])
        self.step = state["step"]
        self.source = state.get("source")
        self.log(f"resuming {self.run} from step {self.step}")

    def _check_steps_reach(self, reached: int) -> None:
        """A checkpoint cannot go back: ending before the step it reached would record a run that never trained
        to its own length, marked finished so it could never be continued."""
        steps = self.cfg.train.steps
        if steps < reached:
            raise UserError(f"train.steps={steps} is below step {reached}, which the checkpoint of '{self.run}' "
                            f"has already reached; choose train.steps={reached} or more")

    def _open_logger(self) -> None:
        if self.dist.is_rank0:
            self.logger = RunLogger(self.run.path, self.cfg, resume_step=self.step, warn=self.log)
            self._recall_last_record()
        else:
            self.logger = distributed.NullLogger()

    def _recall_last_record(self) -> None:
        """A resumed run that has no step left to train (stopped after its last checkpoint) finishes with the
        metrics it logged at that step, not with none."""
        if self.step == 0:
            return
        logged = [r for r in self.run.read_metrics() if r.get("step") == self.step]
        if logged:
            self.record = logged[-1]
            self.train_loss = finite_or_none(self.record.get("train_loss"))

    # -- step -----------------------------------------------------------------------------------------------
    def train_step(self, step_fn) -> torch.Tensor:
        t = self.cfg.train
        self._drop_rope_when_due()
        lr = lr_at(self.step, t)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_mult", 1.0)
        # Every rank draws the global batch from the same generator and keeps its rows of it.
        batch = self.dist.shard(*self._batch())
        pin = self.device.type == "cuda"
        x, y, *pos = ((b.pin_memory() if pin else b).to(self.device, non_blocking=pin) for b in batch)
        with self.amp:
            _, loss = step_fn(x, y, pos=pos[0]) if pos else step_fn(x, y)
        loss.backward()
        if t.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return loss

    def _drop_rope_when_due(self) -> None:
        """DroPE: from step round(train.drop_rope_at x steps) on, no layer rotates (a resumed run included)."""
        at = drope.drop_step(self.cfg.train)
        if at is not None and self.step >= at and not self.model.rope_dropped:
            self.model.drop_rope()
            self.log(f"DroPE: RoPE dropped from every layer at step {self.step}")

    def _batch(self) -> tuple[torch.Tensor, ...]:
        """The global batch: (inputs, targets), plus position ids under PoSE or randomized positions."""
        t = self.cfg.train
        if t.get("pose_target_len"):
            return pose_batch(self.corpus.train.tokens, t.batch_size, t.seq_len, t.pose_target_len,
                              t.get("pose_chunks", 2), self.generator)
        x, y = self.corpus.train.batch(t.batch_size, t.seq_len, self.generator)
        if t.get("random_positions"):
            return x, y, random_position_ids(*x.shape, t.random_positions, self.generator)
        return x, y

    def _log_step(self, loss, window_tokens: int, elapsed: float) -> str:
        """The metrics record at a logging step; returns the progress bar's info text."""
        t = self.cfg.train
        self.train_loss = distributed.all_reduce_mean(loss)  # syncs the device only at logging steps
        record = {"step": self.step, "train_loss": self.train_loss, "lr": lr_at(self.step - 1, t),
                  "tokens_per_s": window_tokens / max(elapsed, 1e-9), "tokens": self.step * t.batch_size * t.seq_len}
        if self.peak:
            record["mfu"] = self.flops_per_token * record["tokens_per_s"] / self.peak
        if not math.isfinite(self.train_loss):
            self._diverged(self.train_loss)
        if self.step % t.eval_interval == 0 or self.step == t.steps:
            val_loss = estimate_val_loss(self.model, self.corpus, self.cfg, self.device, self.amp, self.dist)
            record["val_loss"] = finite_or_none(val_loss)  # a NaN would make the line invalid JSON
        self.logger.log(record)
        self.record = record
        val = record.get("val_loss")
        return f"loss {self.train_loss:.3f}" + (f" val {val:.3f}" if val is not None else "")

    def _diverged(self, loss: float) -> None:
        kept = ("the last good checkpoint is kept" if (self.run / CHECKPOINT).is_file()
                else "no checkpoint was saved before it")
        raise UserError(f"training diverged at step {self.step} (loss {loss}); lower train.lr ({kept})")

    def _save_checkpoint(self, loss) -> None:
        # Never replace the last good state with a diverged one (the loss is synced only here and when logging).
        synced = distributed.all_reduce_mean(loss)
        if not math.isfinite(synced):
            self._diverged(synced)
        if self.dist.is_rank0:
            state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "step": self.step,
                     "data_rng": self.generator.get_state(), "torch_rng": torch.get_rng_state(),
                     "config": OmegaConf.to_container(self.cfg, resolve=True), "corpus": self.corpus_fingerprint,
                     **({"source": self.source} if self.source else {})}
            checkpoint.save(self.run.path, state)

    def loop(self, flag: StopFlag) -> None:
        t = self.cfg.train
        ddp_model = distributed.wrap(self.model, self.dist, self.device)  # save and evaluate `model` itself
        step_fn = torch.compile(ddp_model) if t.compile else ddp_model
        self.peak = peak_flops(self.device, t.peak_tflops)
        if self.peak:
            self.peak *= self.dist.world_size  # tokens_per_s counts the global batch: the peak is all devices'
        self.flops_per_token = self.model.flops_per_token(t.seq_len)
        tokens_per_step = t.batch_size * t.seq_len
        self.log(f"training pe={self.cfg.pe.name} ({self.model.num_params() / 1e6:.2f}M non-embedding parameters) "
                 f"on {self.device}: {t.steps} steps x {tokens_per_step} tokens, seq_len {t.seq_len} -> {self.run}")
        warning = warmup_warning(t) if self.step < t.steps else None  # only when a step is left to train
        if warning:
            self.log(warning)
        window_start, window_tokens = time.perf_counter(), 0
        bar_cm = progress_bar()
        bar_cm.disable = bar_cm.disable or not self.dist.is_rank0  # one bar, not one per rank; none if asked
        with bar_cm as bar:
            task = bar.add_task(f"train {self.cfg.pe.name}", total=t.steps, completed=self.step, rate="", info="")
            stop = flag.stop
            while self.step < t.steps and not stop:
                loss = self.train_step(step_fn)
                window_tokens += tokens_per_step
                if self.step % t.log_interval == 0 or self.step == t.steps:
                    info = self._log_step(loss, window_tokens, time.perf_counter() - window_start)
                    bar.update(task, rate=per_second(self.record["tokens_per_s"], "tok"), info=info)
                    window_start, window_tokens = time.perf_counter(), 0
                bar.update(task, completed=self.step)
                # Read once: a sweep's stop file can appear between two reads, and the step that sees it saves.
                stop = flag.stop
                if self.dist.enabled:
                    stop = flag.stop = distributed.any_rank(stop)  # all ranks stop at the same step
                if self.step % t.ckpt_interval == 0 or stop or self.step == t.steps:
                    self._save_checkpoint(loss)

    # -- finalize -------------------------------------------------------------------------------------------
    def finalize(self, wall_s: float, continued: list[str] | None = None) -> dict:
        from safetensors.torch import save_model

        # safetensors writes to a path (and drops the tied head's duplicate): write beside, then move into place.
        size = sum(p.numel() * p.element_size() for p in self.model.parameters())
        atomic_write_file(self.run / WEIGHTS, lambda tmp: save_model(self.model, tmp), size)
        final = {"status": "finished", "steps": self.step, "train_loss": finite_or_none(self.train_loss),
                 "val_loss": finite_or_none(self.record.get("val_loss")), "wall_s": wall_s,
                 "params": self.model.num_params(), "device": str(self.device), "world_size": self.dist.world_size,
                 "versions": software_versions()}
        if continued:
            final["continued"] = continued
        if self.source:
            final["init_from"] = self.source
        self._drop_rope_when_due()
        if self.model.rope_dropped:  # DroPE's evaluation-time logit scale, fitted on held-out text
            final["logit_scale"] = drope.fit_logit_scale(self.model, self.corpus.val, self.cfg.train.seq_len,
                                                         self.device, self.amp, self.log)
        self.run.write_final(final)
        return final

    def close(self) -> None:
        if self.logger is not None:
            self.logger.close()
        distributed.shutdown()


def train(cfg: DictConfig, run_dir: Path, log=console.print, continued: list[str] | None = None,
          after_training=None) -> dict:
    """Train (or continue) the run in ``run_dir``; returns the final metrics (``status`` says how it ended).

    ``continued`` lists the resumable keys a continuation changed (``key: old → new``): final.json records them,
    since the run's config.yaml is never rewritten. ``after_training(run_dir, model, logger, log)`` runs once the
    weights are saved when ``eval.after_train`` is set (the evaluation layer above supplies it); for a finished run
    a finished run is its callers' (``lifecycle.finished``)."""
    validate_config(cfg)
    run = RunDir(run_dir)
    if run.is_finished():
        log(f"[green]already finished[/]: {run}")
        return {**run.read_final(), "status": "already_finished"}
    trainer = Trainer(cfg, run.path, log)
    try:
        trainer.build()
        trainer.resume()
        trainer._open_logger()
        started = time.perf_counter()
        with StopFlag() as flag:
            trainer.loop(flag)
        if not trainer.dist.is_rank0:
            return {"status": "interrupted" if flag.stop else "finished", "step": trainer.step}
        if flag.stop and trainer.step < cfg.train.steps:
            # How to continue is the command's to say (a sweep continues with its own command, not this run's).
            log(f"[yellow]interrupted[/] at step {trainer.step}; checkpoint saved")
            return {"status": "interrupted", "step": trainer.step}
        final = trainer.finalize(time.perf_counter() - started, continued)
        if cfg.eval.after_train and after_training is not None:
            return evaluate_after(final, lambda: after_training(run.path, trainer.model, trainer.logger, trainer.log),
                                  log)
        return final
    finally:
        trainer.close()


def evaluate_after(final: dict, evaluate, log) -> dict:
    """The after-training evaluation: the first Ctrl-C or SIGTERM stops it at once (each length is written as soon
    as it is measured), and the run is reported interrupted -- `ropebench resume` completes it."""
    try:
        with StopFlag(at_once=True):
            evaluate()
    except KeyboardInterrupt:
        log("[yellow]interrupted[/] during the evaluation after training; the lengths measured are kept")
        return {**final, "status": "interrupted"}
    return final
