"""The run directory is the interface between commands: resolved config, weights, metrics and results.

Layout::

    RUN/.hydra/config.yaml   resolved config (what `train` ran with)
    RUN/checkpoint.pt        resume state: weights, optimizer, step, RNG (loaded with weights_only=True)
    RUN/model.safetensors    final weights (written when training finishes)
    RUN/final.json           completion marker with the final metrics
    RUN/metrics.jsonl        one JSON object per logged step
    RUN/eval_length.csv      perplexity by evaluation length (merged across eval-length calls)

Every file is written atomically (a temporary file in the same directory, then os.replace).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from omegaconf import DictConfig

from ropebench.errors import UserError

CONFIG = Path(".hydra") / "config.yaml"
CHECKPOINT = "checkpoint.pt"
WEIGHTS = "model.safetensors"
FINAL = "final.json"
METRICS = "metrics.jsonl"
EVAL_CSV = "eval_length.csv"


def atomic_write(path: Path, write) -> None:
    """Call ``write(file_object)`` on a temporary file next to ``path``, then move it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def load_config(run_dir: Path) -> DictConfig:
    from ropebench.run.rundir import RunDir

    return RunDir(run_dir).read_config()


def is_finished(run_dir: Path) -> bool:
    return (Path(run_dir) / FINAL).is_file() and (Path(run_dir) / WEIGHTS).is_file()


def read_final(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / FINAL).read_text())


def load_checkpoint(path: Path) -> dict:
    try:
        # weights_only: loading a checkpoint never executes code from it.
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"checkpoint '{path}' is corrupt or unreadable ({type(exc).__name__})") from None


def load_model(run_dir: Path, device: torch.device | str = "cpu"):
    """The trained model of a finished run, in eval mode, and its config."""
    from safetensors.torch import load_model as load_weights

    from ropebench.data import VOCAB_SIZE
    from ropebench.model import GPT
    from ropebench.run.lifecycle import resume_command

    run_dir = Path(run_dir)
    cfg = load_config(run_dir)
    if not is_finished(run_dir):
        raise UserError(f"run '{run_dir}' is unfinished (no {FINAL} / {WEIGHTS}); "
                        f"finish it with `{resume_command(run_dir)}`")
    model = GPT(cfg.model, cfg.pe, vocab_size=VOCAB_SIZE, train_seq_len=cfg.train.seq_len)
    try:
        load_weights(model, str(run_dir / WEIGHTS), strict=True, device=str(device))
    except Exception as exc:
        raise UserError(f"weights '{run_dir / WEIGHTS}' are corrupt or do not match the config "
                        f"({type(exc).__name__})") from None
    return model.to(device).eval(), cfg


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device '{name}'; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device '{name}' asked for, but CUDA is not available here; use device=cpu or auto")
    return device
