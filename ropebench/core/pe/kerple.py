"""KERPLE (Chi et al. 2022), logarithmic variant: logit bias -p_h * log(1 + a_h * |i - j|), a_h, p_h > 0.

Both parameters are learned per head. They start as in the authors' code (the KERPLE repository's
``ParallelKerpleLog``): p_h ~ U(0, 2) and a_h ~ U(0, 1), floored at 0.01 (``init: uniform``); ``init: constant``
starts every head at ``init_p`` / ``init_a`` instead (NeMo's port uses ones).

Positivity: the authors keep a and p positive by clamping the stored values to >= 0.01 before every forward
pass. Here a and p are ``softplus`` of unconstrained parameters instead: positive for every raw value, a gradient
everywhere, and no parameter written inside ``forward`` (a hidden side effect under ``torch.compile``, in
no-grad evaluation and in the FlexAttention ``score_mod`` that captures a and p). The initial values are the
authors'; the optimiser path differs: a step moves a by sigmoid(raw_a) times what it would move a itself, and
a value may go below 0.01 (never to 0).

Like T5's bias it is built once per forward and shared by every layer. Only the log variant is implemented;
the power variant (-a |i - j|^p) would be another ``variant`` value here.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ropebench.core.pe import register
from ropebench.core.pe.base import PEConfig, PositionEncoding
from ropebench.errors import UserError, choose

VARIANTS = ("log",)
INITS = ("uniform", "constant")
# The authors' floor (their eps), applied to the initial values.
MIN_INIT = 0.01


@dataclass
class KerpleConfig(PEConfig):
    name: str = "kerple"
    variant: str = "log"
    # uniform: a_h ~ U(0, init_a), p_h ~ U(0, init_p), floored at 0.01 (the authors'); constant: a_h = init_a, ...
    init: str = "uniform"
    init_a: float = 1.0
    init_p: float = 2.0


def _softplus_inverse(y: torch.Tensor) -> torch.Tensor:
    """float32 x with softplus(x) = y, computed in float64: x = log(e^y - 1) = y + log(1 - e^-y), a form that
    neither overflows for large y nor loses digits for small y."""
    y = y.double()
    return (y + torch.log(-torch.expm1(-y))).float()


@register("kerple", KerpleConfig)
class Kerple(PositionEncoding):
    kind = "bias"
    supports_position_ids = True  # the log of the distance between the ids

    def __init__(self, cfg, **dims):
        super().__init__(cfg, **dims)
        choose("kerple variant", cfg.variant, VARIANTS)
        choose("kerple init", cfg.init, INITS)
        for key in ("init_a", "init_p"):
            value = getattr(cfg, key)
            if not (value > 0 and math.isfinite(value)):
                raise UserError(f"pe.{key} must be a positive number, got {value}")
        p0 = self._initial(cfg.init_p)  # p drawn first, as in the authors' code
        self.raw_a = nn.Parameter(_softplus_inverse(self._initial(cfg.init_a)))
        self.raw_p = nn.Parameter(_softplus_inverse(p0))

    def _initial(self, scale: float) -> torch.Tensor:
        """(H,) starting values: U(0, scale) floored at 0.01, or the constant ``scale``."""
        if self.cfg.init == "constant":
            return torch.full((self.n_head,), float(scale))
        return (torch.rand(self.n_head) * scale).clamp(min=MIN_INIT)

    def params(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(a, p), each (H,) float32 and positive."""
        return F.softplus(self.raw_a.float()), F.softplus(self.raw_p.float())

    def bias(self, T, device, pos=None):
        a, p = self.params()
        query, key = self.query_key_positions(T, device, pos)
        distance = (query - key).abs().float().unsqueeze(-3)  # |i - j|; the model masks j > i afterwards
        return -p[:, None, None] * torch.log1p(a[:, None, None] * distance)  # (H, T, T) or (B, H, T, T)

    def score_mod(self, T, device):
        a, p = (t.to(device) for t in self.params())

        def kerple(score, b, h, q_idx, kv_idx):
            return score - p[h] * torch.log1p(a[h] * (q_idx - kv_idx).abs())

        return kerple
