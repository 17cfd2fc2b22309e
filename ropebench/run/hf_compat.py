"""A model config's RoPE settings in one shape, on every transformers the ``[hf]`` extra accepts (4.46 and later).

transformers 5 keeps them in ``config.rope_parameters``: ``rope_type``, ``rope_theta``, ``partial_rotary_factor`` and
the type's own keys. transformers 4 spreads them over ``rope_theta`` (GPT-NeoX: ``rotary_emb_base``),
``partial_rotary_factor`` (GPT-NeoX: ``rotary_pct``) and ``rope_scaling`` (the type and its keys; None for plain
RoPE), and ignores a ``rope_parameters`` key a newer version wrote. Which schema the installed version reads is told
by what it defines (``RopeParameters``), never by what a config file happens to hold.

Versions also compute some scaling types differently (transformers 4.46's YaRN takes ``max_position_embeddings`` as
the original length and knows no ``mscale`` or ``truncate``): callers compare what transformers computes with
ropebench's own formulas before they rely on it (``export_hf`` on logits, ``eval.hf_model`` on the rotary tables).
"""

from __future__ import annotations

import copy

import torch

from ropebench.errors import UserError

OWN_KEYS = ("rope_type", "rope_theta", "partial_rotary_factor")  # the model's own; the rest is its scaling


def stores_rope_parameters() -> bool:
    """Whether the installed transformers reads ``config.rope_parameters`` (5 and later)."""
    import transformers.modeling_rope_utils as rope_utils

    return hasattr(rope_utils, "RopeParameters")


def version() -> str:
    import transformers

    return transformers.__version__


def dtype_argument(dtype) -> dict:
    """``from_pretrained``'s keyword for the weights' dtype: ``dtype`` since transformers 4.56, ``torch_dtype``
    before (which ignores an unknown ``dtype`` silently, loading float32)."""
    major, minor = (int(part) for part in version().split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


def rope_parameters(config) -> dict | None:
    """The config's RoPE as ``rope_parameters`` (a new dict), or None for a model without rotary positions. A model
    whose layer types have RoPEs of their own (Gemma 3) is returned as stored: ``{layer_type: parameters}``."""
    if stores_rope_parameters():
        params = getattr(config, "rope_parameters", None)
        return dict(params) if params else None
    theta = getattr(config, "rope_theta", None)
    if theta is None:
        theta = getattr(config, "rotary_emb_base", None)
    if theta is None:
        return None
    params = {"rope_type": "default", "rope_theta": float(theta)}
    partial = getattr(config, "partial_rotary_factor", None)
    partial = getattr(config, "rotary_pct", None) if partial is None else partial
    if partial is not None:
        params["partial_rotary_factor"] = float(partial)
    scaling = dict(getattr(config, "rope_scaling", None) or {})
    if scaling:
        scaling["rope_type"] = scaling.pop("type", scaling.get("rope_type", "default"))
        params.update(scaling)
    return params


def with_rope_parameters(config, params: dict):
    """A copy of ``config`` whose RoPE is ``params`` (``rope_parameters``' shape), in the schema the installed
    transformers reads."""
    config = copy.deepcopy(config)
    if stores_rope_parameters():
        config.rope_parameters = dict(params)
        return config
    config.rope_theta = params["rope_theta"]
    if hasattr(config, "rotary_emb_base"):
        config.rotary_emb_base = params["rope_theta"]
    scaling = {key: value for key, value in params.items() if key not in OWN_KEYS}
    config.rope_scaling = {"rope_type": params["rope_type"], **scaling} if params["rope_type"] != "default" else None
    return config


def legacy_gpt_neox_keys(params: dict) -> dict:
    """What GPT-NeoX's config.json says about RoPE for transformers 4 (which reads no ``rope_parameters``); 5 reads
    them too, as the same settings."""
    keys = {"rotary_pct": params["partial_rotary_factor"], "rotary_emb_base": params["rope_theta"]}
    if params["rope_type"] != "default":
        keys["rope_scaling"] = {key: value for key, value in params.items() if key not in OWN_KEYS[1:]}
    return keys


@torch.no_grad()
def check_rotary_tables(module, spec: dict | None, theta: float, dim: int, original: int) -> None:
    """A transformers rotary module's cos and sin, at positions up to twice ``original``, equal ropebench's for the
    scaling ``spec`` (``freqs.rope_inv_freq``; None: plain RoPE) -- or a one-line refusal: this transformers computes
    the scaling otherwise (4.46's YaRN has no original_max_position_embeddings, mscale or truncate), and a model
    exported or evaluated with it would not be what it says. Logits cannot tell: a barely trained model's barely
    depend on positions."""
    from ropebench.core.rope.freqs import rope_inv_freq, scaling_label

    positions = sorted({0, 1, max(1, original // 2), original - 1, original, 2 * original - 1})
    device = next(iter(module.buffers())).device if list(module.buffers()) else torch.device("cpu")
    ids = torch.tensor([positions], device=device)
    try:
        cos, sin = module(torch.zeros(1, dtype=torch.float32, device=device), ids)
    except Exception as exc:
        raise UserError(f"cannot check {type(module).__name__}'s tables: {exc}".splitlines()[0]) from None
    inv_freq, attention = rope_inv_freq(dim, theta, spec, seq_len=positions[-1] + 1)
    angles = ids[0, :, None].float() * inv_freq.to(device)[None, :]
    theirs = torch.cat([cos[0, :, : dim // 2], sin[0, :, : dim // 2]]).float()
    ours = torch.cat([angles.cos(), angles.sin()]) * attention
    if theirs.shape != ours.shape or not torch.allclose(theirs, ours, rtol=1e-4, atol=1e-5):
        label = scaling_label(spec) if spec else "none"
        raise UserError(f"transformers {version()} computes rope scaling {label} otherwise than ropebench (the "
                        "rotary tables differ); use another transformers version (pip install -U transformers)")
