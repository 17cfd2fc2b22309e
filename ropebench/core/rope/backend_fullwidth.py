"""RoPE as two full-width multiply-adds: ``x * cos_full + swap(x) * sin_signed``.

The same rotation as the reference, arranged for CPUs: the reference multiplies four half-width slices (rows of
rotary_dim/2 values, short for a vector unit) and concatenates; here the tables are widened once per length to
the rotary width -- ``cos_full = [cos, cos]`` and ``sin_signed = [-sin, sin]`` for half pairing (interleaved:
each entry repeated, signs alternating) -- so each of q and k costs one swap of halves (pairs) and two
full-row multiplies. Arithmetic in fp32 at least, like the reference. ``pe.backend=auto`` prefers it on the CPU
after checking it against the reference there.
"""

from __future__ import annotations

import torch

from ropebench.core.rope.backends import Backend, register_backend

_last: tuple = ()  # (cos, sin, pairing, cos_full, sin_signed): every layer of a forward passes the same tables


def _wide_tables(cos: torch.Tensor, sin: torch.Tensor, pairing: str):
    global _last
    if _last and _last[0] is cos and _last[1] is sin and _last[2] == pairing:
        return _last[3], _last[4]
    if pairing == "half":
        cos_full, sin_signed = torch.cat((cos, cos), -1), torch.cat((-sin, sin), -1)
    else:
        cos_full = cos.repeat_interleave(2, -1)
        sin_signed = torch.stack((-sin, sin), -1).flatten(-2)
    _last = (cos, sin, pairing, cos_full, sin_signed)
    return cos_full, sin_signed


def _swap(x: torch.Tensor, pairing: str) -> torch.Tensor:
    """[x1, x2] -> [x2, x1] by halves (half pairing) or within each pair (interleaved)."""
    if pairing == "half":
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((x2, x1), dim=-1)
    return x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)


def _rotate(x: torch.Tensor, cos_full: torch.Tensor, sin_signed: torch.Tensor, pairing: str) -> torch.Tensor:
    width = cos_full.shape[-1]
    compute = torch.promote_types(x.dtype, torch.float32)
    rot = x[..., :width].to(compute)
    out = (rot * cos_full.to(compute) + _swap(rot, pairing) * sin_signed.to(compute)).to(x.dtype)
    return torch.cat((out, x[..., width:]), dim=-1) if x.shape[-1] > width else out


def apply(q, k, cos, sin, pairing="half"):
    cos_full, sin_signed = _wide_tables(cos, sin, pairing)
    return _rotate(q, cos_full, sin_signed, pairing), _rotate(k, cos_full, sin_signed, pairing)


register_backend(Backend("fullwidth", apply, lambda device: None, cuda_rank=5, cpu_rank=10))
