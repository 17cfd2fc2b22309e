"""Sinusoidal absolute positions (Vaswani et al. 2017), added to the token embeddings.

PE(p, 2i) = sin(p / base^(2i/d)),  PE(p, 2i+1) = cos(p / base^(2i/d)).  Defined for every position; added
with amplitude ``scale`` (see the config).
"""

from dataclasses import dataclass

import torch

from ropebench.core.pe import register
from ropebench.core.pe.base import PEConfig, PositionEncoding


@dataclass
class SinusoidalConfig(PEConfig):
    name: str = "sinusoidal"
    base: float = 10000.0
    # Amplitude of the table. Vaswani et al. add it (RMS 0.71) to token embeddings scaled to unit variance; here
    # token embeddings start at std 0.02 (GPT-2 init, shared with the tied head), so 0.02 keeps their balance.
    # At 1.0 the table swamps the tokens and the model trains visibly worse at the training length.
    scale: float = 0.02


def sinusoidal_table(positions: torch.Tensor, dim: int, base: float = 10000.0) -> torch.Tensor:
    """(T, dim) float32 table; even channels sin, odd channels cos."""
    inv_freq = base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    angles = positions.to(torch.float64)[:, None] * inv_freq.to(positions.device)[None, :]
    table = torch.empty(positions.shape[0], dim, dtype=torch.float64, device=positions.device)
    table[:, 0::2] = angles.sin()
    table[:, 1::2] = angles.cos()[:, : dim // 2]
    return table.float()


@register("sinusoidal", SinusoidalConfig)
class Sinusoidal(PositionEncoding):
    kind = "embedding"
    supports_position_ids = True  # the table is defined at every position

    def __init__(self, cfg, **dims):
        super().__init__(cfg, **dims)
        self._cache: tuple[int, torch.device, torch.Tensor] | None = None
        # Plain floats for the hot path: torch.compile cannot trace an OmegaConf lookup.
        self.base, self.scale = float(cfg.base), float(cfg.scale)

    def embed(self, x, pos):
        if pos.dim() == 2:  # per-example ids (B, T): their own rows, computed directly (ids reach past T)
            table = sinusoidal_table(pos.reshape(-1), self.n_embd, self.base).view(*pos.shape, -1)
            return x + (self.scale * table).to(x.dtype)
        T = pos.shape[0]
        if self._cache is None or self._cache[0] < T or self._cache[1] != x.device:
            table = sinusoidal_table(torch.arange(T, device=x.device), self.n_embd, self.base)
            self._cache = (T, x.device, table)
        return x + (self.scale * self._cache[2][pos]).to(x.dtype)
