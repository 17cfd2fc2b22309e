"""The ``complex`` RoPE backend: the rotation as a complex multiply, the form of Meta's Llama code.

A channel pair (a, b) is the complex number a + ib and the rotation is a product with e^{i*angle}. The
interleaved layout is already pairs of adjacent channels; for the half-split layout the two halves are
stacked into (x_i, x_{i+d/2}) pairs first and unstacked after, so both pairings equal the reference.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ropebench.core.rope.backends import Backend, register_backend
from ropebench.core.rope.reference import PAIRINGS
from ropebench.errors import choose


def _rotate(x: Tensor, freqs: Tensor, pairing: str) -> Tensor:
    half = freqs.shape[-1]
    # view_as_complex needs fp32 or fp64 and a contiguous pair dimension; float64 input stays float64.
    work = torch.promote_types(x.dtype, torch.float32)
    rot = x[..., : 2 * half].to(work)
    if pairing == "interleaved":
        pairs = rot.reshape(*rot.shape[:-1], half, 2)
    else:
        pairs = torch.stack((rot[..., :half], rot[..., half:]), dim=-1)
    turned = torch.view_as_real(torch.view_as_complex(pairs.contiguous()) * freqs.to(pairs.device))
    if pairing == "interleaved":
        out = turned.flatten(-2)
    else:
        out = torch.cat((turned[..., 0], turned[..., 1]), dim=-1)
    out = out.to(x.dtype)
    rest = x[..., 2 * half :]
    return torch.cat((out, rest), dim=-1) if rest.shape[-1] else out


def apply(q: Tensor, k: Tensor, cos: Tensor, sin: Tensor, pairing: str = "half") -> tuple[Tensor, Tensor]:
    choose("rope pairing", pairing, PAIRINGS)
    work = torch.promote_types(torch.promote_types(q.dtype, k.dtype), torch.float32)
    freqs = torch.complex(
        cos.to(work), sin.to(work)
    )  # e^{i*angle} from the tables, same values as the reference
    return _rotate(q, freqs, pairing), _rotate(k, freqs, pairing)


register_backend(Backend("complex", apply, lambda device: None, cuda_rank=10))
