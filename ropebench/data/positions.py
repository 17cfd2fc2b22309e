"""Randomized positions (Ruoss et al. 2023, "Randomized Positional Encodings Boost Length Generalization of
Transformers", arXiv 2305.16843): each training example's T tokens get T positions drawn without replacement
from [0, N) and sorted, so that an encoding sees positions (and distances) up to N - 1 while training on T
tokens; evaluation then uses the ordinary positions 0 .. T' - 1 for any T' <= N.
"""

from __future__ import annotations

import torch


def random_position_ids(batch_size: int, length: int, n_positions: int, generator: torch.Generator) -> torch.Tensor:
    """(batch_size, length) int64 position ids: each row sorted, distinct, within [0, n_positions)."""
    if not 0 < length <= n_positions:
        raise ValueError(f"cannot draw {length} distinct positions from [0, {n_positions})")
    # A random permutation per row (the order of N uniform keys), of which the first `length` are kept.
    keys = torch.rand(batch_size, n_positions, generator=generator)
    return keys.argsort(dim=1)[:, :length].sort(dim=1).values
