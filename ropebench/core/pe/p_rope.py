"""p-RoPE (Barbero et al., ICLR 2025, "Round and Round We Go!", arXiv 2410.06205, App. D): RoPE whose slowest
pairs do not rotate. The first ``int(p d / 2)`` pairs (the highest frequencies) keep theta_i = base^(-2i/d), the
rest get frequency 0 -- pairing and frequencies over the full head width d, Hugging Face's ``proportional``
rope type.

Not the GPT-NeoX partial rotary of ``pe=rope pe.rotary_dim=r``, which rotates a contiguous block of r channels
with frequencies base^(-2i/r) computed over r: the same share of rotating pairs, other channels paired and
other frequencies. Everything else (pairing, backends, scaling, resonance) is RoPE's.
"""

from dataclasses import dataclass

from ropebench.core.pe import register
from ropebench.core.pe.rope import RoPE, RopeConfig
from ropebench.core.rope.freqs import kept_pair_count
from ropebench.errors import UserError


@dataclass
class PRopeConfig(RopeConfig):
    name: str = "p_rope"
    # Fraction of the rotary pairs that rotate: 1 is RoPE, 0 is NoPE (0.75 was the paper's best on Gemma 2B).
    p: float = 0.75


@register("p_rope", PRopeConfig)
class PRoPE(RoPE):
    def __init__(self, cfg, **dims):
        if not 0.0 <= cfg.p <= 1.0:
            raise UserError(f"pe.p must be in [0, 1] (the fraction of rotary pairs that rotate), got {cfg.p}")
        if cfg.rotary_dim:
            raise UserError(f"pe=p_rope pairs over the whole head, so it takes no pe.rotary_dim (got {cfg.rotary_dim});"
                            " GPT-NeoX partial rotary is pe=rope pe.rotary_dim=R")
        super().__init__(cfg, **dims)
        self.kept_pairs = kept_pair_count(float(cfg.p), self.head_dim)

    def decay_params(self):
        return None  # RoFormer's bound assumes every pair turns

    def qk(self, q, k, pos):
        if self.kept_pairs == 0:  # no pair turns: exactly NoPE, without a rotation by angle 0
            return q, k
        return super().qk(q, k, pos)
