"""CoPE, contextual position encoding (Golovneva et al. 2024, arXiv 2405.18719): positions counted by gates.

Query i gates every key, g_ij = sigmoid(q_i . k_j / sqrt(D)); the position of key j is the number of gated
keys from j to i, p_ij = sum_{t=j..i} g_it (a real number); the logit gains q_i . e[p_ij], e a learned table
of position vectors interpolated linearly between integer rows and clamped to the last (npos_max - 1). As in
the paper's code: the gates read the scaled logits, e is shared by the heads of a layer, zero at the start, and
each layer has its own. Dense only (counting needs a sum along each row of gates): per layer it holds about
eight (B, H, T, T) tensors for the backward pass, and (B, H, T, npos_max) for q . e.
"""

import math
from dataclasses import dataclass

import torch
from torch import nn

from ropebench.core.pe import register
from ropebench.core.pe.base import PEConfig, PositionEncoding
from ropebench.errors import UserError


@dataclass
class CopeConfig(PEConfig):
    name: str = "cope"
    # Rows of the position table; positions past the last row share it. 0 means the training length.
    npos_max: int = 0


@register("cope", CopeConfig)
class CoPE(PositionEncoding):
    kind = "logit"

    def __init__(self, cfg, **dims):
        super().__init__(cfg, **dims)
        if cfg.npos_max < 0 or cfg.npos_max == 1:
            raise UserError(f"pe.npos_max must be >= 2 (or 0: the training length), got {cfg.npos_max}")
        self.npos_max = int(cfg.npos_max or max(2, self.train_seq_len))
        self.pos_emb = nn.Parameter(torch.zeros(self.n_layer, self.head_dim, self.npos_max))

    def positions(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """p (B, H, T, T) fp32: p_ij = sum_{t=j..i} sigmoid(q_i . k_t / sqrt(D)) for j <= i, 0 above the diagonal."""
        T = q.shape[-2]
        gates = torch.sigmoid(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]))
        gates = gates * torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
        return gates.flip(-1).cumsum(dim=-1).flip(-1)

    def logit_term(self, x, q, k, pos, layer, flex=False):
        if flex:
            return None
        with torch.autocast(device_type=q.device.type, enabled=False):
            q, k = q.float(), k.float()
            p = self.positions(q, k).clamp(max=self.npos_max - 1)
            per_row = q @ self.pos_emb[layer].float()  # (B, H, T, npos_max): q_i . e[n] for every integer n
            low = p.floor()
            weight = p - low
            at_low = per_row.gather(-1, low.long())
            at_high = per_row.gather(-1, p.ceil().long())
            return at_low * (1 - weight) + at_high * weight
