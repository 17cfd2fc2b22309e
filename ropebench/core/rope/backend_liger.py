"""The ``liger`` RoPE backend: an adapter for liger-kernel's ``liger_rotary_pos_emb`` (CUDA only).

Liger's kernel is half-split only, wants full-width HF-style tables (cos = [c, c]) of shape (1, T, d), rotates
the whole head, writes q and k in place and returns views of them, and its backward overwrites the incoming
gradient without telling autograd (Liger #272). So this adapter:

* hands Liger fresh (B, T, H, rotary_dim) buffers -- never the caller's q and k, whose storage may be the
  fused QKV activation autograd still needs -- and re-attaches the pass-through channels itself;
* never uses Liger's backward: the gradient of a rotation is the rotation by -angle, which is Liger's
  forward with sin negated, run on a copy of the incoming gradient.
"""

from __future__ import annotations

import importlib.util

import torch
from torch import Tensor

from ropebench.core.rope.backends import Backend, register_backend
from ropebench.core.rope.reference import PAIRINGS
from ropebench.errors import UserError, choose

HOW = "pip install liger-kernel (CUDA only)"


def unavailable_reason(device: torch.device) -> str | None:
    if importlib.util.find_spec("liger_kernel") is None:
        return HOW
    if torch.device(device).type != "cuda":
        return f"liger-kernel runs on CUDA only; {HOW}"
    return None


def _liger_rope():
    try:
        from liger_kernel.transformers.rope import liger_rotary_pos_emb
    except ImportError as exc:
        raise UserError(f"rope backend 'liger' needs liger-kernel ({exc}); {HOW}") from None
    return liger_rotary_pos_emb


def _fresh_rotary_part(x: Tensor, rotary_dim: int) -> Tensor:
    # A guaranteed copy laid out (B, T, H, r): Liger's own .contiguous() is then a no-op and its in-place
    # writes land in this buffer only.
    return x[..., :rotary_dim].transpose(1, 2).clone(memory_format=torch.contiguous_format).transpose(1, 2)


def _rotate_pair(q: Tensor, k: Tensor, cos_full: Tensor, sin_full: Tensor) -> tuple[Tensor, Tensor]:
    rotary_dim = cos_full.shape[-1]
    out = _liger_rope()(
        _fresh_rotary_part(q, rotary_dim), _fresh_rotary_part(k, rotary_dim), cos_full, sin_full
    )
    # Versions differ: some return (q, k), some (q, k, cos, sin).
    q_rot, k_rot = out[0], out[1]
    if rotary_dim < q.shape[-1]:
        q_rot = torch.cat((q_rot, q[..., rotary_dim:]), dim=-1)
        k_rot = torch.cat((k_rot, k[..., rotary_dim:]), dim=-1)
    return q_rot, k_rot


class _LigerRope(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, cos_full, sin_full):
        ctx.save_for_backward(cos_full, sin_full)
        ctx.shapes = (q.shape, q.dtype, k.shape, k.dtype)
        return _rotate_pair(q, k, cos_full, sin_full)

    @staticmethod
    def backward(ctx, grad_q, grad_k):
        cos_full, sin_full = ctx.saved_tensors
        q_shape, q_dtype, k_shape, k_dtype = ctx.shapes
        if grad_q is None:
            grad_q = torch.zeros(q_shape, dtype=q_dtype, device=cos_full.device)
        if grad_k is None:
            grad_k = torch.zeros(k_shape, dtype=k_dtype, device=cos_full.device)
        dq, dk = _rotate_pair(grad_q, grad_k, cos_full, -sin_full)
        return dq, dk, None, None


def apply(q: Tensor, k: Tensor, cos: Tensor, sin: Tensor, pairing: str = "half") -> tuple[Tensor, Tensor]:
    choose("rope pairing", pairing, PAIRINGS)
    if pairing != "half":
        raise UserError(
            f"rope backend 'liger' supports only pairing=half, got pairing={pairing}; "
            "use backend=triton, compile or torch for interleaved"
        )
    # Liger reads only the first half of each full-width row; fp32 tables make it compute in fp32.
    cos_full = torch.cat((cos, cos), dim=-1).float()[None].contiguous()
    sin_full = torch.cat((sin, sin), dim=-1).float()[None].contiguous()
    return _LigerRope.apply(q, k, cos_full, sin_full)


register_backend(Backend("liger", apply, unavailable_reason, cuda_rank=20))
