"""ropebench's weights laid out as transformers' GPT-NeoX and GPT-2 state dicts, for ``run.export_hf`` (which
documents why each layout is exact): fused attention rows reordered per head, interleaved rotary pairs turned
half-split, GPT-2's ``Conv1D`` weights transposed, missing biases as zeros.
"""

from __future__ import annotations

import torch


def _bias(linear_or_norm) -> torch.Tensor:
    """The module's bias, or zeros where ropebench's has none (model.bias=false)."""
    weight, bias = linear_or_norm.weight, linear_or_norm.bias
    return bias.detach() if bias is not None else torch.zeros(weight.shape[0], dtype=weight.dtype)


def _norm(prefix: str, norm) -> dict:
    return {prefix + "weight": norm.weight.detach(), prefix + "bias": _bias(norm)}


def _half_split_order(head_dim: int, rotary_dim: int) -> torch.Tensor:
    """Channel order that turns interleaved pairs (2i, 2i+1) into half-split pairs (i, i + rotary_dim/2):
    even rotary channels, then odd ones, then the channels past rotary_dim unchanged."""
    return torch.cat([torch.arange(0, rotary_dim, 2), torch.arange(1, rotary_dim, 2),
                      torch.arange(rotary_dim, head_dim)])


def _neox_qkv(tensor: torch.Tensor, n_head: int, interleaved_dim: int) -> torch.Tensor:
    """ropebench's c_attn rows [all q | all k | all v] -> NeoX's per head [q_h, k_h, v_h]; with
    ``interleaved_dim`` > 0, q and k rotary rows reordered to half-split pairing."""
    t = tensor.detach().reshape(3, n_head, -1, *tensor.shape[1:])
    if interleaved_dim:
        order = _half_split_order(t.shape[2], interleaved_dim)
        t = torch.cat([t[:2, :, order], t[2:]], dim=0)
    return t.transpose(0, 1).reshape(tensor.shape).contiguous()


def neox_state(model, interleaved_dim: int) -> dict:
    """GPT-NeoX's state dict (``GPTNeoXForCausalLM``) for ropebench's ``model``; with ``interleaved_dim`` > 0, the
    rotary rows of q and k reordered from interleaved to half-split pairing."""
    wte = model.wte.weight.detach()
    state = {"gpt_neox.embed_in.weight": wte, "lm_head.weight": wte,
             **_norm("gpt_neox.final_layer_norm.", model.ln_f)}
    n_head = model.cfg.n_head
    for i, block in enumerate(model.blocks):
        p = f"gpt_neox.layers.{i}."
        attn, mlp = block.attn, block.mlp
        state.update(_norm(p + "input_layernorm.", block.ln_1))
        state.update(_norm(p + "post_attention_layernorm.", block.ln_2))
        state[p + "attention.query_key_value.weight"] = _neox_qkv(attn.c_attn.weight, n_head, interleaved_dim)
        state[p + "attention.dense.weight"] = attn.c_proj.weight.detach()
        if attn.c_attn.bias is not None:
            state[p + "attention.query_key_value.bias"] = _neox_qkv(attn.c_attn.bias, n_head, interleaved_dim)
            state[p + "attention.dense.bias"] = attn.c_proj.bias.detach()
        state[p + "mlp.dense_h_to_4h.weight"] = mlp.c_fc.weight.detach()
        state[p + "mlp.dense_h_to_4h.bias"] = _bias(mlp.c_fc)
        state[p + "mlp.dense_4h_to_h.weight"] = mlp.c_proj.weight.detach()
        state[p + "mlp.dense_4h_to_h.bias"] = _bias(mlp.c_proj)
    return state


def gpt2_state(model) -> dict:
    """GPT-2's state dict (``GPT2LMHeadModel``) for ropebench's ``model`` with a learned position table."""
    wte = model.wte.weight.detach()
    state = {"transformer.wte.weight": wte, "lm_head.weight": wte,
             "transformer.wpe.weight": model.pe.wpe.weight.detach(), **_norm("transformer.ln_f.", model.ln_f)}
    for i, block in enumerate(model.blocks):
        p = f"transformer.h.{i}."
        state.update(_norm(p + "ln_1.", block.ln_1))
        state.update(_norm(p + "ln_2.", block.ln_2))
        for name, linear in (("attn.c_attn", block.attn.c_attn), ("attn.c_proj", block.attn.c_proj),
                             ("mlp.c_fc", block.mlp.c_fc), ("mlp.c_proj", block.mlp.c_proj)):
            state[f"{p}{name}.weight"] = linear.weight.detach().t().contiguous()  # Conv1D: (in, out)
            state[f"{p}{name}.bias"] = _bias(linear)
    return state
