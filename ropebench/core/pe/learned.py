"""Learned absolute positions (GPT-2, nanoGPT): one trained vector per position up to max_len.

There is no vector for positions past max_len, so longer sequences are refused -- never clamped.
"""

from dataclasses import dataclass

import torch
from torch import nn

from ropebench.core.pe import register
from ropebench.core.pe.base import PEConfig, PositionEncoding
from ropebench.errors import UserError


@dataclass
class LearnedConfig(PEConfig):
    name: str = "learned"
    # Size of the table; 0 means the training length.
    max_len: int = 0


@register("learned", LearnedConfig)
class Learned(PositionEncoding):
    kind = "embedding"

    def __init__(self, cfg, **dims):
        super().__init__(cfg, **dims)
        self.table_len = cfg.max_len or self.train_seq_len
        self.wpe = nn.Embedding(self.table_len, self.n_embd)
        nn.init.normal_(self.wpe.weight, std=0.02)

    def max_len(self):
        return self.table_len

    def embed(self, x, pos):
        # Skipped under torch.compile (a data-dependent branch breaks the graph); GPT.forward has already refused
        # sequences longer than the table.
        if not torch.compiler.is_compiling() and pos.numel() and int(pos.max()) >= self.table_len:
            raise UserError(f"learned positions stop at max_len={self.table_len}; got position {int(pos.max())}")
        return x + self.wpe(pos).to(x.dtype)
