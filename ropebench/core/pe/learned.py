"""Learned absolute positions (GPT-2, nanoGPT): one trained vector per position up to max_len.

There is no vector for positions past max_len, so longer sequences are refused -- never clamped. A run that
continues a shorter one (``init_from``) at a longer length grows the table with ``extend=interpolate``: the
trained rows are linearly interpolated to the new number of positions (position p of the new table reads the
old table at p * (old - 1) / (new - 1)), the standard way to reuse a learned table at a new resolution (as
ViT does for its patch positions, Dosovitskiy et al. 2021).
"""

from dataclasses import dataclass

import torch
from torch import nn

from ropebench.core.pe import register
from ropebench.core.pe.base import PEConfig, PositionEncoding
from ropebench.errors import UserError, choose

EXTENDS = ("none", "interpolate")


@dataclass
class LearnedConfig(PEConfig):
    name: str = "learned"
    # Size of the table; 0 means the training length.
    max_len: int = 0
    # Loading a shorter table (init_from a run trained at a shorter length): none refuses, interpolate grows it.
    extend: str = "none"


@register("learned", LearnedConfig)
class Learned(PositionEncoding):
    kind = "embedding"
    supports_position_ids = True  # rows looked up by id; the trainer checks that ids stay below max_len

    def __init__(self, cfg, **dims):
        super().__init__(cfg, **dims)
        self.table_len = cfg.max_len or self.train_seq_len
        self.wpe = nn.Embedding(self.table_len, self.n_embd)
        nn.init.normal_(self.wpe.weight, std=0.02)
        self.extend = choose("pe.extend", str(cfg.get("extend", "none")), EXTENDS)
        self._register_load_state_dict_pre_hook(self._grow_table)

    def _grow_table(self, state_dict, prefix, *_):
        """A shorter trained table loaded into this one: interpolated with extend=interpolate, else refused."""
        key = prefix + "wpe.weight"
        rows = state_dict[key].shape[0] if key in state_dict else self.table_len
        if rows == self.table_len:
            return
        if self.extend != "interpolate" or rows > self.table_len:
            raise UserError(f"the learned position table has {rows} rows and this run needs {self.table_len}; "
                            "continuing at a longer length needs pe.extend=interpolate")
        state_dict[key] = interpolate_rows(state_dict[key], self.table_len)

    def max_len(self):
        return self.table_len

    def embed(self, x, pos):
        # pos is 0 .. T-1, or per-example ids (B, T) below max_len (the trainer checks train.random_positions and
        # train.pose_target_len against max_len), so the length bounds the largest 0 .. T-1 position; reading
        # pos.max() would cost a synchronisation in every forward. GPT.forward has already refused T > max_len.
        if pos.shape[-1] > self.table_len:
            raise UserError(f"learned positions stop at max_len={self.table_len}; got position {pos.shape[-1] - 1}")
        return x + self.wpe(pos).to(x.dtype)


def interpolate_rows(table: torch.Tensor, rows: int) -> torch.Tensor:
    """``table`` (n, C) resampled to ``rows`` rows by linear interpolation; the first and last rows are kept."""
    old = table.shape[0]
    where = torch.linspace(0, old - 1, rows, dtype=torch.float64)
    low = where.floor().long().clamp(max=old - 1)
    high = (low + 1).clamp(max=old - 1)
    weight = (where - low).to(table.dtype)[:, None]
    return table[low] * (1 - weight) + table[high] * weight
