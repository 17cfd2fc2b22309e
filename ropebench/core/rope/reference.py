"""The reference RoPE: plain PyTorch, fp32 arithmetic, both channel pairings, partial rotary.

Pairings (a classic silent bug when mixed up):
* ``half``        -- channel i is paired with i + rotary_dim/2 (GPT-NeoX, Hugging Face Llama ``rotate_half``);
* ``interleaved`` -- channel 2i is paired with 2i + 1 (RoFormer, GPT-J, Meta's complex-number Llama).
Channels at and past ``rotary_dim = 2 * cos.shape[-1]`` pass through unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor

PAIRINGS = ("half", "interleaved")


def rotate(x: Tensor, cos: Tensor, sin: Tensor, pairing: str = "half") -> Tensor:
    """Rotate x (..., T, D) by tables cos/sin (T, rotary_dim/2); returns x's dtype, computes in fp32."""
    half = cos.shape[-1]
    compute = torch.promote_types(x.dtype, torch.float32)  # fp32 at least; float64 stays float64 (gradcheck)
    rot, rest = x[..., : 2 * half].to(compute), x[..., 2 * half :]
    cos, sin = cos.to(compute), sin.to(compute)
    if pairing == "half":
        x1, x2 = rot[..., :half], rot[..., half:]
        out = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
    elif pairing == "interleaved":
        x1, x2 = rot[..., 0::2], rot[..., 1::2]
        out = torch.stack((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).flatten(-2)
    else:
        raise ValueError(f"unknown pairing {pairing!r}; choose one of {PAIRINGS}")
    out = out.to(x.dtype)
    return torch.cat((out, rest), dim=-1) if rest.shape[-1] else out


def apply_rope(q: Tensor, k: Tensor, cos: Tensor, sin: Tensor, pairing: str = "half") -> tuple[Tensor, Tensor]:
    """Rotate queries and keys (B, H, T, D) -- never values."""
    return rotate(q, cos, sin, pairing), rotate(k, cos, sin, pairing)
