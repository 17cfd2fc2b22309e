"""T5 relative position bias (Raffel et al.): a learned scalar per (distance bucket, head) on the logits.

Causal form: distance n = i - j >= 0; n < num_buckets/2 gets its own bucket, larger distances are log-spaced
up to max_distance, beyond which all share the last bucket. Computed once and shared by every layer.
"""

import math
from dataclasses import dataclass

import torch
from torch import nn

from ropebench.pe import register
from ropebench.pe.base import PEConfig, PositionEncoding


@dataclass
class T5Config(PEConfig):
    name: str = "t5"
    num_buckets: int = 32
    max_distance: int = 128


def t5_bucket(distance: torch.Tensor, num_buckets: int = 32, max_distance: int = 128) -> torch.Tensor:
    """Bucket index for causal distances (query minus key, clamped at 0)."""
    n = distance.clamp(min=0)
    max_exact = num_buckets // 2
    is_small = n < max_exact
    # Clamp before the log so n = 0 never reaches it; the small branch covers those entries.
    scaled = torch.log(n.clamp(min=max_exact).float() / max_exact) / math.log(max_distance / max_exact)
    large = max_exact + (scaled * (num_buckets - max_exact)).long()
    large = large.clamp(max=num_buckets - 1)
    return torch.where(is_small, n, large)


@register("t5", T5Config)
class T5Bias(PositionEncoding):
    kind = "bias"

    def __init__(self, cfg, **dims):
        super().__init__(cfg, **dims)
        self.relative_bias = nn.Embedding(cfg.num_buckets, self.n_head)
        nn.init.zeros_(self.relative_bias.weight)

    def has_bias(self):
        return True

    def _bias_by_distance(self, T, device):
        """(H, T): the bias for each causal distance 0 .. T-1 -- the only part that depends on weights."""
        buckets = t5_bucket(torch.arange(T, device=device), self.cfg.num_buckets, self.cfg.max_distance)
        return self.relative_bias(buckets).float().t()

    def bias(self, T, device):
        pos = torch.arange(T, device=device)
        distance = (pos[:, None] - pos[None, :]).clamp(min=0)
        return self._bias_by_distance(T, device)[:, distance]

    def score_mod(self, T, device):
        by_distance = self._bias_by_distance(T, device)

        def t5(score, b, h, q_idx, kv_idx):
            return score + by_distance[h, (q_idx - kv_idx).clamp(min=0)]

        return t5
