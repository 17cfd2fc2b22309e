"""RoPE frequencies: the single source of (possibly scaled) inverse frequencies for training and evaluation.

Parameter names follow Hugging Face's ``rope_scaling`` schema (``rope_type``, ``factor``,
``original_max_position_embeddings``, ``attention_factor``, ``beta_fast``, ``beta_slow``) so settings move
between tools. Everything here is float32 (float64 for the few scalars), never autocast.
"""

from __future__ import annotations

import math

import torch

from ropebench.errors import UserError

ROPE_TYPES = ("default", "linear", "ntk", "dynamic", "yarn")
# Aliases users bring from other tools: "none" (the CLI) and HF's spelling for no scaling.
_ALIASES = {"none": "default"}


def default_inv_freq(dim: int, base: float) -> torch.Tensor:
    """theta_i = base^(-2i/dim), i = 0 .. dim/2-1, in float32."""
    if dim <= 0 or dim % 2:
        raise UserError(f"rotary dimension must be a positive even number, got {dim}")
    if not base > 0:
        raise UserError(f"rope base must be positive, got {base}")
    exponents = torch.arange(0, dim, 2, dtype=torch.float64) / dim
    return (1.0 / (float(base) ** exponents)).to(torch.float32)


def yarn_ramp_bounds(dim: int, base: float, orig_len: int, beta_fast: float, beta_slow: float):
    """The pair indices where YaRN's ramp starts (beta_fast rotations in orig_len) and ends (beta_slow)."""

    def pair_for_rotations(r: float) -> float:
        return dim * math.log(orig_len / (2 * math.pi * r)) / (2 * math.log(base))

    low = max(math.floor(pair_for_rotations(beta_fast)), 0)
    high = min(math.ceil(pair_for_rotations(beta_slow)), dim - 1)
    return low, high


def _float(spec: dict, key: str, default: float | None = None) -> float | None:
    value = spec.get(key, default)
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise UserError(f"rope_scaling.{key} must be a number, got {value!r}") from None


def normalize_scaling(rope_scaling: dict | None) -> dict | None:
    """Validate a rope_scaling dict; returns None for no scaling, else a copy with a canonical rope_type."""
    if not rope_scaling:
        return None
    spec = dict(rope_scaling)
    rope_type = str(spec.get("rope_type", spec.get("type", "default")))
    rope_type = _ALIASES.get(rope_type, rope_type)
    if rope_type not in ROPE_TYPES:
        raise UserError(f"unknown rope scaling '{rope_type}'; choose one of: none, linear, ntk, dynamic, yarn")
    if rope_type == "default":
        return None
    spec["rope_type"] = rope_type
    factor = _float(spec, "factor", 1.0)
    if not (math.isfinite(factor) and factor >= 1.0):
        raise UserError(f"rope scaling factor must be a finite number >= 1 (it stretches the context), got {factor}")
    spec["factor"] = factor
    if rope_type == "yarn":
        beta_fast, beta_slow = _float(spec, "beta_fast", 32.0), _float(spec, "beta_slow", 1.0)
        if not beta_fast > beta_slow > 0:
            raise UserError(f"yarn needs beta_fast > beta_slow > 0, got beta_fast={beta_fast}, beta_slow={beta_slow}")
        spec["beta_fast"], spec["beta_slow"] = beta_fast, beta_slow
    orig_len = spec.get("original_max_position_embeddings")
    if orig_len is not None:
        if isinstance(orig_len, bool) or not isinstance(orig_len, int) and not (
                isinstance(orig_len, float) and orig_len.is_integer()) or int(orig_len) <= 0:
            raise UserError("rope_scaling.original_max_position_embeddings must be a positive integer "
                            f"(the training length), got {orig_len!r}")
        spec["original_max_position_embeddings"] = int(orig_len)
    attention_factor = _float(spec, "attention_factor")
    if attention_factor is not None and not attention_factor > 0:
        raise UserError(f"rope_scaling.attention_factor must be positive, got {attention_factor}")
    return spec


def rope_inv_freq(head_dim: int, base: float, rope_scaling: dict | None = None, seq_len: int | None = None):
    """Return ``(inv_freq, attention_factor)`` for a rotary dimension ``head_dim``.

    ``rope_scaling`` is None or a dict in Hugging Face's schema, e.g. ``{"rope_type": "yarn", "factor": 4.0,
    "original_max_position_embeddings": 512}``. ``seq_len`` is the current sequence length; only ``dynamic``
    uses it (dynamic NTK as Hugging Face implements it: no change up to the original length).
    ``attention_factor`` multiplies both cos and sin, so attention logits grow by its square.
    """
    spec = normalize_scaling(rope_scaling)
    inv_freq = default_inv_freq(head_dim, base)
    if spec is None:
        return inv_freq, 1.0
    rope_type, factor = spec["rope_type"], spec["factor"]
    orig_len = spec.get("original_max_position_embeddings")
    if rope_type in ("dynamic", "yarn") and not orig_len:
        raise UserError(f"rope scaling '{rope_type}' needs original_max_position_embeddings (the training length)")
    attention_factor = spec.get("attention_factor")

    if rope_type in ("ntk", "dynamic", "yarn") and not base > 1:
        raise UserError(f"rope scaling '{rope_type}' needs a rope base > 1, got {base}")
    if rope_type == "linear":
        inv_freq = inv_freq / factor
    elif head_dim == 2:
        pass  # a single pair has theta_0 = 1 whatever the base: the base-changing methods leave it alone
    elif rope_type == "ntk":
        inv_freq = default_inv_freq(head_dim, base * factor ** (head_dim / (head_dim - 2)))
    elif rope_type == "dynamic":
        length = max(int(seq_len or orig_len), int(orig_len))
        scaled_base = base * ((factor * length / orig_len) - (factor - 1)) ** (head_dim / (head_dim - 2))
        inv_freq = default_inv_freq(head_dim, scaled_base)
    elif rope_type == "yarn":
        low, high = yarn_ramp_bounds(head_dim, base, int(orig_len), spec["beta_fast"], spec["beta_slow"])
        if low == high:
            high += 0.001  # avoid a zero-width ramp
        pair = torch.arange(head_dim // 2, dtype=torch.float32)
        # gamma = 1 keeps the original frequency (fast pairs), gamma = 0 interpolates fully (slow pairs).
        gamma = 1.0 - torch.clamp((pair - low) / (high - low), 0.0, 1.0)
        inv_freq = inv_freq / factor * (1.0 - gamma) + inv_freq * gamma
        if attention_factor is None:
            attention_factor = 0.1 * math.log(factor) + 1.0 if factor > 1 else 1.0
    return inv_freq.to(torch.float32), float(attention_factor if attention_factor is not None else 1.0)


def rope_tables(inv_freq: torch.Tensor, positions: torch.Tensor, attention_factor: float = 1.0):
    """cos and sin tables of shape (T, dim/2) in float32, computed with autocast off."""
    device = positions.device
    with torch.autocast(device_type=device.type, enabled=False):
        angles = positions.to(torch.float32)[:, None] * inv_freq.to(device=device, dtype=torch.float32)[None, :]
        return angles.cos() * attention_factor, angles.sin() * attention_factor
