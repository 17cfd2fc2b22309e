"""ropebench's own Triton RoPE kernel: q and k rotated in one launch, forward and backward, out of place.

One program handles one token row (b, t) for a block of heads of both q and k, so the cos/sin row for that
position is loaded once and reused across every head of both tensors. Arithmetic is fp32 whatever the input
dtype; inputs are read through their own strides (the permuted view of a fused QKV projection needs no
copy); pointer offsets are int64 so B*H*T*D past 2^31 is safe. The backward pass is the same kernel with the
conjugate rotation (sin negated): the Jacobian of a rotation is the rotation, its transpose is R(-angle).

The op is registered with ``torch.library.triton_op`` (namespace ``ropebench``) so a whole-model
``torch.compile`` keeps it in the graph; older PyTorch gets a plain ``autograd.Function``.

Import this module only where triton is installed. On the CPU it runs under ``TRITON_INTERPRET=1``, which
must be set before this module is first imported (``@triton.jit`` reads it at decoration time).
"""

import os

import torch
import triton
import triton.language as tl
from torch import Tensor

from ropebench.errors import UserError

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
PAIRINGS = ("half", "interleaved")


# One token row of one tensor (q or k) for a block of heads: x_ptr/o_ptr point at the row, s_h/s_d (so_h/so_d)
# are the input's (output's) head and channel strides, c/s the row's cos/sin, d1/d2 the paired channels.
@triton.jit
def _rotate_rows(x_ptr, o_ptr, heads, n_heads, s_h, s_d, so_h, so_d, c, s, d1, d2, jmask,
                 HALF: tl.constexpr, PASS: tl.constexpr, PASS_PAD: tl.constexpr):
    hmask = heads < n_heads
    mask = hmask[:, None] & jmask[None, :]
    x1 = tl.load(x_ptr + heads[:, None] * s_h + d1[None, :] * s_d, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(x_ptr + heads[:, None] * s_h + d2[None, :] * s_d, mask=mask, other=0.0).to(tl.float32)
    y1 = x1 * c[None, :] - x2 * s[None, :]
    y2 = x2 * c[None, :] + x1 * s[None, :]
    out_ty = o_ptr.dtype.element_ty
    tl.store(o_ptr + heads[:, None] * so_h + d1[None, :] * so_d, y1.to(out_ty), mask=mask)
    tl.store(o_ptr + heads[:, None] * so_h + d2[None, :] * so_d, y2.to(out_ty), mask=mask)
    if PASS > 0:
        # Out of place, so the channels past rotary_dim must be copied across unchanged.
        p = 2 * HALF + tl.arange(0, PASS_PAD).to(tl.int64)
        pmask = hmask[:, None] & (p < 2 * HALF + PASS)[None, :]
        xp = tl.load(x_ptr + heads[:, None] * s_h + p[None, :] * s_d, mask=pmask, other=0.0)
        tl.store(o_ptr + heads[:, None] * so_h + p[None, :] * so_d, xp.to(out_ty), mask=pmask)


@triton.jit
def _rope_kernel(
    q_ptr, k_ptr, qo_ptr, ko_ptr, cos_ptr, sin_ptr, T, HQ, HK, offset,
    # strides of q, k, q_out, k_out (b, h, t, d), then of cos and sin (t, d)
    sq_b, sq_h, sq_t, sq_d, sk_b, sk_h, sk_t, sk_d,
    sqo_b, sqo_h, sqo_t, sqo_d, sko_b, sko_h, sko_t, sko_d,
    sc_t, sc_d, ss_t, ss_d,
    HALF: tl.constexpr, HALF_PAD: tl.constexpr, PASS: tl.constexpr, PASS_PAD: tl.constexpr,
    BLOCK_H: tl.constexpr, INTERLEAVED: tl.constexpr, CONJ: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    b = row // T
    t = row % T
    heads = tl.program_id(1).to(tl.int64) * BLOCK_H + tl.arange(0, BLOCK_H).to(tl.int64)
    j = tl.arange(0, HALF_PAD).to(tl.int64)
    jmask = j < HALF
    pos = t + offset
    c = tl.load(cos_ptr + pos * sc_t + j * sc_d, mask=jmask, other=0.0).to(tl.float32)
    s = tl.load(sin_ptr + pos * ss_t + j * ss_d, mask=jmask, other=0.0).to(tl.float32)
    if CONJ:
        s = -s
    if INTERLEAVED:
        d1 = 2 * j
        d2 = 2 * j + 1
    else:
        d1 = j
        d2 = j + HALF
    # q, then k: the same rotation by the same cos/sin row, each tensor through its own strides.
    _rotate_rows(q_ptr + b * sq_b + t * sq_t, qo_ptr + b * sqo_b + t * sqo_t, heads, HQ, sq_h, sq_d, sqo_h, sqo_d,
                 c, s, d1, d2, jmask, HALF, PASS, PASS_PAD)
    _rotate_rows(k_ptr + b * sk_b + t * sk_t, ko_ptr + b * sko_b + t * sko_t, heads, HK, sk_h, sk_d, sko_h, sko_d,
                 c, s, d1, d2, jmask, HALF, PASS, PASS_PAD)


def _empty_like_bthd(x: Tensor) -> Tensor:
    # (B, T, H, D) storage seen as (B, H, T, D): each program writes one contiguous H*D row, and it is the
    # layout SDPA gets from the usual transpose of a fused projection.
    B, H, T, D = x.shape
    return torch.empty((B, T, H, D), dtype=x.dtype, device=x.device).transpose(1, 2)


def _launch(q: Tensor, k: Tensor, cos: Tensor, sin: Tensor, offset: int, interleaved: bool, conj: bool):
    B, HQ, T, D = q.shape
    HK = k.shape[1]
    half = cos.shape[-1]
    q_out, k_out = _empty_like_bthd(q), _empty_like_bthd(k)
    if q.numel() == 0 and k.numel() == 0:
        return q_out, k_out
    half_pad = triton.next_power_of_2(half)
    n_pass = D - 2 * half
    pass_pad = triton.next_power_of_2(n_pass) if n_pass else 1
    # Keep a program's tile near 4K elements per tensor: big enough to amortize the cos/sin row, small enough
    # for registers at D=128.
    block_h = min(triton.next_power_of_2(max(HQ, HK)), max(1, 4096 // (2 * half_pad)))
    grid = (B * T, triton.cdiv(max(HQ, HK), block_h))
    kernel = (
        torch.library.wrap_triton(_rope_kernel) if hasattr(torch.library, "wrap_triton") else _rope_kernel
    )
    kernel[grid](
        q, k, q_out, k_out, cos, sin, T, HQ, HK, offset,
        *q.stride(), *k.stride(), *q_out.stride(), *k_out.stride(), *cos.stride(), *sin.stride(),
        HALF=half, HALF_PAD=half_pad, PASS=n_pass, PASS_PAD=pass_pad, BLOCK_H=block_h, INTERLEAVED=interleaved,
        CONJ=conj, num_warps=4 if block_h * half_pad >= 512 else 1,
    )
    return q_out, k_out


def _backward_grads(ctx, grad_q, grad_k):
    if grad_q is None:
        grad_q = torch.zeros(ctx.q_shape, dtype=ctx.q_dtype, device=ctx.device)
    if grad_k is None:
        grad_k = torch.zeros(ctx.k_shape, dtype=ctx.k_dtype, device=ctx.device)
    return grad_q, grad_k


def _setup_context(ctx, inputs, output):
    q, k, cos, sin, offset, interleaved, conj = inputs
    ctx.save_for_backward(cos, sin)
    ctx.offset, ctx.interleaved, ctx.conj = offset, interleaved, conj
    ctx.q_shape, ctx.q_dtype, ctx.k_shape, ctx.k_dtype = q.shape, q.dtype, k.shape, k.dtype
    ctx.device = q.device


if hasattr(torch.library, "triton_op"):

    @torch.library.triton_op("ropebench::rope_qk", mutates_args=())
    def _rope_op(
        q: Tensor, k: Tensor, cos: Tensor, sin: Tensor, offset: int, interleaved: bool, conj: bool
    ) -> tuple[Tensor, Tensor]:
        return _launch(q, k, cos, sin, offset, interleaved, conj)

    def _op_backward(ctx, grad_q, grad_k):
        cos, sin = ctx.saved_tensors
        grad_q, grad_k = _backward_grads(ctx, grad_q, grad_k)
        dq, dk = _rope_op(grad_q, grad_k, cos, sin, ctx.offset, ctx.interleaved, not ctx.conj)
        return dq, dk, None, None, None, None, None

    torch.library.register_autograd("ropebench::rope_qk", _op_backward, setup_context=_setup_context)

    def _rope(q, k, cos, sin, offset, interleaved):
        return _rope_op(q, k, cos, sin, offset, interleaved, False)

else:  # PyTorch without triton_op (< 2.6): correct in eager, a graph break under torch.compile.

    class _RopeFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, q, k, cos, sin, offset, interleaved, conj):
            _setup_context(ctx, (q, k, cos, sin, offset, interleaved, conj), None)
            return _launch(q, k, cos, sin, offset, interleaved, conj)

        @staticmethod
        def backward(ctx, grad_q, grad_k):
            cos, sin = ctx.saved_tensors
            grad_q, grad_k = _backward_grads(ctx, grad_q, grad_k)
            dq, dk = _RopeFunction.apply(grad_q, grad_k, cos, sin, ctx.offset, ctx.interleaved, not ctx.conj)
            return dq, dk, None, None, None, None, None

    def _rope(q, k, cos, sin, offset, interleaved):
        return _RopeFunction.apply(q, k, cos, sin, offset, interleaved, False)


def _check(q: Tensor, k: Tensor, cos: Tensor, sin: Tensor, pairing: str, offset: int) -> None:
    if pairing not in PAIRINGS:
        raise UserError(f"unknown rope pairing '{pairing}'; choose one of: {', '.join(PAIRINGS)}")
    if q.dim() != 4 or k.dim() != 4:
        raise UserError(f"q and k must be (B, H, T, D); got shapes {tuple(q.shape)} and {tuple(k.shape)}")
    if q.shape[0] != k.shape[0] or q.shape[2:] != k.shape[2:]:
        raise UserError(
            f"q {tuple(q.shape)} and k {tuple(k.shape)} must agree in B, T and D (heads may differ)"
        )
    if not (q.is_floating_point() and k.is_floating_point()):
        raise UserError(f"q and k must be floating point, got {q.dtype} and {k.dtype}")
    if cos.dim() != 2 or cos.shape != sin.shape:
        raise UserError(
            f"cos and sin must both be (T, rotary_dim/2); got {tuple(cos.shape)} and {tuple(sin.shape)}"
        )
    if not 0 < 2 * cos.shape[1] <= q.shape[-1]:
        raise UserError(
            f"rotary_dim = 2 * cos.shape[-1] = {2 * cos.shape[1]} must be in (0, head_dim={q.shape[-1]}]"
        )
    if offset < 0 or offset + q.shape[2] > cos.shape[0]:
        raise UserError(
            f"position offset {offset} + T={q.shape[2]} exceeds the {cos.shape[0]} rows of the tables"
        )
    if len({q.device, k.device, cos.device, sin.device}) != 1:
        raise UserError(
            f"q, k, cos, sin must share a device; got {q.device}, {k.device}, {cos.device}, {sin.device}"
        )
    if q.device.type == "cpu" and not INTERPRETED:
        raise UserError(
            "the triton rope kernel runs on the CPU only under TRITON_INTERPRET=1, set before "
            "ropebench.core.rope.triton_kernel is first imported"
        )


def rope_qk(q: Tensor, k: Tensor, cos: Tensor, sin: Tensor, pairing: str = "half", offset: int = 0):
    """Rotate q (B, Hq, T, D) and k (B, Hk, T, D) at positions offset .. offset+T-1; returns new tensors.

    cos/sin: (N, rotary_dim/2) tables with N >= offset + T (table row = offset + t), any float dtype (fp32
    recommended); channels at and past rotary_dim pass through. Differentiable in q and k only.
    """
    _check(q, k, cos, sin, pairing, int(offset))
    return _rope(q, k, cos, sin, int(offset), pairing == "interleaved")
