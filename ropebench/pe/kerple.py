"""KERPLE (Chi et al. 2022), logarithmic variant: logit bias -p_h * log(1 + a_h * |i - j|), a_h, p_h > 0.

Both parameters are learned per head and start at 1 (random initialisation was unstable in NeMo's port).
Like T5's bias it is built once per forward and shared by every layer. Only the log variant is implemented;
the power variant (-a |i - j|^p) would be another ``variant`` value here.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ropebench.errors import UserError, choose
from ropebench.pe import register
from ropebench.pe.base import PEConfig, PositionEncoding

VARIANTS = ("log",)


@dataclass
class KerpleConfig(PEConfig):
    name: str = "kerple"
    variant: str = "log"
    # Initial a_h and p_h (the paper and NeMo: ones).
    init_a: float = 1.0
    init_p: float = 1.0


def _softplus_inverse(y: float) -> float:
    # softplus(x) = log(1 + e^x)  =>  x = log(e^y - 1); expm1 keeps it accurate for small y.
    return math.log(math.expm1(y))


@register("kerple", KerpleConfig)
class Kerple(PositionEncoding):
    kind = "bias"

    def __init__(self, cfg, **dims):
        super().__init__(cfg, **dims)
        choose("kerple variant", cfg.variant, VARIANTS)
        for key in ("init_a", "init_p"):
            value = getattr(cfg, key)
            if not (value > 0 and math.isfinite(value)):
                raise UserError(f"pe.{key} must be a positive number, got {value}")
        # Positivity through a softplus reparameterisation rather than a clamp: a clamp (the original code
        # clamps .data to eps every step) has zero gradient at the bound, so a head that hits it stays stuck;
        # softplus is positive for every raw value and always passes a gradient.
        self.raw_a = nn.Parameter(torch.full((self.n_head,), _softplus_inverse(cfg.init_a)))
        self.raw_p = nn.Parameter(torch.full((self.n_head,), _softplus_inverse(cfg.init_p)))

    def has_bias(self):
        return True

    def params(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(a, p), each (H,) float32 and positive."""
        return F.softplus(self.raw_a.float()), F.softplus(self.raw_p.float())

    def bias(self, T, device):
        a, p = self.params()
        pos = torch.arange(T, device=device, dtype=torch.float32)
        distance = (pos[:, None] - pos[None, :]).abs()  # |i - j|; the model masks j > i afterwards
        return -p[:, None, None] * torch.log1p(a[:, None, None] * distance[None])

    def score_mod(self, T, device):
        a, p = (t.to(device) for t in self.params())

        def kerple(score, b, h, q_idx, kv_idx):
            return score - p[h] * torch.log1p(a[h] * (q_idx - kv_idx).abs())

        return kerple
