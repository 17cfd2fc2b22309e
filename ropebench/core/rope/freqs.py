"""RoPE frequencies: the single source of (possibly scaled) inverse frequencies for training and evaluation.

Scaling types live in one registry, ``ROPE_INIT_FUNCTIONS`` (shaped like Hugging Face's
``modeling_rope_utils.ROPE_INIT_FUNCTIONS``): one function per type, every one called as
``fn(dim, base, spec, seq_len) -> (inv_freq, attention_factor)``, and a parallel ``ROPE_VALIDATORS`` that
checks a spec's type-specific keys. ``rope_inv_freq`` is the public entry point. Parameter names and defaults
are Hugging Face's ``rope_scaling`` / ``rope_parameters`` schema, so settings move between tools:

* ``default``: theta_i = base^(-2i/d) (Su et al., RoFormer).
* ``linear``: position interpolation (Chen et al. 2023, arXiv 2306.15595): every theta_i / factor.
* ``ntk``: ropebench's name for a *static* NTK-aware base change, b' = b * s^(d/(d-2)) with s = factor. It is
  not a Hugging Face rope_type (HF's only NTK type is ``dynamic``).
* ``dynamic``: HF's dynamic NTK: at sequence length l the ntk base change with s = factor*l/L - (factor-1),
  l clipped to >= L = original_max_position_embeddings (no change up to L); factor defaults to 1, s = l/L.
* ``yarn``: Peng et al. 2023 (arXiv 2309.00071): theta_i/factor blended with theta_i by a ramp over the pairs
  that turn between beta_slow (1) and beta_fast (32) times within L, plus an attention factor
  0.1 ln(factor) + 1; with ``mscale`` and ``mscale_all_dim`` it is mscale(factor, mscale) /
  mscale(factor, mscale_all_dim), where mscale(s, m) = 0.1 m ln(s) + 1 (as in DeepSeek-V2 and HF).
* ``llama3``: Llama 3.1's per-wavelength rule: pairs that turn fewer than low_freq_factor (1) times within L
  are divided by factor, those turning more than high_freq_factor (4) times are kept, a linear blend between.
* ``longrope``: LongRoPE (Ding et al. 2024, arXiv 2402.13753; Phi-3): theta_i / short_factor[i] up to L,
  theta_i / long_factor[i] beyond; attention factor sqrt(1 + ln(factor) / ln(L)) for factor > 1.

An explicit ``attention_factor`` wins for yarn and longrope; it multiplies both cos and sin, so attention
logits grow by its square. Everything here is float32 (float64 for the few scalars), never autocast.
"""

from __future__ import annotations

import math
import zlib

import torch

from ropebench.errors import UserError

# Aliases users bring from other tools: "none" (the CLI) and HF's spelling for no scaling.
_ALIASES = {"none": "default"}
# Keys every type accepts: the ones normalize_scaling checks itself.
_COMMON_KEYS = ("rope_type", "factor", "original_max_position_embeddings")
# Dynamic NTK stretches with the current length by itself, so its factor is never set from the length.
GROWS_WITH_LENGTH = ("dynamic",)


def default_inv_freq(dim: int, base: float) -> torch.Tensor:
    """theta_i = base^(-2i/dim), i = 0 .. dim/2-1, in float32."""
    if dim <= 0 or dim % 2:
        raise UserError(f"rotary dimension must be a positive even number, got {dim}")
    if not base > 0:
        raise UserError(f"rope base must be positive, got {base}")
    exponents = torch.arange(0, dim, 2, dtype=torch.float64) / dim
    return (1.0 / (float(base) ** exponents)).to(torch.float32)


def yarn_ramp_bounds(dim: int, base: float, orig_len: int, beta_fast: float, beta_slow: float,
                     truncate: bool = True):
    """The pair indices where YaRN's ramp starts (beta_fast rotations in orig_len) and ends (beta_slow)."""

    def pair_for_rotations(r: float) -> float:
        return dim * math.log(orig_len / (2 * math.pi * r)) / (2 * math.log(base))

    low, high = pair_for_rotations(beta_fast), pair_for_rotations(beta_slow)
    if truncate:
        low, high = math.floor(low), math.ceil(high)
    return max(low, 0), min(high, dim - 1)


# ---- the scaling types: fn(dim, base, spec, seq_len) -> (inv_freq, attention_factor) ----

