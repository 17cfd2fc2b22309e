"""xPos (Sun et al. 2022, "A Length-Extrapolatable Transformer"): RoPE plus an exponential decay per pair.

Pair i gets the scale zeta_i = (2i + 0.4 d) / (1.4 d) in (0, 1); the rotated query at position n is multiplied
by zeta_i^(n / scale_base) and the rotated key at position m by zeta_i^(-m / scale_base), so the score of a
pair carries zeta_i^((n - m) / scale_base): fast-turning pairs (small i) decay fastest with distance.

The scale is folded into the RoPE tables (cos * s, sin * s): a rotation is linear, so rotating with scaled
tables equals scaling the rotated pair. Frequencies, tables and the rotation are ropebench.core.rope's own.
"""

import math
from dataclasses import dataclass

import torch

from ropebench.core.pe import register
from ropebench.core.pe.base import PEConfig, PositionEncoding
from ropebench.core.rope.freqs import rope_inv_freq, rope_tables
from ropebench.core.rope.reference import PAIRINGS, rotate
from ropebench.errors import UserError, choose


@dataclass
class XPosConfig(PEConfig):
    name: str = "xpos"
    base: float = 10000.0
    # Positions are divided by this in the decay exponent (torchscale's 512).
    scale_base: float = 512.0
    # half: channel i with i + d/2 (NeoX); interleaved: 2i with 2i+1 (torchscale, RoFormer).
    pairing: str = "half"


# Largest |log| of a factor the scores may carry. The product of the two factors is zeta^((n - m)/scale_base):
# <= 1 on the causal side, but the model computes the anti-causal corner of q k^T too (the mask is applied
# afterwards), where it is zeta_0^(-(T - 1)/scale_base). That entry must stay finite, or inf + (-inf) from the
# mask gives NaN. 8 nats (a factor of ~3000) of the exponent range are left for |q| |k| and the sum over D.
_HEADROOM = 8.0


def xpos_zeta(head_dim: int) -> torch.Tensor:
    """zeta_i = (2i + 0.4 d) / (1.4 d) for pairs i = 0 .. d/2 - 1, float64."""
    i = torch.arange(head_dim // 2, dtype=torch.float64)
    return (2 * i + 0.4 * head_dim) / (1.4 * head_dim)


def xpos_max_len(head_dim: int, scale_base: float, dtype: torch.dtype = torch.float32) -> int:
    """Longest sequence whose xPos factors keep every q k^T entry finite in ``dtype``."""
    budget = math.log(torch.finfo(dtype).max) - _HEADROOM
    steepest = -math.log(float(xpos_zeta(head_dim)[0]))  # zeta_0 = 2/7, the fastest decay
    return int(budget * scale_base / steepest) + 1


@register("xpos", XPosConfig)
class XPos(PositionEncoding):
    kind = "qk"
    # No set_scaling: stretching RoPE's frequencies would leave the xPos decay (in positions / scale_base) as
    # trained, a combination no paper defines -- so evaluation-time rope_scaling is refused for xPos runs.
    supports_rope_scaling = False
    supports_position_ids = True  # rotation and decay read the ids; each example is centred on its own ids

    def __init__(self, cfg, **dims):
        super().__init__(cfg, **dims)
        choose("xpos pairing", cfg.pairing, PAIRINGS)
        if self.head_dim % 2 or self.head_dim < 2:
            raise UserError(f"xpos needs an even head dimension, got n_embd/n_head = {self.head_dim}")
        if not cfg.base > 0:
            raise UserError(f"pe.base must be positive, got {cfg.base}")
        if not (cfg.scale_base > 0 and math.isfinite(cfg.scale_base)):
            raise UserError(f"pe.scale_base must be a positive number, got {cfg.scale_base}")
        # log zeta in float64: the exponent (p / scale_base) * log zeta is formed once, then exp'd in fp32.
        self._log_zeta = xpos_zeta(self.head_dim).log()
        self._tables: dict = {}
        self.rotary_dim = self.head_dim  # every channel pair rotates (and decays)
        # Plain values for the hot path: torch.compile cannot trace an OmegaConf lookup.
        self.pairing, self.base, self.scale_base = str(cfg.pairing), float(cfg.base), float(cfg.scale_base)
        self._limits = {dtype: xpos_max_len(self.head_dim, self.scale_base, dtype)
                        for dtype in (torch.float32, torch.float16)}

    def decay_params(self):
        # RoFormer's bound is for the rotation alone; xPos multiplies it by zeta^(distance / scale_base).
        return self.rotary_dim, self.base

    def max_len(self):
        # The model refuses longer inputs with a one-line UserError (and evaluation records "not applicable")
        # instead of producing inf/NaN. fp32 and bf16 share this range; fp16 is checked in qk.
        return self._limits[torch.float32]

    def _apply(self, fn, *args, **kwargs):
        self._tables = {}  # tables follow the module's device
        return super()._apply(fn, *args, **kwargs)

    def tables(self, T: int, device: torch.device):
        """(cos_q, sin_q, cos_k, sin_k), each (T, D/2) float32: RoPE tables times the xPos factors."""
        key = (T, device)
        if key not in self._tables:
            # Centre the positions, as torchscale does: only n - m reaches the score, so any shift cancels
            # exactly, and centring halves the largest exponent each factor carries (|p| <= T/2 instead of T),
            # which keeps the shrinking factor out of fp32's subnormals and the growing one far from overflow.
            self._tables = {key: self._scaled(torch.arange(T), torch.tensor(T // 2), device)}
        return self._tables[key]

    def _scaled(self, positions: torch.Tensor, centre: torch.Tensor, device: torch.device):
        """RoPE tables of ``positions`` (..., T) times the xPos factors about ``centre`` (broadcastable):
        (cos_q, sin_q, cos_k, sin_k), each (..., T, D/2) float32."""
        inv_freq, _ = rope_inv_freq(self.head_dim, self.base)
        cos, sin = rope_tables(inv_freq, positions.reshape(-1).to(device))
        cos, sin = cos.view(*positions.shape, -1), sin.view(*positions.shape, -1)
        centred = (positions - centre).to(torch.float64)
        exponent = (centred[..., None] / self.scale_base) * self._log_zeta
        with torch.autocast(device_type=device.type, enabled=False):
            scale_q = exponent.exp().to(device=device, dtype=torch.float32)
            scale_k = (-exponent).exp().to(device=device, dtype=torch.float32)
        return cos * scale_q, sin * scale_q, cos * scale_k, sin * scale_k

    def qk(self, q, k, pos):
        if pos.dim() == 2:  # per-example ids (B, T): tables (B, 1, T, D/2), each row centred on its own ids
            ids = pos.cpu()
            centre = (ids[:, :1] + ids[:, -1:] + 1) // 2  # T // 2 for 0 .. T-1, as the ordinary tables
            cos_q, sin_q, cos_k, sin_k = (t[:, None] for t in self._scaled(ids, centre, q.device))
            return rotate(q, cos_q, sin_q, self.pairing), rotate(k, cos_k, sin_k, self.pairing)
        T = pos.shape[0]
        limit = self._limits[torch.float16]
        if q.dtype == torch.float16 and T > limit:
            raise UserError(f"xpos at length {T} overflows float16 (limit {limit}); use bfloat16 or float32")
        cos_q, sin_q, cos_k, sin_k = self.tables(T, q.device)
        return rotate(q, cos_q, sin_q, self.pairing), rotate(k, cos_k, sin_k, self.pairing)
