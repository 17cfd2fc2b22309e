"""The contract every position encoding implements.

Position enters a decoder at one of three points, and an encoding overrides only the hook it uses:

* ``embed``  -- added to the token embeddings (sinusoidal, learned);
* ``qk``     -- applied to queries and keys inside every attention layer (RoPE and its kin);
* ``bias``   -- added to the attention logits (T5, ALiBi, KERPLE, FIRE), as a dense ``(H, T, T)`` tensor for
  SDPA or as a FlexAttention ``score_mod`` that never materialises it;
* ``logit_term`` -- added to the logits of one layer, computed from that layer's input or its queries and keys
  (data-dependent positions: the Forgetting Transformer, CoPE), dense ``(B, H, T, T)`` or a ``score_mod``.

The defaults are the identity, so NoPE is the base class itself. What an encoding can do is declared here, on
the class, never guessed from its name: ``has_bias()`` (it overrides ``bias``), ``has_logit_term()`` (it
overrides ``logit_term``), ``uses_value_hooks()`` (the model
calls ``value`` / ``output`` only then), ``supports_rope_scaling`` (``set_scaling`` takes a Hugging Face-style
``rope_scaling`` dict; ``trained_scaling`` is the one it was trained with), ``supports_position_ids`` (position
ids may be (B, T) and skip, as PoSE and randomized positions train: ``embed`` and ``qk`` read them, and ``bias``
receives them and returns a bias per example), and ``decay_params()`` (the rotary width and base for RoFormer's
long-term-decay bound).

An encoding initialises its own parameters in its constructor; the model never re-initialises them. One module
serves every layer that uses the encoding (``n_layer`` of them); one with parameters per layer sizes them by
``n_layer`` and is told which of its layers is calling (``layer``, 0 .. n_layer-1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import torch
from omegaconf import MISSING
from torch import Tensor, nn


@dataclass
class PEConfig:
    name: str = MISSING
    # The encoding's own parameters (tables, slopes, MLPs, scales) train in a group of their own: learning rate
    # train.lr x lr_mult, and weight decay weight_decay (null: train.weight_decay on matrices, none on vectors,
    # like the model's). A table that starts at zero moves about lr per Adam step, so a small rate can starve it.
    lr_mult: float = 1.0
    weight_decay: Optional[float] = None  # noqa: UP045 (OmegaConf's structured configs need Optional)


class PositionEncoding(nn.Module):
    #: where the encoding enters: "embedding", "qk", "bias", "logit" or "none" (no position at all: NoPE; in a
    #: layer pattern such a layer lets per-example position ids pass to the layers that take them)
    kind: str = "none"
    #: True when the encoding has ``set_scaling(rope_scaling: dict | None)`` (evaluation-time RoPE extension)
    supports_rope_scaling: bool = False
    #: the rope_scaling the encoding was trained with (``pe.scaling``); evaluation applies it by default
    trained_scaling: dict | None = None
    #: True when ``qk``/``embed``/``bias`` honour per-example position ids (B, T) -- what PoSE and randomized
    #: positions need
    supports_position_ids: bool = False

    def __init__(self, cfg, *, n_embd: int, n_head: int, train_seq_len: int, n_layer: int = 1):
        super().__init__()
        self.cfg = cfg
        self.n_embd = n_embd
        self.n_head = n_head
        self.head_dim = n_embd // n_head
        self.train_seq_len = train_seq_len
        self.n_layer = n_layer  # layers this module serves

    def max_len(self) -> int | None:
        """Longest sequence this encoding can represent, or None when it has no limit."""
        return None

    def embed(self, x: Tensor, pos: Tensor) -> Tensor:
        """x: (B, T, C) token embeddings; pos: (T,) integer positions, or (B, T) where supports_position_ids."""
        return x

    def qk(self, q: Tensor, k: Tensor, pos: Tensor) -> tuple[Tensor, Tensor]:
        """q, k: (B, H, T, D). Returns the position-aware queries and keys."""
        return q, k

    def value(self, v: Tensor, pos: Tensor) -> Tensor:
        """Values, (B, H, T, D). Identity for every standard encoding (ablations may override)."""
        return v

    def output(self, y: Tensor, pos: Tensor) -> Tensor:
        """Attention output per head, (B, H, T, D), before heads are merged. Identity by default."""
        return y

    def uses_value_hooks(self) -> bool:
        """Whether ``value`` / ``output`` do anything; the model skips both calls in every layer otherwise.
        By default: whether the subclass overrides either of them."""
        cls = type(self)
        return cls.value is not PositionEncoding.value or cls.output is not PositionEncoding.output

    def has_bias(self) -> bool:
        """Whether the encoding adds a logit bias; by default, whether the subclass overrides ``bias``."""
        return type(self).bias is not PositionEncoding.bias

    def has_logit_term(self) -> bool:
        """Whether the encoding adds a per-layer logit term; whether the subclass overrides ``logit_term``."""
        return type(self).logit_term is not PositionEncoding.logit_term

    def decay_params(self) -> tuple[int, float] | None:
        """(rotary_dim, base) of a rotary encoding, for RoFormer's long-term-decay bound; None for the others."""
        return None

    def bias(self, T: int, device: torch.device, pos: Tensor | None = None) -> Tensor | None:
        """Additive logit bias for query i and key j, shape (H, T, T), fp32, causal mask not included. With
        per-example position ids ``pos`` (B, T) -- passed only to encodings that declare
        ``supports_position_ids`` -- the bias of each example, (B, H, T, T), from its ids."""
        return None

    def score_mod(self, T: int, device: torch.device) -> Callable | None:
        """The same bias as a FlexAttention score_mod ``f(score, b, h, q_idx, kv_idx)``, or None when the encoding
        only has the dense ``bias`` (the model then uses the dense bias with SDPA)."""
        return None

    @staticmethod
    def query_key_positions(T: int, device: torch.device, pos: Tensor | None) -> tuple[Tensor, Tensor]:
        """(query positions, key positions) that broadcast to (T, T) -- or (B, T, T) for ids (B, T): 0 .. T-1
        when ``pos`` is None. The bias encodings compute their relative distances from these."""
        ids = torch.arange(T, device=device) if pos is None else pos.to(device)
        return ids[..., :, None], ids[..., None, :]
    def logit_term(self, x: Tensor, q: Tensor, k: Tensor, pos: Tensor, layer: int, flex: bool = False):
        """A logit term of one layer from its input ``x`` (B, T, C, after the layer norm) or its queries and keys
        (B, H, T, D, after ``qk``): (B, H, T, T) fp32 added after the 1/sqrt(D) scaling, causal mask not included.
        With ``flex``, the same term as a FlexAttention score_mod, or None when only the dense form exists."""
        return None

    def extra_repr(self) -> str:
        return f"kind={self.kind}"
