"""What a run directory holds that needs torch to read: the device to use and the trained model."""

from __future__ import annotations

import torch

from ropebench.errors import UserError
from ropebench.run.rundir import FINAL, WEIGHTS, RunDir, resume_command


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device '{name}'; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device '{name}' asked for, but CUDA is not available here; use device=cpu or auto")
    return device


def load_model(run: RunDir, cfg, device: torch.device | str = "cpu"):
    """The model of a finished run with its final weights, in eval mode; damaged weights are one clear line."""
    from safetensors.torch import load_model as load_weights

    from ropebench.core.model import GPT
    from ropebench.data import vocab_size_for

    if not run.is_finished():
        raise UserError(f"run '{run}' is unfinished (no {FINAL} / {WEIGHTS}); finish it with "
                        f"`{resume_command(run.path)}`")
    from ropebench.run.config import encoding_length

    model = GPT(cfg.model, cfg.pe, vocab_size=vocab_size_for(cfg.data), train_seq_len=encoding_length(cfg.train))
    if cfg.train.get("drop_rope_at") is not None:  # DroPE: the finished model attends without RoPE
        model.drop_rope()
    try:
        load_weights(model, str(run / WEIGHTS), strict=True, device=str(device))
    except Exception as exc:
        raise UserError(f"weights '{run / WEIGHTS}' {weights_problem(exc)}") from None
    return model.to(device).eval()


def weights_problem(exc: Exception) -> str:
    """Why a weights file did not load, told apart: a model of other shapes or names, a file the disk cannot
    give, or a file that is not whole safetensors (cut short, overwritten)."""
    from ropebench.errors import os_error_line

    text = " ".join(str(exc).split())
    if isinstance(exc, RuntimeError) and any(s in text for s in ("Missing key", "Unexpected key", "size mismatch")):
        return f"do not match the run's config ({text[:200]})"
    if isinstance(exc, OSError):
        return f"cannot be read: {os_error_line(exc)}"
    return f"are damaged or not safetensors ({type(exc).__name__}: {text[:200] or 'no message'})"
