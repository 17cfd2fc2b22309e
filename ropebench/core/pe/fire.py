"""FIRE (Li et al. 2023, "Functional Interpolation for Relative Positions"): a learned logit bias

    b_h(i, j) = MLP(psi(i - j) / psi(max(L, i)))_h,    psi(x) = log(c x + 1),

an MLP 1 -> 32 -> heads with ReLU, learned c (init 0.1) and threshold L. Dividing by psi of the query position
maps every distance into [0, 1] whatever the length -- the "progressive interpolation" that lets a model
trained at L_train see familiar inputs at longer lengths. Built once per forward, shared by all layers (like
T5's bias).

L starts at the training length (``init_L: 0``). A larger L (512, say, with a 64-token training length)
would keep psi(max(L, i)) = psi(L) at every training position, so training would only show the MLP inputs in
[0, psi(L_train)/psi(L)] while evaluation past L reaches 1: the interpolation the method relies on would not
happen. The MLP keeps PyTorch's default Linear init; the model does not re-initialise it.
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
class FireConfig(PEConfig):
    name: str = "fire"
    mlp_width: int = 32
    init_c: float = 0.1
    # Initial threshold L; 0 means the training length.
    init_L: float = 0.0


# psi(max(L, i)) >= log(1 + c L) > 0 for positive c and L; the floor only guards against c underflowing to 0.
_MIN_NORMALIZER = 1e-6
# Elements of the (rows, T, mlp_width) hidden activation built at once by bias() when no gradient is needed:
# evaluation at thousands of tokens would otherwise hold T^2 * 32 floats.
_CHUNK_ELEMENTS = 1 << 24


def _softplus_inverse(y: float) -> float:
    return math.log(math.expm1(y))


@register("fire", FireConfig)
class Fire(PositionEncoding):
    kind = "bias"
    supports_position_ids = True  # i and j are the query's and the key's ids

    def __init__(self, cfg, **dims):
        super().__init__(cfg, **dims)
        if cfg.mlp_width <= 0:
            raise UserError(f"pe.mlp_width must be a positive integer, got {cfg.mlp_width}")
        if not (cfg.init_c > 0 and math.isfinite(cfg.init_c)):
            raise UserError(f"pe.init_c must be a positive number, got {cfg.init_c}")
        if not (cfg.init_L >= 0 and math.isfinite(cfg.init_L)):
            raise UserError(f"pe.init_L must be a positive number, or 0 for the training length, got {cfg.init_L}")
        self.fc1 = nn.Linear(1, cfg.mlp_width)
        self.fc2 = nn.Linear(cfg.mlp_width, self.n_head)
        # c > 0 through softplus: psi(x) = log(c x + 1) needs c x + 1 > 0, and softplus keeps a gradient at
        # every value (a clamp would freeze c at its bound).
        self.raw_c = nn.Parameter(torch.tensor(_softplus_inverse(cfg.init_c)))
        # L = init_L * exp(log_L_scale), positive by construction. Learning the log of a multiplier, not L
        # itself, because L is in the hundreds: an optimiser step of ~lr on a raw L would never move it, while
        # a step on its log changes it by a relative amount.
        self.init_L = float(cfg.init_L or self.train_seq_len)
        self.log_L_scale = nn.Parameter(torch.zeros(()))

    def c_and_L(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The learned scalars (c, L), float32, both positive."""
        return F.softplus(self.raw_c.float()), self.init_L * self.log_L_scale.float().exp()

    @staticmethod
    def normalized_distance(q_idx, kv_idx, c: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
        """psi(i - j) / psi(max(L, i)) for broadcastable integer index tensors, float32."""
        # FIRE is causal: i - j >= 0 wherever the bias counts. Clamping the masked j > i entries to distance 0
        # keeps c x + 1 positive there, so the log never yields NaN (whose gradient would poison the rest).
        distance = (q_idx - kv_idx).clamp(min=0).float()
        query = torch.maximum(q_idx.float(), L)
        return torch.log1p(c * distance) / torch.log1p(c * query).clamp(min=_MIN_NORMALIZER)

    def bias(self, T, device, pos=None):
        # fp32 throughout, as the contract asks: under bf16 autocast the MLP would otherwise run in bf16.
        with torch.autocast(device_type=device.type, enabled=False):
            return self._bias(T, device, pos)

    def _bias(self, T, device, pos=None):
        c, L = (t.to(device) for t in self.c_and_L())
        x = self.normalized_distance(*self.query_key_positions(T, device, pos), c, L)  # (T, T) or (B, T, T)
        if torch.is_grad_enabled() or pos is not None:  # per-example ids: training (randomized positions)
            return self.fc2(F.relu(self.fc1(x[..., None]))).float().movedim(-1, -3)
        # Inference: the same MLP over blocks of query rows, so the (rows, T, width) hidden stays bounded.
        out = torch.empty(self.n_head, T, T, device=device, dtype=torch.float32)
        rows = max(1, _CHUNK_ELEMENTS // max(1, T * self.cfg.mlp_width))
        for start in range(0, T, rows):
            block = x[start : start + rows, :, None]
            out[:, start : start + rows] = self.fc2(F.relu(self.fc1(block))).float().permute(2, 0, 1)
        return out

    def score_mod(self, T, device):
        c, L = (t.to(device) for t in self.c_and_L())
        w1 = self.fc1.weight[:, 0].float().to(device)
        b1 = self.fc1.bias.float().to(device)
        w2 = self.fc2.weight.float().to(device)  # (H, width)
        b2 = self.fc2.bias.float().to(device)
        width = self.cfg.mlp_width

        def fire(score, b, h, q_idx, kv_idx):
            x = Fire.normalized_distance(q_idx, kv_idx, c, L)
            # score_mod sees one (b, h, q, kv) element at a time (or broadcast index grids), so the MLP is
            # unrolled over its hidden units: a fixed `width` of pointwise terms, which FlexAttention can
            # compile (a reduction over a captured vector would not broadcast over index grids).
            out = b2[h]
            for k in range(width):
                out = out + w2[h, k] * F.relu(w1[k] * x + b1[k])
            return score + out

        return fire
