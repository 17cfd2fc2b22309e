"""Attention temperature that depends on length: the queries of a layer are multiplied by t (per query position
i = 0 .. T-1, and per head for SSMax), so the logits q.k grow by t while the encoding's own bias does not.

Trained with the model (``model.logit_scale``):

* ``ssmax``  -- Scalable-Softmax (Nakanishi 2025, arXiv 2501.19399): logits x s_h ln(n), n = i + 1 the keys a
  causal query attends, s learned per layer and head. s starts at 1 / ln(L) (L the training length): at the
  training length the last query starts with the plain softmax.
* ``llama4`` -- Llama 4's temperature on NoPE layers (Hugging Face ``Llama4TextAttention``):
  t_i = 1 + 0.1 ln(floor((i + 1) / F) + 1), with F = L standing in for Llama 4's 8192 (its attention chunk).

Chosen at evaluation (``--logit-scale``), any encoding, every layer:

* ``logn``   -- Qwen's log-n scaling (Bai et al. 2023, arXiv 2309.16609, Sec. 2.5): t_i = max(1, log_L(i + 1)),
  1 up to the training length;
* ``beta``   -- DroPE's (Gelberg et al. 2025, arXiv 2512.12167): t = 1 + c ln(max(1, T / L)) for T tokens, with
  c fitted on held-out text after training (ropebench.run.drope) and recorded in the run's final.json.
"""

from __future__ import annotations

import math

import torch

from ropebench.errors import UserError

#: --logit-scale values (besides the run's own, as trained)
AT_EVALUATION = ("none", "logn")
LLAMA4_ATTN_SCALE = 0.1


def _positions(T: int, device) -> torch.Tensor:
    """1 .. T (the 1-based position, = the number of keys a causal query attends), float32."""
    return torch.arange(1, T + 1, device=device, dtype=torch.float32)


def logn(T: int, train_len: int, device) -> torch.Tensor:
    """(T, 1): max(1, ln(i + 1) / ln(L))."""
    return (_positions(T, device).log() / math.log(train_len)).clamp(min=1.0)[:, None]


def beta(T: int, train_len: int, c: float, device) -> torch.Tensor:
    """(1, 1): 1 + c ln(max(1, T / L)), the same for every query of a T-token window."""
    return torch.full((1, 1), 1.0 + c * math.log(max(1.0, T / train_len)), device=device)


def ssmax(s: torch.Tensor, T: int) -> torch.Tensor:
    """(H, T, 1): s_h ln(i + 1) for one layer's s (H,)."""
    return s.float()[:, None, None] * _positions(T, s.device).log()[None, :, None]


def llama4(T: int, train_len: int, device) -> torch.Tensor:
    """(T, 1): 1 + 0.1 ln(floor((i + 1) / L) + 1)."""
    return 1.0 + LLAMA4_ATTN_SCALE * torch.log1p(torch.floor(_positions(T, device) / train_len))[:, None]


def ssmax_init(train_len: int) -> float:
    return 1.0 / math.log(train_len)


def evaluation_scale(name: str | None, trained: dict | None) -> dict | None:
    """The logit-scale spec to evaluate with: ``name`` from --logit-scale (None: the run's ``trained`` one)."""
    if name is None:
        return trained
    if name not in AT_EVALUATION:
        raise UserError(f"unknown --logit-scale '{name}'; choose one of: {', '.join(AT_EVALUATION)}")
    return None if name == "none" else {"type": name}


def label(spec: dict | None) -> str:
    """The ``logit_scale`` column of a result row: none, logn, beta(c=0.412)."""
    if not spec:
        return "none"
    return f"beta(c={spec['c']:g})" if spec["type"] == "beta" else str(spec["type"])


def check_train_len(train_len: int, what: str) -> None:
    if train_len < 2:
        raise UserError(f"{what} needs a training length of at least 2 (it divides by ln L), got {train_len}")
