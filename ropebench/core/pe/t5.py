"""T5 relative position bias (Raffel et al.): a learned scalar per (distance bucket, head) on the logits.

Causal form: distance n = i - j >= 0; n < num_buckets/2 gets its own bucket, larger distances are log-spaced
up to max_distance, beyond which all share the last bucket. Computed once and shared by every layer.

``max_distance`` defaults to the training length (T5 itself uses 128 with 512-token inputs). A fixed 128 with a
64-token training length would map no training distance to buckets 27-31: those rows would never get a
gradient and would stay at their zero init, yet be used at every longer evaluation length. With
max_distance = L every bucket holds some training distance once L is a little above num_buckets (L >= 34 for
32 buckets, >= 71 for 64); shorter training lengths have fewer distances than buckets. A training length
below num_buckets uses max_distance = num_buckets, so the log range stays defined.
"""

import math
from dataclasses import dataclass

import torch
from torch import nn

from ropebench.core.pe import register
from ropebench.core.pe.base import PEConfig, PositionEncoding
from ropebench.errors import UserError


@dataclass
class T5Config(PEConfig):
    name: str = "t5"
    num_buckets: int = 32
    # Distance where the last bucket starts; 0 means the training length (at least num_buckets).
    max_distance: int = 0


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
    supports_position_ids = True  # buckets of the distance between the ids

    def __init__(self, cfg, **dims):
        super().__init__(cfg, **dims)
        if cfg.num_buckets < 2:
            raise UserError(f"pe.num_buckets must be an integer >= 2, got {cfg.num_buckets}")
        if cfg.max_distance < 0:
            raise UserError(f"pe.max_distance must be >= 0 (0 = the training length), got {cfg.max_distance}")
        self.max_distance = cfg.max_distance or max(self.train_seq_len, cfg.num_buckets)
        if self.max_distance <= cfg.num_buckets // 2:  # log(max_distance / (num_buckets/2)) would be <= 0
            raise UserError(f"pe.max_distance={self.max_distance} must exceed num_buckets/2 = {cfg.num_buckets // 2}")
        self.num_buckets = int(cfg.num_buckets)  # a plain int: torch.compile cannot trace an OmegaConf lookup
        self.relative_bias = nn.Embedding(cfg.num_buckets, self.n_head)
        nn.init.zeros_(self.relative_bias.weight)  # T5 starts with no positional preference

    def _bias_by_distance(self, T, device):
        """(H, T): the bias for each causal distance 0 .. T-1 -- the only part that depends on weights."""
        buckets = t5_bucket(torch.arange(T, device=device), self.num_buckets, self.max_distance)
        return self.relative_bias(buckets).float().t()

    def bias(self, T, device, pos=None):
        if pos is not None:  # per-example ids: distances reach beyond T, so bucket them directly
            query, key = self.query_key_positions(T, device, pos)
            buckets = t5_bucket(query - key, self.num_buckets, self.max_distance)
            return self.relative_bias(buckets).float().movedim(-1, -3)  # (B, T, T, H) -> (B, H, T, T)
        positions = torch.arange(T, device=device)
        distance = (positions[:, None] - positions[None, :]).clamp(min=0)
        return self._bias_by_distance(T, device)[:, distance]

    def score_mod(self, T, device):
        by_distance = self._bias_by_distance(T, device)

        def t5(score, b, h, q_idx, kv_idx):
            return score + by_distance[h, (q_idx - kv_idx).clamp(min=0)]

        return t5
