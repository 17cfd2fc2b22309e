"""FlexAttention for the bias encodings: the bias enters as a ``score_mod`` with a causal block mask, so
no (T, T) tensor is ever built -- what makes evaluation at 64k tokens fit in memory."""

from __future__ import annotations

import functools

import torch


@functools.cache
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    # FlexAttention is only fast (and only memory-light) when compiled; eager falls back to a dense path.
    return torch.compile(flex_attention, dynamic=False)


@functools.lru_cache(maxsize=8)
def causal_block_mask(T: int, device_type: str, device_index: int | None, window: int | None = None):
    """Causal; with ``window``, a query also sees only its last ``window`` keys (itself included)."""
    from torch.nn.attention.flex_attention import create_block_mask

    def causal(b, h, q_idx, kv_idx):
        return q_idx >= kv_idx

    def windowed(b, h, q_idx, kv_idx):
        return (q_idx >= kv_idx) & (q_idx - kv_idx < window)

    device = torch.device(device_type, device_index) if device_index is not None else torch.device(device_type)
    return create_block_mask(causal if window is None else windowed, B=None, H=None, Q_LEN=T, KV_LEN=T,
                             device=device)


def flex_attention_with(score_mod, T: int, device: torch.device, window: int | None = None):
    block_mask = causal_block_mask(T, device.type, device.index, window)
    flex = _compiled_flex() if device.type == "cuda" else None

    def attend(q, k, v, dropout_p):
        if dropout_p:
            raise ValueError("FlexAttention path does not support attention dropout; set model.dropout=0")
        if flex is None:
            from torch.nn.attention.flex_attention import flex_attention

            return flex_attention(q, k, v, score_mod=score_mod, block_mask=block_mask)
        return flex(q, k, v, score_mod=score_mod, block_mask=block_mask)

    return attend
