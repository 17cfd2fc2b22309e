"""ALiBi (Press, Smith & Lewis, ICLR 2022): a fixed linear penalty m_h * (j - i) on the attention logits.

Slopes for n heads, n a power of two: geometric from 2^(-8/n) with the same ratio. Otherwise the slopes of the
nearest lower power of two p, then every other slope of 2p, the first n - p of them.
"""

import math
from dataclasses import dataclass

import torch

from ropebench.core.pe import register
from ropebench.core.pe.base import PEConfig, PositionEncoding


@dataclass
class AlibiConfig(PEConfig):
    name: str = "alibi"


def alibi_slopes(n_head: int) -> torch.Tensor:
    def power_of_two(n):
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    p = 2 ** math.floor(math.log2(n_head))
    slopes = power_of_two(p)
    if p != n_head:
        slopes += power_of_two(2 * p)[0::2][: n_head - p]
    return torch.tensor(slopes, dtype=torch.float32)


@register("alibi", AlibiConfig)
class ALiBi(PositionEncoding):
    kind = "bias"
    supports_position_ids = True  # the penalty reads the distance between the ids

    def __init__(self, cfg, **dims):
        super().__init__(cfg, **dims)
        self.register_buffer("slopes", alibi_slopes(self.n_head), persistent=False)

    def bias(self, T, device, pos=None):
        query, key = self.query_key_positions(T, device, pos)
        relative = (key - query).float()  # j - i: zero on the diagonal, negative into the past
        return self.slopes.to(device)[:, None, None] * relative.unsqueeze(-3)  # (H, T, T) or (B, H, T, T)

    def score_mod(self, T, device):
        slopes = self.slopes.to(device)

        def alibi(score, b, h, q_idx, kv_idx):
            return score + slopes[h] * (kv_idx - q_idx)

        return alibi
