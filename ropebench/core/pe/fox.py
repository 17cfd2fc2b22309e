"""The Forgetting Transformer (Lin et al., ICLR 2025, arXiv 2503.02130): a data-dependent forget gate per head,
f_t = sigmoid(w_h . x_t + b_h) from the layer's input x_t, and the logits

    logit_ij += sum_{t=j+1..i} log f_t = F_i - F_j,    F_i = sum_{t<=i} log f_t,

so a key fades by the gates of the tokens after it -- the only position signal (no RoPE). Gates are per layer
and head: one Linear(n_embd -> n_layer * n_head), each layer reading its rows. Initialised as the authors' code
initialises it (weights N(0, 0.02), bias 0: f = 1/2 at the start); ``bias_init`` 5 gives x-transformers'
gentler start (f ~ 0.993). Dense on the CPU: a (B, H, T, T) term per layer; on CUDA a FlexAttention score_mod
that reads F (B, H, T) and never builds it.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ropebench.core.pe import register
from ropebench.core.pe.base import PEConfig, PositionEncoding
from ropebench.errors import UserError


@dataclass
class FoxConfig(PEConfig):
    name: str = "fox"
    # Forget-gate bias at initialisation: 0 (the authors' code), 5 (x-transformers' DataDependentAlibi).
    bias_init: float = 0.0


@register("fox", FoxConfig)
class ForgettingTransformer(PositionEncoding):
    kind = "logit"

    def __init__(self, cfg, **dims):
        super().__init__(cfg, **dims)
        if not math.isfinite(cfg.bias_init):
            raise UserError(f"pe.bias_init must be a finite number, got {cfg.bias_init}")
        self.gate = nn.Linear(self.n_embd, self.n_layer * self.n_head)
        nn.init.normal_(self.gate.weight, mean=0.0, std=0.02)
        nn.init.constant_(self.gate.bias, float(cfg.bias_init))

    def cumulative_log_forget(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        """F (B, H, T) fp32 of one layer: the running sum of log sigmoid(w_h . x_t + b_h)."""
        rows = slice(layer * self.n_head, (layer + 1) * self.n_head)
        with torch.autocast(device_type=x.device.type, enabled=False):
            logit = F.linear(x.float(), self.gate.weight[rows].float(), self.gate.bias[rows].float())
            return F.logsigmoid(logit).transpose(1, 2).cumsum(dim=-1)

    def logit_term(self, x, q, k, pos, layer, flex=False):
        cumulative = self.cumulative_log_forget(x, layer)
        if flex:
            def forget(score, b, h, q_idx, kv_idx):
                return score + cumulative[b, h, q_idx] - cumulative[b, h, kv_idx]

            return forget
        return cumulative[..., :, None] - cumulative[..., None, :]
