"""Which encoding and which attention window each layer of the model has.

``model.layers`` is a pattern of encoding names repeated over the depth, e.g. ``[rope, rope, rope, nope]``:
NoPE in every 4th layer, as Llama 4's iRoPE. ``model.windows`` gives each entry of the pattern a sliding-window
width (null: full causal attention), e.g. ``[64, 64, 64, null]``: RoPE layers that see 64 tokens beside global
NoPE layers, the RNoPE-SWA of Yang et al. 2025 ("Rope to Nope and Back Again", arXiv 2501.18795). No pattern
is the pattern of length one, ``[pe.name]``: every model is a layer pattern.

The run's encoding (``pe.*``) must be in the pattern; another encoding named there takes its default settings.
Checked here once, for the config layer and the model alike.
"""

from __future__ import annotations

from ropebench.errors import UserError

#: model.logit_scale values a model is trained with (ropebench.core.temperature)
TRAINED_LOGIT_SCALES = ("none", "ssmax", "llama4")


def layer_pattern(model_cfg, pe_name: str) -> tuple[list[str], list[int | None]]:
    """Per layer (n_layer of them): its encoding's name and its attention window (None: full causal)."""
    from ropebench.core.pe import registry

    names = [str(n) for n in (model_cfg.get("layers") or [])] or [str(pe_name)]
    for name in names:
        if name not in registry():
            raise UserError(f"unknown encoding '{name}' in model.layers; choose from: {', '.join(sorted(registry()))}")
    n_layer = int(model_cfg.n_layer)
    if n_layer % len(names):
        raise UserError(f"model.layers has {len(names)} entries, which does not divide model.n_layer={n_layer}; "
                        "the pattern repeats over the depth")
    if pe_name not in names:
        raise UserError(f"model.layers={_show(names)} must include pe={pe_name}, the encoding that pe.* configures")
    windows = list(model_cfg.get("windows") or []) or [None] * len(names)
    if len(windows) != len(names):
        raise UserError(f"model.windows needs one entry per entry of model.layers ({len(names)}), got "
                        f"{len(windows)}; null means full attention")
    for window in windows:
        if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window <= 0):
            raise UserError(f"model.windows entries must be positive integers (tokens a query sees) or null, "
                            f"got {window}")
    repeat = n_layer // len(names)
    return names * repeat, [None if w is None else int(w) for w in windows] * repeat


def check_logit_scale(model_cfg, pe_name: str) -> str:
    """model.logit_scale, checked against the layers: Llama 4's temperature needs a NoPE layer to act on."""
    from ropebench.core.pe import registry

    kind = str(model_cfg.get("logit_scale", "none") or "none")
    if kind not in TRAINED_LOGIT_SCALES:
        raise UserError(f"unknown model.logit_scale '{kind}'; choose one of: {', '.join(TRAINED_LOGIT_SCALES)}")
    names, _ = layer_pattern(model_cfg, pe_name)
    if kind == "llama4" and all(registry()[n].cls.kind != "none" for n in names):
        raise UserError(f"model.logit_scale=llama4 scales the queries of NoPE layers; model.layers={_show(names)} "
                        "has none (e.g. model.layers=[rope,rope,rope,nope])")
    return kind


def _show(names: list[str]) -> str:
    return f"[{','.join(names)}]"
