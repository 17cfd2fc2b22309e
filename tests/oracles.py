"""Independent references for the 2024-2026 methods, written from the papers' formulas in float64: RoPE by
complex multiplication (any rotary width, kept pairs, pairing) and a whole GPT forward pass with hand-written
attention (per-layer rotation, window, query temperature and an extra logit term). Nothing here calls
ropebench's attention, encodings or temperature code; the model's own modules give only the weights."""

import copy
import math

import torch


def rope_oracle(x, base=10000.0, rotary_dim=None, kept=None, pairing="half"):
    """x (..., T, D): the pairs of the first r = rotary_dim channels rotated by t * theta_i, theta_i =
    base^(-2i/r), as complex numbers; pairs i >= kept keep frequency 0 (p-RoPE); channels past r unchanged."""
    x = x.double()
    D, T = x.shape[-1], x.shape[-2]
    r = rotary_dim or D
    half = r // 2
    theta = base ** (-2.0 * torch.arange(half, dtype=torch.float64) / r)
    if kept is not None:
        theta[kept:] = 0.0
    turn = torch.exp(1j * torch.arange(T, dtype=torch.float64)[:, None] * theta[None, :])
    if pairing == "half":
        z = torch.complex(x[..., :half], x[..., half:r]) * turn
        rotated = torch.cat([z.real, z.imag], dim=-1)
    else:
        z = torch.complex(x[..., 0:r:2], x[..., 1:r:2]) * turn
        rotated = torch.stack([z.real, z.imag], dim=-1).flatten(-2)
    return torch.cat([rotated, x[..., r:]], dim=-1)


def manual_logits(model, tokens, rotate=None, windows=None, scales=None, extra=None, rope=rope_oracle):
    """The model's logits from its weights (float64) with attention written out: per layer i, ``rope`` applied to
    q and k where rotate[i], only the last windows[i] keys seen, queries times scales[i] (broadcast over
    (B, H, T, D)), and extra(i, h, q, k) -> (B, H, T, T) added to the scaled logits."""
    ref = copy.deepcopy(model).double()
    n = len(ref.blocks)
    rotate, windows, scales = rotate or [False] * n, windows or [None] * n, scales or [None] * n
    B, T = tokens.shape
    H, C = ref.cfg.n_head, ref.cfg.n_embd
    D = C // H
    x = ref.wte(tokens)
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    with torch.no_grad():
        for layer, block in enumerate(ref.blocks):
            h = block.ln_1(x)
            q, k, v = (t.view(B, T, H, D).transpose(1, 2) for t in block.attn.c_attn(h).split(C, dim=2))
            if rotate[layer]:
                q, k = rope(q), rope(k)
            if scales[layer] is not None:
                q = q * scales[layer].double()
            logits = q @ k.transpose(-1, -2) / math.sqrt(D)
            if extra is not None:
                logits = logits + extra(layer, h, q, k)
            seen = (j <= i) & ((i - j < windows[layer]) if windows[layer] else True)
            weights = torch.softmax(logits.masked_fill(~seen, -math.inf), dim=-1)
            y = (weights @ v).transpose(1, 2).reshape(B, T, C)
            x = x + block.attn.c_proj(y)
            x = x + block.mlp(block.ln_2(x))
        return ref.lm_head(ref.ln_f(x))