def _default(dim, base, spec, seq_len):
    return default_inv_freq(dim, base), 1.0


def _linear(dim, base, spec, seq_len):
    return default_inv_freq(dim, base) / spec["factor"], 1.0


def _base_change(dim: int, base: float, scale: float, rope_type: str) -> torch.Tensor:
    """NTK-aware: base * scale^(d/(d-2)), which divides the slowest pair's frequency by exactly ``scale``."""
    if not base > 1:
        raise UserError(f"rope scaling '{rope_type}' needs a rope base > 1, got {base}")
    if dim == 2:  # a single pair has theta_0 = 1 whatever the base: a base change leaves it alone
        return default_inv_freq(dim, base)
    return default_inv_freq(dim, base * scale ** (dim / (dim - 2)))


def _ntk(dim, base, spec, seq_len):
    return _base_change(dim, base, spec["factor"], "ntk"), 1.0


def _dynamic(dim, base, spec, seq_len):
    return _base_change(dim, base, effective_scale(spec, seq_len), "dynamic"), 1.0


def _mscale(scale: float, m: float = 1.0) -> float:
    return 0.1 * m * math.log(scale) + 1.0 if scale > 1 else 1.0


def _yarn(dim, base, spec, seq_len):
    if not base > 1:
        raise UserError(f"rope scaling 'yarn' needs a rope base > 1, got {base}")
    factor = spec["factor"]
    low, high = yarn_ramp_bounds(dim, base, _original_length(spec), spec["beta_fast"], spec["beta_slow"],
                                 spec["truncate"])
    if low == high:
        high += 0.001  # avoid a zero-width ramp
    pair = torch.arange(dim // 2, dtype=torch.float32)
    # keep = 1 keeps the original frequency (fast pairs), keep = 0 interpolates fully (slow pairs).
    keep = 1.0 - torch.clamp((pair - low) / (high - low), 0.0, 1.0)
    theta = default_inv_freq(dim, base)
    inv_freq = theta / factor * (1.0 - keep) + theta * keep
    attention_factor = spec.get("attention_factor")
    if attention_factor is None:
        attention_factor = (_mscale(factor, spec["mscale"]) / _mscale(factor, spec["mscale_all_dim"])
                            if "mscale" in spec else _mscale(factor))
    return inv_freq, attention_factor


def _llama3(dim, base, spec, seq_len):
    theta = default_inv_freq(dim, base).double()
    low, high = spec["low_freq_factor"], spec["high_freq_factor"]
    rotations = _original_length(spec) * theta / (2 * math.pi)  # L / wavelength: full turns within L
    # keep = 0 below low_freq_factor turns (divide by factor), 1 above high_freq_factor (unchanged), linear between.
    keep = ((rotations - low) / (high - low)).clamp(0.0, 1.0)
    return theta / spec["factor"] * (1.0 - keep) + theta * keep, 1.0


def _longrope(dim, base, spec, seq_len):
    orig_len = _original_length(spec)
    for key in ("short_factor", "long_factor"):
        if len(spec[key]) != dim // 2:
            raise UserError(f"rope_scaling.{key} needs {dim // 2} numbers (one per rotary pair of a "
                            f"{dim}-wide rotary dimension), got {len(spec[key])}")
    key = "long_factor" if seq_len and seq_len > orig_len else "short_factor"
    inv_freq = default_inv_freq(dim, base).double() / torch.tensor(spec[key], dtype=torch.float64)
    attention_factor = spec.get("attention_factor")
    if attention_factor is None:
        factor = spec["factor"]
        if factor > 1 and orig_len < 2:
            raise UserError(f"longrope's attention factor needs original_max_position_embeddings >= 2, got {orig_len}")
        attention_factor = math.sqrt(1 + math.log(factor) / math.log(orig_len)) if factor > 1 else 1.0
    return inv_freq, attention_factor


ROPE_INIT_FUNCTIONS = {"default": _default, "linear": _linear, "ntk": _ntk, "dynamic": _dynamic, "yarn": _yarn,
                       "llama3": _llama3, "longrope": _longrope}
ROPE_TYPES = tuple(ROPE_INIT_FUNCTIONS)
# The names a user types: "none" for no scaling, then every scaling type of the registry.
SCALING_NAMES = ("none", *(t for t in ROPE_TYPES if t != "default"))


# ---- validators: check (and canonicalise, in place) the keys specific to one type ----

def _float(spec: dict, key: str, default: float | None = None) -> float | None:
    value = spec.get(key, default)
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise UserError(f"rope_scaling.{key} must be a number, got {value!r}") from None
    if not math.isfinite(value):
        raise UserError(f"rope_scaling.{key} must be a finite number, got {value}")
    return value


def _positive(spec: dict, key: str, default: float | None = None) -> None:
    value = _float(spec, key, default)
    if value is not None:
        if not value > 0:
            raise UserError(f"rope_scaling.{key} must be positive, got {value:g}")
        spec[key] = value


def _check_keys(spec: dict, allowed=()) -> None:
    extra = sorted(set(spec) - set(_COMMON_KEYS) - set(allowed))
    if extra:
        takes = ", ".join(["factor", "original_max_position_embeddings", *allowed])
        raise UserError(f"rope scaling '{spec['rope_type']}' does not use {', '.join(extra)}; it takes: {takes}")


def _check_plain(spec: dict) -> None:
    _check_keys(spec)


def _check_yarn(spec: dict) -> None:
    _check_keys(spec, ("attention_factor", "beta_fast", "beta_slow", "mscale", "mscale_all_dim", "truncate"))
    beta_fast, beta_slow = _float(spec, "beta_fast", 32.0), _float(spec, "beta_slow", 1.0)
    if not beta_fast > beta_slow > 0:
        raise UserError(f"yarn needs beta_fast > beta_slow > 0, got beta_fast={beta_fast:g}, beta_slow={beta_slow:g}")
    spec["beta_fast"], spec["beta_slow"] = beta_fast, beta_slow
    for key in ("attention_factor", "mscale", "mscale_all_dim"):
        _positive(spec, key)
    if ("mscale" in spec) != ("mscale_all_dim" in spec):
        # Hugging Face silently ignores one without the other; refuse rather than ignore a setting.
        raise UserError("yarn's mscale and mscale_all_dim work as a pair (attention factor = mscale(s, mscale) / "
                        "mscale(s, mscale_all_dim)); give both or neither")
    truncate = spec.get("truncate", True)
    if not isinstance(truncate, bool):
        raise UserError(f"rope_scaling.truncate must be true or false, got {truncate!r}")
    spec["truncate"] = truncate


def _check_llama3(spec: dict) -> None:
    _check_keys(spec, ("low_freq_factor", "high_freq_factor"))
    # Llama 3.1's values (HF has no defaults and requires both).
    _positive(spec, "low_freq_factor", 1.0)
    _positive(spec, "high_freq_factor", 4.0)
    if not spec["high_freq_factor"] > spec["low_freq_factor"]:
        raise UserError(f"llama3 needs high_freq_factor > low_freq_factor, got high_freq_factor="
                        f"{spec['high_freq_factor']:g}, low_freq_factor={spec['low_freq_factor']:g}")


def _float_list(spec: dict, key: str) -> list[float]:
    value = spec.get(key)
    if value is None:
        flag = "--" + key.replace("_", "-")
        raise UserError(f"longrope needs rope_scaling.{key}: one factor per rotary pair (e.g. {flag} 1,1.2,1.5,...)")
    items = value.split(",") if isinstance(value, str) else value
    try:
        numbers = [float(x) for x in items]
    except (TypeError, ValueError):
        raise UserError(f"rope_scaling.{key} must be a list of numbers, got {value!r}") from None
    if not numbers or not all(math.isfinite(x) and x > 0 for x in numbers):
        raise UserError(f"rope_scaling.{key} must be a non-empty list of positive numbers, got {value!r}")
    return numbers


def _check_longrope(spec: dict) -> None:
    _check_keys(spec, ("short_factor", "long_factor", "attention_factor"))
    for key in ("short_factor", "long_factor"):
        spec[key] = _float_list(spec, key)
    _positive(spec, "attention_factor")


ROPE_VALIDATORS = {"default": _check_plain, "linear": _check_plain, "ntk": _check_plain, "dynamic": _check_plain,
                   "yarn": _check_yarn, "llama3": _check_llama3, "longrope": _check_longrope}


def _original_length(spec: dict) -> int:
    orig_len = spec.get("original_max_position_embeddings")
    if not orig_len:
        raise UserError(f"rope scaling '{spec['rope_type']}' needs original_max_position_embeddings "
                        "(the training length)")
    return orig_len


def normalize_scaling(rope_scaling: dict | None) -> dict | None:
    """Validate a rope_scaling dict; returns None for no scaling, else a copy with a canonical rope_type.

    Keys set to None count as absent. ``factor`` defaults to 1 and must be >= 1 (it stretches the context).
    """
    if not rope_scaling:
        return None
    spec = {key: value for key, value in dict(rope_scaling).items() if value is not None}
    rope_type = str(spec.pop("type", spec.get("rope_type", "default")))
    rope_type = _ALIASES.get(rope_type, rope_type)
    if rope_type not in ROPE_INIT_FUNCTIONS:
        raise UserError(f"unknown rope scaling '{rope_type}'; choose one of: {', '.join(SCALING_NAMES)}")
    if rope_type == "default":
        return None
    spec["rope_type"] = rope_type
    factor = _float(spec, "factor", 1.0)
    if not factor >= 1.0:
        raise UserError(f"rope scaling factor must be a finite number >= 1 (it stretches the context), got {factor}")
    spec["factor"] = factor
    orig_len = spec.get("original_max_position_embeddings")
    if orig_len is not None:
        if isinstance(orig_len, bool) or not isinstance(orig_len, int) and not (
                isinstance(orig_len, float) and orig_len.is_integer()) or int(orig_len) <= 0:
            raise UserError("rope_scaling.original_max_position_embeddings must be a positive integer "
                            f"(the training length), got {orig_len!r}")
        spec["original_max_position_embeddings"] = int(orig_len)
    ROPE_VALIDATORS[rope_type](spec)
    return spec


def rope_inv_freq(head_dim: int, base: float, rope_scaling: dict | None = None, seq_len: int | None = None, *,
                  resonance: bool = False, kept_pairs: int | None = None):
    """Return ``(inv_freq, attention_factor)`` for a rotary dimension ``head_dim``.

    ``rope_scaling`` is None or a dict in Hugging Face's schema, e.g. ``{"rope_type": "yarn", "factor": 4.0,
    "original_max_position_embeddings": 512}``. ``seq_len`` is the current sequence length; ``dynamic`` and
    ``longrope`` use it. ``attention_factor`` multiplies both cos and sin, so attention logits grow by its square.

    Two changes apply to the (scaled) frequencies, in this order: ``resonance`` rounds every wavelength to an
    integer (Resonance RoPE), and ``kept_pairs`` keeps the first (fastest) pairs and gives the others frequency 0
    (p-RoPE: with ``head_dim`` the full head width, Hugging Face's ``proportional`` layout).
    """
    spec = normalize_scaling(rope_scaling)
    if spec is None:
        inv_freq, attention_factor = _default(head_dim, base, None, seq_len)
    else:
        default_inv_freq(head_dim, base)  # the dimension and base checks, whatever the type
        inv_freq, attention_factor = ROPE_INIT_FUNCTIONS[spec["rope_type"]](head_dim, base, spec, seq_len)
    if resonance:
        inv_freq = resonant(inv_freq)
    if kept_pairs is not None:
        inv_freq = inv_freq * (torch.arange(inv_freq.shape[0]) < kept_pairs)
    return inv_freq.to(torch.float32), float(attention_factor)


def resonant(inv_freq: torch.Tensor) -> torch.Tensor:
    """Resonance RoPE (Wang et al. 2024, arXiv 2403.00071): theta' = 2 pi / round(2 pi / theta), every wavelength
    an integer number of positions, so a pair's angles repeat exactly past the training length. Applied to the
    frequencies a scaling type produced, as the authors' Resonance YaRN / NTK do; frequency 0 stays 0."""
    wavelength = (2 * math.pi / inv_freq.double()).round()
    return torch.where(inv_freq > 0, 2 * math.pi / wavelength, 0.0).to(torch.float32)


def kept_pair_count(p: float, head_dim: int) -> int:
    """p-RoPE's number of rotating pairs: int(p d / 2) (Barbero et al., arXiv 2410.06205, App. D), computed as
    transformers' ``proportional`` type computes it."""
    return int(p * head_dim // 2)


def effective_scale(spec: dict, seq_len: int | None = None) -> float:
    """The context stretch applied at sequence length ``seq_len`` by a normalized spec: for dynamic,
    factor * l / L - (factor - 1) with l = max(seq_len, L), so never below 1; for every other type, the factor."""
    if spec["rope_type"] != "dynamic":
        return spec["factor"]
    orig_len, factor = _original_length(spec), spec["factor"]
    length = max(int(seq_len or orig_len), orig_len)
    return factor * length / orig_len - (factor - 1)


def scaling_label(rope_scaling: dict | None) -> str:
    """``type`` or ``type(key=value,...)`` with the parameters the user gave, e.g. ``yarn(factor=4)``.

    Lists (longrope) appear as a checksum so that different lists never share a label."""
    spec = normalize_scaling(rope_scaling)
    if spec is None:
        return "none"
    given = [key for key, value in rope_scaling.items() if value is not None and key not in ("rope_type", "type")
             and not _at_default(rope_scaling, key)]

    def show(value):
        if isinstance(value, list):
            return f"#{zlib.crc32(repr(value).encode()):08x}"
        return str(value) if isinstance(value, bool) else f"{value:g}"

    return spec["rope_type"] + (f"({','.join(f'{key}={show(spec[key])}' for key in given)})" if given else "")


def _at_default(rope_scaling: dict, key: str) -> bool:
    """Whether ``key`` holds the value its type fills in without it (yarn's beta_fast=32, say): such a key changes
    nothing and is not named, so one scaling has one label however it was written down (a run's ``pe.scaling``,
    or the complete ``rope_parameters`` of its export). A factor and an original length are always named: without
    them they follow the evaluated length."""
    if key in ("factor", "original_max_position_embeddings"):
        return False
    try:
        return normalize_scaling({k: v for k, v in rope_scaling.items() if k != key}) == normalize_scaling(rope_scaling)
    except UserError:  # needed by another key (yarn's mscale pair): it says something
        return False


def scaling_for_length(rope_scaling: dict | None, eval_len: int, train_len: int):
    """The rope_scaling dict to apply when evaluating at ``eval_len``, and the CSV fields that record it.

    ``original_max_position_embeddings`` defaults to ``train_len``. A type given no factor gets
    factor = eval_len / train_len (>= 1) -- except dynamic, which stretches with the evaluated length by itself
    (its factor stays as given, default 1, Hugging Face's meaning): handing it eval_len / train_len as well would
    stretch twice (effective scale s^2 - s + 1). Fields: ``rope_scaling`` (the label), ``rope_factor`` (the
    configured or automatic factor), ``rope_scale`` (the stretch applied at eval_len, see effective_scale).
    """
    if normalize_scaling(rope_scaling) is None:
        return None, {"rope_scaling": "none", "rope_factor": "", "rope_scale": ""}
    given = {key: value for key, value in rope_scaling.items() if value is not None}
    spec = normalize_scaling({"original_max_position_embeddings": train_len, **given})
    if "factor" not in given and spec["rope_type"] not in GROWS_WITH_LENGTH:
        spec["factor"] = max(1.0, eval_len / train_len)
    fields = {"rope_scaling": scaling_label(given), "rope_factor": f"{spec['factor']:g}",
              "rope_scale": f"{effective_scale(spec, eval_len):g}"}
    return spec, fields


def scaling_from_options(rope_type: str, **params) -> dict | None:
    """A rope_scaling dict from command-line options (None = not given), validated before any work is done.

    Returns None for ``none``/``default``; the factor stays absent when not given (set per length later)."""
    given = {key: value for key, value in params.items() if value is not None}
    if _ALIASES.get(rope_type, rope_type) == "default":
        if given:
            flags = ", ".join("--" + key.replace("_", "-") for key in given)
            verb = "needs" if len(given) == 1 else "need"
            raise UserError(f"{flags} {verb} --rope-scaling (one of: {', '.join(SCALING_NAMES[1:])})")
        return None
    spec = {"rope_type": rope_type, **given}
    normalize_scaling(spec)
    return spec


def rope_tables(inv_freq: torch.Tensor, positions: torch.Tensor, attention_factor: float = 1.0):
    """cos and sin tables of shape (T, dim/2) in float32, computed with autocast off."""
    device = positions.device
    with torch.autocast(device_type=device.type, enabled=False):
        angles = positions.to(torch.float32)[:, None] * inv_freq.to(device=device, dtype=torch.float32)[None, :]
        return angles.cos() * attention_factor, angles.sin() * attention_factor
